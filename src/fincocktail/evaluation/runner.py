"""The evaluation loop: tasks -> prompts -> model -> extracted answers -> metrics and files.

One run writes, under its output folder:

* `<task>.predictions.jsonl`: one line per example (id, prompt hash, raw output, extracted
  answers, gold, correctness, choice log-probs), so two models' answers line up by id;
* `<task>.metrics.json`: `task.score` (flexible and strict extraction), the 95% bootstrap
  interval of the headline metric, the parse-failure rate and throughput;
* `metrics.json`: all tasks together, and `run_card.json`: everything needed to rerun it.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file behind, and a folder that already holds a run is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from statistics import fmean
from typing import Any, Callable, Literal, Sequence

from pydantic import Field, field_validator

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.fileio import FolderLock, disk_full_message, is_disk_full, safe_name, write_json_atomic, write_text_atomic
from fincocktail.evaluation.bootstrap import bootstrap_interval, mean_interval
from fincocktail.evaluation.fewshot import build_pair, chat_messages, choice_target, select_demos
from fincocktail.evaluation.judge import JUDGED_KINDS, apply_judge
from fincocktail.evaluation.results import TaskResult, result_json
from fincocktail.evaluation.settings import EvalFields, Mode
from fincocktail.metrics.likelihood import (
    GENERATIVE_LIKELIHOOD_METRIC, LIKELIHOOD_METRIC, first_token_choice_logprobs, gold_log_probability,
)
from fincocktail.tasks.prompts import TokenCache, encoder_for
from fincocktail.tasks.base import Example, Task
from fincocktail.tasks.sampling import Sample, draw_sample

CHOICE_KINDS = ("classification", "multiple_choice")


class EvalConfig(EvalFields):
    """Everything that determines an evaluation's numbers (it is copied into the run card).

    The settings it shares with sweeps (tasks, split, mode, shots, sample, dtype, ...) are
    declared in `EvalFields`; these are the ones only a single evaluation has."""

    model: str
    adapter: str | None = None
    limit: int | None = Field(default=None, ge=1)  # a sample of N examples of each task, picked by `sample`
    style: Literal["instruction", "chat"] | None = None  # None: the adapter's training style, else instruction locally; chat for API models
    device: str = "auto"  # models.device: auto | cpu | cuda | cuda:N | mps; speed only, the same predictions
    out: Path | None = None
    data_dir: Path | None = None
    tasks_dir: Path | None = None
    base_url: str | None = None
    seed: int = 0
    judge: str | None = None  # openai:MODEL grading open-answer tasks (evaluation.judge)
    judge_base_url: str | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        from fincocktail.models.device import check_device

        try:
            return check_device(v)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("--device ")) from None

    @field_validator("tasks")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        v = [t.strip() for t in v if t.strip()]
        if not v:
            raise ValueError("expected at least one task id")
        twice = sorted({t for t in v if v.count(t) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once; list each task once")
        return v


@dataclass
class EvalRun:
    out_dir: Path
    results: list[TaskResult]
    card: dict[str, Any]


TaskResolver = Callable[[str], Task]


def run_eval(
    config: EvalConfig,
    resolve_task: TaskResolver | None = None,
    loaded: Any | None = None,
    progress: bool = False,
    tokens: TokenCache | None = None,
) -> EvalRun:
    """Evaluate `config.model` on `config.tasks`; see the module docstring for what is written.

    `loaded` (a `LoadedModel`) lets callers reuse an already loaded model (tests, sweeps), and
    `tokens` a tokenization cache shared with other runs (sweep workers).
    """
    from fincocktail.evaluation.api import is_api_model
    from fincocktail.plumbing.paths import find_data_dir

    started = time.perf_counter()
    api = is_api_model(config.model)
    if api and config.mode == "choice":
        raise ConfigError("--mode choice needs token log-probabilities, which chat APIs do not give; use --mode generate")
    if api and config.adapter:
        raise ConfigError("--adapter applies to local models only, not to openai:MODEL")
    style = config.style or ("chat" if api else _adapter_style(config.adapter) or "instruction")
    if api and style != "chat":
        raise ConfigError("API models are evaluated in the chat style; drop --style instruction")
    if resolve_task is None:
        from fincocktail.tasks.registry import get_task

        def resolve_task(task_id: str) -> Task:
            return get_task(task_id, config.tasks_dir)

    tasks = [resolve_task(t) for t in config.tasks]
    for task in tasks:
        problem = task.why_not_evaluable(config.split)
        if problem is not None:
            raise ConfigError(problem)
    data_dir = find_data_dir(config.data_dir)
    judge = _make_judge(config)  # before any folder is made: a missing key fails first
    out_dir, created = _prepare_out_dir(config)
    locked = False
    try:
        with FolderLock(out_dir, EVAL_LOCK, "an evaluation", "wait for it or choose another --out"):
            locked = True
            try:
                return _run_eval_locked(config, tasks, api, style, data_dir, out_dir, loaded, progress, started, judge, tokens)
            except Exception as exc:
                if is_disk_full(exc):  # no card yet (it is written last): the one line is the whole report
                    raise FincocktailError(disk_full_message(out_dir)) from None
                raise
    except BaseException:
        if locked:
            _remove_empty_out_dir(out_dir, created)
        raise
    finally:
        if judge is not None:
            judge.close()


EVAL_LOCK = ".eval.lock"
_TEMP_FILE = re.compile(r"^\..+\.jsonl?\.[A-Za-z0-9_]{8}$")  # mkstemp(prefix=".NAME.") of a .json / .jsonl file


def _adapter_style(adapter: str | None) -> str | None:
    """The prompt style the adapter was trained with (its run card's), so that it is evaluated, as it is
    served, in the format it learned; None without an adapter or a recorded style."""
    if not adapter:
        return None
    from fincocktail.evaluation.adapters import recorded_style
    from fincocktail.evaluation.loading import adapter_folder

    return recorded_style(adapter_folder(adapter))


def _run_eval_locked(config: EvalConfig, tasks: list[Task], api: bool, style: str, data_dir: Path, out_dir: Path,
                     loaded: Any | None, progress: bool, started: float, judge: Any = None,
                     tokens: TokenCache | None = None) -> EvalRun:
    """`run_eval` once the output folder is locked against a second writer."""
    from fincocktail.evaluation.api import api_model_name

    if (out_dir / "run_card.json").exists():  # checked again under the lock: another run may have just finished
        raise ConfigError(f"--out {out_dir} already holds an evaluation (run_card.json); choose another folder")
    for stale in out_dir.iterdir():  # temp files of a killed run's writes (`_write_text`); no live writer owns them
        if _TEMP_FILE.match(stale.name) and stale.is_file():
            stale.unlink()

    backend: Backend
    if api:
        from fincocktail.evaluation.api import ChatClient

        backend = ApiBackend(ChatClient(model=api_model_name(config.model), **({"base_url": config.base_url} if config.base_url else {})), config.batch_size)
    else:
        if loaded is None:
            from fincocktail.evaluation.loading import load_for_eval

            loaded = load_for_eval(config.model, config.adapter, config.dtype, device=config.device)
        backend = LocalBackend(loaded, config.batch_size, config.max_prompt_tokens, tokens)

    results: list[TaskResult] = []
    try:
        for task in tasks:
            mode = _task_mode(task, config.mode, api)
            sample = draw_sample(
                task.load(config.split, data_dir), config.limit, task_id=task.id, split=config.split,
                kind=task.kind, seed=config.sample_seed, method=config.sample,
            )
            examples = sample.examples
            if not examples:
                raise FincocktailError(f"task {task.id!r}: split {config.split!r} has no examples")
            demos = select_demos(task, data_dir, config.shots, config.seed, exclude=[e.id for e in examples])
            with _progress(progress, f"{task.id} ({mode})", len(examples)) as tick:
                if mode == "choice":
                    rows, timing = backend.choice(task, examples, demos, style, tick)
                else:
                    rows, timing = backend.generate(task, examples, demos, style, config.max_new_tokens, tick)
            result = _finish_task(task, mode, sample, rows, timing, demos, config, out_dir)
            if judge is not None and task.kind in JUDGED_KINDS:
                apply_judge(judge, task, examples, out_dir, result, config.seed, config.bootstrap_samples)
            results.append(result)
    finally:
        backend.close()

    card = _run_card(config, style, tasks, results, backend, time.perf_counter() - started)
    if judge is not None:
        card["judge"] = judge.describe()
    _json_file(out_dir / "metrics.json", {r.task: result_json(r) for r in results})
    _json_file(out_dir / "run_card.json", card)
    return EvalRun(out_dir=out_dir, results=results, card=card)


def _make_judge(config: EvalConfig) -> Any:
    if not config.judge:
        return None
    from fincocktail.evaluation.judge import Judge

    return Judge(config.judge, config.judge_base_url, concurrency=config.batch_size)


# --- per-task --------------------------------------------------------------------------------


def _task_mode(task: Task, requested: Mode, api: bool) -> str:
    """Choice mode where the task has a fixed answer set and the model gives log-probs."""
    if requested == "generate" or api or task.kind not in CHOICE_KINDS:
        return "generate"
    return "choice"


@dataclass
class _Row:
    example: Example
    prompt: str
    prompt_tokens: int
    raw: str | None = None
    flexible: str | None = None
    strict: str | None = None
    output_tokens: int = 0
    logprobs: dict[str, float] | None = None
    logprobs_norm: dict[str, float] | None = None
    pred_norm: str | None = None
    tie: bool = False
    cached: bool | None = None
    rescored: bool = False
    truncated: bool = False  # the prompt lost tokens from the left (max_prompt_tokens)
    gold_logprob_per_token: float | None = None  # generate mode: the gold answer's teacher-forced log-likelihood


@dataclass
class _Timing:
    seconds: float
    tokens: int


def _finish_task(task, mode, sample: Sample, rows: list[_Row], timing: _Timing, demos, config: EvalConfig, out_dir: Path) -> TaskResult:
    examples = sample.examples
    preds = [r.flexible for r in rows]
    metrics = dict(task.score(preds, examples))
    if task.metric not in metrics:
        raise FincocktailError(f"task {task.id!r}: score() did not return its headline metric {task.metric!r}")
    strict = task.score([r.strict for r in rows], examples)
    for key, value in strict.items():
        metrics[f"strict_{key}"] = value
    if mode == "choice":
        norm = task.score([r.pred_norm for r in rows], examples)
        metrics[f"norm_{task.metric}"] = norm[task.metric]
    likelihood = _likelihood(mode, rows)
    metrics.update(likelihood.metrics)
    failures = sum(p is None for p in preds) / len(preds)
    metrics["parse_failure_rate"] = failures
    metrics["strict_parse_failure_rate"] = sum(r.strict is None for r in rows) / len(rows)
    correct = [bool(task.is_correct(p, e)) for p, e in zip(preds, examples)]
    if task.metric == "accuracy":
        interval = mean_interval(correct, config.bootstrap_samples, config.seed)
    else:
        interval = bootstrap_interval(
            lambda idx: task.score([preds[i] for i in idx], [examples[i] for i in idx])[task.metric],
            len(examples),
            config.bootstrap_samples,
            config.seed,
        )
    result = TaskResult(
        task=task.id,
        version=task.version,
        mode=mode,
        n=len(examples),
        metric=task.metric,
        metrics=metrics,
        interval=interval,
        parse_failure_rate=failures,
        ties=sum(r.tie for r in rows),
        examples_per_s=len(examples) / timing.seconds if timing.seconds > 0 else float("inf"),
        tokens_per_s=timing.tokens / timing.seconds if timing.seconds > 0 else float("inf"),
        seconds=timing.seconds,
        demo_ids=[d.id for d in demos],
        rescored=sum(r.rescored for r in rows),
        truncated_prompts=sum(r.truncated for r in rows),
        sample=sample.describe(),
    )
    lines = []
    for r, ok, lik in zip(rows, correct, likelihood.per_row):
        line: dict[str, Any] = {
            "id": r.example.id,
            "prompt_sha256": hashlib.sha256(r.prompt.encode("utf-8")).hexdigest()[:16],
            "prompt_tokens": r.prompt_tokens,
            **({"prompt_truncated": True} if r.truncated else {}),
            "raw_output": r.raw,
            "extracted": r.flexible,
            "extracted_strict": r.strict,
            "gold": r.example.target,
            "correct": ok,
        }
        if mode == "choice":
            line.update(choice_logprobs=r.logprobs, choice_logprobs_norm=r.logprobs_norm, prediction_norm=r.pred_norm, tie=r.tie)
            if lik is not None:
                line[LIKELIHOOD_METRIC] = lik
            if r.rescored:
                line["rescored_fp32"] = True
        else:
            line["output_tokens"] = r.output_tokens
            if lik is not None and r.logprobs:  # an API's first-token approximation (metrics.likelihood)
                line.update(choice_logprobs_first_token=r.logprobs, **{LIKELIHOOD_METRIC: lik})
            elif lik is not None:
                line[GENERATIVE_LIKELIHOOD_METRIC] = lik
            if r.cached is not None:
                line["cached"] = r.cached
        lines.append(json.dumps(line, ensure_ascii=False))
    write_text_atomic(out_dir / f"{safe_name(task.id)}.predictions.jsonl", "\n".join(lines) + "\n")
    _json_file(out_dir / f"{safe_name(task.id)}.metrics.json", result_json(result))
    return result


@dataclass
class _Likelihood:
    metrics: dict[str, float]
    per_row: list[float | None]


def _likelihood(mode: str, rows: list[_Row]) -> _Likelihood:
    """The likelihood metric (`metrics.likelihood`) of each row and its means for the metrics file.

    Choice rows: the gold choice's probability over the choices (and the mean of its log); rows
    whose gold answer is not among the choices have none, and then the task reports none.
    Generate rows: the gold answer's log-likelihood per token, where the backend scored it (an
    API model gives none).
    """
    if mode == "choice" or (rows and all(r.logprobs for r in rows)):  # API choice tasks: first-token log-probs
        logs = [gold_log_probability(r.logprobs, str(r.example.target)) if r.logprobs else -math.inf for r in rows]
        if not rows or any(math.isinf(v) for v in logs):
            return _Likelihood({}, [None] * len(rows))
        probs = [math.exp(v) for v in logs]
        return _Likelihood({LIKELIHOOD_METRIC: fmean(probs), "gold_logprob": fmean(logs)}, list(probs))
    per = [r.gold_logprob_per_token for r in rows]
    if not rows or any(v is None for v in per):
        return _Likelihood({}, [None] * len(rows))
    return _Likelihood({GENERATIVE_LIKELIHOOD_METRIC: fmean(per)}, list(per))  # type: ignore[arg-type]


# --- backends --------------------------------------------------------------------------------


class Backend:
    """How the evaluation loop reaches a model: choice scoring and generation over a batch of examples.
    Public so bench scripts drive the same backends as `run_eval` (`LocalBackend`, `ApiBackend`)."""

    def choice(self, task, examples, demos, style, tick) -> tuple[list[_Row], _Timing]:
        raise NotImplementedError

    def generate(self, task, examples, demos, style, max_new_tokens, tick) -> tuple[list[_Row], _Timing]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


CHECK_MARGIN = 0.5
"""Nats between the two best choices under which a bf16 score is re-checked in fp32.

