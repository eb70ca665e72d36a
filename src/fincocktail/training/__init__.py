"""Training: run config, batching, the loop. `train` is imported lazily (it pulls in torch)."""

from __future__ import annotations

from typing import Any

from fincocktail.training.config import (
    LoraSettings,
    TrainConfig,
    load_train_config,
    parse_train_config,
)

__all__ = ["LoraSettings", "TrainConfig", "TrainResult", "load_train_config", "parse_train_config", "train"]


def __getattr__(name: str) -> Any:
    if name in {"train", "TrainResult"}:
        from fincocktail.training import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
