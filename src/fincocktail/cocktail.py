"""Cocktails: which tasks go into a training mix, how much of each, and what was actually drawn.

A cocktail is a YAML file, validated here with pydantic (`extra="forbid"`, so a typo is an
error and never a silently ignored key). Building it turns the recipe into a concrete list of
training examples per epoch and a manifest that says exactly what was drawn (counts per source
and epoch, token counts, sha256 of the source files), so a result can always be traced back to
its data. Training always reads the tasks' `train` split; nothing here ever touches `test`.

Sampling is reproducible from the seed alone: each (task, epoch) gets its own `random.Random`
seeded with a string, which Python hashes the same way on every machine.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from fincocktail.errors import ConfigError
from fincocktail.plumbing.fileio import (
    load_yaml,
    sha256_file,
    validate_mapping,
    write_json_atomic,
)
from fincocktail.tasks.prompts import TokenCache
from fincocktail.tasks.base import Example, Task

TRAIN_SPLIT = "train"
MANIFEST_VERSION = 1
_WEIGHT_TOLERANCE = 1e-6
_SHORTHAND = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\*\s*([0-9]*\.?[0-9]+)\s*)?$")


class Ingredient(BaseModel):
    """One task in the mix. Give at most one of `count`, `weight`, `replicate` (default: replicate 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str
    count: int | None = Field(default=None, ge=0, description="absolute number of examples per epoch")
    weight: float | None = Field(default=None, ge=0, le=1, description="share of the cocktail's `total`")
    replicate: float | None = Field(default=None, ge=0, description="FinGPT's `name*N`: copies of the train split")
    cap: int | None = Field(default=None, ge=0, description="at most this many examples per epoch")
    repeat: bool = Field(default=False, description="allow a count/weight above the unique examples available")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _SHORTHAND.match(value)
            if not match:
                raise ValueError(f"expected 'task' or 'task*N' (e.g. 'fpb*2'), got {value!r}")
            task, factor = match.groups()
            return {"task": task, "replicate": float(factor) if factor else None}
        return value

    @model_validator(mode="after")
    def _check(self) -> Ingredient:
        given = [name for name in ("count", "weight", "replicate") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of count, weight, replicate (got {', '.join(given)})")
        return self


class Booster(BaseModel):
    """The general-instruction or math ingredient, sized as a fraction of the task data."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fraction: float = Field(ge=0, description="examples per epoch = fraction x task examples per epoch")
    task: str
    cap: int | None = Field(default=None, ge=0)
    repeat: bool = False


class Decontaminate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n: int = Field(default=13, ge=1, description="n-gram length, in normalised words")
    drop: bool = Field(default=False, description="remove training examples that overlap any eval split")
    max_drop_fraction: float = Field(
        default=0.5, ge=0, le=1,
        description="with drop: stop the run when an ingredient would lose more than this share of its rows",
    )

    @model_serializer(mode="wrap")
    def _without_the_default_limit(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump without `max_drop_fraction` at its default: configs (and so sweep run ids and resume
        fingerprints) written before the limit existed dump exactly as they did."""
        data = handler(self)
        if data.get("max_drop_fraction") == 0.5:
            del data["max_drop_fraction"]
        return data


class CocktailConfig(BaseModel):
    """A training mix. See configs/cocktails/*.yaml for examples."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = "cocktail"
    seed: int = 0
    ingredients: list[Ingredient] = Field(min_length=1)
    total: int | None = Field(default=None, ge=0, description="examples per epoch the weighted ingredients share")
    general: Booster | None = None
    math: Booster | None = None
    resample_each_epoch: bool = Field(default=True, description="a fresh draw each epoch for up/down-sampled tasks")
    decontaminate: Decontaminate = Decontaminate()

    @model_validator(mode="before")
    @classmethod
    def _booster_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = dict(value)
            for key, default_task in (("general", "general"), ("math", "gsm8k")):
                item = value.get(key)
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    value[key] = {"fraction": item, "task": default_task}
                elif isinstance(item, dict) and "task" not in item:
                    value[key] = {**item, "task": default_task}
        return value

    @model_validator(mode="after")
    def _check(self) -> CocktailConfig:
        seen: dict[str, str] = {}
        for i, ing in enumerate(self.ingredients):
            where = f"ingredients.{i}.task"
            if ing.task in seen:
                raise ValueError(f"{where}: task {ing.task!r} already listed at {seen[ing.task]}")
            seen[ing.task] = where
        for key in ("general", "math"):
            booster = getattr(self, key)
            if booster is not None and booster.task in seen:
                raise ValueError(f"{key}.task: task {booster.task!r} already listed at {seen[booster.task]}")
            if booster is not None:
                seen[booster.task] = f"{key}.task"
        weighted = [(i, ing.weight) for i, ing in enumerate(self.ingredients) if ing.weight is not None]
        if weighted:
            total_weight = sum(w for _, w in weighted)
            if abs(total_weight - 1.0) > _WEIGHT_TOLERANCE:
                listed = ", ".join(f"ingredients.{i}.weight={w:g}" for i, w in weighted)
                raise ValueError(f"weights must add up to 1, got {total_weight:g} ({listed})")
            if self.total is None:
                raise ValueError("total: required when ingredients have a weight (weights are shares of total)")
        return self

    def task_ids(self) -> list[str]:
        ids = [ing.task for ing in self.ingredients]
        ids += [b.task for b in (self.general, self.math) if b is not None]
        return ids


def parse_cocktail(data: Any, source: str = "cocktail") -> CocktailConfig:
    """Validate a cocktail given as a mapping; errors name `source` and the field."""
    return validate_mapping(CocktailConfig, data, source, "'ingredients'")


def load_cocktail(path: str | os.PathLike) -> CocktailConfig:
    path = Path(path)
    return parse_cocktail(load_yaml(path), source=str(path))


# --------------------------------------------------------------------------------------------
# Building


TaskResolver = Callable[[str], Task]
SourcesHook = Callable[[Mapping[str, list[Example]], Mapping[str, Task]], Mapping[str, set[str]] | None]


def _default_resolver(task_id: str) -> Task:
    from fincocktail.tasks.registry import get_task

    return get_task(task_id)


def _field_of(config: CocktailConfig, task_id: str) -> str:
    for i, ing in enumerate(config.ingredients):
        if ing.task == task_id:
            return f"ingredients.{i}"
    for key in ("general", "math"):
        booster = getattr(config, key)
        if booster is not None and booster.task == task_id:
            return key
    return task_id


def resolve_tasks(config: CocktailConfig, resolver: TaskResolver | None = None, source: str = "cocktail") -> dict[str, Task]:
    """The Task object of every ingredient; unknown or eval-only tasks are errors naming the field."""
    resolver = resolver or _default_resolver
    out: dict[str, Task] = {}
    for task_id in config.task_ids():
        where = f"{source}: {_field_of(config, task_id)}.task"
        try:
            task = resolver(task_id)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{where}: task {task_id!r} is registered but cannot be loaded ({exc})") from None
        if not task.trainable:
            raise ConfigError(f"{where}: task {task_id!r} is evaluation-only (it has no train split)")
        out[task_id] = task
    return out


def load_sources(tasks: Mapping[str, Task], data_dir: Path) -> dict[str, list[Example]]:
    """The train split of every ingredient task."""
    return {task_id: list(task.load(TRAIN_SPLIT, data_dir)) for task_id, task in tasks.items()}


def source_file_hashes(task: Task, data_dir: Path) -> dict[str, str] | None:
    """sha256 of the files the task's train split read, if the task says which (`source_files`).

    None when it names none (a hub source, or a task that does not say). Tasks built on `Task`
    take `split`, so files only other splits read (GSM8K's test.jsonl) are not listed.
    """
    lister = getattr(task, "source_files", None)
    if lister is None:
        return None
    if not callable(lister):
        files = lister
    elif "split" in inspect.signature(lister).parameters:
        files = lister(data_dir, split=TRAIN_SPLIT)
    else:
        files = lister(data_dir)
    if not files:
        return None
    out: dict[str, str] = {}
    for item in files:
        path = Path(item)
        if not path.is_absolute():
            path = data_dir / path
        try:
            name = str(path.resolve().relative_to(Path(data_dir).resolve()))
        except ValueError:
            name = str(path)
        out[name] = sha256_file(path)
    return out


@dataclass
class SourcePlan:
    """How many examples a source contributes per epoch, and how they are drawn."""

    task_id: str
    where: str  # the config field it came from, for error messages
    available: int
    target: int  # examples per epoch after cap


@dataclass
class CocktailData:
    """A built cocktail: the examples of each source and, per epoch, which go in (source, index)."""

    config: CocktailConfig
    tasks: dict[str, Task]
    sources: dict[str, list[Example]]
    epochs: list[list[tuple[str, int]]]
    dropped: dict[str, list[str]] = field(default_factory=dict)
    encodings: dict[tuple[str, int], tuple[list[int], list[int]]] = field(default_factory=dict)
    file_hashes: dict[str, dict[str, str] | None] = field(default_factory=dict)

    def example(self, item: tuple[str, int]) -> Example:
        return self.sources[item[0]][item[1]]

    def encode(self, tokenizer: Any, style: str = "instruction", tokens: TokenCache | None = None) -> None:
        """Tokenize every example used in any epoch once (replicas share the encoding)."""
        from fincocktail.tasks.prompts import encoder_for, render

        encode = encoder_for(tokens)
        needed = sorted({item for epoch in self.epochs for item in epoch} - set(self.encodings))
        for task_id, idx in needed:
            pair = render(self.tasks[task_id], self.sources[task_id][idx], style=style, tokenizer=tokenizer)  # type: ignore[arg-type]
            self.encodings[(task_id, idx)] = encode(tokenizer, pair)

    def manifest(self) -> dict[str, Any]:
        per_source: dict[str, Any] = {}
        task_order = list(self.sources)
        for task_id in task_order:
            counts = [sum(1 for s, _ in epoch if s == task_id) for epoch in self.epochs]
            entry: dict[str, Any] = {
                "task_version": getattr(self.tasks[task_id], "version", None),
                "split": TRAIN_SPLIT,
                "available": len(self.sources[task_id]),
                "dropped_contaminated": len(self.dropped.get(task_id, [])),
                "examples_per_epoch": counts,
                "unique_examples_per_epoch": [
                    len({i for s, i in epoch if s == task_id}) for epoch in self.epochs
                ],
                "files_sha256": self.file_hashes.get(task_id),
            }
            if self.encodings:
                prompt_tokens = []
                target_tokens = []
                for epoch in self.epochs:
                    p = t = 0
                    for s, i in epoch:
                        if s == task_id and (s, i) in self.encodings:
                            enc = self.encodings[(s, i)]
                            p += len(enc[0])
                            t += len(enc[1])
                    prompt_tokens.append(p)
                    target_tokens.append(t)
                entry["prompt_tokens_per_epoch"] = prompt_tokens
                entry["target_tokens_per_epoch"] = target_tokens
                entry["tokens_per_epoch"] = [p + t for p, t in zip(prompt_tokens, target_tokens)]
            per_source[task_id] = entry
        return {
            "manifest_version": MANIFEST_VERSION,
            "name": self.config.name,
            "seed": self.config.seed,
            "n_epochs": len(self.epochs),
            "config": self.config.model_dump(mode="json"),
            "examples_per_epoch": [len(epoch) for epoch in self.epochs],
            "epoch_sha256": [_epoch_digest(self, epoch) for epoch in self.epochs],
            "sources": per_source,
        }


def _epoch_digest(data: CocktailData, epoch: Sequence[tuple[str, int]]) -> str:
    """A fingerprint of the exact multiset of example ids drawn in an epoch."""
    ids = sorted(f"{s}\x00{data.sources[s][i].id}" for s, i in epoch)
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def _rng(seed: int, task_id: str, epoch: int) -> random.Random:
    return random.Random(f"fincocktail:{seed}:{task_id}:{epoch}")


def _draw(n_available: int, target: int, rng: random.Random) -> list[int]:
    """`target` indices: whole copies of range(n), then a without-replacement draw for the rest."""
    if n_available == 0 or target == 0:
        return []
    full, rest = divmod(target, n_available)
    out = list(range(n_available)) * full
    out += sorted(rng.sample(range(n_available), rest))
    return out


def _plan(config: CocktailConfig, available: Mapping[str, int], source: str, strict: bool = True) -> list[SourcePlan]:
    plans: list[SourcePlan] = []
    for i, ing in enumerate(config.ingredients):
        where = f"{source}: ingredients.{i}"
        n = available[ing.task]
        if ing.count is not None or ing.weight is not None:
            if ing.count is not None:
                target, key = ing.count, "count"
            else:
                target, key = int(round(ing.weight * (config.total or 0))), "weight"  # type: ignore[operator]
            if target > n and not ing.repeat and strict:
                raise ConfigError(
                    f"{where}.{key}: asks for {target} examples of {ing.task!r} but its train split has {n} "
                    "unique ones; lower it, set repeat: true, or use replicate"
                )
        else:
            factor = 1.0 if ing.replicate is None else ing.replicate
            target = int(round(factor * n))
        if ing.cap is not None:
            target = min(target, ing.cap)
        if target > 0 and n == 0 and strict:
            raise ConfigError(f"{where}.task: task {ing.task!r} has no train examples left")
        plans.append(SourcePlan(ing.task, f"ingredients.{i}", n, target))
    task_total = sum(p.target for p in plans)
    for key in ("general", "math"):
        booster: Booster | None = getattr(config, key)
        if booster is None:
            continue
        n = available[booster.task]
        target = int(round(booster.fraction * task_total))
        if booster.cap is not None:
            target = min(target, booster.cap)
        if target > n and not booster.repeat and strict:
            raise ConfigError(
                f"{source}: {key}.fraction: {booster.fraction:g} of {task_total} task examples is {target} "
                f"examples of {booster.task!r} but its train split has {n}; lower it or set repeat: true"
            )
        plans.append(SourcePlan(booster.task, key, n, target))
    return plans


def planned_counts(config: CocktailConfig, available: Mapping[str, int], source: str = "cocktail", strict: bool = True
                   ) -> dict[str, int]:
    """Examples per epoch of each ingredient, given how many train examples each task has.

    The same arithmetic as training's draw (weights, replicates, caps, booster fractions), without
    reading data: `mix search` describes every run it learns from by these counts, and the sweep's
    estimates use them (`strict=False`: a count above the split is reported, not refused).
    """
    return {p.task_id: p.target for p in _plan(config, available, source, strict)}


def build_cocktail(
    config: CocktailConfig,
    sources: Mapping[str, Sequence[Example]],
    tasks: Mapping[str, Task],
    epochs: int = 1,
    drop_ids: Mapping[str, set[str]] | None = None,
    source: str = "cocktail",
) -> CocktailData:
    """Draw the examples of every epoch. `sources` holds each task's train split (see `load_sources`).

    `drop_ids` (task id -> example ids) removes contaminated examples before anything is drawn.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    kept: dict[str, list[Example]] = {}
    dropped: dict[str, list[str]] = {}
    for task_id in config.task_ids():
        examples = list(sources[task_id])
        bad = (drop_ids or {}).get(task_id, set())
        if bad:
            dropped[task_id] = [ex.id for ex in examples if ex.id in bad]
            examples = [ex for ex in examples if ex.id not in bad]
        kept[task_id] = examples
    plans = _plan(config, {k: len(v) for k, v in kept.items()}, source)
    per_epoch: list[list[tuple[str, int]]] = []
    for epoch in range(epochs):
        items: list[tuple[str, int]] = []
        draw_epoch = epoch if config.resample_each_epoch else 0
        for plan in plans:
            idx = _draw(plan.available, plan.target, _rng(config.seed, plan.task_id, draw_epoch))
            items.extend((plan.task_id, i) for i in idx)
        per_epoch.append(items)
    return CocktailData(
        config=config,
        tasks={k: tasks[k] for k in kept},
        sources=kept,
        epochs=per_epoch,
        dropped=dropped,
    )


def prepare_cocktail(
    config: CocktailConfig,
    data_dir: Path,
    epochs: int = 1,
    resolver: TaskResolver | None = None,
    tokenizer: Any | None = None,
    style: str = "instruction",
    drop_ids: Mapping[str, set[str]] | None = None,
    source: str = "cocktail",
    *,
    tasks: Mapping[str, Task] | None = None,
    on_sources: SourcesHook | None = None,
    tokens: TokenCache | None = None,
) -> CocktailData:
    """Resolve the tasks, read their train splits, draw, hash source files, optionally tokenize.

    `tasks` skips the resolving when the caller already did it (training resolves first, so an
    unknown task fails before the run folder is touched). `on_sources` sees the train splits
    once read, before anything is drawn, and what it returns replaces `drop_ids`: training runs
    the contamination check there, because the check needs the splits and the draw its result.
    `tokens` tokenizes through a cache the caller keeps across runs.
    """
    tasks = dict(tasks) if tasks is not None else resolve_tasks(config, resolver, source)
    sources = load_sources(tasks, data_dir)
    if on_sources is not None:
        drop_ids = on_sources(sources, tasks)
    data = build_cocktail(config, sources, tasks, epochs=epochs, drop_ids=drop_ids, source=source)
    data.file_hashes = {task_id: source_file_hashes(task, data_dir) for task_id, task in tasks.items()}
    if tokenizer is not None:
        data.encode(tokenizer, style, tokens)
    return data


def write_manifest(data: CocktailData, path: Path) -> dict[str, Any]:
    manifest = data.manifest()
    write_json_atomic(path, manifest)
    return manifest


__all__ = [
    "Booster",
    "CocktailConfig",
    "CocktailData",
    "Decontaminate",
    "Ingredient",
    "build_cocktail",
    "load_cocktail",
    "load_sources",
    "parse_cocktail",
    "prepare_cocktail",
    "resolve_tasks",
    "source_file_hashes",
    "write_manifest",
]
