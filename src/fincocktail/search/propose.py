"""One round of the search: score candidate mixtures with the acquisition, pick a batch.

The acquisition is expected improvement of the objective over the best *measured* feasible
mixture (or, before there is one, the best predicted among the measured mixtures: "plug-in"
EI), times the probability that every floor holds (constrained EI, Gardner et al. 2014).
With independent per-task GPs and a linear objective w, the objective's prediction is
N(w.mu, sum w^2 sd^2). The acquisition is maximised over a large random sample of the simplex
(uniform, sparse and around the best mixtures so far), as RegMix does: the simplex and the
caps make gradient-based maximisers awkward, and a few thousand candidates cost milliseconds.

A batch of k is chosen greedily with the kriging believer: after each pick the surrogate is
conditioned on its own predicted scores there (hyperparameters kept), which shrinks the
uncertainty around it so the next pick goes elsewhere. With several objectives each pick
maximises a random convex combination of them (ParEGO-style), so a batch spreads along the
front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from fincocktail.search.mixture import IngredientCounts, Space
from fincocktail.search.objective import Floor, Objective, feasible
from fincocktail.search.surrogate import Surrogate

N_CANDIDATES = 3000
N_INIT = 3  # fewer distinct scored mixtures than this: the round is space-filling (Sobol), not model-driven


@dataclass(frozen=True)
class Observed:
    """A scored mixture: the mean validation score per task over its runs (seeds)."""

    mixture: IngredientCounts
    scores: dict[str, float]
    run_ids: tuple[str, ...] = ()


@dataclass
class Proposal:
    mixture: IngredientCounts
    acquisition: float
    weights: dict[str, float]  # the (scalarised) objective this pick maximised
    predicted: dict[str, tuple[float, float]] = field(default_factory=dict)  # task -> (mean, sd) when proposed
    how: str = "acquisition"  # or "initial design"


def objective_moments(mu: np.ndarray, sd: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of a linear objective under independent per-task predictions."""
    return mu @ w, np.sqrt((sd**2) @ (w**2))


def acquisition(mu: np.ndarray, sd: np.ndarray, w: np.ndarray, best: float, floor_idx: Sequence[tuple[int, float]]
                ) -> np.ndarray:
    """Constrained expected improvement over `best` of each candidate (rows of mu / sd, n x tasks)."""
    m, s = objective_moments(mu, sd, w)
    pof = np.ones(len(mu))
    for j, value in floor_idx:
        pof *= norm.cdf((mu[:, j] - value) / sd[:, j])
    s = np.maximum(s, 1e-12)
    z = (m - best) / s
    return pof * ((m - best) * norm.cdf(z) + s * norm.pdf(z))


def best_measured(observed: Sequence[Observed], w: dict[str, float], fl: Sequence[Floor]) -> float | None:
    values = []
    for o in observed:
        if any(t not in o.scores for t in w) or feasible(o.scores, fl) is not True:
            continue
        values.append(sum(wt * o.scores[t] for t, wt in w.items()))
    return max(values) if values else None


def propose(
    space: Space,
    tasks: Sequence[str],
    observed: Sequence[Observed],
    X: np.ndarray,
    Y: np.ndarray,
    objectives: Sequence[Objective],
    fl: Sequence[Floor],
    k: int,
    seed: int,
    exclude: set[IngredientCounts],
    n_candidates: int = N_CANDIDATES,
    fidelity: bool = False,
) -> list[Proposal]:
    """The next `k` mixtures to train (none of them in `exclude`), given runs X (features) / Y (scores).

    With `fidelity` (racing) the last column of X is the share of its steps a row was read at; the
    candidates are scored at full length (1.0), and `observed` holds full-length scores only.
    """
    rng = np.random.default_rng(seed)
    scored = [o for o in observed if any(t in o.scores for ob in objectives for t in ob.weights)]
    known = len(np.unique(X[:, :-1], axis=0)) if fidelity and len(X) else len(scored)
    if known < N_INIT:
        return [Proposal(m, float("nan"), dict(objectives[0].weights), how="initial design")
                for m in [m for m in space.random(4 * k + 8, seed) if m not in exclude][:k]]
    surrogate = Surrogate(tasks, seed=seed).fit(X, Y)
    main = objectives[0]
    ranked = sorted(scored, key=lambda o: -(main.value(o.scores) if main.value(o.scores) is not None else -np.inf))
    around = [o.mixture for o in ranked[:5]]
    cands = [m for m in space.candidates(n_candidates, rng, around) if m not in exclude]
    Xc = space.features(cands)
    if fidelity:
        Xc = np.hstack([Xc, np.ones((len(Xc), 1))])
        X = np.hstack([X[:, :-1], np.ones((len(X), 1))])  # the "best predicted" fallback: at full length too
    floor_idx = [(list(tasks).index(f.task), f.value) for f in fl]
    picks: list[Proposal] = []
    model = surrogate
    taken = np.zeros(len(cands), dtype=bool)
    for _ in range(min(k, len(cands))):
        lam = np.ones(1) if len(objectives) == 1 else rng.dirichlet(np.ones(len(objectives)))
        weights: dict[str, float] = {}
        for lk, o in zip(lam, objectives):
            for t, wt in o.weights.items():
                weights[t] = weights.get(t, 0.0) + float(lk) * wt
        w = np.array([weights.get(t, 0.0) for t in tasks])
        mu, sd = model.predict(Xc)
        best = best_measured(observed, weights, fl)
        if best is None:  # no mixture has every weighed task measured and the floors met: the best predicted one
            best = float(np.max(model.predict(X)[0] @ w))
        acq = acquisition(mu, sd, w, best, floor_idx)
        acq[taken] = -np.inf
        i = int(np.argmax(acq))
        taken[i] = True
        pm, ps = surrogate.predict(Xc[i : i + 1])
        picks.append(Proposal(cands[i], float(acq[i]), weights,
                              predicted={t: (float(pm[0, j]), float(ps[0, j])) for j, t in enumerate(tasks)}))
        if len(picks) < k:
            model = model.condition(Xc[i : i + 1], mu[i : i + 1])  # kriging believer
    return picks
