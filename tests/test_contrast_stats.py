"""Seed-paired contrasts against independent computations (scipy's t-tests, numpy by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fincocktail.report.contrast_stats import Side, contrast, pooled_seed_variance, satterthwaite


def _side(scores, examples=None, trained=True) -> Side:
    return Side(scores=dict(enumerate(scores)), examples=examples, trained=trained)


def test_paired_without_examples_is_the_paired_t_test():
    a, b = [0.71, 0.64, 0.75, 0.69], [0.66, 0.60, 0.73, 0.61]
    st = contrast(_side(a), _side(b))
    ref = stats.ttest_rel(a, b)
    assert st.design == "paired" and st.df == pytest.approx(3)
    assert st.p_two_sided() == pytest.approx(ref.pvalue)
    low, high = st.interval()
    ci = ref.confidence_interval(0.95)
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_unpaired_without_examples_is_welchs_t_test():
    a, b = [0.71, 0.64, 0.75], [0.66, 0.60, 0.73, 0.61]
    st = contrast(_side(a), Side(scores={10 + i: v for i, v in enumerate(b)}, examples=None))
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert st.design == "unpaired"
    assert st.p_two_sided() == pytest.approx(ref.pvalue)


def test_the_sample_part_and_degrees_of_freedom_by_hand():
    rng = np.random.default_rng(1)
    n, k = 200, 3
    ea = [dict((f"x{i}", float(v)) for i, v in enumerate(rng.random(n))) for _ in range(k)]
    eb = [dict((f"x{i}", float(v)) for i, v in enumerate(rng.random(n))) for _ in range(k)]
    sa = [float(np.mean(list(e.values()))) for e in ea]
    sb = [float(np.mean(list(e.values()))) for e in eb]
    st = contrast(_side(sa, ea), _side(sb, eb))
    A = np.array([[e[f"x{i}"] for i in range(n)] for e in ea])
    B = np.array([[e[f"x{i}"] for i in range(n)] for e in eb])
    d_seed = A.mean(axis=1) - B.mean(axis=1)
    d_ex = A.mean(axis=0) - B.mean(axis=0)
    seed_part, sample_part = d_seed.var(ddof=1) / k, d_ex.var(ddof=1) / n
    assert st.seed_part == pytest.approx(seed_part) and st.sample_part == pytest.approx(sample_part)
    df = (seed_part + sample_part) ** 2 / (seed_part**2 / (k - 1) + sample_part**2 / (n - 1))
    assert st.df == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * math.sqrt(seed_part + sample_part)
    assert st.interval() == (pytest.approx(d_seed.mean() - half), pytest.approx(d_seed.mean() + half))


def _simulate(shared_sd: float, reps: int = 3000, k: int = 3, own_sd: float = 0.02):
    """Seed parts, paired and unpaired, of recipes whose seeds share an effect of sd `shared_sd`."""
    rng = np.random.default_rng(7)
    paired, unpaired = [], []
    for _ in range(reps):
        seed_effect = rng.normal(0, shared_sd, k)
        a = 0.70 + seed_effect + rng.normal(0, own_sd, k)
        b = 0.65 + seed_effect + rng.normal(0, own_sd, k)
        paired.append(contrast(_side(a), _side(b)).seed_part)
        unpaired.append(a.var(ddof=1) / k + b.var(ddof=1) / k)
    return float(np.mean(paired)), float(np.mean(unpaired))


def test_pairing_is_tighter_with_a_shared_seed_effect_and_equal_without():
    paired, unpaired = _simulate(shared_sd=0.06)
    assert paired < unpaired / 5  # the shared part cancels: 2*0.02^2 against 2*(0.06^2+0.02^2)
    paired, unpaired = _simulate(shared_sd=0.0)
    assert paired == pytest.approx(unpaired, rel=0.05)  # nothing shared: the same expected variance


def test_a_one_seed_side_borrows_the_pool_or_says_its_noise_is_not_measured():
    pool = pooled_seed_variance([[0.7, 0.6, 0.65], [0.5, 0.52]])
    v1, v2 = np.var([0.7, 0.6, 0.65], ddof=1), np.var([0.5, 0.52], ddof=1)
    assert pool == (pytest.approx((2 * v1 + v2) / 3), 3)
    st = contrast(_side([0.7]), _side([0.6, 0.62, 0.65]), pool)
    assert st.seed_noise == "pooled" and st.design == "unpaired"
    assert contrast(_side([0.7]), _side([0.6])).seed_noise == "none"
    zero_shot = contrast(_side([0.7, 0.72, 0.69]), _side([0.3], trained=False))
    assert zero_shot.design == "zero-shot" and zero_shot.seed_noise == "measured"
    assert zero_shot.seed_part == pytest.approx(np.var([0.7, 0.72, 0.69], ddof=1) / 3)


def test_satterthwaite_of_one_part_is_its_df():
    assert satterthwaite([(0.3, 4)]) == pytest.approx(4)
    assert satterthwaite([(0.0, 4)]) == math.inf
