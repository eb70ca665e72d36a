"""bench/race_seeds.py's arithmetic, the part that turns per-seed comparisons into a claim: the t interval
over search seeds (checked against scipy's), the per-seed sweep file, and which arm won at each seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def race_seeds(load_bench):
    return load_bench("race_seeds")


def test_the_interval_over_seeds_is_scipys_t_interval(race_seeds):
    values = [0.538, 0.631, 0.589]
    mean, low, high = race_seeds.t_interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 3, scale=stats.sem(values))
    assert (mean, low, high) == pytest.approx((sum(values) / 3, lo, hi))
    assert race_seeds.fmt_t([0.5]) == "+0.500"  # one seed: no interval claimed


def test_each_seed_gets_its_own_sweep_file(race_seeds, tmp_path):
    path = race_seeds.seed_sweep(REPO / "configs" / "sweeps" / "race-seeds.yaml", 2, tmp_path / "seed2")
    spec, original = yaml.safe_load(path.read_text()), yaml.safe_load((REPO / "configs" / "sweeps" / "race-seeds.yaml").read_text())
    assert spec["seeds"] == [2] and {k: v for k, v in spec.items() if k != "seeds"} == {k: v for k, v in original.items() if k != "seeds"}


def test_the_summary_counts_wins_and_averages_the_paired_differences(race_seeds):
    def row(method, test, single, cocktail):
        return {"method": method, "cpu_hours": 0.2, "runs": 3, "recommended": "x", "validation": 0.5, "test": test,
                "vs_single": "", "vs_cocktail": "", "vs_single_diff": {"value": single},
                "vs_cocktail_diff": {"value": cocktail}, "loo_search_metric": None, "loo_likelihood": None}
    per_seed = {0: [row("hand-built design", 0.60, -0.02, 0.0), row("race__mean", 0.62, 0.00, 0.02)],
                1: [row("hand-built design", 0.58, -0.03, 0.0), row("race__mean", 0.55, -0.06, -0.03)],
                2: [row("hand-built design", 0.50, -0.05, 0.0), row("race__mean", 0.57, 0.02, 0.07)]}
    text = race_seeds.aggregate(per_seed)
    race = next(line for line in text.splitlines() if line.startswith("| race__mean | 0.20 | 0.580"))
    m, lo, hi = race_seeds.t_interval([0.02, -0.03, 0.07])
    assert f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" in race and race.endswith("| 2 of 3 |")
    assert next(line for line in text.splitlines() if line.startswith("| hand-built design | 0.20")).endswith("| 1 of 3 |")