Measured on 2,335 predictions (the base model and 7 adapter/task pairs of the cpu-study run,
test samples of 300; README, Performance): bf16 flipped 43 predictions, each with a bf16 margin
of at most 0.33 nats, all caught; but bf16 moved a margin by up to 0.61 nats (median
0.03-0.17), so a smaller margin would leave little room. 0.5 re-checks 5% (base) to 37% (a
cocktail adapter on TFNS) of the examples.
"""


class LocalBackend(Backend):
    """A loaded local model (`evaluation.loading`): choice by answer log-likelihood, batched generation."""

    def __init__(self, loaded: Any, batch_size: int, max_prompt_tokens: int | None = None, tokens: TokenCache | None = None):
        from fincocktail.models.forward import Scorer, memory_batch_tokens

        self.loaded = loaded
        self.tok = loaded.tokenizer
        self.scorer = Scorer(loaded.model)
        reference = getattr(loaded, "reference", None)
        self.reference = Scorer(reference) if reference is not None else None
        self.batch_size = batch_size
        # On a GPU a batch also holds at most the tokens that fit (the fp32 reference, if any, needs the most)
        self.batch_tokens = memory_batch_tokens(reference if reference is not None else loaded.model)
        self.max_prompt_tokens = max_prompt_tokens
        self.encode = encoder_for(tokens)

    def _prompt(self, task, example, demos, style) -> tuple[str, list[int], bool, list[int]]:
        """(prompt text, its ids cut to max_prompt_tokens, whether cut, the gold target's ids)."""
        try:
            pair = build_pair(task, example, style, self.tok, demos)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        ids, target = self.encode(self.tok, pair, False)
        limit = self.max_prompt_tokens
        if limit is not None and len(ids) > limit:
            return pair.prompt, ids[-limit:], True, target
        return pair.prompt, ids, False, target

    def choice(self, task, examples, demos, style, tick):
        from fincocktail.models.choice import ChoiceItem, close_margin, pick, score_choices

        memo: dict[str, list[int]] = {}

        def choice_ids(choice: str, example: Example) -> list[int]:
            if choice not in memo:
                target = choice_target(task, example, choice, style, self.tok)
                memo[choice] = list(self.tok(target, add_special_tokens=False)["input_ids"])
            return memo[choice]

        rows, items = [], []
        for ex in examples:
            choices = list(ex.choices or task.labels or ())
            if not choices:
                raise FincocktailError(f"task {task.id!r}: example {ex.id} has no choices to score; use --mode generate")
            prompt, ids, cut, _ = self._prompt(task, ex, demos, style)
            rows.append(_Row(example=ex, prompt=prompt, prompt_tokens=len(ids), truncated=cut))
            items.append(ChoiceItem(ids, [choice_ids(c, ex) for c in choices]))
        t0 = time.perf_counter()
        scores = score_choices(self.scorer, items, self.tok.pad_token_id, self.batch_size, on_batch=tick, max_batch_tokens=self.batch_tokens)
        if self.reference is not None:
            close = [i for i, sc in enumerate(scores) if close_margin(sc.logprobs, sc.logprobs_norm) < CHECK_MARGIN]
            rescored = score_choices(self.reference, [items[i] for i in close], self.tok.pad_token_id, self.batch_size,
                                     max_batch_tokens=self.batch_tokens)
            for i, sc in zip(close, rescored):
                scores[i] = sc
                rows[i].rescored = True
        seconds = time.perf_counter() - t0
        for row, item, sc in zip(rows, items, scores):
            choices = list(row.example.choices or task.labels or ())
            best, tie = pick(sc.logprobs)
            best_norm, _ = pick(sc.logprobs_norm)
            row.flexible = row.strict = choices[best]
            row.pred_norm = choices[best_norm]
            row.tie = tie
            row.logprobs = dict(zip(choices, sc.logprobs))
            row.logprobs_norm = dict(zip(choices, sc.logprobs_norm))
        tokens = sum(len(it.prompt_ids) + sum(len(c) for c in it.choice_ids) for it in items)
        return rows, _Timing(seconds, tokens)

    def generate(self, task, examples, demos, style, max_new_tokens, tick):
        from fincocktail.evaluation.generate import generate_greedy

        rows, prompts, golds = [], [], []
        for ex in examples:
            prompt, ids, cut, gold = self._prompt(task, ex, demos, style)
            rows.append(_Row(example=ex, prompt=prompt, prompt_tokens=len(ids), truncated=cut))
            prompts.append(ids)
            golds.append(gold)
        spec = task.generation
        t0 = time.perf_counter()
        # In fp32 when there is a reference. generate_greedy can decode in bf16 and re-decode rows
        # with a close token in fp32, but on FinQA 5 of 6 rows had a step within GEN_CHECK_MARGIN
        # and prefill dominates, so that measured 0.57x fp32's speed (README, Performance).
        gens = generate_greedy(
            self.reference or self.scorer, self.tok, prompts, max_new_tokens or spec.max_new_tokens, tuple(spec.stop), self.batch_size,
            on_batch=tick, max_batch_tokens=self.batch_tokens,
        )
        seconds = time.perf_counter() - t0
        for row, g in zip(rows, gens):
            _read_answer(task, row, g.text)
            row.output_tokens = g.n_tokens
            row.rescored = row.rescored or g.rechecked
        self._gold_loglik(rows, prompts, golds)
        tokens = sum(len(p) for p in prompts) + sum(g.n_tokens for g in gens)
        return rows, _Timing(seconds, tokens)

    def _gold_loglik(self, rows: list[_Row], prompts: list[list[int]], golds: list[list[int]]) -> None:
        """Teacher-forced log-likelihood per token of each gold answer (`models.forward.answer_logprobs`:
        one forward of prompt + answer, no generation), in fp32 when there is a reference."""
        from fincocktail.models.forward import answer_logprobs

        if any(not gold or not ids for ids, gold in zip(prompts, golds)):
            return  # an example without a gold answer (nothing to score): the task reports no likelihood
        scored = answer_logprobs(self.reference or self.scorer, list(zip(prompts, golds)), self.tok.pad_token_id, self.batch_size)
        for row, (total, n) in zip(rows, scored):
            row.gold_logprob_per_token = total / n

    def describe(self):
        dtype = str(getattr(self.loaded.model, "dtype", "")).removeprefix("torch.")
        if self.reference is not None:
            dtype += f" (choices within {CHECK_MARGIN} nats re-checked in float32; generation in float32)"
        return {"model_path": self.loaded.path, "adapter_path": self.loaded.adapter, "model_dtype": dtype,
                "device": getattr(self.loaded, "device", "cpu")}


API_TOP_LOGPROBS = 20
"""First-token alternatives asked of an API on choice tasks (OpenAI allows up to 20): the likelihood
metric's approximation there (`metrics.likelihood.first_token_choice_logprobs`)."""


class ApiBackend(Backend):
    """An OpenAI-compatible endpoint: generation only, requests in parallel."""

    def __init__(self, client: Any, concurrency: int):
        self.client = client
        self.concurrency = concurrency

    def generate(self, task, examples, demos, style, max_new_tokens, tick):
        from fincocktail.evaluation.generate import cut_at_stop

        spec = task.generation
        limit = max_new_tokens or spec.max_new_tokens
        conversations = [chat_messages(task, ex, demos) for ex in examples]
        top = API_TOP_LOGPROBS if task.kind in CHOICE_KINDS else None  # the likelihood metric's first-token read

        def one(messages):
            res = self.client.chat(messages, max_tokens=limit, stop=list(spec.stop), top_logprobs=top)
            tick(1)
            return res

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(one, messages) for messages in conversations]
            try:
                answers = [f.result() for f in futures]
            except BaseException:
                for f in futures:  # one failure ends the task: send no more requests
                    f.cancel()
                raise
        seconds = time.perf_counter() - t0
        rows = []
        for ex, messages, res in zip(examples, conversations, answers):
            row = _Row(example=ex, prompt=json.dumps(messages, ensure_ascii=False), prompt_tokens=res.prompt_tokens or 0)
            _read_answer(task, row, cut_at_stop(res.text, spec.stop)[0])
            row.output_tokens = res.completion_tokens or 0
            row.cached = res.cached
            choices = list(ex.choices or task.labels or ())
            if top and choices and res.first_token_logprobs:
                row.logprobs = first_token_choice_logprobs(res.first_token_logprobs, choices)
            rows.append(row)
        tokens = sum(r.prompt_tokens + r.output_tokens for r in rows)
        return rows, _Timing(seconds, tokens)

    def describe(self):
        return {"base_url": self.client.shown_url, "api_requests_sent": self.client.requests_sent}

    def close(self):
        self.client.close()


