"""Benchmark: N concurrent chat requests to `fincocktail serve` against one, batched and one at a time.

Starts the server in-process on 127.0.0.1 (port 0), sends N identical-length chat requests at
once (different prompts, `max_tokens` each, EOS ignored by prompting a random model that rarely
emits it), and times until all N have their answer; the same with `max_batch=1` (how the server
decoded before issue 27: one request at a time). Prints the median of `--repeats` for each N, as
a multiple of one request's time. Also checks that batched answers equal the one-at-a-time ones.

    .venv/bin/python bench/serve_concurrency.py [--model DIR_OR_NAME] [--hidden 256] [--layers 4] [--n 1 2 4 8]
        [--max-tokens 32] [--repeats 3] [--threads 1] [--forward-ms 0]

Without `--model` a random Llama of `--hidden`/`--layers` with the test suite's tokenizer is built in
a temporary folder (tests/tiny_model.py), so it runs anywhere in seconds; `--model
smollm2-135m-instruct` measures the real model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

PROMPTS = ["Sentiment of: profit rose", "What does EBITDA stand for?", "Revenue 12 million, cost 5 million. Profit?",
           "Sentiment of: sales fell sharply", "Is a bond yield inverse to its price?", "Net sales rose 12%. Sentiment:",
           "Who audits a listed company?", "Operating profit fell to EUR 3 mn. Sentiment:"]


def _random_model(hidden: int, layers: int) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM

    out = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    build_tiny_model(out, hidden=hidden, layers=layers)
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():  # lively weights: answers that run their whole budget instead of an early EOS
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    model.save_pretrained(out)
    return str(out)


def _slow_forwards(service: object, seconds: float) -> None:
    scorer = service.pool.scorer  # type: ignore[attr-defined]
    real = scorer.hidden

    def hidden(*args: object, **kwargs: object) -> object:
        time.sleep(seconds)
        return real(*args, **kwargs)

    scorer.hidden = hidden


def _round(url: str, n: int, max_tokens: int) -> tuple[float, list[str]]:
    """Seconds until all `n` requests, sent at the same moment (clients connected beforehand), are answered."""
    out: list[str] = [""] * n
    clients = [httpx.Client(timeout=600) for _ in range(n)]
    go = threading.Barrier(n + 1)

    def ask(i: int) -> None:
        body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens}
        go.wait()
        out[i] = clients[i].post(f"{url}/chat/completions", json=body).json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    for c in clients:
        c.close()
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--forward-ms", type=float, default=0.0,
                        help="add this sleep to every forward: a forward whose cost hardly depends on the rows (a GPU's), simulated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fincocktail.evaluation.loading import load_for_eval
    from fincocktail.serving.server import ChatService, make_server

    loaded = load_for_eval(args.model or _random_model(args.hidden, args.layers))
    times: dict[tuple[int, int], float] = {}
    answers: dict[int, list[str]] = {}
    for max_batch in (1, max(args.n)):
        service = ChatService(loaded, "bench", max_batch=max_batch)
        if args.forward_ms:
            _slow_forwards(service, args.forward_ms / 1000)
        server = make_server(service, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        _round(url, 1, 2)  # warm-up
        for n in args.n:
            runs = [_round(url, n, args.max_tokens) for _ in range(args.repeats)]
            times[max_batch, n] = statistics.median(t for t, _ in runs)
            answers.setdefault(n, runs[0][1])
            assert runs[0][1] == answers[n], f"n={n}: batched answers differ from one-at-a-time ones"
        server.shutdown()
        server.server_close()
    one = times[max(args.n), 1]
    print(f"model: {args.model or f'random Llama hidden {args.hidden}, {args.layers} layers'}; {args.max_tokens} tokens each; "
          f"torch threads {args.threads}; median of {args.repeats}"
          + (f"; +{args.forward_ms:g} ms per forward" if args.forward_ms else ""))
    print("| concurrent | batched (s) | x one | one at a time (s) | x one |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.n:
        b, s = times[max(args.n), n], times[1, n]
        print(f"| {n} | {b:.2f} | {b / one:.2f} | {s:.2f} | {s / one:.2f} |")
    print("answers identical batched and one at a time: yes")


if __name__ == "__main__":
    main()
