"""A synthetic objective with a known optimum, as a sweep run function (no model, no data).

Each task's score peaks at its own mixture (shares of the ingredients) and at one total, and
falls off quadratically in the shares and in log(total). The mean over tasks therefore peaks
at the average of the tasks' peaks: a known answer the search must find. It is what the tests
use, and what `fincocktail mix search SWEEP --runner fincocktail.search.synthetic:run` runs to
check a search loop, an executor or a cluster end to end in seconds.

The run function scores N_EXAMPLES examples per task, each with a fixed difficulty shared by
every run (correct when the difficulty is below the task's score), and writes their
predictions, so measured scores carry sample noise and paired intervals can be computed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fincocktail.cocktail import parse_cocktail, planned_counts
from fincocktail.sweep.execute import RunContext, selection_score
from fincocktail.sweep.spec import DEFAULT_TASK_ESTIMATES, RunSpec
from fincocktail.sweep.store import MetricRow, RunOutcome

N_EXAMPLES = 400


@dataclass(frozen=True)
class Synthetic:
    peaks: Mapping[str, Mapping[str, float]]  # task -> ingredient -> share at the task's peak
    best_total: int = 512
    peak: float = 0.9
    curvature: float = 1.2
    total_curvature: float = 0.04
    test_offset: float = -0.02
    ingredients: Sequence[str] = field(default_factory=tuple)  # all ingredient names (for shares of absent ones)
    fidelity_gap: float = 0.15  # a partial run's curve sits this far below its end at fraction 0 (racing)
    fidelity_noise: float = 0.04  # ... with this much mixture-dependent noise at fraction 0
    seed_noise: float = 0.01  # sd of a run's own (seed) noise at every fraction

    def score(self, task: str, counts: Mapping[str, int], split: str = "validation") -> float:
        total = sum(counts.values())
        if total == 0:
            return 0.2
        target = self.peaks.get(task, {})
        names = set(self.ingredients) | set(counts) | set(target)
        dist = sum((counts.get(i, 0) / total - target.get(i, 0.0)) ** 2 for i in names)
        value = self.peak - self.curvature * dist - self.total_curvature * math.log(total / self.best_total) ** 2
        return max(0.0, min(1.0, value + (self.test_offset if split != "validation" else 0.0)))

    def optimum(self, tasks: Sequence[str]) -> dict[str, float]:
        """The shares that maximise the mean over `tasks` (at `best_total`)."""
        names = sorted({i for t in tasks for i in self.peaks.get(t, {})} | set(self.ingredients))
        return {i: sum(self.peaks.get(t, {}).get(i, 0.0) for t in tasks) / len(tasks) for i in names}

    def rung_value(self, task: str, counts: Mapping[str, int], fraction: float, seed: int, walk: float) -> float:
        """The curve's value at `fraction` of the steps: below the final score by a gap that closes as the
        run goes on, with noise that is larger early and depends on the mixture and the seed, plus the
        run's own random walk (`walk`, carried in its checkpoint)."""
        z = _gauss(f"{task}/{sorted(counts.items())}/{fraction:g}/{seed}")
        early = 1.0 - fraction
        value = self.score(task, counts) - self.fidelity_gap * early + self.fidelity_noise * early * z + self.seed_noise * walk
        return max(0.0, min(1.0, value))

    def run(self, run: RunSpec, ctx: RunContext) -> RunOutcome:
        counts = counts_of(run)
        fraction = run.stop_at if run.stop_at is not None and run.stop_at < 1 else 1.0
        walk, cost_s, steps = _train(run, ctx, fraction, sum(counts.values()))
        tasks = list(dict.fromkeys(t for _, ts in run.eval_settings.splits() for t in ts))
        rung = {"fraction": fraction, "step": steps, "total_steps": STEPS, "metric": {t: "gold_prob" for t in tasks},
                "scores": {t: self.rung_value(t, counts, fraction, run.seed, walk) for t in tasks}}
        if fraction < 1:
            return RunOutcome(card={"synthetic": True, "rung": rung}, tokens_trained=int(run.est_tokens * fraction),
                              wall_time_s=cost_s + SIM_CURVE_S, train_time_s=cost_s)
        outcome = self.evaluate(run, ctx, counts)
        outcome.card["rung"] = rung
        outcome.train_time_s = cost_s
        outcome.eval_time_s = run.est_eval_examples / SIM_EVAL_PER_S
        outcome.wall_time_s = cost_s + SIM_CURVE_S + outcome.eval_time_s
        return outcome

    def evaluate(self, run: RunSpec, ctx: RunContext, counts: Mapping[str, int]) -> RunOutcome:
        rows: list[MetricRow] = []
        ev = run.eval_settings
        for split, tasks in ev.splits():
            for task in tasks:
                p = self.score(task, counts, split)
                correct = [_difficulty(task, split, i) < p for i in range(N_EXAMPLES)]
                value = sum(correct) / N_EXAMPLES  # the score as measured on these examples
                path = ctx.run_dir / "eval" / split / f"{task}.predictions.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "w", encoding="utf-8") as fh:
                    for i, ok in enumerate(correct):
                        fh.write(json.dumps({"id": f"{task}-{i}", "correct": ok}) + "\n")
                rows.append(MetricRow(run.run_id, task, split, "accuracy", value, max(0.0, value - 0.05),
                                      min(1.0, value + 0.05), N_EXAMPLES, True, str(path), f"synthetic-{task}-{split}"))
        return RunOutcome(metrics=rows, card={"synthetic": True}, tokens_trained=run.est_tokens,
                          selection_score=selection_score(rows, ev.selection_split))


