"""N-gram contamination: planted overlaps are found (and only they), counts match a brute-force check,
`--drop` removes exactly the contaminated examples."""

from __future__ import annotations

import json
import random
import re

import pytest
from fake_tasks import FAKE_TASKS, WORDS, FakeSentiment, resolver, sentence
from typer.testing import CliRunner

import fincocktail.cocktail as cocktail_mod
import fincocktail.data.contamination as contamination_mod
from fincocktail.cocktail import (
    build_cocktail,
    load_sources,
    parse_cocktail,
    resolve_tasks,
)
from fincocktail.data.contamination import (
    check_contamination,
    load_eval_sets,
    ngram_hashes,
    normalise_words,
)
from fincocktail.tasks.base import Example

LONG_TEST_TEXT = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 , the company said today"
SHORT_TEST_TEXT = "Net sales fell 5 %"


def planted_tasks():
    """`tr` carries three planted texts: a reformatted copy of an eval sentence, a 13-word window of
    one, and a short exact duplicate; `ev` holds those sentences in its test split."""
    window = " ".join(LONG_TEST_TEXT.split()[3:16])  # 13 words out of the middle
    train_planted = [LONG_TEST_TEXT.upper().replace(" , ", ", "), "prefix words " + window + " suffix", SHORT_TEST_TEXT + "!"]
    tasks = dict(FAKE_TASKS)
    tasks["tr"] = FakeSentiment("tr", {"train": 40}, seed=11, planted={"train": train_planted})
    tasks["ev"] = FakeSentiment("ev", {"train": 5, "validation": 6, "test": 8}, seed=12, planted={"test": [LONG_TEST_TEXT, SHORT_TEST_TEXT]})
    return tasks


def test_normalisation_ignores_case_and_punctuation():
    assert normalise_words("Profit, ROSE to EUR 13.1mn!") == ["profit", "rose", "to", "eur", "13", "1mn"]
    assert ngram_hashes("a b c d", 2) == ngram_hashes("A, b. C d!", 2)
    assert len(ngram_hashes("a b c d", 2)) == 3
    assert len(ngram_hashes("a b", 13)) == 1  # short text: one gram of all its words


def test_planted_overlap_is_found_exactly(tmp_path):
    tasks = planted_tasks()
    train = {"tr": tasks["tr"].load("train", tmp_path)}
    evals, skipped = load_eval_sets([tasks["ev"]], tmp_path)
    assert set(evals) == {("ev", "validation"), ("ev", "test")} and not skipped
    report = check_contamination(train, evals, n=13)
    assert report.contaminated_ids["tr"] == {"tr/train/planted0", "tr/train/planted1", "tr/train/planted2"}
    by_split = {p.eval_split: p for p in report.pairs}
    assert by_split["test"].contaminated_train == 3 and by_split["test"].contaminated_eval == 2
    assert by_split["test"].train_examples == 43 and by_split["test"].eval_examples == 10
    assert by_split["validation"].contaminated_train == 0 and by_split["validation"].contaminated_eval == 0
    payload = report.to_json()
    json.dumps(payload)
    assert payload["contaminated_train"]["tr"]["count"] == 3


def test_counts_match_brute_force_on_random_text():
    """With n=3 over a 6-word vocabulary, overlaps happen by chance; compare with a naive check."""
    rng = random.Random(0)

    def sentence(rng: random.Random, n: int) -> str:
        return " ".join(rng.choice(WORDS[:6]) for _ in range(n))

    def grams(text: str, n: int) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        if len(words) < n:
            return {tuple(words)} if words else set()
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    train = {"a": [Example(f"a{i}", sentence(rng, rng.randint(2, 9)), "x") for i in range(60)]}
    evals = {("e", "test"): [Example(f"e{i}", sentence(rng, rng.randint(2, 9)), "y") for i in range(15)]}
    report = check_contamination(train, evals, n=3)
    eval_grams = set().union(*(grams(e.input + " y", 3) for e in evals[("e", "test")]))
    expected = {ex.id for ex in train["a"] if grams(ex.input + " x", 3) & eval_grams}
    assert 0 < len(expected) < 60  # the check is not trivial
    assert report.contaminated_ids["a"] == expected
    train_grams = set().union(*(grams(ex.input + " x", 3) for ex in train["a"]))
    expected_eval = sum(1 for e in evals[("e", "test")] if grams(e.input + " y", 3) & train_grams)
    assert report.pairs[0].contaminated_eval == expected_eval


def test_drop_removes_exactly_the_contaminated_examples(tmp_path):
    tasks = planted_tasks()
    cfg = parse_cocktail({"ingredients": ["tr", "fa"]})
    resolved = resolve_tasks(cfg, lambda t: resolver(t, tasks))
    sources = load_sources(resolved, tmp_path)
    report = check_contamination(sources, load_eval_sets([tasks["ev"]], tmp_path)[0], n=13)
    data = build_cocktail(cfg, sources, resolved, drop_ids=report.contaminated_ids)
    kept = {ex.id for ex in data.sources["tr"]}
    all_ids = {ex.id for ex in sources["tr"]}
    assert all_ids - kept == report.contaminated_ids["tr"]
    assert len(data.sources["fa"]) == len(sources["fa"])  # nothing of fa overlaps ev


