"""Sweep files: expansion to runs, run ids, estimates, and errors that name the file and field."""

from __future__ import annotations

from collections import Counter
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fincocktail.errors import ConfigError
from fincocktail.sweep.spec import config_hash, expand, load_plan, parse_sweep, planned_steps

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "configs" / "sweeps"


def write(tmp_path: Path, data: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


BASE = {
    "name": "t",
    "tasks": ["fpb", "fiqa_sa", "tfns"],
    "models": ["smollm2-135m-instruct"],
    "general": {"task": "general", "fractions": [0, 0.25]},
    "math": {"task": "gsm8k", "fractions": [0, 0.5]},
    "training": {"max_steps": 4, "batch_size": 2},
}


def plan_of(tmp_path: Path, **changes):
    return load_plan(write(tmp_path, {**BASE, **changes}))


def test_paper_sweep_plans_at_least_200_training_runs():
    plan = load_plan(SWEEPS / "paper.yaml")
    trained = plan.training_runs
    assert len(trained) >= 200
    # 4 models x (7 single + 6 incremental) x 2 (general) x 2 (math)
    assert len(trained) == 4 * 13 * 4
    assert {r.model for r in trained} == {
        "phi3-mini-4k-instruct", "llama3.1-8b-instruct", "mistral-7b-instruct-v0.3", "qwen2.5-7b-instruct",
    }
    assert {r.kind for r in plan.runs} == {"base", "api", "single", "cocktail"}
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    # every run is evaluated on the seven financial tasks plus the knowledge tasks, test split
    ev = trained[0].eval
    assert ev["split"] == "test" and ev["tasks"][-2:] == ["cfa", "financebench"] and len(ev["tasks"]) == 9
    assert ev["selection_split"] == "validation"
    assert all(r.resources.num_gpus == 1 for r in trained)


def test_cpu_small_fits_an_hour_and_quick_a_few_minutes():
    small = load_plan(SWEEPS / "cpu-small.yaml")
    assert small.spec.models[0].name == "smollm2-135m-instruct"
    assert {r.kind for r in small.runs} == {"base", "single", "cocktail"}
    assert any(r.general and r.math for r in small.runs)
    assert small.totals()["est_seconds"] <= 30 * 60  # the header promises 60 min with 2x headroom
    quick = load_plan(SWEEPS / "quick.yaml")
    assert quick.totals()["est_seconds"] <= 6 * 60


def test_design_expands_as_hand_counted(tmp_path):
    plan = plan_of(tmp_path)
    # base + (3 single + 2 incremental) x 2 general x 2 math; incremental's last cocktail is all tasks
    assert len(plan.runs) == 1 + 5 * 4
    labels = [r.label for r in plan.runs]
    assert labels[0] == "zero-shot"
    assert "fpb+fiqa_sa" in labels and "fpb+fiqa_sa+tfns +general0.25 +math0.5" in labels
    assert labels.count("fpb+fiqa_sa+tfns") == 1  # all_tasks does not duplicate the last incremental one
    run = next(r for r in plan.runs if r.label == "fpb+fiqa_sa +general0.25 +math0.5")
    cocktail = run.train["cocktail"]
    assert [i["task"] for i in cocktail["ingredients"]] == ["fpb", "fiqa_sa"]
    assert cocktail["general"]["fraction"] == 0.25 and cocktail["math"]["fraction"] == 0.5
    assert run.train["max_steps"] == 4 and run.train["seed"] == 0 and run.kind == "cocktail"

    # boosters only on cocktails, no incremental, explicit cocktail, two seeds
    plan = plan_of(
        tmp_path,
        seeds=[0, 1],
        design={"base": False, "incremental": False, "all_tasks": False, "cocktails": [["tfns", "fpb"]], "boosters_on": ["cocktail"]},
    )
    assert len(plan.runs) == (3 + 1 * 4) * 2
    assert {r.seed for r in plan.runs} == {0, 1}


def test_run_ids_hash_the_full_config(tmp_path):
    a = plan_of(tmp_path)
    b = plan_of(tmp_path, data_dir="/elsewhere", estimates={"tokens_per_s": 999})
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]  # machine details are not in the hash
    c = plan_of(tmp_path, training={"max_steps": 4, "batch_size": 2, "lr": 1e-3})
    ids_a = {r.label: r.run_id for r in a.runs}
    ids_c = {r.label: r.run_id for r in c.runs}
    assert ids_a["zero-shot"] == ids_c["zero-shot"]
    assert all(ids_a[k] != ids_c[k] for k in ids_a if k != "zero-shot")
    run = a.runs[3]
    expected = config_hash({"schema": "fincocktail-run/1", "kind": run.kind, "model": run.model, "train": run.train, "eval": run.eval})
    assert run.config_sha256 == expected and run.run_id == f"{run.kind}-{expected[:12]}"


