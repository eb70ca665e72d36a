"""Executors: where the runs of a sweep execute. `local` (this machine) and `ray` (a cluster).

Both hand each run to `execute.execute_run` as plain data and get plain data back, so the same
sweep gives the same results on either. The driver (`run_sweep`) owns the bookkeeping: it
registers the plan in the results store, skips finished runs, picks up results a killed sweep
wrote to disk but never recorded, shows progress, and records every outcome it receives
(workers on the same machine record their own too; both writes are idempotent).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.fileio import FolderLock, lock_held
from fincocktail.models.device import check_device, gpu_count, visible_gpus, wants_gpu
from fincocktail.plumbing.redact import redact
from fincocktail.sweep.execute import RunResult, execute_run, read_result, run_dir_for
from fincocktail.sweep.spec import Plan, RunSpec, canonical_json
from fincocktail.sweep.store import SWEEP_LOCK, ResultsStore, RunOutcome
from fincocktail.plumbing.threads import set_threads


Event = Callable[[str, RunSpec, "RunResult | None"], None]  # ("start" | "end", run, result)


class Executor(Protocol):
    name: str

    def capacity(self) -> int:
        """How many runs can execute at once (for the progress display)."""

    def execute(self, runs: list[RunSpec], out_dir: Path, data_dir: str | None, runner: str, on_event: Event) -> None:
        """Execute every run, calling `on_event("start"|"end", run, result)` from the driver thread."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _init_worker(threads: int, gpus: Any = None) -> None:
    """Thread budget of a worker process; torch reads it when a run first imports it. With
    `gpus` (a queue of CUDA_VISIBLE_DEVICES values), the worker takes one before torch starts
    CUDA, so each worker process sees, and loads its models on, its own GPU."""
    set_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()


@dataclass(frozen=True)
class WorkerSlot:
    """One worker of the local executor: the device its runs use and the GPU its process sees."""

    device: str  # what runs in this worker pass to training and evaluation
    visible: str | None = None  # CUDA_VISIBLE_DEVICES of its own process (None: inherited)
    index: int | None = None  # the GPU's number in this (the driver's) process, for a run in-process

    @property
    def in_process_device(self) -> str:
        """The device a run executed in the driver's own process uses (it cannot change its variable)."""
        return f"cuda:{self.index}" if self.index is not None else self.device


def worker_slots(device: str, gpus: int, workers: int | None = None, gpu_share: float = 0.0,
                 env: dict[str, str] | None = None) -> list[WorkerSlot]:
    """Where each local worker runs: one worker per visible GPU when the device is `cuda` (or
    `auto` and there are GPUs), else `workers` CPU workers (default 1).

    A pure function of the device, the GPU count and the environment, so the assignment is
    tested without GPUs. One model per GPU, unless the runs ask for a fraction of one
    (`resources.num_gpus: 0.5`: two workers share each GPU); an explicit `workers` takes the
    GPUs round-robin. `cuda:N` is that one GPU.
    """
    name = check_device(device)
    if not wants_gpu(name) or (name == "auto" and gpus == 0):
        return [WorkerSlot("cpu" if name == "auto" else name) for _ in range(workers or 1)]
    if gpus == 0:
        raise ConfigError(f"--device {name}: torch sees no CUDA GPU (no driver, a CPU-only torch, or CUDA_VISIBLE_DEVICES hides them); use cpu or auto")
    ids = visible_gpus(gpus, env)
    indices = list(range(len(ids)))
    if ":" in name:
        index = int(name.split(":", 1)[1])
        if index >= len(ids):
            raise ConfigError(f"--device {name}: torch sees {len(ids)} CUDA GPU(s), numbered 0 to {len(ids) - 1}")
        indices = [index]
    per_gpu = max(1, int(1 / gpu_share)) if 0 < gpu_share < 1 else 1
    n = workers or len(indices) * per_gpu
    return [WorkerSlot("cuda", ids[indices[i % len(indices)]], indices[i % len(indices)]) for i in range(n)]


