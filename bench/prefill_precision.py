"""Prefill of long FinQA prompts (what generate mode spends its time on) in fp32 and bf16.

Runs the decoder body over the first `--n` FinQA test prompts one at a time, as generate
mode prefills them (no padding, causal attention without a mask), with fp32 and bf16 weights
and SDPA or eager attention, plus bf16 linears with fp32 SDPA. Prints seconds and the speed-up
over fp32 SDPA (the evaluation default).

    .venv/bin/python bench/prefill_precision.py [--threads 1] [--n 4]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from fincocktail.models.forward import Scorer
    from fincocktail.evaluation.loading import load_for_eval
    from fincocktail.models.precision import cast_weights
    from fincocktail.plumbing.paths import find_data_dir
    from fincocktail.tasks.prompts import render
    from fincocktail.tasks.registry import get_task

    def fp32_sdpa(module, q, k, v, mask, **kw):
        out, weights = sdpa_attention_forward(module, q.float(), k.float(), v.float(), mask, **kw)
        return out.to(q.dtype), weights

    AttentionInterface.register("bench_fp32_sdpa", fp32_sdpa)
    loaded = load_for_eval(args.model, dtype="float32")
    task = get_task("finqa")
    prompts = [loaded.tokenizer(render(task, ex).prompt)["input_ids"] for ex in task.load("test", find_data_dir(args.data_dir))[: args.n]]
    fp32, bf16 = loaded.model, cast_weights(copy.deepcopy(loaded.model), torch.bfloat16).eval()

    @torch.inference_mode()
    def prefill(model, attention: str) -> float:
        model.set_attn_implementation(attention)
        scorer = Scorer(model)
        for _ in range(2):  # the first pass warms up
            t = time.perf_counter()
            for p in prompts:
                scorer.hidden(torch.tensor([p]), None, torch.arange(len(p)).unsqueeze(0), use_cache=True)
            seconds = time.perf_counter() - t
        return seconds

    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, prompt tokens {[len(p) for p in prompts]}")
    base = None
    for name, model, attention in (("fp32, SDPA", fp32, "sdpa"), ("fp32, eager", fp32, "eager"), ("bf16, SDPA", bf16, "sdpa"),
                                   ("bf16, eager", bf16, "eager"), ("bf16 linears, fp32 SDPA", bf16, "bench_fp32_sdpa")):
        seconds = prefill(model, attention)
        base = base or seconds
        print(f"{name:24s} {seconds:6.2f} s  {base / seconds:.2f}x fp32 SDPA", flush=True)


if __name__ == "__main__":
    main()