def test_estimates_follow_sizes_and_throughput(tmp_path):
    plan = plan_of(
        tmp_path,
        tasks=["fpb"],
        general=None,
        math=None,
        design={"base": False},
        training={"epochs": 2},
        train_caps={"fpb": 100},
        eval={"tasks": ["fpb"], "max_examples": 50, "selection_split": None},
        estimates={"tokens_per_s": 100, "eval_examples_per_s": 5, "overhead_s": 1, "tasks": {"fpb": {"mean_tokens": 60}}},
    )
    (run,) = plan.runs
    assert run.est_tokens == 100 * 60 * 2
    assert run.est_eval_examples == 50
    assert run.est_seconds == pytest.approx(1 + 12000 / 100 + 50 / 5)


def test_estimates_count_shared_prefix_training_as_measured_faster(tmp_path):
    from fincocktail.training.prefix import ESTIMATED_SPEEDUP

    common = dict(tasks=["fpb"], general=None, math=None, design={"base": False}, train_caps={"fpb": 100},
                  eval={"tasks": ["fpb"], "max_examples": 50, "selection_split": None},
                  estimates={"tokens_per_s": 100, "eval_examples_per_s": 5, "overhead_s": 1, "tasks": {"fpb": {"mean_tokens": 60}}})
    (off,) = plan_of(tmp_path, training={"prefix_sharing": "off"}, **common).runs
    (auto,) = plan_of(tmp_path, training={"prefix_sharing": "auto"}, **common).runs
    assert ESTIMATED_SPEEDUP > 1 and off.est_tokens == auto.est_tokens == 6000
    assert off.est_seconds == pytest.approx(1 + 6000 / 100 + 50 / 5)
    assert auto.est_seconds == pytest.approx(1 + 6000 / (100 * ESTIMATED_SPEEDUP) + 50 / 5)


@pytest.mark.parametrize(
    "changes, where",
    [
        ({"tasks": ["fpb", "fiqa_ss"]}, "tasks.1: unknown task 'fiqa_ss' (did you mean fiqa_sa"),
        ({"design": {"cocktails": [["fpb", "nope"]]}}, "design.cocktails.0.1: unknown task 'nope'"),
        ({"eval": {"tasks": ["fpb", "zzz"]}}, "eval.tasks.1: unknown task 'zzz'"),
        ({"tasks": ["fpb", "cfa"]}, "tasks.1: task 'cfa' is evaluation-only"),
        ({"seeds": []}, "seeds: empty grid"),
        ({"tasks": []}, "tasks: empty grid"),
        ({"models": []}, "models: empty grid"),
        ({"design": {"base": False, "single": False, "incremental": False, "all_tasks": False}}, "design: empty grid"),
        ({"seeds": [0, 0]}, "seeds.1: 0 is already listed at seeds.0"),
        ({"design": {"cocktails": [["fpb", "fiqa_sa"]]}}, "design.cocktails.0"),
        ({"learning_rate": 1e-4}, "learning_rate: unknown field"),
        ({"eval": {"max_examples": 5, "splitt": "test"}}, "eval.splitt: unknown field"),
        ({"training": {"lrr": 1e-4}}, "training (models.0): lrr: unknown field"),
        ({"training": {"seed": 3}}, "training.seed: set by the sweep"),
        ({"general": {"task": "general", "fractions": [0.1, 0.1]}}, "general.fractions"),
        ({"models": ["no-such-model"]}, "models.0.name: unknown model 'no-such-model'"),
    ],
)
def test_bad_sweep_files_fail_at_plan_time_naming_file_and_field(tmp_path, changes, where):
    path = write(tmp_path, {**BASE, **changes})
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert where in message, message
    assert "\n" not in message


