"""`fincocktail compare`: paired statistics checked against statsmodels / scipy / sklearn, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from eval_fakes import FakeSentiment, lively_model_dir, make_lively, resolver  # noqa: F401 (fixture)
from fincocktail.cli import app
from fincocktail.compare import compare_runs, load_run, mcnemar_exact
from fincocktail.compare.stats import paired_interval
from fincocktail.errors import ConfigError
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval

SENT = FakeSentiment(sizes={"train": 12, "test": 80})
TASKS = resolver(SENT)


@pytest.fixture(scope="module")
def two_runs(lively_model_dir, tiny_model_dir, tmp_path_factory):
    """The same 80 examples evaluated by two different tiny models, plus a 40-example run of B."""
    root = tmp_path_factory.mktemp("compare")
    other = make_lively(tiny_model_dir, root / "other-model", std=0.25, seed=7)
    out = {}
    for name, model, limit in (("a", lively_model_dir, None), ("b", other, None), ("b40", other, 40)):
        loaded = load_for_eval(str(model))
        out[name] = root / name
        run_eval(EvalConfig(model=str(model), tasks=["fsent"], out=out[name], data_dir=root, limit=limit), resolve_task=TASKS, loaded=loaded)
    return root, out


def _rows(path):
    return [json.loads(x) for x in (path / "fsent.predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (3, 9), (10, 10), (1, 30), (25, 12), (40, 60)])
def test_mcnemar_exact_matches_statsmodels(b, c):
    from statsmodels.stats.contingency_tables import mcnemar

    assert mcnemar_exact(b, c) == pytest.approx(mcnemar([[50, b], [c, 50]], exact=True).pvalue, rel=1e-12, abs=1e-15)


def test_paired_interval_matches_scipy_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    a = (rng.random(300) < 0.6).astype(float)
    b = np.where(rng.random(300) < 0.8, a, 1 - a)
    low, high = paired_interval(a, b, 300, 20000, 0)
    ref = bootstrap((a, b), lambda x, y: np.mean(y) - np.mean(x), paired=True, vectorized=False, n_resamples=20000,
                    method="percentile", random_state=1).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.01) and high == pytest.approx(ref.high, abs=0.01)
    # a corpus metric given as a function of the indices goes through the same resamples
    low_f, high_f = paired_interval(lambda i: float(a[i].mean()), lambda i: float(b[i].mean()), 300, 500, 5)
    assert (low_f, high_f) == pytest.approx(paired_interval(a, b, 300, 500, 5))


def test_compare_two_eval_runs(two_runs):
    root, out = two_runs
    cmp = compare_runs([load_run(out["a"]), load_run(out["b"])], TASKS, root, n_resamples=500)
    d, lik = cmp.deltas
    # the likelihood measure beside accuracy: the gold probability recomputed from the choices' log-probs
    assert lik.measure == "gold_prob" and lik.mcnemar is None

    def gold_prob(r):
        lp = np.array(list(r["choice_logprobs"].values()))
        return float(np.exp(r["choice_logprobs"][r["gold"]] - np.logaddexp.reduce(lp)))

    pa = np.array([gold_prob(r) for r in _rows(out["a"])])
    pb = np.array([gold_prob(r) for r in _rows(out["b"])])
    assert lik.value_a == pytest.approx(pa.mean()) and lik.delta == pytest.approx(pb.mean() - pa.mean())
    assert lik.low <= lik.delta <= lik.high
    ra, rb = _rows(out["a"]), _rows(out["b"])
    acc_a = np.mean([r["correct"] for r in ra])
    acc_b = np.mean([r["correct"] for r in rb])
    assert d.value_a == pytest.approx(acc_a) and d.value_b == pytest.approx(acc_b) and d.delta == pytest.approx(acc_b - acc_a)
    assert d.low <= d.delta <= d.high
    # McNemar on the real runs, against statsmodels on the 2x2 table built independently
    from statsmodels.stats.contingency_tables import mcnemar

    table = np.zeros((2, 2), dtype=int)
    for x, y in zip(ra, rb):
        table[int(not x["correct"]), int(not y["correct"])] += 1
    assert (d.mcnemar.b, d.mcnemar.c) == (table[0, 1], table[1, 0])
    assert d.mcnemar.p_value == pytest.approx(mcnemar(table, exact=True).pvalue)
    # per-class recall against sklearn
    from sklearn.metrics import recall_score

    labels = list(SENT.labels)
    gold = [r["gold"] for r in ra]
    rec_b = recall_score(gold, [r["extracted"] for r in rb], labels=labels, average=None, zero_division=0)
    assert [s.recall_b for s in d.class_shift] == pytest.approx(list(rec_b))
    assert sum(s.predicted_a for s in d.class_shift) == 80
    # disagreements: exactly the examples answered differently, discordant ones first
    differ = {x["id"] for x, y in zip(ra, rb) if x["extracted"] != y["extracted"]}
    assert {x["id"] for x in d.disagreements} == differ and d.n_disagree == len(differ) > 0
    flags = [x["a_correct"] != x["b_correct"] for x in d.disagreements]
    assert flags == sorted(flags, reverse=True)


def test_compare_refuses_runs_that_are_not_paired(two_runs, tmp_path):
    root, out = two_runs
    with pytest.raises(ConfigError, match=r"different examples \(80 vs 40, 40 in common\).*same --split, --limit, --sample and --sample-seed"):
        compare_runs([load_run(out["a"]), load_run(out["b40"])], TASKS, root)
    with pytest.raises(ConfigError, match="at least two runs"):
        compare_runs([load_run(out["a"])], TASKS, root)
    with pytest.raises(ConfigError, match="neither an eval run"):
        load_run(tmp_path)
    # gold answers that changed between runs are refused
    bad = tmp_path / "bad"
    shutil.copytree(out["b"], bad)
    rows = _rows(bad)
    rows[3]["gold"] = "something else"
    (bad / "fsent.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="different gold answers for 1 examples"):
        compare_runs([load_run(out["a"]), load_run(bad)], TASKS, root)
    # the run cards' sample hashes are checked too
    other = tmp_path / "other-sample"
    shutil.copytree(out["b"], other)
    card = json.loads((other / "run_card.json").read_text())
    assert card["tasks"]["fsent"]["sample"]["sha256"] == load_run(out["a"]).tasks["fsent"].sample_hash
    card["tasks"]["fsent"]["sample"]["sha256"] = "0" * 64
    (other / "run_card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="record different sample hashes"):
        compare_runs([load_run(out["a"]), load_run(other)], TASKS, root)


def test_sweep_run_folder_and_different_tasks(two_runs, tmp_path):
    root, out = two_runs
    sweep_run = tmp_path / "runs" / "r1"
    shutil.copytree(out["b"], sweep_run / "eval" / "test" / "fsent")
    run = load_run(sweep_run)
    assert list(run.tasks) == ["fsent"] and run.path == sweep_run
    other = FakeSentiment("fother", sizes={"train": 12, "test": 10})
    both = resolver(SENT, other)
    run_eval(EvalConfig(model=str(root / "other-model"), tasks=["fother"], out=sweep_run / "eval" / "test" / "fother", data_dir=root),
             resolve_task=both, loaded=load_for_eval(str(root / "other-model")))
    with pytest.raises(ConfigError, match=r"different tasks \(only B has fother\): pass --tasks fsent"):
        compare_runs([load_run(out["a"]), load_run(sweep_run)], both, root)
    cmp = compare_runs([load_run(out["a"]), load_run(sweep_run)], both, root, tasks=["fsent"], n_resamples=200)
    assert [(d.task, d.measure) for d in cmp.deltas] == [("fsent", "accuracy"), ("fsent", "gold_prob")]


def test_compare_cli_on_real_fpb(tiny_model_dir, lively_model_dir, data_dir, tmp_path):
    runner = CliRunner()
    for name, model in (("a", tiny_model_dir), ("b", lively_model_dir)):
        res = runner.invoke(app, ["eval", "--model", str(model), "--tasks", "fpb", "--limit", "30", "--data-dir", str(data_dir),
                                  "--out", str(tmp_path / name), "--no-progress", "--dtype", "float32"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--data-dir", str(data_dir), "--html", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert "fpb" in res.output and "McNemar" in res.output and "per-class shift" in res.output
    page = (tmp_path / "c.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    res = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--data-dir", str(data_dir), "--json"])
    body = json.loads(res.stdout)
    assert body["kind"] == "fincocktail-compare" and body["deltas"][0]["n"] == 30 and body["deltas"][0]["measure"] == "accuracy"
