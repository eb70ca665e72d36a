"""Classification metrics as the FinGPT benchmark reports them: accuracy, macro F1, weighted F1.

Written out in plain Python (not sklearn) so the tests can check them *against* sklearn. Two
deliberate choices:

* A parse failure (`None`) is a wrong answer. FinGPT's scripts map anything they cannot read
  to "neutral", which quietly rewards a model that rambles on a neutral-heavy test set; we
  count it as wrong and report `parse_failure_rate` next to the scores.
* F1 is averaged over the labels present in the gold answers or the (parsed) predictions,
  which is what `sklearn.metrics.f1_score` does by default. With no parse failures the numbers
  are exactly sklearn's on the same label strings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence


def _check_lengths(y_true: Sequence[object], y_pred: Sequence[object]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold labels but {len(y_pred)} predictions")


def accuracy(y_true: Sequence[str], y_pred: Sequence[str | None]) -> float:
    _check_lengths(y_true, y_pred)
    if not y_true:
        return 0.0
    return sum(p is not None and p == t for t, p in zip(y_true, y_pred)) / len(y_true)


def per_label_f1(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str] | None = None
) -> dict[str, tuple[float, int]]:
    """F1 and support of each label. A None prediction is a miss for its gold label only."""
    _check_lengths(y_true, y_pred)
    if labels is None:
        labels = sorted(set(y_true) | {p for p in y_pred if p is not None})
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for t, p in zip(y_true, y_pred):
        if p is not None and p == t:
            tp[t] += 1
            continue
        fn[t] += 1
        if p is not None:
            fp[p] += 1
    out: dict[str, tuple[float, int]] = {}
    for label in labels:
        denom = 2 * tp[label] + fp[label] + fn[label]
        f1 = 2 * tp[label] / denom if denom else 0.0
        out[label] = (f1, tp[label] + fn[label])
    return out


def f1(y_true: Sequence[str], y_pred: Sequence[str | None], average: str = "macro") -> float:
    """Macro or weighted F1 over the labels seen in gold or parsed predictions (sklearn's default set)."""
    scores = per_label_f1(y_true, y_pred)
    if not scores:
        return 0.0
    if average == "macro":
        return sum(f for f, _ in scores.values()) / len(scores)
    if average == "weighted":
        total = sum(s for _, s in scores.values())
        return sum(f * s for f, s in scores.values()) / total if total else 0.0
    raise ValueError(f"unknown average {average!r}; expected 'macro' or 'weighted'")


def parse_failure_rate(y_pred: Sequence[object | None]) -> float:
    """Share of predictions the extractor could not read (None); every task reports it next to its scores."""
    return sum(p is None for p in y_pred) / len(y_pred) if y_pred else 0.0


def classification_scores(y_true: Sequence[str], y_pred: Sequence[str | None]) -> dict[str, float]:
    """accuracy, f1_macro, f1_weighted, parse_failure_rate and n, as one flat dict."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "f1_macro": f1(y_true, y_pred, "macro"),
        "f1_weighted": f1(y_true, y_pred, "weighted"),
        "parse_failure_rate": parse_failure_rate(y_pred),
        "n": float(len(y_true)),
    }


def grouped_f1(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    groups: Sequence[Hashable],
    average: str = "weighted",
) -> dict[Hashable, float]:
    """F1 computed separately within each group (e.g. each headline question type)."""
    _check_lengths(y_true, groups)
    _check_lengths(y_true, y_pred)
    by_group: dict[Hashable, tuple[list[str], list[str | None]]] = defaultdict(lambda: ([], []))
    for t, p, g in zip(y_true, y_pred, groups):
        by_group[g][0].append(t)
        by_group[g][1].append(p)
    return {g: f1(t, p, average) for g, (t, p) in by_group.items()}


def confusion_counts(y_true: Sequence[str], y_pred: Sequence[str | None]) -> dict[str, dict[str, int]]:
    """gold label -> predicted label (or "<unparsed>") -> count; for reports and error analysis."""
    _check_lengths(y_true, y_pred)
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t, p in zip(y_true, y_pred):
        out[t][p if p is not None else "<unparsed>"] += 1
    return {t: dict(row) for t, row in out.items()}
