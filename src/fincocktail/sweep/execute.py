"""One run of a sweep: train (if the run trains), evaluate, write the results, record them.

`execute_run` is the worker entry point of every executor. It takes and returns plain data
(JSON-able dicts), so the same function runs in-process, in a process pool and as a Ray task.
What a run *does* is a pluggable run function (`runner`): `real` trains and evaluates through
`fincocktail.training.train` and `fincocktail.evaluation.run_eval`; `simulate` produces
deterministic fake metrics in a moment (to check a sweep file, an executor or a cluster end to
end before spending compute); `module:function` names your own.

Nothing finished is ever redone: a run's folder gets `result.json` (written to a temporary name
and renamed) only once everything else is on disk, and a run that has one is recorded and
skipped. A run killed half-way is resumed: training continues from its last checkpoint
(`resume="if_present"`) and each evaluated (split, task) that already wrote its run card is read back
instead of evaluated again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fincocktail.errors import ConfigError
from fincocktail.evaluation.results import TaskResult, read_metrics
from fincocktail.plumbing.fileio import write_json_atomic
from fincocktail.tasks.prompts import TokenCache
from fincocktail.plumbing.quiet import quiet_libraries
from fincocktail.plumbing.redact import redact
from fincocktail.sweep.spec import RunSpec
from fincocktail.sweep.store import STORE_FILE, MetricRow, ResultsStore, RunOutcome
from fincocktail.plumbing.threads import set_threads, thread_budget

RUNS_DIR = "runs"
RESULT_FILE = "result.json"
RUN_FILE = "run.json"


@dataclass
class RunContext:
    """Where a run writes and what it may use."""

    run_dir: Path
    data_dir: str | None
    attempt: int
    threads: int | None = None
    device: str = "auto"  # models.device name; not part of the run id (speed, not results)


RunFunction = Callable[[RunSpec, RunContext], RunOutcome]


def run_dir_for(out_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(out_dir) / RUNS_DIR / run_id


def rung_file_name(stop_at: float) -> str:
    """The file a run paused at `stop_at` of its steps leaves (its rung's scores), e.g. `rung-0.25.json`."""
    return f"rung-{stop_at:g}.json"


def read_result(run_dir: Path, trust_simulated: bool = True) -> RunOutcome | None:
    """The outcome a finished run left in its folder, if any.

    With `trust_simulated=False` (a real run) a simulated outcome counts as none: its fake
    scores must never stand in for a real run's.
    """
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        outcome = RunOutcome.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, KeyError):
        return None  # unreadable: the run is redone (result.json is written atomically, so this is rare)
    if not trust_simulated and outcome.card.get("simulated"):
        return None
    return outcome


def resolve_runner(runner: str | RunFunction) -> RunFunction:
    if callable(runner):
        return runner
    if runner == "real":
        return real_run
    if runner == "simulate":
        return simulated_run
    if ":" in runner:
        module, name = runner.split(":", 1)
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--runner {runner}: cannot import it ({exc})") from None
        return fn
    raise ConfigError(f"--runner {runner!r}: expected 'real', 'simulate' or 'module:function'")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0] if text else ''}")[:2000]


@dataclass(frozen=True)
class RunResult:
    """What executing one run reports to the driver, which records it in the store.

    Plain fields (the outcome as its JSON form), because it crosses process and Ray boundaries.
    """

    run_id: str
    status: Literal["done", "failed", "paused"]
    skipped: bool = False  # done (or paused at this rung) by an earlier attempt: its file was read back
    outcome: dict[str, Any] | None = None  # RunOutcome.to_json() when done or paused (the card holds the rung)
    error: str | None = None  # one line, redacted, when failed

    @classmethod
    def failed(cls, run_id: str, error: str) -> RunResult:
        return cls(run_id=run_id, status="failed", error=error)

    @classmethod
    def finished(cls, run_id: str, outcome: RunOutcome, skipped: bool = False) -> RunResult:
        return cls(run_id=run_id, status="done", skipped=skipped, outcome=outcome.to_json())