STEPS = 16  # every synthetic run "trains" 16 steps: a random walk, checkpointed like a real run
# Simulated seconds (what a racing budget counts; no time passes), in the proportions of SmolLM2-135M
# LoRA runs on 2 CPU cores: loading ~10 s, ~0.3 s per training example, a few seconds per curve point,
# ~5 evaluation examples per second.
SIM_SECONDS_PER_EXAMPLE = 0.3
SIM_EVAL_PER_S = 5.0
SIM_OVERHEAD_S = 10.0
SIM_CURVE_S = 5.0
CHECKPOINT = "sim_train.json"


def _train(run: RunSpec, ctx: RunContext, fraction: float, examples: int) -> tuple[float, float, int]:
    """Advance the run's walk from its checkpoint to `fraction` of STEPS; (walk, simulated seconds, step).

    The checkpoint holds the step, the walk so far and how many steps were trained in all, so a
    test can tell that a promoted run continued from it instead of starting over."""
    path = ctx.run_dir / CHECKPOINT
    state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"step": 0, "walk": 0.0, "trained": 0}
    target = max(1, round(fraction * STEPS))
    start = state["step"]
    for step in range(start, target):
        state["walk"] += _gauss(f"{run.run_id}/{step}") / math.sqrt(STEPS)
        state["step"] = step + 1
        state["trained"] += 1
    path.write_text(json.dumps(state), encoding="utf-8")
    seconds = SIM_OVERHEAD_S + max(0, target - start) / STEPS * examples * SIM_SECONDS_PER_EXAMPLE
    return float(state["walk"]), seconds, int(state["step"])


def _gauss(key: str) -> float:
    """A standard normal draw fixed by `key` (Box-Muller on two hash-derived uniforms)."""
    h = hashlib.sha256(key.encode()).digest()
    u1 = (int.from_bytes(h[:8], "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(h[8:16], "big") / 2**64
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def _difficulty(task: str, split: str, i: int) -> float:
    return int(hashlib.sha256(f"{task}/{split}/{i}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def counts_of(run: RunSpec) -> dict[str, int]:
    """Examples per epoch of each ingredient of a run (train split sizes from the built-in estimates)."""
    config = parse_cocktail((run.train or {}).get("cocktail") or {"ingredients": []}, run.run_id) if run.train else None
    if config is None:
        return {}
    available = {t: int((DEFAULT_TASK_ESTIMATES[t].train_examples if t in DEFAULT_TASK_ESTIMATES else 1000) or 0)
                 for t in config.task_ids()}
    return planned_counts(config, available, run.run_id)


DEFAULT = Synthetic(
    peaks={
        "fpb": {"fpb": 0.5, "tfns": 0.3, "general": 0.2},
        "fiqa_sa": {"fiqa_sa": 0.5, "fpb": 0.3, "general": 0.2},
        "tfns": {"tfns": 0.6, "fiqa_sa": 0.2, "general": 0.2},
    },
    best_total=384,
)


def run(run: RunSpec, ctx: RunContext) -> RunOutcome:
    """`--runner fincocktail.search.synthetic:run`: the DEFAULT synthetic objective (fpb, fiqa_sa, tfns, general)."""
    return DEFAULT.run(run, ctx)
