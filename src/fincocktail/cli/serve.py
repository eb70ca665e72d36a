"""`fincocktail serve`: an OpenAI-compatible endpoint for a base model and any number of its adapters."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fincocktail.errors import ConfigError, ModelError
from fincocktail.models.dtypes import DEFAULT_EVAL_DTYPE
from fincocktail.models.device import DEVICE_HELP, check_device

MAX_PORT = 65535


def check_port(port: int) -> int:
    """`port` if a socket can bind it (0 picks a free one). Why: checked before the model loads,
    so a typo costs nothing instead of a load and an `OverflowError` traceback."""
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"--port {port}: expected a TCP port from 0 to {MAX_PORT} (0 picks a free one)")
    return port


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        model: str = typer.Option(..., "--model", help="Registry name or local HF folder."),
        adapters: List[str] = typer.Option(
            [], "--adapter",
            help="NAME=RUN_DIR (or RUN_DIR, named after its folder): a training run or peft adapter folder; repeatable. "
            "The request's model picks one; the base is served under its own name.",
        ),
        port: int = typer.Option(8000, "--port"),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
        dtype: str = typer.Option(DEFAULT_EVAL_DTYPE, "--dtype", help="float32 | bfloat16 | float16, or fp32 | bf16 | fp16 (auto = float32: serving only generates)."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP + "."),
        name: Optional[str] = typer.Option(None, "--name", help="Model id of the base (of a single unnamed --adapter, if one is given); default: the folder name."),
        verbose: bool = typer.Option(False, "--verbose", help="Log every request."),
        max_tokens_cap: int = typer.Option(1024, "--max-tokens-cap", min=1, help="Largest max_tokens a request may ask for (larger: 400)."),
        queue_timeout: float = typer.Option(120.0, "--queue-timeout", min=0, help="Seconds a request may wait for the model before a 503."),
        client_timeout: float = typer.Option(30.0, "--client-timeout", min=0.1, help="Seconds a client has to send its whole request (in total, not per byte) before it is dropped."),
        max_batch: int = typer.Option(8, "--max-batch", min=1, help="Chat requests waiting for the model that are decoded together in one batch."),
    ) -> None:
        """Serve POST /v1/chat/completions (streamed or not), POST /v1/completions (echo, logprobs) and GET /v1/models."""
        from rich.console import Console

        from fincocktail.evaluation.adapters import parse_adapter_specs, split_spec
        from fincocktail.serving.pool import ModelPool
        from fincocktail.evaluation.loading import load_for_eval
        from fincocktail.serving.server import ChatService, attach, bind_server

        check_port(port)
        device = check_device(device)
        specs = parse_adapter_specs(adapters, single_name=name)
        single_unnamed = len(adapters) == 1 and not split_spec(adapters[0])[0]  # then --name names that adapter
        base_name = (None if single_unnamed else name) or Path(model.rstrip("/")).name
        try:  # before the model loads: a port already taken is an error at once, and stays ours meanwhile
            server = bind_server(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port (0 picks a free one)") from exc
        try:
            loaded = load_for_eval(model, None, "float32" if dtype == "auto" else dtype, device=device)
            service = ChatService(ModelPool(loaded, base_name, specs), max_tokens_cap=max_tokens_cap, queue_timeout_s=queue_timeout,
                                  max_batch=max_batch)
        except ValueError as exc:
            server.server_close()
            raise ModelError(f"--model {model}: {exc}") from exc
        except BaseException:
            server.server_close()
            raise
        served = ", ".join(service.pool.names())
        attach(server, service, quiet=not verbose, client_timeout_s=client_timeout)
        Console(stderr=True).print(
            f"serving {served} on http://{host}:{server.server_address[1]}/v1 (default model: {service.pool.default}; Ctrl-C to stop)", highlight=False
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
