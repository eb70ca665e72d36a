"""`fincocktail export model`: the folder loads with plain peft / transformers, and the card tells the truth."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fincocktail.cli import app
from fincocktail.errors import ConfigError
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.export.model import export_model
from fincocktail.training.config import parse_train_config
from fincocktail.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tuned(tiny_model_dir, data_dir, tmp_path_factory):
    """A tiny LoRA run on real FPB + TFNS + the general (LIMA/Alpaca) data, and an FPB evaluation of it."""
    root = tmp_path_factory.mktemp("export")
    cfg = parse_train_config({
        "model": str(tiny_model_dir), "data_dir": str(data_dir), "batch_size": 4, "lr": 1e-2, "max_steps": 3, "epochs": 1,
        "lora": {"r": 4, "alpha": 8}, "checkpoint_every": 100,
        "cocktail": {"name": "fpb_tfns_general", "seed": 0, "ingredients": [{"task": "fpb", "count": 12}, {"task": "tfns", "count": 12}],
                     "general": {"fraction": 0.25, "task": "general"}},
    }, source="run.yaml")
    train(cfg, root / "run", progress=False)
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--adapter", str(root / "run"), "--tasks", "fpb", "--limit", "10",
                                   "--data-dir", str(data_dir), "--out", str(root / "eval"), "--no-progress", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    return root


def _card(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_adapter_export_loads_with_plain_peft_and_card_has_provenance(tuned, tiny_model_dir, data_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    res = CliRunner().invoke(app, ["export", "model", str(tuned / "run"), "--out", str(tmp_path / "adapter"), "--eval", str(tuned / "eval")])
    assert res.exit_code == 0, res.output
    assert "not licensed for commercial use" in res.output
    out = tmp_path / "adapter"
    model = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ours = load_for_eval(str(tiny_model_dir), tuned / "run", "float32")
    ids = tok("Instruction: What is the sentiment?\nAnswer:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ours.model(ids).logits, atol=1e-4)

    meta, body = _card(out)
    assert meta["library_name"] == "peft" and meta["license"] == "other" and meta["pipeline_tag"] == "text-generation"
    assert "fincocktail" in meta["tags"] and meta["model-index"][0]["results"][0]["dataset"]["name"] == "fpb"
    assert body.index("not for commercial use") < body.index("## Base model")
    card = json.loads((tuned / "run" / "run_card.json").read_text())
    for source, entry in card["data_manifest"]["sources"].items():
        for path, digest in entry["files_sha256"].items():
            assert f"`{path}` `{digest}`" in body  # every source file with its sha256
    assert "fpb: CC BY-NC-SA 3.0" in body and "lima: CC BY-NC-SA" in body and "alpaca: CC BY-NC 4.0" in body
    assert "tfns: MIT (upstream card) | allowed" in body
    metrics = json.loads((tuned / "eval" / "metrics.json").read_text())["fpb"]
    row = next(line for line in body.splitlines() if line.startswith("| this model | fpb |"))
    assert f"{metrics['metrics']['accuracy']:.3f}" in row and f"[{metrics['interval']['low']:.3f}, {metrics['interval']['high']:.3f}]" in row
    sample = json.loads((tuned / "eval" / "run_card.json").read_text())["tasks"]["fpb"]["sample"]
    assert f"10 of {sample['population']} ({sample['method']}, seed 0, `{sample['sha256'][:12]}`)" in row, row
    assert "| lr | `0.01` |" in body and "r=4" in body
    assert json.loads((out / "fincocktail_run_card.json").read_text()) == card


def test_merged_export_loads_with_plain_transformers(tuned, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    export_model(tuned / "run", tmp_path / "merged", merge=True)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ours = load_for_eval(str(tiny_model_dir), tuned / "run", "float32")
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ours.model(ids).logits, atol=1e-5)
    meta, body = _card(tmp_path / "merged")
    assert meta["library_name"] == "transformers" and "Not evaluated" in body


def test_export_refusals(tuned, tiny_model_dir, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a training run"):
        export_model(tmp_path, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_model(tuned / "run", tmp_path / "full")
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--tasks", "fpb", "--limit", "4", "--data-dir", str(data_dir),
                                   "--out", str(tmp_path / "base-eval"), "--no-progress", "--dtype", "float32"])
    assert res.exit_code == 0
    other = tmp_path / "other-eval"
    other.mkdir()
    card = json.loads((tmp_path / "base-eval" / "run_card.json").read_text())
    card["config"]["adapter"] = str(tmp_path)
    (other / "run_card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="not this run's model"):
        export_model(tuned / "run", tmp_path / "y", eval_dirs=[other])
    # an evaluation of the base model goes into the card as the reference row
    res = export_model(tuned / "run", tmp_path / "z", eval_dirs=[tuned / "eval", tmp_path / "base-eval"])
    assert [s.subject for s in res.scores] == ["this model", "base model"]


def test_source_licences_from_the_catalogue():
    from fincocktail.export.modelcard import source_licences

    manifest = {"sources": {
        "fpb": {"examples_per_epoch": [5], "files_sha256": {"fpb/Sentences_50Agree.txt": "x"}},
        "tfns": {"examples_per_epoch": [5], "files_sha256": {"tfns/sent_train.csv": "y"}},
        "fiqa_sa": {"examples_per_epoch": [0], "files_sha256": {"fiqa_sa/a.json": "z"}},  # all dropped: not trained on
        "mine": {"examples_per_epoch": [3], "files_sha256": None},
    }}
    got = {s.task: s for s in source_licences(manifest, {"mine": "CC0"})}
    assert set(got) == {"fpb", "tfns", "mine"}
    assert got["fpb"].commercial is False and got["fpb"].licence == "fpb: CC BY-NC-SA 3.0"
    assert got["tfns"].commercial is True and got["mine"].commercial is None and got["mine"].licence == "CC0"


def test_export_travels_hub_id_datasets_licence_link_prompt_and_plain_loading(tuned, tiny_model_dir, tmp_path, monkeypatch):
    """A registry base: the adapter names it by hub id (not the local cache folder), the card has
    `datasets:`, `license_link` (a LICENSES.md beside it), the exact prompt with an example, and
    its plain transformers + peft snippet runs (the hub id swapped for the local base folder)."""
    import fincocktail.models as models_pkg
    from fincocktail.models.registry import get_model_spec
    from fincocktail.tasks.prompts import INSTRUCTION_TEMPLATE

    smol = get_model_spec("smollm2-135m-instruct")
    monkeypatch.setattr(models_pkg, "spec_for", lambda name: smol)
    monkeypatch.setattr(models_pkg, "resolve_model", lambda name: tiny_model_dir)
    out = tmp_path / "adapter"
    export_model(tuned / "run", out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == smol.hub_id
    meta, body = _card(out)
    assert meta["base_model"] == smol.hub_id
    assert {"takala/financial_phrasebank", "zeroshot/twitter-financial-news-sentiment"} <= set(meta["datasets"])
    assert meta["license_link"] == "LICENSES.md" and "fpb" in (out / "LICENSES.md").read_text()
    assert INSTRUCTION_TEMPLATE in body and "Instruction: What is the sentiment of this news?" in body
    assert "dequantized to float32 from a Q4_1 GGUF" in body
    code = body.split("## How to load", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace(f'"{smol.hub_id}"', repr(str(tiny_model_dir))).replace('"PATH"', repr(str(out)))
    exec(compile(code, "card-snippet", "exec"), {})  # plain transformers + peft, as the card says
    (out / "README.md").replace(tmp_path / "card.md")  # left for a look: pytest keeps tmp_path
