"""Training as a recipe: prepare the data, prepare the model, run the loop, save the result.

A small plain PyTorch loop rather than HF Trainer: resume has to reproduce an uninterrupted
run exactly (same batches, same dropout masks, same optimizer state), memory has to stay small
on CPU, and the loss must be computed on answer tokens only without a batch x length x vocab
logits tensor. Each of those is a few lines here and a fight with a framework otherwise.

The parts live beside this file: `setup` (model, precision, attention, LoRA), `loss`,
`checkpoints`, `memory` (CPU heap trimming) and `run_card`; `data` plans the batches.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import torch

from fincocktail.cocktail import (
    CocktailConfig,
    CocktailData,
    prepare_cocktail,
    resolve_tasks,
    write_manifest,
)
from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.fileio import FolderLock, disk_full_message, is_disk_full, write_json_atomic
from fincocktail.models import load_text_config
from fincocktail.models.precision import cpu_features
from fincocktail.tasks.prompts import TokenCache
from fincocktail.tasks.base import Example, Task
from fincocktail.plumbing.threads import set_threads, thread_budget
from fincocktail.training.checkpoints import (
    Checkpoint,
    CheckpointError,
    check_finite_params,
    checkpoint_dirs,
    load_checkpoint,
    newest_readable_checkpoint,
    read_checkpoint,
    remove_partial_writes,
    save_checkpoint,
)
from fincocktail.training.config import TrainConfig, resolve_cocktail
from fincocktail.training.curves import Curves, curve_task_objects, curve_text, live_curves, prepare_curve_tasks
from fincocktail.training.data import Batch, Schedule, padding_fraction
from fincocktail.training.loss import answer_loss_sum, base_config, fp32_head_weight
from fincocktail.training.prefix import check_sliding_window
from fincocktail.training.memory import peak_rss_mb, step_trimmer
from fincocktail.training.run_card import (
    RUN_CARD,
    RunCard,
    TrainingDiverged,
    TrainResult,
    check_same_config,
    config_changes,
    read_card,
    result_from_card,
)
from fincocktail.training.setup import (
    load_model_and_tokenizer,
    mixed_precision,
    prepare_model,
    resolve_attention,
    resolve_device,
    resolve_max_batch_tokens,
    resolve_precision,
)

if TYPE_CHECKING:
    from fincocktail.data.contamination import ContaminationReport

TRAIN_LOCK = ".train.lock"
TRAIN_LOG = "train_log.jsonl"

ResumeMode = bool | Literal["if_present"]


def train(
    config: TrainConfig,
    run_dir: Path,
    resume: ResumeMode = False,
    *,
    resolver: Callable[[str], Task] | None = None,
    eval_tasks: Sequence[Task] | None = None,
    progress: bool = True,
    console: Any | None = None,
    tokens: TokenCache | None = None,
    stop_at: float | None = None,
) -> TrainResult:
    """Train `config` into `run_dir`; with `resume`, continue from its last checkpoint.

    `resume=True` (the CLI's --resume) requires a run in `run_dir`: a typo in --out must not
    train from scratch. `resume="if_present"` (sweeps) continues a run if there is one and
    starts it otherwise. Either way a changed config is refused, also for a complete run.
    `resolver` and `eval_tasks` replace the task registry (tests, user code); by default the
    cocktail's tasks come from the registry and contamination is checked against every task.
    A `threads` setting applies for the duration of the call only. The run folder is locked
    for the duration: a second process training into it gets a one-line error. `tokens`
    tokenizes through a cache the caller shares across runs (a sweep worker). `stop_at` (a
    fraction below 1: a racing rung) pauses the run after that share of its steps, with a
    checkpoint and a learning-curve point there, no adapter, and the card's status `paused`;
    resuming it later continues exactly as if it had never stopped.
    """
    run_dir = Path(run_dir)
    if resume is True and not holds_run(run_dir):
        raise ConfigError(
            f"{run_dir}: nothing to resume (no run_card.json or checkpoint there); check --out, or drop --resume to start a new run"
        )
    with thread_budget(None), FolderLock(run_dir, TRAIN_LOCK, "a training run", "wait for it to finish or pass another --out"):
        try:
            return _train(config, run_dir, bool(resume), resolver, eval_tasks, progress, console, tokens, stop_at)
        except Exception as exc:
            if is_disk_full(exc):
                raise FincocktailError(_mark_failed_for_disk_full(run_dir)) from None
            raise


def _mark_failed_for_disk_full(run_dir: Path) -> str:
    """The one line for a full disk, after marking a `running` card failed.

    Why: a card left at `running` says the run may still be going. The half-written adapter or
    checkpoint is removed first, which frees the space the small card needs.
    """
    message = disk_full_message(run_dir)
    remove_partial_writes(run_dir)
    try:
        card = read_card(run_dir / RUN_CARD)
        if card is not None and card.get("status") == "running":
            write_json_atomic(run_dir / RUN_CARD, {**card, "status": "failed", "error": message})
    except (OSError, FincocktailError):
        return f"{message} (the run card could not be marked failed)"
    return message


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a started training run (a run card or a checkpoint)."""
    return (run_dir / RUN_CARD).is_file() or bool(checkpoint_dirs(run_dir))


def _train(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    resolver: Callable[[str], Task] | None,
    eval_tasks: Sequence[Task] | None,
    progress: bool,
    console: Any | None,
    tokens: TokenCache | None = None,
    stop_at: float | None = None,
) -> TrainResult:
    """The recipe. Everything that can be refused (config, tasks, run folder) is checked
    before the data is read, and the data before the model is loaded."""
    from rich.console import Console

    console = console or Console(stderr=True, quiet=not progress)
    started = time.time()
    cocktail_cfg, cocktail_src = resolve_cocktail(config)
    tasks = resolve_tasks(cocktail_cfg, resolver, cocktail_src)
    curve_tasks = curve_task_objects(tasks, config.eval_tasks_extra, resolver, config.eval_tasks) if config.eval_every else None  # checked early
    fingerprint = config.fingerprint(cocktail_cfg)
    saved = _existing_run(config, run_dir, resume, fingerprint)
    if saved is not None and saved.get("status") == "complete":
        console.print(f"run {run_dir} is already complete")
        return result_from_card(run_dir, saved)
    resume_from, checkpoint = _newest_checkpoint(config, run_dir, resume, fingerprint, console)
    run_dir.mkdir(parents=True, exist_ok=True)

    if config.prefix_sharing != "off":  # the window is in the model's config: no need to wait for the weights
        check_sliding_window(load_text_config(config.model), config.max_length, config.prefix_sharing)

    from fincocktail.plumbing.paths import find_data_dir

    data_dir = find_data_dir(config.data_dir)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    console.print(f"reading the train splits of {', '.join(tasks)}")
    data, report = prepare_data(config, cocktail_cfg, cocktail_src, tasks, data_dir, eval_tasks)

    set_threads(config.threads)  # until train() returns (thread_budget there restores it)
    device = resolve_device(config)
    dtype = resolve_precision(config, device)
    console.print(f"loading {config.model} ({dtype} on {device})")
    model, tokenizer = load_model_and_tokenizer(config.model, dtype=dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        data.encode(tokenizer, config.prompt_style, tokens)
    except ValueError as exc:  # e.g. prompt_style chat with a tokenizer that has no chat template
        raise ConfigError(f"prompt_style: {exc}") from None
    manifest = write_manifest(data, run_dir / "data_manifest.json")
    attention = resolve_attention(config, device, dtype)
    model = _prepare_model(config, model, device, attention)
    autocast = mixed_precision(model, device, dtype)
    curves = _curves(config, curve_tasks, data_dir, tokenizer, pad_id, autocast, tokens) if curve_tasks else None

    schedule = Schedule.plan(config, data, pad_id, resolve_max_batch_tokens(config, device))
    if schedule.total_steps == 0:
        raise ConfigError(f"{cocktail_src}: the cocktail holds no training examples")
    if (too_long := warmup_warning(config, schedule.total_steps)) is not None:
        warn(console, too_long)
    parts = _make_parts(config, model, device, autocast, schedule.total_steps)
    stop = stop_step(stop_at, schedule.total_steps) if stop_at is not None and stop_at < 1 else None
    at = _start_position(run_dir, parts, resume_from, checkpoint, schedule.total_steps, console)
    checkpoint = None  # the optimizer holds its own copy now

    card = RunCard(config, run_dir, manifest, report, started, fingerprint)
    card.write("running")
    mean_pad = padding_fraction(schedule.plans[0], schedule.lengths[0]) if schedule.plans[0] else 0.0
    console.print(
        f"{sum(len(e) for e in schedule.encoded)} sequences over {config.epochs} epoch(s), {schedule.total_steps} steps, "
        f"padding {mean_pad:.1%}, trainable params {sum(p.numel() for p in parts.params):,}"
    )

    session = _Session(prior_s=at.elapsed_s)
    bar_curves = curves is not None and live_curves(progress)
    with _progress_bar(console, progress, bar_curves) as bar, open(run_dir / TRAIN_LOG, "a", encoding="utf-8") as log:
        bar_task = bar.add_task("train", total=schedule.total_steps, completed=at.step, loss="-", tps="-")
        final_loss = run_loop(
            config, schedule, parts, at, session, card, log,
            after_update=step_trimmer(device),
            on_step=lambda loss, tps: bar.update(bar_task, advance=1, loss=f"{loss:.4f}", tps=f"{tps:,.0f}"),
            on_eval=_curve_hook(curves, parts.model, log, bar) if curves is not None else None,
            eval_due=curves.due if curves is not None else None,
            stop=stop,
        )
    if stop is not None and at.step < schedule.total_steps:
        return _paused(card, at, session, schedule.total_steps, final_loss, started, resume_from)

    adapter_dir, merged_dir = _save_outputs(config, run_dir, parts.model, tokenizer)
    train_time_s = round(session.elapsed(), 3)
    result = TrainResult(
        run_dir=run_dir, adapter_dir=adapter_dir, tokens_seen=at.tokens_seen,
        wall_time_s=round(at.elapsed_s + time.time() - started, 3), peak_rss_mb=round(peak_rss_mb(), 1),
        final_loss=final_loss, steps=at.step, merged_dir=merged_dir,
        resumed_from=resume_from.name if resume_from is not None else None, tokens_per_s=round(session.tokens_per_s(), 1),
    )
    card.write("complete", **_completion(result, schedule, train_time_s, session, device, dtype, attention, parts.model),
               **({"curves": curves.describe()} if curves is not None else {}))
    return result


# --------------------------------------------------------------------------------------------
# Before anything is read: the run folder


def _existing_run(config: TrainConfig, run_dir: Path, resume: bool, fingerprint: str) -> dict[str, Any] | None:
    """The run card of the run being resumed, checked against `config`; None for a new run."""
    remove_partial_writes(run_dir)
    card = read_card(run_dir / RUN_CARD)
    if not resume and (checkpoint_dirs(run_dir) or card is not None or (run_dir / "adapter").exists()):
        raise ConfigError(  # like eval's --out that holds an evaluation: a usage error, exit 2
            f"{run_dir}: already holds a run; pass --resume to continue it or choose another output folder"
        )
    if resume and card is not None:
        check_same_config(run_dir, card.get("config_fingerprint"), card.get("config"), config, fingerprint)
    return card if resume else None


def warn(console: Any, message: str) -> None:
    """A warning about the user's files, shown even when `console` is quiet (`-q`, sweeps).

    Why: quiet hides progress; a skipped checkpoint changes what the run resumes from, which
    the user must hear about.
    """
    from rich.console import Console

    target = Console(stderr=True) if getattr(console, "quiet", False) else console
    target.print(f"[yellow]warning[/]: {message}", highlight=False)


def _newest_checkpoint(
    config: TrainConfig, run_dir: Path, resume: bool, fingerprint: str, console: Any
) -> tuple[Path | None, Checkpoint | None]:
    """The checkpoint to continue from, read and checked against `config` (a card may be missing)."""
    readable = newest_readable_checkpoint(run_dir, lambda m: warn(console, m)) if resume else None
    if readable is None:
        return None, None
    path, checkpoint = readable
    state = checkpoint[2]
    check_same_config(run_dir, state.get("config_fingerprint"), state.get("config"), config, fingerprint)
    return path, checkpoint


# --------------------------------------------------------------------------------------------
# Data


def prepare_data(
    config: TrainConfig,
    cocktail: CocktailConfig,
    source: str,
    tasks: Mapping[str, Task],
    data_dir: Path,
    eval_tasks: Sequence[Task] | None,
) -> tuple[CocktailData, ContaminationReport | None]:
    """The cocktail's draw for this run, and the contamination report its run card records.

    The check runs between reading the train splits and drawing from them, since with
    `decontaminate.drop` what it finds is left out of the draw.
    """
    drop = cocktail.decontaminate.drop
    found: list[ContaminationReport] = []

    def check(sources: Mapping[str, list[Example]], tasks: Mapping[str, Task]) -> Mapping[str, set[str]] | None:
        if not (config.contamination_check or drop):
            return None
        from fincocktail.data.contamination import check_drop_fraction, contamination_for_cocktail

        report = contamination_for_cocktail(
            sources, data_dir, n=cocktail.decontaminate.n, eval_tasks=eval_tasks, cocktail_tasks=tasks.values()
        )
        report.dropped = drop
        found.append(report)
        if drop:
            check_drop_fraction(report, sources, cocktail.decontaminate.max_drop_fraction)
        return report.contaminated_ids if drop else None

    data = prepare_cocktail(cocktail, data_dir, epochs=config.epochs, source=source, tasks=tasks, on_sources=check)
    return data, found[0] if found else None


# --------------------------------------------------------------------------------------------
# Learning curves (training/curves.py)


def _curves(
    config: TrainConfig, tasks: Mapping[str, Task], data_dir: Path, tokenizer: Any, pad_id: int, autocast: Any,
    tokens: TokenCache | None,
) -> Curves:
    """The fixed curve samples, tokenized, and the scorer that runs them every `eval_every` steps."""
    assert config.eval_every is not None
    sample = prepare_curve_tasks(tasks, data_dir, config.eval_examples, tokenizer, config.prompt_style, config.max_length, tokens)
    return Curves(sample, config.eval_every, pad_id, config.batch_size, autocast)


def _curve_hook(curves: Curves, model: Any, log: TextIO, bar: Any) -> Callable[[int], None]:
    """Score at a step, append the point to the log and show it under the bar (when the bar shows curves)."""

    def on_eval(step: int) -> None:
        point = curves.log(model, step, log)
        if hasattr(bar, "curve_line"):
            bar.curve_line = curve_text(point)

    return on_eval


# --------------------------------------------------------------------------------------------
# Model and optimizer


@dataclass
class Parts:
    """What an optimizer step touches."""

    model: Any
    device: torch.device
    autocast: Any  # the forward's precision context (see setup.mixed_precision)
    head_weight: torch.Tensor | None  # an fp32 copy of a low-precision LM head (see loss.fp32_head_weight)
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def _prepare_model(config: TrainConfig, model: Any, device: torch.device, attention: str | None) -> Any:
    """The loaded model on its device, with its attention set and LoRA applied, in train mode."""
    if attention is not None:
        model.set_attn_implementation(attention)
    torch.manual_seed(config.seed)  # LoRA's initial weights: the same for every run of this config
    model = prepare_model(config, model.to(device))
    model.train()
    return model


def _make_parts(config: TrainConfig, model: Any, device: torch.device, autocast: Any, total_steps: int) -> Parts:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, params, device)
    return Parts(model, device, autocast, fp32_head_weight(model), params, optimizer, make_scheduler(config, optimizer, total_steps))


def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """AdamW, with weight decay on weight matrices only (not on biases and norms).

    `fused` where torch has the kernel (fp32 on CPU and CUDA): one kernel per step instead of
    ~10 per tensor.
    """
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=all(p.dtype == torch.float32 for p in params) and device.type in ("cpu", "cuda"),
    )


