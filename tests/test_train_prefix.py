"""Shared-prefix training: loss and LoRA gradients equal the unshared batch; batches stay
within one task and the epoch keeps the cocktail's task mixture."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from fake_tasks import FAKE_TASKS, resolver

from fincocktail.training.config import parse_train_config
from fincocktail.training.data import Encoded, collate, plan_batches
from fincocktail.training.prefix import common_prefix, prefix_to_share
from fincocktail.training.run_card import config_changes
from fincocktail.training.trainer import answer_loss_sum, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"]))
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter do something
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    return model.train()


def _items(vocab: int) -> list[Encoded]:
    torch.manual_seed(1)
    head = torch.randint(3, vocab, (12,)).tolist()  # the shared instruction
    rows = []
    for n_input, n_answer in [(7, 2), (3, 1), (9, 3), (5, 2)]:
        prompt = head + torch.randint(3, vocab, (n_input,)).tolist()
        rows.append(Encoded(prompt + torch.randint(3, vocab, (n_answer,)).tolist(), n_prompt=len(prompt)))
    return rows


def _reference(model, batch):
    """The model's own forward over every position (peft wrapper, full logits), then masked."""
    logits = model(input_ids=batch.input_ids).logits[:, :-1].float()
    labels = batch.labels[:, 1:]
    keep = labels != -100
    return torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


def _assert_equals_unshared(model, items, batch, lengths=None):
    """Loss, answer-token count and LoRA gradients of the shared forward equal the unshared reference's."""
    expected = _reference(model, batch)
    expected.backward()
    want = _grads(model)
    loss, count = answer_loss_sum(model, batch.input_ids, batch.labels, shared_prefix=common_prefix(items), lengths=lengths)
    loss.backward()
    got = _grads(model)
    assert count == sum(e.n_target for e in items)
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)
    assert want.keys() == got.keys() and len(want) > 0
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5, rtol=1e-5), name
    assert any(float(g.abs().max()) > 1e-3 for g in got.values())  # the comparison is not of zeros


