"""Generate mode in one process: bf16 with the fp32 re-check against fincocktail fp32 on FinQA, alternating (ABAB).

The same loaded model pair serves both, so the ratio is taken under the same load. Prints each
pass, the speed-up and how many outputs are identical.

    PYTHONPATH=src .venv/bin/python bench/generate_ab.py
"""
import os, time, torch
torch.set_num_threads(2)
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.generate import generate_greedy
from fincocktail.evaluation.runner import LocalBackend
from fincocktail.tasks.registry import get_task
from fincocktail.plumbing.paths import find_data_dir
from fincocktail.tasks.sampling import draw_sample
print("load", os.getloadavg(), "cpu", torch.backends.cpu.get_cpu_capability(), flush=True)
task = get_task("finqa")
exs = draw_sample(task.load("test", find_data_dir(None)), 100, task_id="finqa", split="test", kind=task.kind).examples[:6]
loaded = load_for_eval("smollm2-135m-instruct", None, dtype="auto")
be = LocalBackend(loaded, 16)
prompts = [be._prompt(task, e, [], "instruction")[1] for e in exs]
args = (loaded.tokenizer, prompts, task.generation.max_new_tokens, tuple(task.generation.stop), 16)
tot = {"auto": 0.0, "fp32": 0.0}
outs = {}
for rep in range(2):
    for name in ("auto", "fp32"):
        t = time.perf_counter()
        g = generate_greedy(be.scorer, *args, reference=be.reference) if name == "auto" else generate_greedy(be.reference, *args)
        tot[name] += time.perf_counter() - t
        outs[name] = g
        print(rep, name, round(time.perf_counter() - t, 1), "s", flush=True)
same = sum(a.text == b.text for a, b in zip(outs["auto"], outs["fp32"]))
print(f"auto {tot['auto']:.1f}s fp32 {tot['fp32']:.1f}s speedup {tot['fp32']/tot['auto']:.2f}x, identical {same}/{len(prompts)}, "
      f"rechecked {sum(g.rechecked for g in outs['auto'])}, load {os.getloadavg()}")