def warmup_warning(config: TrainConfig, total_steps: int) -> str | None:
    """One line when warmup outlasts the run, else None.

    Why: the schedule would still be climbing when the run ends (warmup 50 with --max-steps 20
    peaks at 8e-5 for lr 2e-4), a run that looks fine but never trained at the rate asked for.
    """
    warmup = config.warmup_steps
    if warmup <= 0 or warmup < total_steps:
        return None
    peak = config.lr * total_steps / warmup
    return (
        f"warmup_steps {warmup} is not shorter than the run's {total_steps} steps: the learning rate "
        f"peaks at {peak:.2g} instead of {config.lr:.2g} (lower warmup_steps, e.g. --set warmup_steps={total_steps // 10})"
    )


def wsd_decay_start(config: TrainConfig, total_steps: int) -> int:
    """The first step of the decay of a `wsd` schedule (after warmup, at least)."""
    return max(config.warmup_steps, total_steps - max(1, round(config.decay_fraction * total_steps)))


def stop_step(fraction: float, total_steps: int) -> int:
    """The optimizer step a run asked to stop at `fraction` of its steps pauses after (>= 1)."""
    return min(total_steps, max(1, round(fraction * total_steps)))


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then linear or cosine decay to 0 at `total_steps`, constant, or warmup-stable-decay."""
    warmup = config.warmup_steps
    decay_start = wsd_decay_start(config, total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "constant":
            return 1.0
        if config.scheduler == "wsd":
            return 1.0 if step < decay_start else max(0.0, 1.0 - (step - decay_start) / max(1, total_steps - decay_start))
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if config.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------
# The loop


@dataclass
class Position:
    """Where the loop stands; a checkpoint's state.json holds it."""

    step: int = 0
    epoch: int = 0
    next_group: int = 0  # the next optimizer step within `epoch`
    tokens_seen: int = 0
    elapsed_s: float = 0.0  # training time of the processes before this one


