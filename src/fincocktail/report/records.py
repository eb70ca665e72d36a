"""What the report reads: one row per run and one per (run, task, metric).

These are deliberately plain so the report does not depend on how results are stored:
`from_store` builds them from the rows the results store returns (the store knows nothing of
the report).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fincocktail.sweep.spec import MATCHED_SUFFIX, RunKind

if TYPE_CHECKING:
    from fincocktail.sweep.store import ResultsStore



UNTRAINED_KINDS = ("base", "api")  # zero-shot rows: nothing trained, so no cocktail and no seed


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    kind: RunKind
    model: str
    train_tasks: tuple[str, ...] = ()  # the financial tasks trained on (empty for base / api)
    general: float = 0.0  # fraction of general-instruction data added
    math: float = 0.0  # fraction of math data added
    seed: int = 0
    tokens_trained: int = 0
    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0
    # kind "matched" (design.matched_steps): the label of the cocktail whose optimizer steps this
    # single-task run matches, e.g. "fpb+fiqa_sa+tfns"; None for every other run
    matched_to: str | None = None
    run_dir: Path | None = None  # the run's folder (its train/train_log.jsonl holds the learning curves)
    # kind "mixture": what its seeds share (a hash of its training config without the seed); None elsewhere
    mixture_key: str | None = None

    @property
    def steps_matched(self) -> bool:
        """Whether this is a single task trained for a cocktail's steps (not the one-epoch single)."""
        return self.matched_to is not None

    @property
    def cocktail_name(self) -> str:
        """A short, stable label for the training mixture ("fpb+tfns +general"); a matched-steps
        run says so ("fpb (matched steps)"), so it never reads as the one-epoch single."""
        if self.kind in UNTRAINED_KINDS:
            return f"{self.kind}: {self.model}"
        name = "+".join(self.train_tasks)
        if self.general:
            name += f" +general{self.general:g}"
        if self.math:
            name += f" +math{self.math:g}"
        return name + (MATCHED_SUFFIX if self.kind == "matched" else "")

    @property
    def recipe(self) -> tuple:
        """Everything but the seed: runs with the same recipe are repeats. Proposed mixtures that share their
        tasks and booster fractions still differ in counts (and a raced one in its schedule), so a mixture's
        recipe is its training config without the seed: a search's replicates of its winner are its repeats."""
        recipe = (self.kind, self.model, self.train_tasks, self.general, self.math)
        return recipe + (self.mixture_key or self.run_id,) if self.kind == "mixture" else recipe


@dataclass(frozen=True)
class MetricRecord:
    run_id: str
    task: str
    split: str  # "validation" or "test"
    metric: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    predictions: Path | None = None  # JSONL with per-example `id` and `correct`
    sample_sha256: str | None = None  # which rows were scored


@dataclass
class ReportData:
    runs: list[RunRecord]
    metrics: list[MetricRecord]
    title: str = "fincocktail report"
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> task -> score (0-1)
    results_dir: Path | None = None  # the sweep's folder, when read from one (mix search summaries live there)

    def run(self, run_id: str) -> RunRecord:
        return next(r for r in self.runs if r.run_id == run_id)


def mixture_key(config: dict) -> str:
    """What seeds of one proposed mixture share: its training config (counts, schedule, ...) without the seed."""
    train = dict(config.get("train") or {})
    train.pop("seed", None)
    if isinstance(train.get("cocktail"), dict):
        train["cocktail"] = {k: v for k, v in train["cocktail"].items() if k != "seed"}
    return hashlib.sha256(json.dumps(train, sort_keys=True, default=str).encode()).hexdigest()[:16]


def from_store(store: "ResultsStore", split: str | None = None, title: str | None = None) -> ReportData:
    """The finished runs of a results store and their headline metrics.

    Refuses (`SampleMismatch`) a set in which one task and split was scored on two samples.
    """
    from fincocktail.sweep.store import check_same_samples

    runs = store.runs(status="done")
    done = {r.run_id for r in runs}
    records = [
        RunRecord(
            run_id=r.run_id, kind=r.kind, model=r.model, train_tasks=r.train_tasks,  # type: ignore[arg-type]
            general=r.general, math=r.math, seed=r.seed, tokens_trained=r.tokens_trained,
            wall_time_s=r.wall_time_s or 0.0, peak_rss_mb=r.peak_rss_mb, matched_to=r.config.get("matched_to"),
            run_dir=Path(r.run_dir) if r.run_dir else None,
            mixture_key=mixture_key(r.config) if r.kind == "mixture" else None,
        )
        for r in runs
    ]
    rows = [m for m in store.metrics(split=split, headline_only=True) if m.run_id in done]
    check_same_samples(rows, store.path)
    metrics = [
        MetricRecord(
            run_id=m.run_id, task=m.task, split=m.split, metric=m.metric, value=m.value, ci_low=m.ci_low,
            ci_high=m.ci_high, n=m.n, predictions=Path(m.predictions) if m.predictions else None,
            sample_sha256=m.sample_sha256,
        )
        for m in rows
    ]
    return ReportData(runs=records, metrics=metrics, **({"title": title} if title else {}))