def test_duplicate_run_names_both_origins(tmp_path):
    path = write(tmp_path, {**BASE, "design": {"cocktails": [["fpb", "fiqa_sa"]]}})
    with pytest.raises(ConfigError, match=r"design\.cocktails\.0.*duplicate run 'fpb\+fiqa_sa'.*design\.incremental"):
        load_plan(path)


def test_parse_requires_a_mapping():
    with pytest.raises(ConfigError, match="sweep: expected a mapping"):
        parse_sweep(["not", "a", "mapping"])


def test_cli_plan_json_and_one_line_errors(tmp_path):
    ok = write(tmp_path, BASE)
    res = subprocess.run(
        [sys.executable, "-m", "fincocktail", "sweep", "plan", str(ok), "--json"], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["totals"]["runs"] == 21 and data["totals"]["training_runs"] == 20
    assert {"id", "model", "cocktail", "seed", "est_tokens", "est_seconds"} <= set(data["runs"][0])
    bad = write(tmp_path, {**BASE, "tasks": ["fpb", "bogus"]}, name="bad.yaml")
    res = subprocess.run([sys.executable, "-m", "fincocktail", "sweep", "plan", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "bad.yaml: tasks.1: unknown task 'bogus'" in res.stderr


def test_expand_without_task_checks_skips_registry(tmp_path):
    spec = parse_sweep({**BASE, "tasks": ["mine_a", "mine_b"], "models": [str(tmp_path)], "general": None, "math": None})
    plan = expand(spec, check_tasks=False)
    assert [r.label for r in plan.runs] == ["zero-shot", "mine_a", "mine_b", "mine_a+mine_b"]


def test_cpu_study_is_sized_to_decide_its_classification_claims():
    """The resized cpu-study: five classification tasks x 512 examples, every recipe on the same three
    seeds (so Findings pair them), the +general variant, the knowledge check, 400-row test samples."""
    plan = load_plan(SWEEPS / "cpu-study.yaml")
    spec = plan.spec
    assert set(spec.tasks) == {"fpb", "fiqa_sa", "tfns", "headline", "ner_cls"}
    assert spec.general is not None and spec.math is None  # claim (c) is left to the paper preset (a floor here)
    assert all(spec.train_caps[t] == 512 for t in spec.tasks)
    every = tuple(spec.tasks)
    seeds: dict = {}
    for r in plan.runs:
        seeds.setdefault((r.kind, tuple(r.train_tasks), r.general), set()).add(r.seed)
    for t in spec.tasks:
        assert seeds[("single", (t,), 0.0)] == {0, 1, 2}
    assert seeds[("cocktail", every, 0.0)] == {0, 1, 2} and seeds[("cocktail", every, 0.15)] == {0, 1, 2}
    for t in spec.tasks:  # claim (a) at matched steps: each task alone for the all-task cocktail's steps, seed 0
        assert seeds[("matched", (t,), 0.0)] == {0}
    for r in plan.runs:
        ev = r.eval
        assert ev["sample"] == "stratified"
        for t in ev["tasks"]:
            n = ev["max_examples_per_task"].get(t, ev["max_examples"])
            assert n >= (60 if t == "financebench" else 400), (t, n)
        if r.kind in ("single", "cocktail"):
            assert ev["selection_split"] == "validation" and set(r.train_tasks) <= set(ev["selection_tasks"])
            assert ev["selection_max_examples"] >= 100 and set(r.train_tasks) <= set(ev["tasks"])
    base = next(r for r in plan.runs if r.kind == "base")
    plain_full = [r for r in plan.runs if tuple(r.train_tasks) == every and not r.general]
    for r in [base, *plain_full]:  # claim (d): the plain cocktail against the zero-shot model
        assert {"cfa", "financebench"} <= set(r.eval["tasks"])
    for r in plan.runs:
        if r.general:  # claim (b): every classification task
            assert set(spec.tasks) <= set(r.eval["tasks"])

def test_eval_scope_needed_scores_each_run_on_what_its_comparisons_use(tmp_path):
    spec = parse_sweep({"name": "s", "tasks": ["a", "b", "c"], "models": ["x"], "eval": {
        "tasks": ["a", "b", "c", "k"], "scope": "needed", "always": ["a"]}})
    plan = expand(spec, check_tasks=False)
    by_label = {r.label: r.eval for r in plan.runs}
    assert by_label["zero-shot"]["tasks"] == ["a", "b", "c", "k"]
    assert by_label["b"]["tasks"] == ["a", "b"] and by_label["b"]["selection_tasks"] == ["b"]
    assert by_label["a+b"]["tasks"] == ["a", "b"]
    assert by_label["a+b+c"]["tasks"] == ["a", "b", "c", "k"]
    # knowledge tasks (claim d) only on the zero-shot row and the plain cocktails
    spec = parse_sweep({"name": "s", "tasks": ["a", "b"], "models": ["x"], "general": {"task": "g", "fractions": [0, 0.5]},
                        "math": None, "design": {"boosters_on": ["all_tasks"]},
                        "eval": {"tasks": ["a", "b", "cfa"], "scope": "needed", "always": ["a"]}})
    by_label = {r.label: r.eval for r in expand(spec, check_tasks=False).runs}
    assert by_label["a+b"]["tasks"] == ["a", "b", "cfa"] and by_label["zero-shot"]["tasks"] == ["a", "b", "cfa"]
    assert by_label["a+b +general0.5"]["tasks"] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"eval\.always\.0"):
        expand(parse_sweep({"name": "s", "tasks": ["a", "b"], "models": ["x"], "eval": {
            "tasks": ["a", "b"], "scope": "needed", "always": ["zz"]}}), check_tasks=False)


def test_always_seeds_and_math_runs_scored_on_the_numerical_tasks():
    spec = parse_sweep({"name": "s", "tasks": ["a", "b", "finqa"], "models": ["x"], "seeds": [0, 1],
                        "general": {"task": "g", "fractions": [0, 0.5]}, "math": {"task": "m", "fractions": [0, 0.5]},
                        "design": {"boosters_on": ["all_tasks"], "combine_boosters": False},
                        "eval": {"tasks": ["a", "b", "finqa", "cfa"], "scope": "needed", "always": ["a", "b"],
                                 "always_seeds": [0]}})
    runs = {(r.label, r.seed): r.eval for r in expand(spec, check_tasks=False).runs}
    assert runs[("finqa", 0)]["tasks"] == ["a", "b", "finqa"]
    assert runs[("finqa", 1)]["tasks"] == ["finqa"] and runs[("finqa", 1)]["selection_tasks"] == ["finqa"]
    assert runs[("a+b+finqa", 1)]["tasks"] == ["a", "b", "finqa", "cfa"]  # the plain cocktail: every task, every seed
    assert runs[("a+b+finqa +general0.5", 1)]["tasks"] == ["a", "b", "finqa"]
    assert runs[("a+b+finqa +math0.5", 0)]["tasks"] == ["a", "b", "finqa"]
    assert runs[("a+b+finqa +math0.5", 1)]["tasks"] == ["finqa"]
    assert runs[("a+b+finqa +math0.5", 1)]["selection_tasks"] == ["finqa"]
    # seed 0 keeps the ids it had without always_seeds
    plain = {(r.label, r.seed): r.run_id for r in expand(parse_sweep({**spec.model_dump(), "eval": {
        **spec.eval.model_dump(), "always_seeds": None}}), check_tasks=False).runs}
    assert all(plain[k] == r for k, r in {(r.label, r.seed): r.run_id for r in expand(spec, check_tasks=False).runs}.items()
               if k[1] == 0 and "math" not in k[0])
    with pytest.raises(ConfigError, match=r"eval\.always_seeds\.0"):
        expand(parse_sweep({**spec.model_dump(), "eval": {**spec.eval.model_dump(), "always_seeds": [7]}}), check_tasks=False)


def test_incremental_seeds_and_boosters_on_the_all_task_cocktail_only(tmp_path):
    spec = parse_sweep({"name": "s", "tasks": ["a", "b", "c"], "models": ["x"], "seeds": [0, 1, 2],
                        "general": {"task": "g", "fractions": [0, 0.5]}, "math": {"task": "m", "fractions": [0, 0.5]},
                        "design": {"base": False, "incremental_seeds": [0], "boosters_on": ["all_tasks"],
                                   "combine_boosters": False}})
    plan = expand(spec, check_tasks=False)
    counts = Counter(r.label for r in plan.runs)
    assert counts == {"a": 3, "b": 3, "c": 3, "a+b": 1, "a+b+c": 3, "a+b+c +general0.5": 3, "a+b+c +math0.5": 3}


def test_plan_wall_time_on_workers_is_the_longest_first_schedule():
    from itertools import permutations

    from fincocktail.sweep.plan import makespan

    runs = [7.0, 5.0, 4.0, 4.0, 3.0, 3.0, 2.0]
    # longest first on 2 workers: 7 | 5, 4 -> 9, 4 -> 11, 3 -> 12, 3 -> 14, 2 -> 14
    assert makespan(runs, 2) == 14.0
    assert makespan(runs, 1) == sum(runs)
    assert makespan(runs, 10) == max(runs)
    # never better than the best possible split, which brute force finds
    best = min(max(sum(p[:k]), sum(p[k:])) for p in permutations(runs) for k in range(len(runs) + 1))
    assert best <= makespan(runs, 2) <= best * 7 / 6 + 1e-9  # Graham's 4/3 - 1/(3m) bound for m = 2


def test_eval_settings_read_every_presets_runs_and_old_specs_keep_their_meaning():
    from fincocktail.sweep.spec import EvalSettings

    for path in sorted(SWEEPS.glob("*.yaml")):
        for r in load_plan(path).runs:
            ev = r.eval_settings  # every key of the hashed dict is a typed field (extra keys are refused)
            assert ev.tasks == r.eval["tasks"] and ev.dtype == r.eval.get("dtype", "float32")
            for t in ev.tasks:
                assert ev.limit(t, test=True) == r.eval["max_examples_per_task"].get(t, r.eval["max_examples"])
    old = {"split": "test", "tasks": ["fpb"], "selection_split": "validation", "selection_tasks": ["fpb"],
           "max_examples": 60, "selection_max_examples": 30, "max_examples_per_task": {"fpb": 40}}
    ev = EvalSettings.model_validate(old)
    assert ev.sample == "head" and ev.dtype == "float32"  # what a spec written before these keys meant
    assert ev.limit("fpb", test=True) == 40 and ev.limit("fpb", test=False) == 40
    assert ev.splits() == [("test", ["fpb"]), ("validation", ["fpb"])]
    with pytest.raises(ValueError):
        EvalSettings.model_validate({**old, "dtpye": "auto"})


def test_the_run_id_eval_dict_is_what_earlier_sweeps_hashed():
    """Late keys are left out at the default their absence means; every other key is always written."""
    from fincocktail.sweep.spec import EvalSettings, canonical_json, run_id_eval_dict

    plain = EvalSettings(split="test", tasks=["fpb", "cfa"], selection_split="validation", selection_tasks=["fpb"],
                         max_examples=50, selection_max_examples=50, sample="stratified")
    # the dict the sweep wrote before EvalSettings made it (byte for byte: the run ids of stored sweeps)
    assert canonical_json(run_id_eval_dict(plain)) == (
        '{"batch_size":8,"bootstrap_samples":1000,"max_examples":50,"max_examples_per_task":{},"max_new_tokens":null,'
        '"mode":"auto","sample":"stratified","sample_seed":0,"selection_max_examples":50,"selection_split":"validation",'
        '"selection_tasks":["fpb"],"shots":0,"split":"test","tasks":["fpb","cfa"]}'
    )
    late = plain.model_copy(update={"dtype": "auto", "max_prompt_tokens": 512, "selection_max_examples_per_task": {"fpb": 9}})
    d = run_id_eval_dict(late)
    assert d["dtype"] == "auto" and d["max_prompt_tokens"] == 512 and d["selection_max_examples_per_task"] == {"fpb": 9}
    for settings in (plain, late):  # read back, a stored dict means what was planned
        assert EvalSettings.model_validate(run_id_eval_dict(settings)) == settings


def test_the_shared_eval_fields_are_declared_once():
    """A sweep file, a run's settings and `fincocktail eval` agree on each shared field's type bounds and meaning."""
    from fincocktail.evaluation.runner import EvalConfig
    from fincocktail.evaluation.settings import EvalFields
    from fincocktail.sweep.spec import EvalSettings, EvalSpec

    for name, field in EvalFields.model_fields.items():
        for model in (EvalSpec, EvalSettings, EvalConfig):
            assert model.model_fields[name].metadata == field.metadata, (model.__name__, name)
            assert model.model_fields[name].description == field.description, (model.__name__, name)
    assert EvalSettings.model_fields["sample"].default == "head" and EvalSpec().sample == "stratified"


def test_a_runs_eval_config_is_its_settings_for_one_task(tmp_path):
    plan = plan_of(tmp_path, eval={"tasks": ["fpb", "cfa"], "max_examples": 30, "selection_max_examples": 10,
                                   "max_examples_per_task": {"cfa": 20}, "shots": 2, "dtype": "auto",
                                   "max_prompt_tokens": 256, "sample_seed": 3})
    ev = plan.runs[0].eval_settings
    test = ev.eval_config("test", "cfa", model="m", device="cpu")
    assert (test.tasks, test.split, test.limit, test.model, test.device) == (["cfa"], "test", 20, "m", "cpu")
    assert (test.shots, test.dtype, test.max_prompt_tokens, test.sample, test.sample_seed) == (2, "auto", 256, "stratified", 3)
    assert ev.eval_config("validation", "fpb", model="m").limit == 10
    assert ev.eval_config("test", "fpb", model="m", max_prompt_tokens=None, batch_size=4).max_prompt_tokens is None


# -- design.matched_steps: single-task runs trained for their cocktail's steps ------------------


def test_matched_steps_add_runs_and_leave_every_other_id_unchanged(tmp_path):
    plain = plan_of(tmp_path)
    matched = plan_of(tmp_path, design={"matched_steps": True})
    ids = {r.run_id for r in plain.runs}
    extra = [r for r in matched.runs if r.run_id not in ids]
    assert [r for r in matched.runs if r.run_id in ids] == plain.runs  # same runs, same ids, same order
    assert extra and {r.kind for r in extra} == {"matched"} and all(r.run_id.startswith("matched-") for r in extra)
    # one per task x the all-task cocktail's runs (4 booster combos x 1 seed), matched to it
    assert len(extra) == 3 * 4
    fpb = next(r for r in extra if r.train_tasks == ["fpb"] and not r.general and not r.math)
    assert fpb.label == "fpb (matched steps)" and fpb.matched_to == "fpb+fiqa_sa+tfns"
    assert fpb.train["cocktail"]["resample_each_epoch"] is False
    assert {r.matched_to for r in extra if r.general and r.math} == {"fpb+fiqa_sa+tfns +general0.25 +math0.5"}
    assert all(r.matched_to is None for r in plain.runs)
    assert matched.totals()["est_tokens"] > plain.totals()["est_tokens"]  # `sweep plan` counts them


def test_matched_seeds_keep_the_matched_runs_of_those_seeds_only(tmp_path):
    every = plan_of(tmp_path, seeds=[0, 1], design={"matched_steps": True})
    some = plan_of(tmp_path, seeds=[0, 1], design={"matched_steps": True, "matched_seeds": [1]})
    matched = [r for r in every.runs if r.kind == "matched"]
    assert {r.seed for r in matched} == {0, 1}
    assert [r for r in some.runs if r.kind == "matched"] == [r for r in matched if r.seed == 1]
    assert [r for r in some.runs if r.kind != "matched"] == [r for r in every.runs if r.kind != "matched"]
    with pytest.raises(ConfigError, match=r"design.matched_seeds: \[7\] not in seeds"):
        plan_of(tmp_path, seeds=[0, 1], design={"matched_steps": True, "matched_seeds": [7]})
    with pytest.raises(ConfigError, match=r"design.matched_seeds: needs design.matched_steps: true"):
        plan_of(tmp_path, design={"matched_seeds": [0]})


def test_matched_steps_refused_without_a_cocktail(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.yaml: design.matched_steps: no cocktail to match"):
        plan_of(tmp_path, tasks=["fpb"], design={"matched_steps": True, "incremental": False})


@pytest.mark.parametrize("prefix_sharing", ["off", "on"])
def test_matched_singles_train_as_many_steps_as_their_cocktail(tiny_model_dir, tmp_path, prefix_sharing):
    """The steps the trainer plans (the cocktail's draw on the fake tasks, tokenized, `Schedule.plan`)
    for each matched single equal its cocktail's (the issue asks within one batch: they are equal,
    also with task-grouped batches); the one-epoch single's do not, and `planned_steps` is exact."""
    from fake_tasks import resolver
    from transformers import AutoTokenizer

    from fincocktail.cocktail import prepare_cocktail, resolve_tasks
    from fincocktail.training.config import TrainConfig
    from fincocktail.training.data import Schedule

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = parse_sweep({
        "name": "m", "tasks": ["fa", "fb"], "models": ["x"], "seeds": [0, 1], "train_caps": {"fa": 33, "fb": 25},
        "design": {"base": False, "matched_steps": True},
        "training": {"batch_size": 8, "epochs": 2, "prefix_sharing": prefix_sharing},
        "estimates": {"tasks": {"fa": {"train_examples": 50}, "fb": {"train_examples": 30}}},
        "eval": {"tasks": ["fa", "fb"], "selection_split": None},
    })
    plan = expand(spec, check_tasks=False)

    def steps(run) -> int:
        config = TrainConfig.model_validate({**run.train, "data_dir": str(tmp_path)})
        tasks = resolve_tasks(config.cocktail, resolver)
        data = prepare_cocktail(config.cocktail, tmp_path, epochs=config.epochs, tasks=tasks)
        data.encode(tok)
        return Schedule.plan(config, data, tok.pad_token_id, None).total_steps

    by_label = {(r.label, r.seed): r for r in plan.runs}
    matched = [r for r in plan.runs if r.kind == "matched"]
    assert len(matched) == 4  # fa and fb, 2 seeds each
    for r in matched:
        cocktail = by_label[(r.matched_to, r.seed)]
        single = by_label[(r.train_tasks[0], r.seed)]
        assert steps(r) == steps(cocktail) == r.train["max_steps"], r.label
        assert steps(single) < steps(cocktail)
    for r in plan.runs:
        assert planned_steps(spec, r.train) == steps(r), r.label
    # 58 examples at batch 8: 8 mixed batches an epoch; cut within each task 5 + 4 = 9
    assert steps(by_label[("fa+fb", 0)]) == {"off": 2 * 8, "on": 2 * 9}[prefix_sharing]


def test_matched_steps_need_single_runs_and_follow_their_boosters(tmp_path):
    with pytest.raises(ConfigError, match=r"design.matched_steps: needs design.single"):
        plan_of(tmp_path, design={"matched_steps": True, "single": False})
    plan = plan_of(tmp_path, design={"matched_steps": True, "boosters_on": ["cocktail"]})
    matched = [r for r in plan.runs if r.kind == "matched"]
    assert sorted(r.label for r in matched) == ["fiqa_sa (matched steps)", "fpb (matched steps)", "tfns (matched steps)"]


def test_one_precision_vocabulary_both_spellings_everywhere(tmp_path):
    """`eval.dtype` and `training.precision` accept both spellings; each keeps the one its run ids hash,
    so a sweep written with the other spelling plans the very same runs."""
    from fincocktail.evaluation.runner import EvalConfig
    from fincocktail.training.config import TrainConfig

    ids = lambda plan: [r.run_id for r in plan.runs]  # noqa: E731
    train = BASE["training"]
    assert ids(plan_of(tmp_path, eval={"dtype": "fp32"})) == ids(plan_of(tmp_path))  # float32 is left out of the hash
    assert ids(plan_of(tmp_path, eval={"dtype": "bf16"})) == ids(plan_of(tmp_path, eval={"dtype": "bfloat16"}))
    assert ids(plan_of(tmp_path, eval={"dtype": "bf16"})) != ids(plan_of(tmp_path))
    long = plan_of(tmp_path, training={**train, "precision": "bfloat16"})
    assert ids(long) == ids(plan_of(tmp_path, training={**train, "precision": "bf16"}))
    assert ids(long) != ids(plan_of(tmp_path))
    assert EvalConfig(model="m", tasks=["fpb"], dtype="bf16").dtype == "bfloat16"
    assert TrainConfig(model="m", cocktail="fpb", precision="float32").precision == "fp32"
    with pytest.raises(ConfigError, match="eval.dtype"):
        plan_of(tmp_path, eval={"dtype": "fp8"})


def test_reading_a_sweep_file_loads_no_numerics():
    """`sweep plan` and every worker read sweep specs; the evaluation settings they share with `eval` must not
    pull numpy (or torch) in with them (tasks.sampling imports numpy only where it draws a sample)."""
    code = "import sys, fincocktail.sweep.spec; print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