@dataclass
class _Session:
    """This process's part of the run, for tokens/s and the run's elapsed training time."""

    prior_s: float
    start: float = field(default_factory=time.time)
    tokens: int = 0
    shared_tokens: int = 0  # prompt tokens run once for a micro-batch, not per row (training.prefix)

    def elapsed(self) -> float:
        return self.prior_s + time.time() - self.start

    def tokens_per_s(self) -> float:
        return self.tokens / max(time.time() - self.start, 1e-9)


def _start_position(
    run_dir: Path, parts: Parts, resume_from: Path | None, checkpoint: Checkpoint | None, total_steps: int, console: Any
) -> Position:
    """Step 0, or the checkpoint's state put back into the model, optimizer, scheduler and RNGs.

    The log keeps only the lines up to the checkpoint: the steps after it are done again.
    """
    log_path = run_dir / TRAIN_LOG
    if resume_from is None:
        log_path.unlink(missing_ok=True)
        return Position()
    state = load_checkpoint(resume_from, parts.model, parts.optimizer, parts.scheduler, checkpoint)
    at = Position(state["step"], state["epoch"], state["next_group"], state["tokens_seen"], state["elapsed_s"])
    _rewrite_log(log_path, at.step)
    console.print(f"resuming from {resume_from.name} (step {at.step} of {total_steps})")
    return at