def _read_answer(task: Task, row: _Row, text: str) -> None:
    row.raw = text
    row.flexible = task.extract(text, "flexible")
    row.strict = task.extract(text, "strict")


# --- files and run card ----------------------------------------------------------------------


def _json_file(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj, default=str, ensure_ascii=False)


def default_out_dir(model: str, now: datetime | None = None) -> Path:
    now = now or datetime.now(timezone.utc)
    slug = safe_name(Path(model.rstrip("/")).name if not model.startswith("openai:") else model)
    return Path("runs") / "eval" / f"{now:%Y%m%d-%H%M%S}-{slug}"


def _prepare_out_dir(config: EvalConfig) -> tuple[Path, list[Path]]:
    """The output folder, made, and the folders this call made (deepest first), so that a
    failed run can take them back (see `_remove_empty_out_dir`)."""
    out = Path(config.out) if config.out else default_out_dir(config.model)
    if (out / "run_card.json").exists():
        raise ConfigError(f"--out {out} already holds an evaluation (run_card.json); choose another folder")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    out.mkdir(parents=True, exist_ok=True)
    return out, created


def _remove_empty_out_dir(out: Path, created: Sequence[Path]) -> None:
    """After a failed run: remove the folders it made when they hold nothing but its lock.

    Why: a folder holding only `.eval.lock` looks like an evaluation and makes the user wonder
    what ran; one that holds predictions is kept, since they show how far the run got.
    """
    if not created or any(entry.name != EVAL_LOCK for entry in out.iterdir()):
        return
    (out / EVAL_LOCK).unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there now
            return