class LocalExecutor:
    """Runs on this machine: one at a time in this process, or N worker processes.

    With N workers each gets `cores // N` torch threads, so N runs never oversubscribe the CPU.
    Worker processes live for the whole sweep, so each loads its base model once. On GPUs
    (`device` cuda, or auto with GPUs) there is one worker per visible GPU by default, each
    process with its own CUDA_VISIBLE_DEVICES (`worker_slots`).
    """

    name = "local"

    def __init__(self, workers: int | None = 1, threads: int | None = None, device: str = "auto"):
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers {workers}: expected 1 or more")
        self.workers = workers
        self.device = check_device(device)
        self.threads = threads or (max(1, cpu_count() // workers) if workers else None)

    def slots(self, runs: list[RunSpec] | None = None) -> list[WorkerSlot]:
        """This machine's workers for `runs` (their smallest GPU share decides how many share a GPU)."""
        gpus = gpu_count() if wants_gpu(self.device) else 0
        shares = [r.resources.num_gpus for r in runs or [] if r.resources.num_gpus]
        return worker_slots(self.device, gpus, self.workers, min(shares, default=0.0))

    def capacity(self) -> int:
        return self.workers or len(self.slots())

    def execute(self, runs: list[RunSpec], out_dir: Path, data_dir: str | None, runner: str, on_event: Event) -> None:
        jobs = [(r, r.model_dump(mode="json")) for r in runs]
        slots = self.slots(runs)
        threads = self.threads or max(1, cpu_count() // len(slots))
        if len(slots) == 1:
            device = slots[0].in_process_device
            for run, payload in jobs:
                on_event("start", run, None)
                in_process = threads if threads != cpu_count() else None  # in-process: keep torch's default
                on_event("end", run, execute_run(payload, str(out_dir), data_dir, runner, in_process, device=device))
            return
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        gpus = None
        if any(slot.visible is not None for slot in slots):
            gpus = ctx.Queue()
            for slot in slots:
                gpus.put(slot.visible)
        device = slots[0].device
        with ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_init_worker, initargs=(threads, gpus)) as pool:
            _drain(len(slots), jobs, lambda payload: pool.submit(execute_run, payload, str(out_dir), data_dir, runner, threads, device=device),
                   on_event)


def _drain(workers: int, jobs: list[tuple[RunSpec, dict[str, Any]]], submit: Callable[[dict[str, Any]], Future],
           on_event: Event) -> None:
    """Keep `workers` runs going in `pool` until every job has ended, longest first."""
    pending: dict[Future, RunSpec] = {}
    # Longest first (the plan's estimates): the last runs to finish are short ones, so no
    # worker idles through a long tail while another runs the sweep's biggest run alone.
    queue = sorted(jobs, key=lambda job: -(job[0].est_seconds or 0.0))
    while queue or pending:
        while queue and len(pending) < workers:
            run, payload = queue.pop(0)
            try:
                fut = submit(payload)
            except BrokenProcessPool:  # a worker died hard (e.g. out of memory): the rest cannot run
                for left, _ in [(run, payload), *queue]:
                    on_event("start", left, None)
                    on_event("end", left, RunResult.failed(left.run_id, "worker pool broke (a worker process died); rerun the sweep"))
                queue.clear()
                break
            on_event("start", run, None)
            pending[fut] = run
        if not pending:
            break
        finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in finished:
            run = pending.pop(fut)
            on_event("end", run, _future_result(fut, run))


def _future_result(fut: Any, run: RunSpec) -> RunResult:
    try:
        return fut.result()
    except Exception as exc:  # a worker that died (out of memory, killed) fails only its run
        return RunResult.failed(run.run_id, f"worker died: {type(exc).__name__}: {exc}")


LOCAL_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> Any:
    """A private Ray instance on this machine, listening on 127.0.0.1 only.

    Ray (2.x) binds its servers to the node IP and turns `_node_ip_address="127.0.0.1"` into the
    machine's outward address; only with its single-machine switch off
    (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read when ray is imported) does it keep loopback.
    We set it, pass the loopback address, and check the result before running anything.
    """
    os.environ[LOCAL_RAY_ENV] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
    ray.init(
        address="local",  # always a new instance: never attach to whatever RAY_ADDRESS points at
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=False,
    )
    address = ray.get_runtime_context().gcs_address
    if not str(address).startswith("127.0.0.1"):
        ray.shutdown()
        raise FincocktailError(f"local Ray came up on {address}, not 127.0.0.1; start Ray yourself and pass --address")
    return ray


def ray_gpus(run: RunSpec, device: str) -> tuple[float, str]:
    """(num_gpus the Ray task asks for, the device its run uses). Ray gives a task the GPUs it
    asked for in its own CUDA_VISIBLE_DEVICES, so `cuda:N` means `cuda` there, and a `cuda` run
    that asks for no GPU asks for one (Ray would hide every GPU from it)."""
    if device.startswith("cuda"):
        return (run.resources.num_gpus or 1.0), "cuda"
    return run.resources.num_gpus, device


class RayExecutor:
    """Each run is a Ray task asking for the run's `num_cpus` / `num_gpus`.

    With `address` it joins an existing cluster (`ray start --head` on the head node); then the
    output folder must be on a disk every node sees (results come back to the driver either
    way). Without it, a private local Ray bound to 127.0.0.1 is started and stopped.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None, device: str = "auto",
                 workers: int | None = None):
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers {workers}: expected 1 or more")
        self.address = address
        self.device = check_device(device)
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.workers = workers  # runs in flight at once, as locally; None: as many as Ray's resources allow
        self._started = False
        self._capacity = 1
        self.gcs_address: str | None = None  # where the Ray it used listened (for checks and logs)

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError:
            raise FincocktailError("--executor ray needs Ray: pip install 'fincocktail[ray]'") from None
        import ray

        if ray.is_initialized():
            return ray
        if self.address:
            ray.init(address=self.address, configure_logging=False, log_to_driver=False)
        else:
            start_local_ray(self.num_cpus, self.num_gpus)
            self._started = True
        self.gcs_address = str(ray.get_runtime_context().gcs_address)
        return ray

    def capacity(self) -> int:
        return self._capacity

    def execute(self, runs: list[RunSpec], out_dir: Path, data_dir: str | None, runner: str, on_event: Event) -> None:
        """Submit at most `workers` runs at a time (default: as many as the cluster's CPUs fit)
        and the next one as each ends.

        Why a window rather than submitting everything: Ray starts whatever its resources fit,
        so `--workers 1` ("runs at once") ran two runs together on a 4-CPU Ray; with the window,
        `--workers` means the same here as on the local executor, on a cluster too.
        """
        ray = self._connect()
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1))
            per_run = max(min((r.resources.num_cpus for r in runs), default=1), 1e-3)
            fits = max(1, int(cpus // per_run)) if runs else 1
            self._capacity = min(fits, self.workers) if self.workers else fits
            remote = ray.remote(execute_run)
            out = str(Path(out_dir).resolve())
            queue = list(runs)
            refs: dict[Any, RunSpec] = {}

            def submit() -> None:
                run = queue.pop(0)
                threads = max(1, int(run.resources.num_cpus)) if run.resources.num_cpus else 1
                num_gpus, device = ray_gpus(run, self.device)
                ref = remote.options(
                    num_cpus=run.resources.num_cpus, num_gpus=num_gpus, max_retries=0, name=run.run_id
                ).remote(run.model_dump(mode="json"), out, data_dir, runner, threads, device=device)
                refs[ref] = run
                on_event("start", run, None)

            while queue and len(refs) < self._capacity:
                submit()
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    run = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:
                        result = RunResult.failed(run.run_id, f"ray task failed: {exc}")
                    on_event("end", run, result)
                    if queue:
                        submit()
        finally:
            if self._started:
                ray.shutdown()
                self._started = False


# --------------------------------------------------------------------------------------------
# The driver


@dataclass
class SweepSummary:
    out_dir: Path
    total: int
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this invocation
    recovered: list[str] = field(default_factory=list)  # finished on disk, now recorded
    failed: dict[str, str] = field(default_factory=dict)
    paused: dict[str, dict[str, Any]] = field(default_factory=dict)  # racing: run id -> its rung outcome (JSON)
    wall_s: float = 0.0


class _Progress:
    """Rich progress: runs done / running / left / failed and an ETA weighted by estimated run time."""

    def __init__(self, enabled: bool, runs: list[RunSpec], already_done: int, capacity: int):
        self.enabled = enabled
        self.total_runs = len(runs) + already_done
        self.done = already_done
        self.running = 0
        self.failed = 0
        self.capacity = capacity
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]sweep[/]"),
                BarColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            total = sum(max(r.est_seconds, 1.0) for r in runs) or 1.0
            self._task = self._bar.add_task(self._describe(), total=total)
            self._bar.start()

    def _describe(self) -> str:
        left = self.total_runs - self.done - self.running - self.failed
        text = f"{self.done}/{self.total_runs} done · {self.running} running · {left} left"
        return text + (f" · [red]{self.failed} failed[/]" if self.failed else "")

    def event(self, kind: str, run: RunSpec, result: RunResult | None) -> None:
        if kind == "start":
            self.running += 1
        else:
            self.running = max(0, self.running - 1)
            if result is not None and result.status in ("done", "paused"):  # paused: this rung is done
                self.done += 1
            else:
                self.failed += 1
        if self._bar is not None:
            advance = max(run.est_seconds, 1.0) if kind == "end" else 0
            self._bar.update(self._task, advance=advance, description=self._describe())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_sweep(
    plan: Plan,
    out_dir: str | os.PathLike | None = None,
    executor: Executor | None = None,
    runner: str = "real",
    data_dir: str | None = None,
    progress: bool = True,
    only: Iterable[str] | None = None,
    mlflow_uri: str | None = None,
) -> SweepSummary:
    """Execute the runs of `plan` not finished yet; see the module docstring."""
    started = time.time()
    out = Path(out_dir) if out_dir is not None else plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    executor = executor or LocalExecutor()
    data_dir = data_dir or plan.spec.data_dir
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().resolve())
    lock = _lock_out_dir(out)
    try:
        return _run_sweep_locked(plan, out, executor, runner, data_dir, progress, only, mlflow_uri, started)
    finally:
        lock.close()


def _lock_out_dir(out: Path) -> Any:
    """One sweep per output folder at a time (the lock goes away with the process, even on kill -9)."""
    return FolderLock(out, SWEEP_LOCK, "a sweep")


def sweep_active(out: str | os.PathLike) -> bool:
    """Whether a `sweep run` currently holds the output folder's lock."""
    return lock_held(out, SWEEP_LOCK)


def _run_sweep_locked(
    plan: Plan,
    out: Path,
    executor: Executor,
    runner: str,
    data_dir: str | None,
    progress: bool,
    only: Iterable[str] | None,
    mlflow_uri: str | None,
    started: float,
) -> SweepSummary:
    store = ResultsStore.in_dir(out)
    if runner in ("real", "simulate"):  # custom run functions (tests, synthetic) are the caller's business
        store.claim("simulated" if runner == "simulate" else "real")
    _write_plan(out, plan)
    store.register(plan.runs)
    store.reset_stale()

    runs = plan.runs
    if only is not None:
        wanted = set(only)
        unknown = wanted - {r.run_id for r in runs}
        if unknown:
            raise ConfigError(f"--only: no run {sorted(unknown)[0]!r} in {plan.source}; see `fincocktail sweep plan`")
        runs = [r for r in runs if r.run_id in wanted]
    summary = SweepSummary(out_dir=out, total=len(runs))
    status = {r.run_id: r.status for r in store.runs()}
    todo: list[RunSpec] = []
    for run in runs:
        if status.get(run.run_id) == "done":
            summary.skipped.append(run.run_id)
            continue
        outcome = read_result(run_dir_for(out, run.run_id), trust_simulated=runner != "real")
        if outcome is not None:  # finished, but the sweep died before recording it
            store.finish(run.run_id, outcome)
            summary.recovered.append(run.run_id)
            continue
        todo.append(run)

    tracker = None
    if mlflow_uri:
        from fincocktail.sweep.tracking import MlflowTracker

        tracker = MlflowTracker(mlflow_uri, experiment=plan.spec.name)  # experiment created once, here
        for run_id in summary.recovered:
            tracker.log_run(store.run(run_id), store.metrics(run_id))

    if runner == "real" and isinstance(executor, LocalExecutor):
        _pull_models(todo)
    bar = _Progress(progress, todo, len(summary.skipped) + len(summary.recovered), executor.capacity())

    def on_event(kind: str, run: RunSpec, result: RunResult | None) -> None:
        if kind == "start" and tracker is not None:
            tracker.safely(run.run_id, tracker.start, store.run(run.run_id), run_dir_for(out, run.run_id))  # curves go live
        if kind == "end" and result is not None:
            if result.status == "paused" and result.outcome is not None:
                store.pause(run.run_id, RunOutcome.from_json(result.outcome))
                summary.paused[run.run_id] = result.outcome
            elif result.status == "done" and result.outcome is not None:
                store.finish(run.run_id, RunOutcome.from_json(result.outcome))
                (summary.skipped if result.skipped else summary.executed).append(run.run_id)
                if tracker is not None:
                    tracker.safely(run.run_id, tracker.finish, store.run(run.run_id), store.metrics(run.run_id))
            else:
                if store.run(run.run_id).status != "failed":  # type: ignore[union-attr]
                    store.fail(run.run_id, result.error or "unknown error")
                summary.failed[run.run_id] = redact(result.error or "unknown error")  # a remote worker's text
                if tracker is not None:
                    tracker.safely(run.run_id, tracker.finish, store.run(run.run_id), [], failed=True)
        bar.event(kind, run, result)

    try:
        executor.execute(todo, out, data_dir, runner, on_event)
    finally:
        bar.close()
        if tracker is not None:
            tracker.close()
    summary.wall_s = round(time.time() - started, 3)
    return summary


def _pull_models(runs: list[RunSpec]) -> None:
    """Provision each local base model once, here, before workers start: N workers would each
    download and convert it at the same time on a fresh machine."""
    from fincocktail.models.loading import resolve_model
    from fincocktail.models.registry import get_model_spec

    for name in sorted({r.model for r in runs if r.kind != "api"}):
        if get_model_spec(name) is not None:
            resolve_model(name)


def _write_plan(out: Path, plan: Plan) -> None:
    """`OUT/plan.json`: the sweep as it was expanded, so the folder explains itself."""
    payload = {
        "sweep": plan.spec.model_dump(mode="json"),
        "source": plan.source,
        "runs": [r.model_dump(mode="json") for r in plan.runs],
    }
    tmp = out / f".plan.json.tmp{os.getpid()}"
    tmp.write_text(canonical_json(payload) + "\n", encoding="utf-8")
    os.replace(tmp, out / "plan.json")


def make_executor(name: str, workers: int | None = 1, address: str | None = None, num_cpus: int | None = None,
                  device: str = "auto") -> Executor:
    """The executor `--executor` names; `workers` None: one per GPU on GPUs, else 1 (local)."""
    if name == "local":
        if address:
            raise ConfigError("--address is for --executor ray")
        return LocalExecutor(workers=workers, device=device)
    if name == "ray":
        return RayExecutor(address=address, num_cpus=num_cpus if num_cpus else (workers if workers and workers > 1 else None),
                           device=device, workers=workers)
    raise ConfigError(f"--executor {name!r}: expected 'local' or 'ray'")