def run_loop(
    config: TrainConfig,
    schedule: Schedule,
    parts: Parts,
    at: Position,
    session: _Session,
    card: RunCard,
    log: TextIO,
    *,
    after_update: Callable[[], None],
    on_step: Callable[[float, float], None],
    on_eval: Callable[[int], None] | None = None,
    eval_due: Callable[[int, int], bool] | None = None,
    stop: int | None = None,
) -> float | None:
    """Train from `at` to the schedule's last step (or to step `stop`), advancing `at`; returns the last step's loss.

    Weights are checked for NaN/inf before each checkpoint and before the end, so no broken
    update is ever saved; the log is fsynced before each checkpoint, so a resumed run's log is
    whole up to it. `on_eval(step)` (learning curves) runs at step 0 of a new run and when
    `eval_due(step, total)`, before that step's checkpoint: a resume then finds every curve point
    up to its checkpoint and redoes the ones after it, so a curve has no gap and no duplicate.
    With `stop` (a racing rung) the loop pauses after that step with a curve point and a
    checkpoint there, and skips the step-0 point (the base model's, the same for every run).
    """
    total = schedule.total_steps
    if stop is not None and at.step >= stop:
        return None  # paused here before: the checkpoint and the curve point are on disk
    if on_eval is not None and at.step == 0 and stop is None:  # the curve's starting point (a resumed run has it)
        on_eval(0)
    first_epoch, first_group = at.epoch, at.next_group

    def fail(what: str, lr: float) -> None:  # a step that went non-finite is the one after `at.step`
        card.fail(at.step + 1, what, lr)

    final_loss: float | None = None
    for epoch in range(first_epoch, len(schedule.plans)):
        if at.step >= total:
            break
        steps = schedule.steps(epoch)
        for gi in range(first_group if epoch == first_epoch else 0, len(steps)):
            step_t0 = time.time()
            batches = schedule.micro_batches(epoch, steps[gi])
            loss_total, n_target, lr = _optimizer_step(parts, batches, config.max_grad_norm, fail)
            after_update()
            at.step += 1
            real = sum(b.real_tokens for b in batches)
            at.tokens_seen += real
            session.tokens += real
            session.shared_tokens += sum(b.shared_tokens for b in batches)
            final_loss = loss_total / max(n_target, 1)
            dt = time.time() - step_t0
            tps = session.tokens_per_s()
            if at.step % config.log_every == 0 or at.step == total:
                entry = {
                    "step": at.step,
                    "epoch": epoch,
                    "loss": round(final_loss, 6),
                    "lr": lr,
                    "tokens": real,
                    "target_tokens": n_target,
                    "tokens_per_s": round(real / max(dt, 1e-9), 1),
                    "elapsed_s": round(session.elapsed(), 3),
                }
                log.write(json.dumps(entry, allow_nan=False) + "\n")
                log.flush()
            pausing = at.step == stop
            if on_eval is not None and eval_due is not None and (eval_due(at.step, total) or pausing):
                on_eval(at.step)
            on_step(final_loss, tps)
            saving = (at.step % config.checkpoint_every == 0 or pausing) and at.step < total
            if saving or at.step >= total:
                bad = check_finite_params(parts.model)
                if bad is not None:
                    card.fail(at.step, f"{bad} holds NaN/inf after the update", lr)
            if saving:
                last = gi + 1 == len(steps)
                _save_position(config, parts, at, session, card, log, epoch + 1 if last else epoch, 0 if last else gi + 1)
            if at.step >= total or pausing:
                return final_loss
    return final_loss


