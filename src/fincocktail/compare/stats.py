"""Paired statistics of two or more runs on the same examples: the A/B question.

Every run is compared with the first (the reference, A). Pairing is what makes a small test set
informative: both models answered the very same examples, so the per-example differences carry
the signal and the between-example variance cancels. Per task and measure:

* the difference of the headline metric (recomputed from the predictions with the task's own
  `score`, so corpus metrics such as macro F1 are handled exactly) and its 95% paired bootstrap
  interval: the same resampled example indices for both runs;
* McNemar's exact test on per-example correctness for classification and multiple choice: only
  the discordant pairs (b: A right and B wrong, c: the reverse) matter, and under "no
  difference" b ~ Binomial(b + c, 1/2);
* the per-class shift (recall and number of predictions per gold class), and the examples where
  the two runs answer differently.

An LLM judge's verdicts (`judge` in the prediction lines) are a second measure, compared the
same way, when every run has them; so is the likelihood metric (`metrics.likelihood`: the gold
choice's probability, or the gold answer's log-likelihood per token), which moves with every
example rather than only those that flip, and so tells two close runs apart on fewer rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fincocktail.compare.runs import RunResults, TaskPredictions
from fincocktail.errors import ConfigError
from fincocktail.evaluation.bootstrap import resample_indices
from fincocktail.metrics.likelihood import likelihood_name, likelihood_of_row
from fincocktail.tasks.base import Example, Task

CLASSIFICATION_KINDS = ("classification", "multiple_choice")
JUDGE_MEASURE = "judge"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), at most 1."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass
class McNemar:
    b: int  # reference right, other wrong
    c: int  # reference wrong, other right
    p_value: float


@dataclass
class ClassShift:
    label: str
    n_gold: int
    recall_a: float
    recall_b: float
    predicted_a: int
    predicted_b: int


@dataclass
class TaskDelta:
    """One task, one measure, one run against the reference."""

    task: str
    measure: str  # the headline metric's name, or "judge"
    reference: str  # run label, e.g. "A"
    other: str
    n: int
    value_a: float
    value_b: float
    delta: float
    low: float
    high: float
    mcnemar: McNemar | None = None
    class_shift: list[ClassShift] | None = None
    n_disagree: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass
class Comparison:
    runs: list[dict[str, str]]  # label, path, model description
    tasks: list[str]
    split: str
    deltas: list[TaskDelta]
    notes: list[str]
    n_resamples: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": "fincocktail-compare", **asdict(self)}


def run_labels(n: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(n)]


# --- checks ------------------------------------------------------------------------------------


def _common_tasks(runs: Sequence[RunResults], labels: Sequence[str], tasks: Sequence[str] | None) -> list[str]:
    if tasks:
        for run, label in zip(runs, labels):
            missing = [t for t in tasks if t not in run.tasks]
            if missing:
                raise ConfigError(f"--tasks: {label} ({run.path}) has no evaluation of {', '.join(missing)}")
        return list(tasks)
    ref = list(runs[0].tasks)
    shared = [t for t in ref if all(t in r.tasks for r in runs)]
    for run, label in zip(runs[1:], labels[1:]):
        if set(run.tasks) != set(ref):
            only_a = sorted(set(ref) - set(run.tasks))
            only_b = sorted(set(run.tasks) - set(ref))
            what = "; ".join(x for x in (only_a and f"only A has {', '.join(only_a)}", only_b and f"only {label} has {', '.join(only_b)}") if x)
            hint = f"pass --tasks {','.join(shared)} to compare the tasks they share" if shared else "they share no task"
            raise ConfigError(f"A and {label} were evaluated on different tasks ({what}): {hint}")
    return ref


def _check_same_sample(task: str, preds: Sequence[TaskPredictions], labels: Sequence[str]) -> list[str]:
    """Refuse unless every run evaluated the same split, the same example ids and gold answers; notes for lesser differences."""
    a, notes = preds[0], []
    ids_a = a.ids
    gold_a = {str(r["id"]): r.get("gold") for r in a.rows}
    for p, label in zip(preds[1:], labels[1:]):
        if p.split != a.split:
            raise ConfigError(f"task {task}: A is on split {a.split!r} and {label} on {p.split!r}; compare runs of one split")
        ids = p.ids
        if len(set(ids)) != len(ids) or len(set(ids_a)) != len(ids_a):
            raise ConfigError(f"task {task}: repeated example ids in {p.path if len(set(ids)) != len(ids) else a.path}; the predictions file is corrupt")
        if set(ids) != set(ids_a):
            common = len(set(ids) & set(ids_a))
            raise ConfigError(
                f"task {task}: A and {label} evaluated different examples ({len(ids_a)} vs {len(ids)}, {common} in common); "
                "rerun both with the same --split, --limit, --sample and --sample-seed"
            )
        if a.sample_hash and p.sample_hash and a.sample_hash != p.sample_hash:  # the run cards' own record of the rows
            raise ConfigError(f"task {task}: A and {label} record different sample hashes ({a.sample_hash[:12]} vs {p.sample_hash[:12]}); "
                              "rerun both with the same --split, --limit, --sample and --sample-seed")
        changed = [i for i, r in ((str(r["id"]), r) for r in p.rows) if r.get("gold") != gold_a[i]]
        if changed:
            raise ConfigError(f"task {task}: A and {label} have different gold answers for {len(changed)} examples (e.g. {changed[0]}): the task's data changed between the runs")
        if p.version != a.version:
            notes.append(f"{task}: task versions differ (A {a.version}, {label} {p.version}): prompts may differ")
        if p.shots != a.shots:
            notes.append(f"{task}: A is {a.shots}-shot and {label} {p.shots}-shot")
        if p.mode != a.mode:
            notes.append(f"{task}: A is scored in {a.mode} mode and {label} in {p.mode} mode")
    return notes


# --- statistics --------------------------------------------------------------------------------


def _examples_for(task: Task, split: str, data_dir: Path, ids: Sequence[str]) -> list[Example]:
    by_id = {e.id: e for e in task.load(split, data_dir)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError(f"task {task.id}: example {missing[0]} of the runs is not in split {split!r} of {data_dir} (the data changed?)")
    return [by_id[i] for i in ids]


def _metric_fn(task: Task, examples: list[Example], rows: list[dict[str, Any]]) -> tuple[float, Callable[[np.ndarray], float] | np.ndarray]:
    """The full-sample metric, and either per-example values (a mean metric) or a function of resampled indices."""
    preds = [r.get("extracted") for r in rows]
    value = float(task.score(preds, examples)[task.metric])
    correct = np.array([float(bool(r.get("correct"))) for r in rows])
    if task.metric == "accuracy" and math.isclose(value, float(correct.mean()), abs_tol=1e-9):
        return value, correct  # vectorised bootstrap
    return value, lambda idx: float(task.score([preds[i] for i in idx], [examples[i] for i in idx])[task.metric])


def paired_interval(
    a: Callable[[np.ndarray], float] | np.ndarray, b: Callable[[np.ndarray], float] | np.ndarray, n: int, n_resamples: int, seed: int
) -> tuple[float, float]:
    """95% percentile interval of metric(B) - metric(A), both evaluated on the same resampled indices."""
    idx = resample_indices(n, n_resamples, seed)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        diffs = (b - a)[idx].mean(axis=1)
    else:
        fa = a if callable(a) else (lambda i: float(a[i].mean()))
        fb = b if callable(b) else (lambda i: float(b[i].mean()))
        diffs = np.array([fb(i) - fa(i) for i in idx])
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(low), float(high)


def _mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    b = sum(1 for x, y in zip(correct_a, correct_b) if x and not y)
    c = sum(1 for x, y in zip(correct_a, correct_b) if y and not x)
    return McNemar(b, c, mcnemar_exact(b, c))


def _class_shift(labels: Sequence[str], gold: Sequence[str], pred_a: Sequence[Any], pred_b: Sequence[Any]) -> list[ClassShift]:
    out = []
    for label in labels:
        rows = [i for i, g in enumerate(gold) if g == label]
        n = len(rows)
        out.append(ClassShift(
            label=label,
            n_gold=n,
            recall_a=sum(pred_a[i] == label for i in rows) / n if n else float("nan"),
            recall_b=sum(pred_b[i] == label for i in rows) / n if n else float("nan"),
            predicted_a=sum(p == label for p in pred_a),
            predicted_b=sum(p == label for p in pred_b),
        ))
    return out


def _disagreements(ids, rows_a, rows_b, verdict: Callable[[dict], Any]) -> list[dict[str, Any]]:
    """Examples the two runs answer differently; those where only one is right first."""
    out = []
    for i, ra, rb in zip(ids, rows_a, rows_b):
        if ra.get("extracted") != rb.get("extracted") or verdict(ra) != verdict(rb):
            out.append({"id": i, "gold": ra.get("gold"), "a": ra.get("extracted"), "b": rb.get("extracted"),
                        "a_correct": verdict(ra), "b_correct": verdict(rb),
                        "a_raw": ra.get("raw_output"), "b_raw": rb.get("raw_output")})
    out.sort(key=lambda d: d["a_correct"] == d["b_correct"])
    return out


def _likelihoods(rows: list[dict[str, Any]]) -> tuple[str, np.ndarray] | None:
    values = [likelihood_of_row(r) for r in rows]
    if not rows or any(v is None for v in values):
        return None
    return likelihood_name(rows[0]), np.array(values, dtype=float)


def _judge_verdicts(rows: list[dict[str, Any]]) -> np.ndarray | None:
    values = [((r.get("judge") or {}).get("verdict")) for r in rows]
    if any(v is None for v in values):
        return None
    return np.array([float(bool(v)) for v in values])


def compare_runs(
    runs: Sequence[RunResults],
    resolve_task: Callable[[str], Task],
    data_dir: Path,
    tasks: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Every run against the first on their shared tasks; ConfigError when the runs are not paired."""
    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs (A B [C ...])")
    labels = run_labels(len(runs))
    task_ids = _common_tasks(runs, labels, tasks)
    notes: list[str] = []
    deltas: list[TaskDelta] = []
    split = runs[0].tasks[task_ids[0]].split
    for task_id in task_ids:
        preds = [r.tasks[task_id] for r in runs]
        notes += _check_same_sample(task_id, preds, labels)
        task = resolve_task(task_id)
        ids = preds[0].ids
        lookups = [p.by_id() for p in preds]
        aligned = [[rows[i] for i in ids] for rows in lookups]
        examples = _examples_for(task, preds[0].split, data_dir, ids)
        scored = [_metric_fn(task, examples, rows) for rows in aligned]
        judged = [_judge_verdicts(rows) for rows in aligned]
        likelihoods = [_likelihoods(rows) for rows in aligned]
        judge_models = {str((rows[0].get("judge") or {}).get("judge")) for rows in aligned} if all(j is not None for j in judged) else set()
        if len(judge_models) > 1:
            notes.append(f"{task_id}: the runs were judged by different judges ({', '.join(sorted(judge_models))}): judge scores not compared")
        classification = task.kind in CLASSIFICATION_KINDS
        labels_set = list(task.labels or sorted({str(r.get("gold")) for r in aligned[0]}))
        for k in range(1, len(runs)):
            (va, fa), (vb, fb) = scored[0], scored[k]
            low, high = paired_interval(fa, fb, len(ids), n_resamples, seed)
            correct_a = [bool(r.get("correct")) for r in aligned[0]]
            correct_b = [bool(r.get("correct")) for r in aligned[k]]
            dis = _disagreements(ids, aligned[0], aligned[k], lambda r: bool(r.get("correct")))
            deltas.append(TaskDelta(
                task=task_id, measure=task.metric, reference=labels[0], other=labels[k], n=len(ids),
                value_a=va, value_b=vb, delta=vb - va, low=low, high=high,
                mcnemar=_mcnemar(correct_a, correct_b) if classification else None,
                class_shift=_class_shift(labels_set, [r.get("gold") for r in aligned[0]],
                                         [r.get("extracted") for r in aligned[0]], [r.get("extracted") for r in aligned[k]]) if classification else None,
                n_disagree=len(dis), disagreements=dis,
            ))
            la, lb = likelihoods[0], likelihoods[k]
            if la is not None and lb is not None and la[0] == lb[0]:
                llow, lhigh = paired_interval(la[1], lb[1], len(ids), n_resamples, seed)
                deltas.append(TaskDelta(
                    task=task_id, measure=la[0], reference=labels[0], other=labels[k], n=len(ids),
                    value_a=float(la[1].mean()), value_b=float(lb[1].mean()), delta=float(lb[1].mean() - la[1].mean()),
                    low=llow, high=lhigh,
                ))
            ja, jb = judged[0], judged[k]
            if ja is not None and jb is not None and len(judge_models) == 1:
                jlow, jhigh = paired_interval(ja, jb, len(ids), n_resamples, seed)
                jdis = _disagreements(ids, aligned[0], aligned[k], lambda r: bool((r.get("judge") or {}).get("verdict")))
                deltas.append(TaskDelta(
                    task=task_id, measure=JUDGE_MEASURE, reference=labels[0], other=labels[k], n=len(ids),
                    value_a=float(ja.mean()), value_b=float(jb.mean()), delta=float(jb.mean() - ja.mean()), low=jlow, high=jhigh,
                    mcnemar=_mcnemar(ja.astype(bool).tolist(), jb.astype(bool).tolist()),
                    n_disagree=len(jdis), disagreements=jdis,
                ))
    described = [{"label": lab, "path": str(r.path), "model": r.description} for lab, r in zip(labels, runs)]
    return Comparison(described, task_ids, split, deltas, notes, n_resamples, seed)
