"""The run card (`run_card.json`): what a run is, how far it got, and what it produced.

It is written when training starts (`running`), when it stops on a non-finite loss or a full
disk (`failed`) and when it ends (`complete`). A later process reads it back to refuse a resume with a changed
config and to return the result of a run that is already complete without training again, so
`TrainResult` and the card carry the same values.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.fileio import write_json_atomic
from fincocktail.plumbing.provenance import provenance
from fincocktail.training.config import RESUMABLE_CHANGES, TrainConfig

RUN_CARD = "run_card.json"


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path | None  # the LoRA adapter (or the full model folder for full fine-tuning)
    tokens_seen: int
    wall_time_s: float
    peak_rss_mb: float
    final_loss: float | None
    steps: int = 0
    merged_dir: Path | None = None
    resumed_from: str | None = None  # the checkpoint this process continued from (`step-N`)
    tokens_per_s: float | None = None  # real tokens per second of this process's training
    paused: bool = False  # stopped at `train(stop_at=...)`: a checkpoint, no adapter
    total_steps: int | None = None


class TrainingDiverged(FincocktailError):
    """The loss or the weights went non-finite: the run stops and is marked failed."""


class RunCard:
    """The card of one run: what stays fixed from start to end, written with a status each time."""

    def __init__(
        self, config: TrainConfig, run_dir: Path, manifest: dict[str, Any], report: Any, started: float, fingerprint: str
    ) -> None:
        self.path = run_dir / RUN_CARD
        self.config, self.run_dir, self.manifest, self.report = config, run_dir, manifest, report
        self.started, self.fingerprint = started, fingerprint

    def content(self, status: str) -> dict[str, Any]:
        versions = provenance()
        return {
            "status": status,
            "config_fingerprint": self.fingerprint,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "run_dir": str(self.run_dir),
            "config": self.config.model_dump(mode="json"),
            **versions,
            "versions": versions["library_versions"],  # the key training cards had first; model cards read it
            "data_manifest": self.manifest,
            "contamination": self.report.to_json() if self.report is not None else None,
        }

    def write(self, status: str, **fields: Any) -> None:
        write_json_atomic(self.path, {**self.content(status), **fields})

    def fail(self, step: int, what: str, lr: float) -> None:
        """Mark the run failed (never complete) and stop with one line that says what to change."""
        message = (
            f"{self.run_dir}: training diverged at step {step}: {what} (lr {lr:g}); the run is marked failed and no adapter "
            "was written; lower lr or set max_grad_norm, and start a new run in another --out"
        )
        self.write("failed", error=message, failed_at_step=step)
        raise TrainingDiverged(message)


def read_card(path: Path) -> dict[str, Any] | None:
    """The run card, None when there is none; an unreadable one is a one-line error, not a traceback."""
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FincocktailError(f"{path}: unreadable run card ({exc}); move the run folder away and start a new run") from None
    if not isinstance(card, dict):
        raise FincocktailError(f"{path}: not a run card (expected a JSON object); move the run folder away and start a new run")
    return card


def result_from_card(run_dir: Path, card: dict[str, Any]) -> TrainResult:
    """The result of a run an earlier process completed, so asking again costs no training."""
    return TrainResult(
        run_dir=run_dir,
        adapter_dir=run_dir / card["adapter_dir"] if card.get("adapter_dir") else None,
        tokens_seen=card.get("tokens_seen", 0),
        wall_time_s=card.get("wall_time_s", 0.0),
        peak_rss_mb=card.get("peak_rss_mb", 0.0),
        final_loss=card.get("final_loss"),
        steps=card.get("steps", 0),
        merged_dir=run_dir / card["merged_dir"] if card.get("merged_dir") else None,
        resumed_from=card.get("resumed_from"),
        tokens_per_s=card.get("tokens_per_s"),
    )


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """`{"lora": {"r": 8}}` as `{"lora.r": 8}`: a refused resume names fields the way --set does."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_changes(saved: dict[str, Any] | None, config: TrainConfig) -> list[str]:
    """`field: old -> new` for each result-changing field that differs from the saved config."""
    if not isinstance(saved, dict):
        return []
    old = _flat({k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES})
    new = _flat(config.model_dump(mode="json", exclude=RESUMABLE_CHANGES))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_same_config(run_dir: Path, saved_fingerprint: str | None, saved_config: dict[str, Any] | None, config: TrainConfig, fingerprint: str) -> None:
    """Refuse to resume (or to report complete) a run whose result-changing config changed."""
    changes = config_changes(saved_config, config)
    if saved_fingerprint is not None and saved_fingerprint != fingerprint and not changes:
        changes = ["the cocktail's content"]
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise ConfigError(
            f"{run_dir}: the config differs from the one this run was started with ({shown}); "
            "resume with the same config (see run_card.json) or start a new run in another --out"
        )


__all__ = [
    "RUN_CARD",
    "RunCard",
    "TrainResult",
    "TrainingDiverged",
    "check_same_config",
    "config_changes",
    "read_card",
    "result_from_card",
]