def _paused(card: RunCard, at: Position, session: _Session, total_steps: int, final_loss: float | None, started: float,
            resume_from: Path | None) -> TrainResult:
    """A run stopped at `train(stop_at=...)`: the card says `paused` (a resume continues it), no adapter yet."""
    card.write("paused", paused_at_step=at.step, total_steps=total_steps)
    return TrainResult(run_dir=card.run_dir, adapter_dir=None, tokens_seen=at.tokens_seen,
                       wall_time_s=round(at.elapsed_s + time.time() - started, 3), peak_rss_mb=round(peak_rss_mb(), 1),
                       final_loss=final_loss, steps=at.step, resumed_from=resume_from.name if resume_from else None,
                       tokens_per_s=round(session.tokens_per_s(), 1), paused=True, total_steps=total_steps)


def _save_position(
    config: TrainConfig, parts: Parts, at: Position, session: _Session, card: RunCard, log: TextIO, epoch: int, next_group: int
) -> None:
    """A checkpoint of where the loop stands (the log fsynced first, so a resume finds it whole)."""
    log.flush()
    os.fsync(log.fileno())
    state = {
        "step": at.step,
        "epoch": epoch,
        "next_group": next_group,
        "tokens_seen": at.tokens_seen,
        "elapsed_s": session.elapsed(),
        "config_fingerprint": card.fingerprint,
        "config": config.model_dump(mode="json"),  # so a refused resume names the changed fields
    }
    save_checkpoint(card.run_dir, parts.model, parts.optimizer, parts.scheduler, state, config.keep_checkpoints)