def execute_run(
    run_json: dict[str, Any],
    out_dir: str,
    data_dir: str | None = None,
    runner: str = "real",
    threads: int | None = None,
    use_store: bool = True,
    device: str = "auto",
) -> RunResult:
    """Run one sweep run and say how it ended.

    With `use_store` the worker records its own start, attempt and result in `OUT/results.sqlite`
    (same machine or shared disk); the driver also records the returned outcome, idempotently,
    which is all a remote worker without the store can rely on. `device` is where the run
    trains and evaluates (`models.device`); the run's id and results do not depend on it.
    """
    run = RunSpec.model_validate(run_json)
    run_dir = run_dir_for(out_dir, run.run_id)
    store_path = Path(out_dir) / STORE_FILE
    store = ResultsStore(store_path, create=False) if use_store and store_path.is_file() else None

    rung_file = run_dir / rung_file_name(run.stop_at) if run.stop_at is not None else None
    if rung_file is not None and rung_file.is_file():  # paused at this rung before: read it back
        return RunResult(run.run_id, "paused", skipped=True, outcome=json.loads(rung_file.read_text(encoding="utf-8")))
    done = read_result(run_dir, trust_simulated=runner != "real")
    if done is not None:
        if store is not None:
            store.finish(run.run_id, done)
        return RunResult.finished(run.run_id, done, skipped=True)

    set_threads(threads)
    attempt = store.start_attempt(run.run_id) if store is not None else 1
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / RUN_FILE, run.model_dump(mode="json"), default=str)
    started = time.time()
    try:
        fn = resolve_runner(runner)
        outcome = fn(run, RunContext(run_dir=run_dir, data_dir=data_dir, attempt=attempt, threads=threads, device=device))
    except Exception as exc:  # a failed run must not stop the sweep: record it and go on
        error = _one_line(exc)
        (run_dir / "error.log").write_text(redact(traceback.format_exc()), encoding="utf-8")
        if store is not None:
            store.fail(run.run_id, error, attempt)
        return RunResult.failed(run.run_id, error)
    outcome.wall_time_s = outcome.wall_time_s or round(time.time() - started, 3)
    outcome.run_dir = str(run_dir)
    outcome.card.setdefault("attempt", attempt)
    if rung_file is not None and "rung" in outcome.card:
        write_json_atomic(rung_file, outcome.to_json(), default=str)
        if store is not None:
            store.pause(run.run_id, outcome, attempt)
        return RunResult(run.run_id, "paused", outcome=outcome.to_json())
    write_json_atomic(run_dir / RESULT_FILE, outcome.to_json(), default=str)
    if store is not None:
        store.finish(run.run_id, outcome, attempt)
    return RunResult.finished(run.run_id, outcome)


# --------------------------------------------------------------------------------------------
# Tokenization cache, shared by the runs of a worker process (each run is handed it)


WORKER_TOKENS = TokenCache()  # this process's: the runs a worker executes share it


# --------------------------------------------------------------------------------------------
# The real run: fincocktail.training + fincocktail.evaluation

_BASE_CACHE: dict[tuple[str, str], Any] = {}


def _loaded_model(model: str, adapter: Path | None, dtype: str = "float32", device: str = "auto") -> Any:
    """The model to evaluate, loading each base model once per worker process (in fp32, in RAM);
    a run's adapter is merged into a copy of it (`evaluation.loading.with_adapter`).

    On a GPU the run's copy (merged in fp32 on the CPU) is moved to the GPU and cast there, so
    the GPU holds the model being evaluated, never the cached base as well.
    """
    from fincocktail.evaluation.loading import cast_for_eval, load_for_eval, own_copy, to_device, with_adapter
    from fincocktail.models.device import resolve_device

    where = str(resolve_device(device))
    key = (model, "float32")
    if key not in _BASE_CACHE:
        _BASE_CACHE.clear()  # one base model in memory at a time
        _BASE_CACHE[key] = load_for_eval(model, None, "float32")
    base = _BASE_CACHE[key]
    if where == "cpu":
        if adapter is None:
            return cast_for_eval(base, dtype) if dtype != "float32" else base
        return with_adapter(base, adapter, dtype)
    owned = with_adapter(base, adapter, "float32") if adapter is not None else own_copy(base)
    return cast_for_eval(to_device(owned, where), dtype)


