"""Benchmark: causal prefill attention, SDPA's CPU kernel against one written from matmuls.

SmolLM2-135M's shape (9 query heads sharing 3 key/value heads, head size 64), one layer, one
prompt; the matmul form runs query chunks against the keys up to the chunk's end, so it skips
most of the masked half. Prints ms per layer, the GFLOP/s of the causal half (QK^T and PV), and
the largest difference from SDPA.

    .venv/bin/python bench/attention_kernel.py [--threads 1] [--lengths 600,1100,1900]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def _median_seconds(fn, *args, repeats: int = 5) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def chunked(q, k, v, chunk: int):
    b, h, n, d = q.shape
    hk = k.shape[1]
    groups = q.view(b, hk, h // hk, n, d)
    out = torch.empty_like(groups)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        scores = groups[:, :, :, s:e].reshape(b, hk, -1, d) @ k[:, :, :e].transpose(-1, -2) * d**-0.5
        scores = scores.view(b, hk, h // hk, e - s, e)
        scores.masked_fill_(torch.arange(e).view(1, -1) > torch.arange(s, e).view(-1, 1), float("-inf"))
        probs = torch.softmax(scores, dim=-1).view(b, hk, -1, e)
        out[:, :, :, s:e] = (probs @ v[:, :, :e]).view(b, hk, h // hk, e - s, d)
    return out.view(b, h, n, d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", default="600,1100,1900")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, 9 query / 3 key-value heads, head 64")
    for dtype in (torch.float32, torch.bfloat16):
        for n in (int(x) for x in args.lengths.split(",")):
            q, k, v = (torch.randn(1, heads, n, 64, dtype=dtype) for heads in (9, 3, 3))
            causal_gflop = 2 * 2 * 9 * 64 * n * (n + 1) / 2 / 1e9
            ref = sdpa(q, k, v).float()
            base = _median_seconds(sdpa, q, k, v)
            line = f"{str(dtype).removeprefix('torch.'):9s} {n:5d} tokens: SDPA {base * 1e3:6.1f} ms ({causal_gflop / base:5.1f} GFLOP/s)"
            for chunk in (128, 256, 512):
                t = _median_seconds(chunked, q, k, v, chunk)
                err = (chunked(q, k, v, chunk).float() - ref).abs().max().item()
                line += f" | chunk {chunk} {t * 1e3:6.1f} ms (diff {err:.0e})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