def _optimizer_step(
    parts: Parts, batches: list[Batch], max_grad_norm: float | None, fail: Callable[[str, float], None]
) -> tuple[float, int, float]:
    """Forward and backward over the step's micro-batches, then one update.

    Returns the summed loss, the answer tokens it is over, and the learning rate the update
    used. Each micro-batch's loss is divided by the answer tokens of the whole step, so the
    update is the same however the step was split.
    """
    n_target = sum(b.target_tokens for b in batches)
    loss_total = 0.0
    for b in batches:
        with parts.autocast:
            loss_sum, _ = answer_loss_sum(
                parts.model, b.input_ids.to(parts.device), b.labels.to(parts.device), head_weight=parts.head_weight,
                shared_prefix=b.shared_prefix, lengths=b.attention_mask.sum(dim=1) if b.shared_prefix else None,
            )
        (loss_sum / max(n_target, 1)).backward()
        loss_total += float(loss_sum.detach())
    lr = parts.optimizer.param_groups[0]["lr"]
    if not math.isfinite(loss_total):
        fail(f"the loss is {loss_total}", lr)
    if max_grad_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(parts.params, max_grad_norm))
        if not math.isfinite(norm):
            fail(f"the gradient norm is {norm}", lr)
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return loss_total, n_target, lr


