"""One micro-batch's forward and backward with a shared prefix: packed, cache form, unshared.

Trains a few bf16 LoRA steps on FPB with `prefix_sharing: auto` and, at every micro-batch
that shares a prefix, times (3 repeats each, gradients discarded) the packed form the trainer
runs (`training.prefix.packed_hidden`), the cache form (`suffix_hidden`: the prefix as a batch
of one, its key/value cache expanded to the rows), the unshared batch, and two bounds: the
suffixes alone (no prefix at all) and the prefix alone (a batch of one). Prints the medians.

    .venv/bin/python bench/prefix_step.py [--threads 1] [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from train_throughput import LORA, TARGETS  # the same LoRA as the throughput bench (this folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fincocktail.models import resolve_model
    from fincocktail.plumbing.paths import find_data_dir
    from fincocktail.training import trainer
    from fincocktail.training.config import parse_train_config
    from fincocktail.training.data import IGNORE_INDEX

    cfg = parse_train_config({
        "model": str(resolve_model(args.model)), "cocktail": {"ingredients": ["fpb"]}, "data_dir": str(find_data_dir(args.data_dir)),
        "lora": {**LORA, "target_modules": TARGETS}, "batch_size": 8, "max_steps": args.steps, "checkpoint_every": 10**9, "contamination_check": False,
        "precision": "bf16", "prefix_sharing": "auto", "threads": args.threads,
    }, source="bench")
    times: dict[str, list[float]] = {k: [] for k in ("packed", "cache form", "unshared", "suffixes alone", "prefix alone")}
    shapes: list[tuple[int, int, int]] = []
    step = trainer._optimizer_step

    def timed(parts, batches, *rest):
        for b in batches:
            if not b.shared_prefix:
                continue
            ids, labels, n = b.input_ids, b.labels, b.shared_prefix
            lengths = b.attention_mask.sum(dim=1)
            prefix_labels = torch.full((1, n + 1), IGNORE_INDEX)
            prefix_labels[0, -1] = ids[0, n]  # one scored token so the backward runs through the prefix
            variants = {
                "packed": (ids, labels, n, lengths), "cache form": (ids, labels, n, None), "unshared": (ids, labels, 0, None),
                "suffixes alone": (ids[:, n:], labels[:, n:], 0, None), "prefix alone": (ids[:1, : n + 1], prefix_labels, 0, None),
            }
            shapes.append((*ids.shape, n))
            for _ in range(3):
                for name, (i, lab, shared, lens) in variants.items():
                    t = time.perf_counter()
                    with parts.autocast:
                        loss, _ = trainer.answer_loss_sum(parts.model, i, lab, head_weight=parts.head_weight, shared_prefix=shared, lengths=lens)
                    loss.backward()
                    times[name].append(time.perf_counter() - t)
                    parts.optimizer.zero_grad(set_to_none=True)
        return step(parts, batches, *rest)

    trainer._optimizer_step = timed
    with tempfile.TemporaryDirectory() as tmp:
        trainer.train(cfg, Path(tmp) / "run", progress=False)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, "
          f"micro-batches (rows, width, shared): {shapes}")
    for name, ts in times.items():
        print(f"{name:16s} median {1000 * statistics.median(ts):7.1f} ms over {len(ts)}")


if __name__ == "__main__":
    main()
