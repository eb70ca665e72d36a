"""Racing's arithmetic: the rungs, which proposals stop at each (optuna's pruner), and the budget in hours.

Why optuna's `SuccessiveHalvingPruner` (asynchronous successive halving, ASHA: Li et al. 2020)
and not Ray Tune's ASHA or our own: optuna is a small, well-kept dependency that runs the same
on the local and the Ray executor (the decision is made by the driver, not inside a Tune trial),
and its pruner is deterministic given the order in which rung values arrive. So the decisions
are never stored as the truth: they are *replayed* from the recorded rung values (in arrival
order) into a fresh in-memory study, and a resumed search makes exactly the decisions the
killed one made. Hyperband would run several successive-halving brackets at once; with a
handful of proposals per round one bracket is all a CPU budget affords.

The pruner's rule, for the record: at rung k a proposal continues if its value is among the
best 1/eta of all values that have reached rung k so far (the first eta-1 arrivals continue
only if they are the best so far). Rung k is optuna step eta**k (min_resource 1), so with
eta = 2 and three rungs the proposals are read at 1/4, 1/2 and all of their steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fincocktail.errors import ConfigError


def rung_fractions(reduction: int, rungs: int) -> tuple[float, ...]:
    """The shares of a run's steps at which it is read: eta**-(R-1), ..., 1/eta, 1."""
    if reduction < 2 or rungs < 1:
        raise ConfigError(f"--reduction {reduction} / --rungs {rungs}: expected a reduction of 2 or more and 1 or more rungs")
    return tuple(float(reduction) ** (k - (rungs - 1)) for k in range(rungs))


def check_rungs_before_decay(fractions: Sequence[float], scheduler: str, decay_fraction: float) -> None:
    """A rung read during the decay of a warmup-stable-decay schedule would compare a half-decayed run with
    stable ones; refuse rungs past the decay's start."""
    late = [f for f in fractions[:-1] if f > 1 - decay_fraction + 1e-9]
    if scheduler == "wsd" and late:
        raise ConfigError(f"training.decay_fraction {decay_fraction}: the rung at {late[0]:g} of the steps falls in the "
                          f"decay; lower decay_fraction to at most {1 - max(late):g} or use fewer --rungs")


@dataclass(frozen=True)
class RungReport:
    """A proposal's objective read at a rung (index into the fractions)."""

    run_id: str
    rung: int
    value: float


def pruning_decisions(reports: Sequence[RungReport], reduction: int, rungs: int) -> list[bool]:
    """Whether each report stops its proposal, replaying every report in order into a fresh optuna study
    with a `SuccessiveHalvingPruner`; reports at the last rung complete their trial (never stopped)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=reduction, min_early_stopping_rate=0)
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    trials: dict[str, optuna.trial.Trial] = {}
    finished: set[str] = set()
    out = []
    for r in reports:
        if r.run_id in finished:
            raise ConfigError(f"rung report for {r.run_id} after it stopped or finished: the search state is inconsistent")
        trial = trials.get(r.run_id) or trials.setdefault(r.run_id, study.ask())
        trial.report(r.value, step=reduction**r.rung)
        if r.rung >= rungs - 1:
            study.tell(trial, r.value)
            finished.add(r.run_id)
            out.append(False)
            continue
        stop = trial.should_prune()
        if stop:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            finished.add(r.run_id)
        out.append(stop)
    return out


def expected_cost(fractions: Sequence[float], reduction: int, overhead_s: float, train_s: float, eval_s: float,
                  curve_s: float) -> tuple[float, float]:
    """(expected, at most) seconds of one raced proposal: each rung's job loads the model, trains the next
    stretch and reads the curve; survivors of the last rung are also evaluated in full. The expectation
    assumes successive halving keeps 1/eta of the proposals at each rung."""
    worst = expected = 0.0
    prev = 0.0
    for k, f in enumerate(fractions):
        job = overhead_s + (f - prev) * train_s + curve_s + (eval_s if k == len(fractions) - 1 else 0.0)
        worst += job
        expected += job * float(reduction) ** -k
        prev = f
    return expected, worst


__all__ = ["RungReport", "check_rungs_before_decay", "expected_cost", "pruning_decisions", "rung_fractions"]