def test_cli_reports_and_drops(tmp_path, monkeypatch):
    import typer

    from fincocktail.cli.contamination import register

    tasks = planted_tasks()
    monkeypatch.setattr(cocktail_mod, "_default_resolver", lambda t: resolver(t, tasks))
    monkeypatch.setattr(contamination_mod, "registry_eval_tasks", lambda extra=(): ([tasks["ev"], *extra], {"broken": "x"}))
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer from collapsing the group
        pass

    mix = tmp_path / "mix.yaml"
    mix.write_text("ingredients:\n  - tr\n  - fa\n")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["contamination", str(mix), "--drop", "--out", str(out), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "tr" in result.output and "ev/test" in result.output and "after --drop" in result.output
    payload = json.loads(out.read_text())
    assert payload["n"] == 13 and payload["dropped"] is True
    assert payload["contaminated_train"]["tr"]["count"] == 3
    assert payload["after_drop"]["tr"]["available"] == 40
    assert "broken" in payload["skipped"]
    # the test split of the cocktail's own tasks (fa) is checked too
    assert {(p["train_task"], p["eval_task"], p["eval_split"]) for p in payload["pairs"]} >= {("tr", "fa", "test"), ("fa", "ev", "test")}


@pytest.mark.parametrize("n_eval", [10_000])
def test_indexing_is_fast(n_eval):
    """10k eval examples and 5k train examples in well under the time budget (a few seconds)."""
    import time

    rng = random.Random(1)
    evals = {("e", "test"): [Example(f"e{i}", sentence(rng, 30), "y") for i in range(n_eval)]}
    train = {"a": [Example(f"a{i}", sentence(rng, 30), "x") for i in range(5000)]}
    start = time.perf_counter()
    check_contamination(train, evals, n=13)
    assert time.perf_counter() - start < 10


def test_shared_instruction_text_is_not_overlap():
    """A prompt that every example of both splits carries word for word (FiQA-SA's instruction is
    14 words, more than one 13-gram) must not mark every training example as contaminated."""
    prompt = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
    meta = {"instruction": prompt}
    train = [Example(id=f"t{i}", input=f"train headline number {i} about {w}", target="neutral", meta=meta) for i, w in enumerate(WORDS[:5])]
    evals = [Example(id=f"e{i}", input=f"eval headline {i} on {w} today", target="neutral", meta=meta) for i, w in enumerate(WORDS[:4])]
    report = check_contamination({"tr": train}, {("ev", "test"): evals})
    assert report.contaminated_ids["tr"] == set()
    # an example's own instruction (unique within its split, as in Alpaca) still counts
    own = [Example(id="a", input="", target="x", meta={"instruction": LONG_TEST_TEXT})]
    report = check_contamination({"tr": own}, {("ev", "test"): [Example(id="b", input=LONG_TEST_TEXT, target="y")]})
    assert report.contaminated_ids["tr"] == {"a"}


def test_ingredient_losing_most_rows_stops_the_run():
    from fincocktail.data.contamination import check_drop_fraction
    from fincocktail.errors import ConfigError

    train = [Example(id=f"t{i}", input=f"text {i}", target="y") for i in range(4)]
    report = contamination_mod.ContaminationReport(n=13, pairs=[], contaminated_ids={"fiqa_sa": {"t0", "t1", "t2"}})
    with pytest.raises(ConfigError, match="'fiqa_sa'.*max_drop_fraction"):
        check_drop_fraction(report, {"fiqa_sa": train}, 0.5)
    check_drop_fraction(report, {"fiqa_sa": train}, 1.0)  # allowed knowingly


def test_shipped_cocktail_trains_on_every_ingredient(data_dir):
    """configs/train/smollm2_cocktail_lora.yaml with its decontamination, on the real data, no training."""
    from pathlib import Path

    from fincocktail.training.config import load_train_config, resolve_cocktail
    from fincocktail.training.trainer import prepare_data

    config = load_train_config(Path(__file__).parent.parent / "configs/train/smollm2_cocktail_lora.yaml")
    cocktail, source = resolve_cocktail(config)
    tasks = resolve_tasks(cocktail, source=source)
    data, report = prepare_data(config, cocktail, source, tasks, data_dir, eval_tasks=None)
    assert report is not None and report.dropped
    assert {i.task for i in cocktail.ingredients} | {"general", "gsm8k"} == set(tasks)
    for task in tasks:  # the ingredients and the general / math boosters
        kept = len(data.sources[task])
        lost = len(report.contaminated_ids[task])
        assert kept > 0 and lost <= kept, (task, kept, lost)
        assert sum(data.manifest()["sources"][task]["examples_per_epoch"]) > 0, task
    assert len(data.sources["fiqa_sa"]) > 800  # all 826 were dropped when shared prompt text counted
