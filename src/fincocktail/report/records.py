"""What the report reads: one row per run and one per (run, task, metric).

These are deliberately plain so the report does not depend on how results are stored; the
results store hands them over through `from_store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

RunKind = Literal["base", "api", "single", "cocktail", "mixture"]  # mixture: proposed by `mix search`


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

    @property
    def cocktail_name(self) -> str:
        """A short, stable label for the training mixture ("fpb+tfns +general")."""
        if self.kind in ("base", "api"):
            return f"{self.kind}: {self.model}"
        name = "+".join(self.train_tasks)
        if self.general:
            name += f" +general{self.general:g}"
        if self.math:
            name += f" +math{self.math:g}"
        return name

    @property
    def recipe(self) -> tuple:
        """Everything but the seed: runs with the same recipe are repeats. Proposed mixtures that share their
        tasks and booster fractions still differ in counts, so each mixture run is its own recipe."""
        recipe = (self.kind, self.model, self.train_tasks, self.general, self.math)
        return recipe + (self.run_id,) if self.kind == "mixture" else recipe


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