def test_shared_prefix_loss_and_lora_gradients_equal_the_unshared_computation(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    items = _items(model.config.vocab_size)
    batch = collate(items, pad_id=0)
    assert common_prefix(items) == 12
    _assert_equals_unshared(model, items, batch)  # no lengths: the cache form


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_shared_prefix_loss_and_lora_gradients_equal_the_unshared_computation(tiny_model_dir, attention):
    """The packed form (prefix once, then every row's suffix without padding, one masked sequence)
    is what the trainer runs: the same loss and gradients, under both attentions it packs for."""
    from fincocktail.training.loss import _body_and_head
    from fincocktail.training.prefix import can_pack

    model = _lora_model(tiny_model_dir)
    model.get_base_model().set_attn_implementation(attention)
    items = _items(model.config.vocab_size)
    batch = collate(items, pad_id=0)
    lengths = batch.attention_mask.sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # rows of different lengths: padding is really left out
    assert can_pack(_body_and_head(model)[0], lengths)
    _assert_equals_unshared(model, items, batch, lengths)


def test_shared_prefix_on_a_sliding_window_model_equals_the_unshared_computation():
    """Gemma-3 style (sliding and full layers, a mask per layer type): rows within the window
    are packed, with the same loss and gradients; rows that could outgrow it are refused before
    training (the cache form would keep only the window's last keys)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from fincocktail.training.loss import _body_and_head
    from fincocktail.errors import ConfigError
    from fincocktail.training.prefix import can_pack, check_sliding_window

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=16, sliding_window=64, max_position_embeddings=256,
                              layer_types=["sliding_attention", "full_attention"])
    model = get_peft_model(Gemma3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    model.train()
    items = _items(config.vocab_size)
    batch = collate(items, pad_id=0)
    lengths = batch.attention_mask.sum(dim=1)
    assert can_pack(_body_and_head(model)[0], lengths)
    check_sliding_window(config, 64, "auto")
    with pytest.raises(ConfigError, match="sliding window of 64 tokens; set max_length: 64 or prefix_sharing: off"):
        check_sliding_window(config, 65, "auto")
    check_sliding_window(config, 512, "off")
    _assert_equals_unshared(model, items, batch, lengths)


def test_packing_is_refused_where_a_custom_mask_would_change_the_attention():
    from types import SimpleNamespace

    from fincocktail.training.prefix import can_pack

    lengths = torch.tensor([40, 30])
    assert can_pack(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa", sliding_window=None)), lengths)
    assert not can_pack(SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")), lengths)
    assert not can_pack(SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager", sliding_window=32)), lengths)
    # a Qwen2-style config carries a window it does not use
    assert can_pack(SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager", sliding_window=32, use_sliding_window=False)), lengths)


def test_the_shared_prefix_stops_before_the_shortest_prompt_ends():
    rows = [Encoded([5, 6, 7, 8, 9], n_prompt=3), Encoded([5, 6, 7, 1, 2, 3], n_prompt=4)]
    assert common_prefix(rows) == 2  # token 3 (index 2) predicts the first answer token of row 0: the suffix must hold it
    assert common_prefix(rows[:1]) == 0
    assert prefix_to_share(rows, "off") == 0 and prefix_to_share(rows, "on") == 2
    assert prefix_to_share(rows, "auto") == 0  # two tokens do not pay for a second forward
    long = [Encoded(list(range(20)) + [100 + i, 7, 8], n_prompt=21) for i in range(4)]
    assert prefix_to_share(long, "auto") == 20


def test_task_grouped_batches_stay_within_one_task_and_keep_the_mixture():
    torch.manual_seed(0)
    groups = ["fpb"] * 600 + ["fiqa_sa"] * 300 + ["tfns"] * 100
    lengths = torch.randint(20, 120, (len(groups),)).tolist()
    plan = plan_batches(lengths, 8, seed=3, epoch=0, groups=groups)
    assert plan == plan_batches(lengths, 8, seed=3, epoch=0, groups=groups)
    assert sorted(i for b in plan for i in b) == list(range(len(groups)))  # every item once
    assert all(len({groups[i] for i in b}) == 1 for b in plan)
    # each task's batches are spread over the whole epoch (the batch order is one seeded shuffle), so
    # every half of the epoch sees the mixture's proportions (6:3:1) up to the noise of ~60 batches
    want = Counter(groups)
    half = len(plan) // 2
    for part in (plan[:half], plan[half:]):
        seen = Counter(groups[i] for b in part for i in b)
        total = sum(seen.values())
        for task, n in want.items():
            assert abs(seen[task] / total - n / len(groups)) < 0.06, (task, seen)
    for task in want:
        where = [k for k, b in enumerate(plan) if groups[b[0]] == task]
        assert abs(sum(where) / len(where) / len(plan) - 0.5) < 0.12, task
    # within a mega-batch, rows of a task are still length sorted
    assert all(lengths[b[k]] >= lengths[b[k + 1]] for b in plan for k in range(len(b) - 1))


def test_prefix_sharing_off_keeps_earlier_runs_fingerprints_and_dumps():
    """A run started before the setting existed resumes (same fingerprint, no changed field) and
    keeps its sweep run id (the dump a sweep hashes has no new key)."""
    base = {"model": "m", "cocktail": {"ingredients": ["fpb"]}}
    off = parse_train_config(base, source="run.yaml")
    assert off.prefix_sharing == "off" and "prefix_sharing" not in off.model_dump(mode="json")
    # computed by main at c49fdfa, before prefix_sharing existed
    assert off.fingerprint() == "6ec685231cd0df49a8db54070f9d259b85c9cb6fbd7b4db888e7793ca51b2513"
    on = parse_train_config({**base, "prefix_sharing": "auto"}, source="run.yaml")
    assert on.model_dump(mode="json")["prefix_sharing"] == "auto" and on.fingerprint() != off.fingerprint()
    assert config_changes(off.model_dump(mode="json"), off) == []
    assert config_changes(off.model_dump(mode="json"), on) == ["prefix_sharing: None -> 'auto'"]
    assert parse_train_config(on.model_dump(mode="json"), source="run.yaml") == on


@pytest.mark.parametrize("sharing", ["on", "off"])
def test_a_training_run_shares_prefixes_only_when_asked_and_records_them(sharing, tiny_model_dir, tmp_path):
    cocktail = {"seed": 1, "ingredients": ["fa", {"task": "fb", "count": 20}]}
    cfg = parse_train_config(
        {"model": str(tiny_model_dir), "cocktail": cocktail, "data_dir": str(tmp_path), "batch_size": 4, "lr": 1e-2,
         "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "max_steps": 4, "prefix_sharing": sharing},
        source="run.yaml",
    )
    result = train(cfg, tmp_path / "run", resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=False)
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    assert result.steps == 4 and card["status"] == "complete" and result.final_loss is not None
    if sharing == "on":  # one-task batches of a task whose every prompt starts with its instruction
        assert card["shared_prefix_tokens"] > 4 * 3 * 10 and card["config"]["prefix_sharing"] == "on"
    else:
        assert card["shared_prefix_tokens"] == 0 and "prefix_sharing" not in card["config"]


def test_prefix_sharing_on_and_off_in_yaml_mean_the_modes(tmp_path):
    """PyYAML reads a bare `off` as false: a config file (or `--set prefix_sharing=off`) that writes it means the mode."""
    import yaml

    for word, mode in (("off", "off"), ("on", "on"), ("auto", "auto")):
        raw = yaml.safe_load(f"model: m\ncocktail: {{ingredients: [fpb]}}\nprefix_sharing: {word}\n")
        assert parse_train_config(raw, source="run.yaml").prefix_sharing == mode
    with pytest.raises(Exception, match="prefix_sharing"):
        parse_train_config({"model": "m", "cocktail": {"ingredients": ["fpb"]}, "prefix_sharing": "sometimes"}, source="run.yaml")


def test_a_sliding_window_too_short_for_max_length_is_refused_before_data_and_weights_are_read(tiny_model_dir, tmp_path):
    """The window is in config.json: the refusal needs neither the data (the folder given does
    not exist) nor the weights (the model folder holds none)."""
    import shutil

    from fincocktail.errors import ConfigError

    model_dir = tmp_path / "windowed"
    model_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")):
            shutil.copy(f, model_dir / f.name)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "sliding_window": 32}))
    raw = {"model": str(model_dir), "cocktail": {"ingredients": ["fa"]}, "data_dir": str(tmp_path / "no-data"), "max_length": 64,
           "prefix_sharing": "auto"}
    with pytest.raises(ConfigError, match="sliding window of 32 tokens; set max_length: 32 or prefix_sharing: off"):
        train(parse_train_config(raw, source="run.yaml"), tmp_path / "run", resolver=resolver, progress=False)
    assert not (tmp_path / "run" / "data_manifest.json").exists()
