"""Benchmark: decoding steps with the preallocated cache against transformers' growing one.

`prefill_rows` stacks the prompts' caches into one buffer with room for the tokens to come,
and each decoding step writes its column in place; transformers' `DynamicLayer` concatenates,
copying the whole cache of every layer at every step. This times the decoding steps alone
(prefill excluded, run once) of one batch of real prompts, both ways, interleaved, in one run,
with every row decoding the full budget (no stop), and checks that both give the same tokens.

    .venv/bin/python bench/decode_cache.py [--task finqa] [--n 16] [--new-tokens 24] [--threads 1] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="finqa")
    parser.add_argument("--n", type=int, default=16, help="prompts in the batch")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.cache_utils import Cache, DynamicLayer

    import fincocktail.models.forward as forward
    from fincocktail.models.forward import Scorer, prefill_rows
    from fincocktail.evaluation.loading import load_for_eval
    from fincocktail.plumbing.paths import find_data_dir
    from fincocktail.tasks.prompts import render
    from fincocktail.tasks.registry import get_task

    loaded = load_for_eval(args.model, dtype=args.dtype)
    task = get_task(args.task)
    examples = task.load("test", find_data_dir(None))[: args.n]
    prompts = [loaded.tokenizer(render(task, ex).prompt)["input_ids"] for ex in examples]
    scorer = Scorer(loaded.model)
    with torch.inference_mode():  # one prefill; every timed decode starts from a copy of its cache
        last0, cache0, mask0 = prefill_rows(scorer, prompts, None, 0, room=args.new_tokens)
    preallocated, width = forward._preallocated_layer(), mask0.shape[1]

    def fresh(form: str) -> Cache:
        layers = []
        for layer in cache0.layers:
            if form == "preallocated":
                layers.append(preallocated(layer._k.clone(), layer._v.clone(), width))
            else:
                grown = DynamicLayer()
                grown.update(layer.keys.clone(), layer.values.clone())
                layers.append(grown)
        return Cache(layers=layers)

    @torch.inference_mode()
    def decode(form: str) -> tuple[float, list[list[int]]]:
        last, cache, mask = last0, fresh(form), mask0
        pos = torch.tensor([len(p) for p in prompts])
        out: list[list[int]] = [[] for _ in prompts]
        t0 = time.perf_counter()
        for _ in range(args.new_tokens):
            tokens = scorer.log_probs(last).argmax(-1)
            for r, tok in enumerate(tokens.tolist()):
                out[r].append(tok)
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=torch.long)], dim=1)
            hidden, cache = scorer.hidden(tokens.unsqueeze(1), mask, pos.unsqueeze(1), cache=cache, use_cache=True)
            pos = pos + 1
            last = hidden[:, -1, :]
        return time.perf_counter() - t0, out

    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, {args.dtype}, "
          f"{args.task} test first {len(prompts)} prompts ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), "
          f"{args.new_tokens} decoding steps, median of {args.repeats}", flush=True)
    times: dict[str, list[float]] = {"growing": [], "preallocated": []}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both
        for name in ("growing", "preallocated"):
            seconds, tokens[name] = decode(name)
            times[name].append(seconds)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for name in times:
        print(f"{name:13s} {med[name]:6.2f} s  ({1000 * med[name] / args.new_tokens:.0f} ms a step)")
    print(f"preallocated / growing: {med['growing'] / med['preallocated']:.2f}x faster; same tokens: {tokens['growing'] == tokens['preallocated']}")


if __name__ == "__main__":
    main()