def _progress_bar(console: Any, enabled: bool, curves: bool = False) -> Any:
    """The training bar; with `curves`, the latest learning-curve point on a line under it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    if not curves:
        return Progress(*columns, console=console, disable=not enabled, transient=False)
    return _curve_progress_class()(*columns, console=console, disable=not enabled, transient=False)


def _curve_progress_class() -> type:
    """A rich Progress that renders `curve_line` under its bar (rich is imported lazily)."""
    from rich.progress import Progress
    from rich.text import Text

    class CurveProgress(Progress):
        curve_line = ""

        def get_renderables(self) -> Any:
            yield from super().get_renderables()
            if self.curve_line:
                yield Text(self.curve_line, style="dim")

    return CurveProgress


def _rewrite_log(path: Path, upto_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= upto_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a kill
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Saving and finishing


def _save_outputs(config: TrainConfig, run_dir: Path, model: Any, tokenizer: Any) -> tuple[Path, Path | None]:
    """The adapter (or the full model) and, with `merge`, the merged model, each with the tokenizer."""
    model.eval()
    adapter_dir = run_dir / ("adapter" if config.method == "lora" else "model")
    _save_folder(lambda dest: _save_pretrained(model, tokenizer, dest), adapter_dir)
    merged_dir = None
    if config.merge and config.method == "lora":
        merged_dir = run_dir / "merged"
        merged = model.merge_and_unload()
        _save_folder(lambda dest: _save_pretrained(merged, tokenizer, dest), merged_dir)
    return adapter_dir, merged_dir


def _save_pretrained(model: Any, tokenizer: Any, dest: Path) -> None:
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _save_folder(save: Callable[[Path], None], dest: Path) -> None:
    """Write a folder under a temp name, then swap it in: a kill never leaves half an adapter."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    save(tmp)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def _completion(
    result: TrainResult, schedule: Schedule, train_time_s: float, session: _Session, device: torch.device, dtype: str,
    attention: str | None, model: Any,
) -> dict[str, Any]:
    """What the complete run card adds: the result, and the hardware choices the run made."""
    run_dir = result.run_dir
    return {
        "steps": result.steps,
        "total_steps": schedule.total_steps,
        "tokens_seen": result.tokens_seen,
        "train_time_s": train_time_s,
        "wall_time_s": result.wall_time_s,
        "tokens_per_s": result.tokens_per_s,
        "shared_prefix_tokens": session.shared_tokens,  # this session's prompt tokens run once for a micro-batch, not per row
        "peak_rss_mb": result.peak_rss_mb,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
        "device": str(device),
        "base_dtype": dtype,
        "attention": attention or getattr(base_config(model), "_attn_implementation", None),
        "cpu_features": cpu_features() if device.type == "cpu" else None,
        "final_loss": result.final_loss,
        "resumed_from": result.resumed_from,
        "adapter_dir": str(result.adapter_dir.relative_to(run_dir)) if result.adapter_dir else None,
        "merged_dir": str(result.merged_dir.relative_to(run_dir)) if result.merged_dir else None,
    }


__all__ = [
    "CheckpointError",
    "TrainResult",
    "TrainingDiverged",
    "answer_loss_sum",
    "check_same_config",
    "checkpoint_dirs",
    "config_changes",
    "fp32_head_weight",
    "holds_run",
    "load_model_and_tokenizer",
    "make_optimizer",
    "make_scheduler",
    "prepare_data",
    "read_checkpoint",
    "resolve_attention",
    "resolve_precision",
    "run_loop",
    "save_checkpoint",
    "train",
]
