"""The surrogate: one Gaussian process per task, predicting its validation score from the mixture.

Why scikit-learn's `GaussianProcessRegressor` (and not optuna's GP/TPE samplers): it is already
a dependency; it gives a per-task mean *and* standard deviation for any mixture, which
`mix predict`, the constraint "no task below its single-task run" and the per-task table all
need (optuna models one objective and hides its model); and leave-one-out checks are a refit
away. Optuna's samplers also treat parameters independently, so a simplex needs a
reparameterisation that distorts distances. What we keep from the literature is the recipe:
a regression fitted on a few dozen runs, used to rank mixtures.

Kernel: a constant times an isotropic Matern-5/2 over the shares and the scaled log-total, plus
white noise whose level is learned (repeats of a mixture with other seeds and the finite
validation sample make scores noisy). Targets are normalised per task. One length scale, not
one per ingredient: with a few dozen runs, per-dimension length scales overfit (some run to
their bounds and switch an ingredient off), and on the synthetic benchmark of the tests the
isotropic kernel found the optimum in 12 proposals several times as often.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

MIN_POINTS = 2  # a task with fewer observations is predicted by its prior (mean of what there is, wide sd)


def _kernel():
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    return ConstantKernel(1.0, (1e-2, 1e2)) * Matern(length_scale=0.5, length_scale_bounds=(5e-2, 5.0), nu=2.5) + WhiteKernel(
        1e-2, (1e-5, 1.0)
    )


@dataclass
class _TaskModel:
    gp: object | None  # a fitted GaussianProcessRegressor, or None (too few points: prior only)
    prior_mean: float
    prior_sd: float
    X: np.ndarray
    y: np.ndarray


class Surrogate:
    """Per-task GPs over mixture features (`Space.features`); `tasks` fixes the column order of predictions."""

    def __init__(self, tasks: Sequence[str], seed: int = 0, restarts: int = 2):
        self.tasks = list(tasks)
        self.seed = seed
        self.restarts = restarts
        self.models: dict[str, _TaskModel] = {}

    def fit(self, X: np.ndarray, Y: np.ndarray, kernels: dict[str, object] | None = None) -> Surrogate:
        """Fit on rows of `X` with scores `Y` (n x tasks, NaN where a run has no score for the task).

        With `kernels` (task -> fitted kernel) the hyperparameters are kept as given, not re-optimised:
        that is how a batch conditions on its own pending proposals (kriging believer).
        """
        self.X, self.Y = X, Y
        with threadpool_limits(1):  # matrices of a few dozen rows: BLAS threads only contend (5x slower on 2 busy cores)
            self._fit(X, Y, kernels)
        return self

    def _fit(self, X: np.ndarray, Y: np.ndarray, kernels: dict[str, object] | None) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor

        for j, task in enumerate(self.tasks):
            ok = np.isfinite(Y[:, j])
            x, y = X[ok], Y[ok, j]
            prior_mean = float(y.mean()) if len(y) else 0.5
            prior_sd = float(max(y.std(), 0.1)) if len(y) >= 2 else 0.25
            if len(y) < MIN_POINTS:
                self.models[task] = _TaskModel(None, prior_mean, prior_sd, x, y)
                continue
            fixed = kernels.get(task) if kernels else None
            gp = GaussianProcessRegressor(
                kernel=fixed if fixed is not None else _kernel(),
                normalize_y=True,
                optimizer=None if fixed is not None else "fmin_l_bfgs_b",
                n_restarts_optimizer=0 if fixed is not None else self.restarts,
                random_state=self.seed,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter at the bounds on tiny data
                gp.fit(x, y)
            self.models[task] = _TaskModel(gp, prior_mean, prior_sd, x, y)

    def kernels(self) -> dict[str, object]:
        return {t: m.gp.kernel_ for t, m in self.models.items() if m.gp is not None}  # type: ignore[attr-defined]

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd), each n x tasks: the predicted validation score of each task and its uncertainty."""
        with threadpool_limits(1):
            return self._predict(X)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = np.empty((len(X), len(self.tasks)))
        sd = np.empty_like(mu)
        for j, task in enumerate(self.tasks):
            m = self.models[task]
            if m.gp is None:
                mu[:, j], sd[:, j] = m.prior_mean, m.prior_sd
            else:
                mean, std = m.gp.predict(X, return_std=True)  # type: ignore[attr-defined]
                mu[:, j], sd[:, j] = mean, np.maximum(std, 1e-9)
        return mu, sd

    def condition(self, X_new: np.ndarray, Y_new: np.ndarray) -> Surrogate:
        """A copy that also 'observed' `Y_new` at `X_new`, with this fit's hyperparameters kept."""
        X = np.vstack([self.X, X_new])
        Y = np.vstack([self.Y, Y_new])
        return Surrogate(self.tasks, self.seed, self.restarts).fit(X, Y, kernels=self.kernels())


def leave_one_out(tasks: Sequence[str], X: np.ndarray, Y: np.ndarray, groups: Sequence[int], seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-mixture-out predictions (mean, sd per row and task).

    All repeats of a mixture (other seeds) leave together, so a prediction never sees the very
    mixture it predicts; hyperparameters are re-optimised on each fold (no leak through them).
    """
    groups = np.asarray(groups)
    mu = np.full(Y.shape, np.nan)
    sd = np.full(Y.shape, np.nan)
    for g in np.unique(groups):
        out = groups == g
        model = Surrogate(tasks, seed, restarts=0).fit(X[~out], Y[~out])
        m, s = model.predict(X[out])
        mu[out], sd[out] = m, s
    return mu, sd


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (NaN with < 3 pairs or no spread)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    ra, rb = ranks(a[ok]), ranks(b[ok])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def calibration(measured: Sequence[float], mean: Sequence[float], sd: Sequence[float]) -> dict[str, float]:
    """How honest the uncertainty is: coverage of the central 50% and 90% predictive intervals (ideal 0.5
    and 0.9), the RMS of the standardised errors (ideal 1) and the RMSE of the means."""
    y, m, s = (np.asarray(v, dtype=float) for v in (measured, mean, sd))
    ok = np.isfinite(y) & np.isfinite(m) & np.isfinite(s) & (s > 0)
    if not ok.any():
        return {"n": 0, "coverage50": float("nan"), "coverage90": float("nan"), "z_rms": float("nan"), "rmse": float("nan")}
    z = (y[ok] - m[ok]) / s[ok]
    return {
        "n": int(ok.sum()),
        "coverage50": float(np.mean(np.abs(z) <= 0.6745)),
        "coverage90": float(np.mean(np.abs(z) <= 1.6449)),
        "z_rms": float(np.sqrt(np.mean(z**2))),
        "rmse": float(np.sqrt(np.mean((y[ok] - m[ok]) ** 2))),
    }
