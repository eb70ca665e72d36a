"""Cocktail configs: realized counts per source and epoch, resampling, manifest, and errors naming the field."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from fake_tasks import FAKE_TASKS, FakeSentiment, resolver

from fincocktail.cocktail import (
    build_cocktail,
    load_cocktail,
    load_sources,
    parse_cocktail,
    prepare_cocktail,
    resolve_tasks,
    write_manifest,
)
from fincocktail.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def build(spec: dict, epochs: int = 1, tmp: Path = Path("."), **kw):
    cfg = parse_cocktail(spec)
    tasks = resolve_tasks(cfg, resolver)
    sources = load_sources(tasks, tmp)
    return build_cocktail(cfg, sources, tasks, epochs=epochs, **kw)


def counts(data, epoch: int = 0) -> Counter:
    return Counter(task for task, _ in data.epochs[epoch])


def test_replication_shorthand_counts_and_full_copies():
    data = build({"ingredients": ["fa", "fb*2"]})
    assert counts(data) == {"fa": 50, "fb": 60}
    fb = Counter(i for t, i in data.epochs[0] if t == "fb")
    assert set(fb.values()) == {2} and len(fb) == 30  # every example exactly twice


def test_fractional_replication_resamples_each_epoch_reproducibly():
    spec = {"seed": 7, "ingredients": [{"task": "fa", "replicate": 1.5}, "fb"]}
    a = build(spec, epochs=3)
    b = build(spec, epochs=3)
    assert [counts(a, e)["fa"] for e in range(3)] == [75, 75, 75]
    extra = [sorted(i for i, c in Counter(i for t, i in ep if t == "fa").items() if c == 2) for ep in a.epochs]
    assert all(len(x) == 25 for x in extra)
    assert extra[0] != extra[1] and extra[1] != extra[2]  # a different draw each epoch
    assert a.epochs == b.epochs  # reproducible from the seed
    c = build({**spec, "seed": 8}, epochs=1)
    assert c.epochs[0] != a.epochs[0]


def test_count_downsamples_without_repeats_and_resample_flag():
    spec = {"ingredients": [{"task": "fa", "count": 20}, {"task": "fb", "count": 0}]}
    data = build(spec, epochs=2)
    fa0 = [i for t, i in data.epochs[0] if t == "fa"]
    fa1 = [i for t, i in data.epochs[1] if t == "fa"]
    assert len(fa0) == len(set(fa0)) == 20 and counts(data)["fb"] == 0
    assert set(fa0) != set(fa1)
    fixed = build({**spec, "resample_each_epoch": False}, epochs=2)
    assert fixed.epochs[0] == fixed.epochs[1]


def test_weights_share_total_and_cap():
    data = build({"total": 40, "ingredients": [{"task": "fa", "weight": 0.75}, {"task": "fb", "weight": 0.25}]})
    assert counts(data) == {"fa": 30, "fb": 10}
    capped = build({"ingredients": [{"task": "fa", "cap": 12}, {"task": "fb", "replicate": 2, "cap": 45}]})
    assert counts(capped) == {"fa": 12, "fb": 45}


def test_repeat_allows_upsampling_by_count():
    data = build({"ingredients": [{"task": "fb", "count": 70, "repeat": True}]})
    c = Counter(i for _, i in data.epochs[0])
    assert sum(c.values()) == 70 and len(c) == 30 and max(c.values()) == 3


def test_general_and_math_are_fractions_of_task_data():
    data = build(
        {
            "ingredients": ["fa", "fb"],  # 80 task examples per epoch
            "general": {"fraction": 0.25, "task": "gen"},
            "math": {"fraction": 0.1, "task": "mth"},
        }
    )
    assert counts(data) == {"fa": 50, "fb": 30, "gen": 20, "mth": 8}


def test_general_float_shorthand_defaults_to_general_task():
    cfg = parse_cocktail({"ingredients": ["fa"], "general": 0.1, "math": 0.05})
    assert (cfg.general.task, cfg.general.fraction) == ("general", 0.1)
    assert (cfg.math.task, cfg.math.fraction) == ("gsm8k", 0.05)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"total": 10, "ingredients": [{"task": "fa", "weight": 0.5}, {"task": "fb", "weight": 0.4}]}, "weights must add up to 1"),
        ({"ingredients": [{"task": "fa", "weight": 0.5}, {"task": "fb", "weight": 0.5}]}, "total: required"),
        ({"ingredients": [{"task": "fa", "count": -3}]}, "ingredients.0.count: Input should be greater than or equal to 0"),
        ({"ingredients": [{"task": "fa", "count": 3, "weight": 0.2}]}, "give only one of count, weight"),
        ({"ingredients": [{"task": "fa", "cuont": 3}]}, "ingredients.0.cuont: unknown field"),
        ({"ingredients": ["fa"], "sead": 1}, "sead: unknown field"),
        ({"ingredients": ["fa", "fa*2"]}, "ingredients.1.task: task 'fa' already listed"),
        ({"ingredients": ["fa**"]}, "ingredients.0"),
        ({"ingredients": []}, "ingredients"),
        ({"ingredients": [{"task": "fa", "weight": 1.5}], "total": 3}, "ingredients.0.weight: Input should be less than or equal to 1"),
        ({"ingredients": ["fa"], "general": {"fraction": -0.1}}, "general.fraction: Input should be greater than or equal to 0"),
    ],
)
def test_schema_errors_name_the_field(spec, expected):
    with pytest.raises(ConfigError) as err:
        parse_cocktail(spec, source="mix.yaml")
    msg = str(err.value)
    assert msg.startswith("mix.yaml: ") and expected in msg and "\n" not in msg


def test_unknown_task_and_too_many_examples_name_the_field():
    with pytest.raises(ConfigError, match=r"mix.yaml: ingredients.1.task: unknown task 'nope'"):
        resolve_tasks(parse_cocktail({"ingredients": ["fa", "nope"]}), resolver, source="mix.yaml")
    with pytest.raises(ConfigError, match=r"ingredients.0.count: asks for 51 examples of 'fa' but its train split has 50"):
        build({"ingredients": [{"task": "fa", "count": 51}]})
    with pytest.raises(ConfigError, match=r"ingredients.0.weight: asks for 60"):
        build({"total": 60, "ingredients": [{"task": "fa", "weight": 1.0}]})
    with pytest.raises(ConfigError, match=r"general.fraction: 1 of 50 task examples is 50 examples of 'gen' but its train split has 40"):
        build({"ingredients": ["fa"], "general": {"fraction": 1.0, "task": "gen"}})


def test_eval_only_task_is_rejected():
    tasks = dict(FAKE_TASKS)
    evo = FakeSentiment("evo", {"test": 5})
    evo.eval_only = True
    tasks["evo"] = evo
    with pytest.raises(ConfigError, match=r"ingredients.0.task: task 'evo' is evaluation-only"):
        resolve_tasks(parse_cocktail({"ingredients": ["evo"]}), lambda t: resolver(t, tasks))


class FileTask(FakeSentiment):
    """A fake task that reports the files it reads, like the real loaders can."""

    def source_files(self, data_dir: Path) -> list[Path]:
        return [data_dir / "ft" / "train.txt"]


def test_manifest_counts_tokens_and_file_hashes(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from fincocktail.tasks.prompts import encode_pair, render

    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "train.txt").write_text("some data\n")
    tasks = {**FAKE_TASKS, "ft": FileTask("ft", {"train": 12}, seed=9)}
    cfg = parse_cocktail({"seed": 3, "ingredients": ["ft*2", {"task": "fb", "count": 10}]})
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = prepare_cocktail(cfg, tmp_path, epochs=2, resolver=lambda t: resolver(t, tasks), tokenizer=tok)
    manifest = write_manifest(data, tmp_path / "out" / "manifest.json")
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk == manifest
    ft = manifest["sources"]["ft"]
    assert ft["examples_per_epoch"] == [24, 24] and ft["unique_examples_per_epoch"] == [12, 12]
    assert ft["files_sha256"] == {"ft/train.txt": hashlib.sha256(b"some data\n").hexdigest()}
    assert manifest["sources"]["fb"]["files_sha256"] is None  # the task does not say
    assert manifest["sources"]["fb"]["examples_per_epoch"] == [10, 10]
    assert manifest["examples_per_epoch"] == [34, 34]
    # token counts against an independent tokenization of every drawn example
    for epoch in range(2):
        expected = 0
        for task_id, idx in data.epochs[epoch]:
            if task_id == "fb":
                p, t = encode_pair(tok, render(tasks["fb"], data.sources["fb"][idx]))
                expected += len(p) + len(t)
        assert manifest["sources"]["fb"]["tokens_per_epoch"][epoch] == expected
    assert manifest["epoch_sha256"][0] != manifest["epoch_sha256"][1]  # fb resampled


def test_drop_ids_removes_examples_before_drawing():
    drop = {"fa": {"fa/train/0", "fa/train/1", "fa/train/7"}}
    data = build({"ingredients": ["fa", "fb"]}, drop_ids=drop)
    ids = {data.example(item).id for item in data.epochs[0]}
    assert not ids & drop["fa"] and counts(data)["fa"] == 47
    assert sorted(data.dropped["fa"]) == sorted(drop["fa"])
    assert data.manifest()["sources"]["fa"]["dropped_contaminated"] == 3


def test_yaml_files_load_and_example_configs_parse(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("name: mix\nseed: 1\ningredients:\n  - fa*2\n  - task: fb\n    count: 5\ngeneral: 0.1\n")
    cfg = load_cocktail(path)
    assert cfg.ingredients[0].replicate == 2 and cfg.ingredients[1].count == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingredients:\n  - fa\n  bad: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_cocktail(bad)
    examples = sorted((REPO / "configs" / "cocktails").glob("*.yaml"))
    assert examples, "configs/cocktails/ should hold example cocktails"
    for example in examples:
        load_cocktail(example)