def _metric_rows(results: dict[str, TaskResult], split: str, out: Path) -> list[MetricRow]:
    """The store's rows of one eval split: every metric of every task, the headline with its interval."""
    rows: list[MetricRow] = []
    for task_id, res in results.items():
        interval = res.interval
        sample_sha = res.sample.get("sha256")
        predictions = out / f"{task_id}.predictions.jsonl"
        for name, value in res.metrics.items():
            if value is None:
                continue
            is_head = name == res.metric
            rows.append(
                MetricRow(
                    run_id="", task=task_id, split=split, metric=name, value=float(value),
                    ci_low=interval.low if is_head and interval else None, ci_high=interval.high if is_head and interval else None,
                    n=int(res.n), headline=is_head, predictions=str(predictions) if predictions.is_file() else None,
                    sample_sha256=sample_sha,
                )
            )
    return rows


def _evaluate(run: RunSpec, ctx: RunContext, adapter: Path | None, tokens: TokenCache | None = None) -> tuple[list[MetricRow], float]:
    from fincocktail.evaluation.runner import run_eval

    ev = run.eval_settings
    api = run.kind == "api"
    rows: list[MetricRow] = []
    seconds = 0.0
    loaded = None
    for split, tasks in ev.splits():
        for task_id in tasks:
            out = ctx.run_dir / "eval" / split / task_id
            if not (out / "run_card.json").is_file():
                if not api and loaded is None:
                    loaded = _loaded_model(run.model, adapter, ev.dtype, ctx.device)
                config = ev.eval_config(
                    split, task_id, model=run.model, adapter=str(adapter) if adapter else None, device=ctx.device,
                    out=out, data_dir=ctx.data_dir, base_url=(run.api or {}).get("base_url"),
                    # an API run sends `concurrency` requests at once and has no tokenizer to cut prompts with
                    **({"batch_size": (run.api or {}).get("concurrency") or ev.batch_size, "max_prompt_tokens": None} if api else {}),
                )
                t0 = time.perf_counter()
                run_eval(config, loaded=loaded, tokens=tokens)
                seconds += time.perf_counter() - t0
            rows.extend(_metric_rows(read_metrics(out / "metrics.json"), split, out))
    return [MetricRow(**{**r.__dict__, "run_id": run.run_id}) for r in rows], seconds


def real_run(run: RunSpec, ctx: RunContext) -> RunOutcome:
    """Train (resuming from the last checkpoint if the run was interrupted), then evaluate."""
    import torch  # noqa: F401  (loaded before the budget is set, so that it applies to torch's pool)

    quiet_libraries()
    with thread_budget(ctx.threads):  # an in-process run leaves the caller's setting as it was
        return _real_run(run, ctx, WORKER_TOKENS)


