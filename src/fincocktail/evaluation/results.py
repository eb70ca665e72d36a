"""One task's evaluation result as the metrics files hold it.

Its own module because the runner writes it and the judge rewrites it with its grades; neither
should import the other for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fincocktail.evaluation.bootstrap import Interval


@dataclass
class TaskResult:
    task: str
    version: str
    mode: str
    n: int
    metric: str
    metrics: dict[str, float]
    interval: Interval | None
    parse_failure_rate: float
    ties: int
    examples_per_s: float
    tokens_per_s: float
    seconds: float
    demo_ids: list[str] = field(default_factory=list)
    rescored: int = 0  # choice predictions re-checked in fp32 (dtype auto on bf16 hardware)
    truncated_prompts: int = 0  # prompts cut to max_prompt_tokens (from the left)
    sample: dict[str, Any] = field(default_factory=dict)  # Sample.describe(): method, seed, n, population, sha256



def result_json(r: TaskResult) -> dict[str, Any]:
    d = asdict(r)
    d["interval"] = asdict(r.interval) if r.interval else None
    return d