def _run_card(config: EvalConfig, style: str, tasks: Sequence[Task], results: Sequence[TaskResult], backend: Backend, wall: float) -> dict[str, Any]:
    from fincocktail.plumbing.provenance import provenance
    from fincocktail.plumbing.redact import redact_obj

    return {
        "kind": "fincocktail-eval",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": redact_obj(json.loads(config.model_dump_json())),  # --base-url may carry user:password@
        "style": style,
        **backend.describe(),
        "tasks": {t.id: {"version": t.version, "mode": r.mode, "n": r.n, "demo_ids": r.demo_ids, "sample": r.sample} for t, r in zip(tasks, results)},
        **provenance(),
        "wall_seconds": round(wall, 3),
    }


# --- progress and summary ---------------------------------------------------------------------


class _progress:
    """A rich progress bar when asked for, else a no-op; yields the per-batch tick callback."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self._bar.start()
        task_id = self._bar.add_task(self.label, total=self.total)
        bar = self._bar
        return lambda n: bar.advance(task_id, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def summary_table(results: Sequence[TaskResult]):
    from rich.table import Table

    table = Table(title="fincocktail eval")
    for col in ("task", "mode", "n", "metric", "value", "95% CI", "parse fail", "ties", "ex/s"):
        table.add_column(col, justify="left" if col in ("task", "mode", "metric") else "right")
    for r in results:
        ci = f"[{r.interval.low:.3f}, {r.interval.high:.3f}]" if r.interval else "-"
        table.add_row(
            r.task, r.mode, str(r.n), r.metric, f"{r.metrics[r.metric]:.3f}", ci,
            f"{r.parse_failure_rate:.1%}", str(r.ties), f"{r.examples_per_s:.1f}",
        )
    return table
