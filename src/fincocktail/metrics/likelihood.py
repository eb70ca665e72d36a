"""The likelihood metric: how much probability a model puts on the gold answer.

Why beside accuracy: accuracy flips only when an example crosses the decision boundary, so two
recipes that moved every example's gold probability by 0.1 can score the same. The gold
probability moves with every example, which is why a contrast on it has a smaller seed and
sample variance (measured in docs/results.md) and decides with fewer runs.

- Choice tasks: the gold choice's probability normalised over the choices (a softmax over the
  choices' summed log-probs, the numbers every predictions file already holds), and its log.
- Generative tasks: the teacher-forced log-likelihood of the gold answer, per answer token.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

LIKELIHOOD_METRIC = "gold_prob"
"""The metrics-file key of the likelihood metric: the gold choice's probability (choice tasks)."""
GENERATIVE_LIKELIHOOD_METRIC = "gold_logprob_per_token"
"""The metrics-file key of the likelihood metric of generative tasks (nats per answer token)."""
LIKELIHOOD_KEYS = (LIKELIHOOD_METRIC, GENERATIVE_LIKELIHOOD_METRIC)


def choice_log_softmax(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Each choice's log-probability normalised over the choices (log-sum-exp, stable)."""
    if not logprobs:
        raise ValueError("no choices to normalise over")
    top = max(logprobs.values())
    log_total = top + math.log(sum(math.exp(v - top) for v in logprobs.values()))
    return {k: v - log_total for k, v in logprobs.items()}


def gold_log_probability(logprobs: Mapping[str, float], gold: str) -> float:
    """log P(gold | the choices); -inf when the gold label is not among the choices."""
    normed = choice_log_softmax(logprobs)
    return normed.get(gold, float("-inf"))


def gold_probability(logprobs: Mapping[str, float], gold: str) -> float:
    return math.exp(gold_log_probability(logprobs, gold))


def first_token_choice_logprobs(alternatives: Mapping[str, float], choices: list[str]) -> dict[str, float] | None:
    """Each choice's log-probability from an API's first-token alternatives (its top log-probs).

    An API that returns log-probs only for the tokens it generated cannot score a given answer,
    but a choice task's answer is decided by its first token: the alternatives whose text starts
    a choice (case and leading spaces ignored) are summed for it. A choice with no such
    alternative gets the smallest listed log-prob (an upper bound on its true value), so the
    gold probability over the choices is an approximation, and only the first token's. None when
    no choice is among the alternatives.
    """
    if not alternatives:
        return None
    floor = min(alternatives.values())
    out: dict[str, float] = {}
    found = False
    for c in choices:
        want = c.strip().lower()
        hits = [lp for tok, lp in alternatives.items() if tok.strip() and want.startswith(tok.strip().lower())]
        if hits:
            found = True
            top = max(hits)
            out[c] = top + math.log(sum(math.exp(h - top) for h in hits))
        else:
            out[c] = floor
    return out if found else None


def likelihood_of_row(row: Mapping) -> float | None:
    """The likelihood value of one predictions-file row (None when the row carries none).

    Choice rows: the gold probability, from the stored value or recomputed from the choices'
    log-probs (files written before the metric existed hold those). Generative rows: the gold
    answer's log-likelihood per token when it was scored.
    """
    if row.get(LIKELIHOOD_METRIC) is not None:
        return float(row[LIKELIHOOD_METRIC])
    logprobs = row.get("choice_logprobs")
    if logprobs:
        return gold_probability(logprobs, str(row.get("gold")))
    if row.get(GENERATIVE_LIKELIHOOD_METRIC) is not None:
        return float(row[GENERATIVE_LIKELIHOOD_METRIC])
    return None


def likelihood_name(row: Mapping) -> str:
    """Which likelihood metric a predictions row carries: the gold probability (choice rows, an API's
    first-token approximation included) or the generative log-likelihood per token."""
    if row.get(LIKELIHOOD_METRIC) is not None or row.get("choice_logprobs"):
        return LIKELIHOOD_METRIC
    return GENERATIVE_LIKELIHOOD_METRIC


def likelihood_by_id(path: str | Path | None) -> tuple[str, dict[str, float]] | None:
    """(metric name, {example id: likelihood}) from a predictions file; None when the file or a value is missing."""
    if path is None or not Path(path).is_file():
        return None
    out: dict[str, float] = {}
    name = LIKELIHOOD_METRIC
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                value = likelihood_of_row(row)
                if value is None:
                    return None
                if likelihood_name(row) == GENERATIVE_LIKELIHOOD_METRIC:
                    name = GENERATIVE_LIKELIHOOD_METRIC
                out[str(row["id"])] = value
    return (name, out) if out else None


__all__ = [
    "GENERATIVE_LIKELIHOOD_METRIC", "LIKELIHOOD_KEYS", "LIKELIHOOD_METRIC", "choice_log_softmax", "first_token_choice_logprobs",
    "gold_log_probability", "gold_probability", "likelihood_by_id", "likelihood_name", "likelihood_of_row",
]