def _real_run(run: RunSpec, ctx: RunContext, tokens: TokenCache) -> RunOutcome:
    started = time.time()
    adapter: Path | None = None
    outcome = RunOutcome()
    card: dict[str, Any] = {"run_id": run.run_id, "kind": run.kind, "model": run.model, "label": run.label}
    if run.train is not None:
        from fincocktail.training.config import TrainConfig
        from fincocktail.training.trainer import train

        # The sweep's device, not the run config's: it is outside the run id (and the resume fingerprint)
        config = TrainConfig.model_validate({**run.train, "data_dir": ctx.data_dir, "device": ctx.device})
        train_dir = ctx.run_dir / "train"
        t0 = time.time()
        result = train(config, train_dir, resume="if_present", progress=False, tokens=tokens, stop_at=run.stop_at)
        outcome.train_time_s = round(time.time() - t0, 3)
        outcome.tokens_trained = int(result.tokens_seen)
        outcome.peak_rss_mb = float(result.peak_rss_mb)
        if result.paused:
            outcome.card = {**card, "rung": rung_scores(train_dir, run.stop_at, result.steps, result.total_steps)}
            outcome.wall_time_s = round(time.time() - started, 3)
            return outcome
        if config.eval_every:  # the curve's end: what a racing search reads as the run's full-length score
            card["rung"] = rung_scores(train_dir, 1.0, result.steps, result.steps)
        adapter = result.adapter_dir
        card["train"] = {
            "run_dir": str(train_dir),
            "adapter_dir": str(adapter) if adapter else None,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "tokens_seen": result.tokens_seen,
            "resumed_from": result.resumed_from,
            "tokens_per_s": result.tokens_per_s,
        }
    rows, eval_s = _evaluate(run, ctx, adapter, tokens)
    outcome.metrics = rows
    outcome.eval_time_s = round(eval_s, 3)
    try:
        import resource

        outcome.peak_rss_mb = max(outcome.peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    except Exception:  # pragma: no cover - non-POSIX
        pass
    outcome.selection_score = selection_score(rows, run.eval_settings.selection_split)
    outcome.wall_time_s = round(time.time() - started, 3)
    outcome.card = card
    return outcome


def rung_scores(train_dir: Path, fraction: float | None, step: int, total_steps: int | None) -> dict[str, Any]:
    """What a run paused at a racing rung reports: its learning-curve point at that step (validation likelihood)."""
    from fincocktail.training.curves import read_curves

    point = next((p for p in read_curves(train_dir / "train_log.jsonl") if p.step == step), None)
    if point is None:
        raise ConfigError(f"{train_dir}: no learning-curve point at step {step}: a racing run needs training.eval_every")
    return {"fraction": fraction, "step": step, "total_steps": total_steps, "scores": dict(point.values),
            "metric": dict(point.metrics)}


def selection_score(rows: list[MetricRow], split: str | None) -> float | None:
    """Mean headline metric over the selection split's tasks (what picks a model among repeats)."""
    if not split:
        return None
    values = [r.value for r in rows if r.split == split and r.headline]
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------------------------
# The simulated run: for checking sweeps, executors and clusters without compute


def simulated_run(run: RunSpec, ctx: RunContext) -> RunOutcome:
    """Deterministic fake metrics from the run's hash, after `FINCOCKTAIL_SIMULATE_SECONDS` per run.

    It checkpoints like training does (a step counter in the run folder, 10 steps per run), so
    an interrupted simulated run resumes where it stopped; the card says from which step.
    """
    seconds = float(os.environ.get("FINCOCKTAIL_SIMULATE_SECONDS", "0"))
    steps = 10
    ckpt = ctx.run_dir / "sim_checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.is_file() else 0
    for step in range(start, steps):
        time.sleep(seconds / steps)
        write_json_atomic(ckpt, {"step": step + 1}, default=str)
    rows: list[MetricRow] = []
    ev = run.eval_settings
    for split, tasks in ev.splits():
        for task_id in tasks:
            digest = hashlib.sha256(f"{run.config_sha256}/{split}/{task_id}".encode()).hexdigest()
            value = (int(digest[:8], 16) % 1000) / 1000
            n = ev.limit(task_id, test=split == ev.split) or 100
            rows.append(
                MetricRow(run.run_id, task_id, split, "accuracy", value, max(0.0, value - 0.05), min(1.0, value + 0.05), n, True)
            )
    return RunOutcome(
        metrics=rows,
        card={"simulated": True, "resumed_from_step": start, "pid": os.getpid()},
        tokens_trained=run.est_tokens,
        selection_score=selection_score(rows, ev.selection_split),
    )


__all__ = ["RunContext", "RunFunction", "execute_run", "real_run", "resolve_runner", "simulated_run"]
