"""Choice scoring, greedy generation and the evaluation loop on the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from eval_fakes import FakeNumeric, FakeSentiment, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.errors import ConfigError
from fincocktail.models.choice import ChoiceItem, pick, score_choices
from fincocktail.evaluation.fewshot import build_pair, select_demos
from fincocktail.models.forward import Scorer
from fincocktail.evaluation.generate import cut_at_stop, generate_greedy
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval
from fincocktail.tasks.prompts import encode_pair, render

PROMPTS = [
    "Instruction: What is the sentiment?\nInput: Operating profit rose to EUR 13.1 mn\nAnswer:",
    "Input: short\nAnswer:",
    "The company said net sales decreased by 5 % to EUR 100 million. Revenue 1,234.5 (12.3) percent. Answer:",
    "Question: what was the change in revenue?",
]
CHOICES = [" positive", " negative", " Bullish Bearish", " neutral Goldman Sachs London"]


@pytest.fixture(scope="module")
def lively(lively_model_dir):
    return load_for_eval(str(lively_model_dir))


def _reference_logprob(model, prompt_ids, choice_ids) -> float:
    """Plain full-sequence forward, log-softmax over every position: the slow, obvious way."""
    with torch.no_grad():
        logp = model(torch.tensor([prompt_ids + choice_ids])).logits[0].float().log_softmax(-1)
    p = len(prompt_ids)
    return sum(logp[p - 1 + t, tok].item() for t, tok in enumerate(choice_ids))


def test_choice_scores_match_a_full_forward_for_single_and_multi_token_choices(lively):
    tok, model = lively.tokenizer, lively.model
    items = [
        ChoiceItem(tok(p)["input_ids"], [tok(c, add_special_tokens=False)["input_ids"] for c in CHOICES]) for p in PROMPTS
    ]
    assert {len(c) for c in items[0].choice_ids} >= {1, 2} or max(len(c) for c in items[0].choice_ids) > 1
    for bs in (1, 3):
        scores = score_choices(Scorer(model), items, tok.pad_token_id, batch_size=bs)
        for item, sc in zip(items, scores):
            ref = [_reference_logprob(model, item.prompt_ids, c) for c in item.choice_ids]
            assert sc.logprobs == pytest.approx(ref, abs=1e-4)
            assert sc.n_tokens == [len(c) for c in item.choice_ids]
            assert sc.logprobs_norm == pytest.approx([r / len(c) for r, c in zip(ref, item.choice_ids)], abs=1e-4)


def test_shared_prompt_prefix_runs_once_and_gives_the_same_scores(lively):
    tok, model = lively.tokenizer, lively.model
    head = "Instruction: What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}.\nInput: "
    texts = [head + t + "\nAnswer:" for t in ("Operating profit rose", "short", "Net sales decreased by 5 % to EUR 100 million.")]
    items = [ChoiceItem(tok(p)["input_ids"], [tok(c, add_special_tokens=False)["input_ids"] for c in CHOICES]) for p in texts]
    from fincocktail.models.forward import MIN_SHARED_PREFIX, common_prefix_length

    assert common_prefix_length([it.prompt_ids for it in items]) >= MIN_SHARED_PREFIX
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # at least one token of each row left to run
    calls = []
    scorer = Scorer(model)
    original = scorer.hidden
    scorer.hidden = lambda ids, *a, **k: calls.append(tuple(ids.shape)) or original(ids, *a, **k)
    scores = score_choices(scorer, items, tok.pad_token_id, batch_size=2)
    assert calls[0][0] == 1  # the prefix, once
    assert all(shape[1] < len(items[0].prompt_ids) for shape in calls[1:])  # batches run only the suffixes
    for item, sc in zip(items, scores):
        ref = [_reference_logprob(model, item.prompt_ids, c) for c in item.choice_ids]
        assert sc.logprobs == pytest.approx(ref, abs=1e-4)


def test_pick_breaks_ties_towards_the_first_choice_and_reports_them():
    assert pick([-1.0, -0.5, -0.5]) == (1, True)
    assert pick([-3.0, -0.5, -2.0]) == (1, False)


def test_greedy_generation_matches_transformers_generate(lively):
    tok, model = lively.tokenizer, lively.model
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    gens = generate_greedy(Scorer(model), tok, ids, max_new_tokens=10, stop=(), batch_size=3)
    for p, g in zip(ids, gens):
        out = model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, len(p) :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        assert g.text == tok.decode(new, skip_special_tokens=True)
    assert len({g.text for g in gens}) > 1, "the lively model should not produce one constant output"


def test_generation_with_a_shared_prefix_matches_plain_generation(lively, monkeypatch):
    tok, model = lively.tokenizer, lively.model
    head = "Instruction: What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}.\nInput: "
    ids = [tok(head + t + "\nAnswer:")["input_ids"] for t in ("Operating profit rose", "short", "Net sales decreased by 5 %.")]
    scorer = Scorer(model)
    shared = generate_greedy(scorer, tok, ids, max_new_tokens=8, batch_size=2)
    plain = generate_greedy(scorer, tok, ids, max_new_tokens=8, batch_size=2, share_prefix=False)
    assert [g.text for g in shared] == [g.text for g in plain]
    assert [g.n_tokens for g in shared] == [g.n_tokens for g in plain]
    # the padded-batch prefill (used for cache layouts that cannot be stacked) agrees too
    import fincocktail.evaluation.generate as generate_module

    monkeypatch.setattr(generate_module, "prefill_rows", lambda *a, **k: None)
    padded = generate_greedy(scorer, tok, ids, max_new_tokens=8, batch_size=2)
    assert [g.text for g in padded] == [g.text for g in plain]


@pytest.mark.parametrize("room", [8, 2])  # room for every step; too little (the cache grows)
def test_the_decoding_cache_is_written_in_place_and_gives_a_full_forwards_states(lively, room):
    from fincocktail.models.forward import prefill_rows

    tok, model = lively.tokenizer, lively.model
    rows = [tok(p)["input_ids"] for p in PROMPTS[:3]]
    feed = [[11, 12, 13, 14, 15], [21, 22, 23, 24, 25], [31, 32, 33, 34, 35]]  # fixed tokens, not the model's
    scorer = Scorer(model)
    with torch.inference_mode():
        last, cache, mask = prefill_rows(scorer, rows, None, 0, room=room)
        width = mask.shape[1]
        buffers = [layer._k.data_ptr() for layer in cache.layers]
        pos = torch.tensor([len(r) for r in rows])
        for step in range(5):
            if step == 1:  # drop the middle row, as decoding drops finished ones
                keep = torch.tensor([0, 2])
                cache.reorder_cache(keep)
                mask, pos, last = mask[keep], pos[keep], last[keep]
                buffers = [layer._k.data_ptr() for layer in cache.layers]
            live = [0, 2] if step >= 1 else [0, 1, 2]
            ids = torch.tensor([[feed[r][step]] for r in live])
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=torch.long)], dim=1)
            hidden, cache = scorer.hidden(ids, mask, pos.unsqueeze(1), cache=cache, use_cache=True)
            pos = pos + 1
            last = hidden[:, -1, :]
            now = [layer._k.data_ptr() for layer in cache.layers]
            assert (now != buffers) == (step == room), f"step {step}: the buffer moves only when it runs out of room"
            buffers = now
        for b, r in enumerate([0, 2]):
            full = torch.tensor([rows[r] + feed[r][:5]])
            want = model.get_decoder()(input_ids=full).last_hidden_state[0, -1]
            torch.testing.assert_close(last[b], want, atol=1e-5, rtol=1e-5)
        assert all(layer.keys.shape[2] == width + 5 for layer in cache.layers)


def test_bf16_generation_with_an_fp32_recheck_gives_fp32_greedy_outputs(lively):
    import copy

    from fincocktail.models.precision import cast_weights

    tok, fp32 = lively.tokenizer, lively.model
    bf16 = cast_weights(copy.deepcopy(fp32), torch.bfloat16).eval()
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    want = generate_greedy(Scorer(fp32), tok, ids, max_new_tokens=12, batch_size=3)
    checked = generate_greedy(Scorer(bf16), tok, ids, max_new_tokens=12, batch_size=3, reference=Scorer(fp32))
    assert [g.text for g in checked] == [g.text for g in want]
    assert [g.n_tokens for g in checked] == [g.n_tokens for g in want]
    # every row re-checked: the reference's outputs, flagged; none re-checked: plain bf16, unflagged
    every = generate_greedy(Scorer(bf16), tok, ids, max_new_tokens=12, batch_size=3, reference=Scorer(fp32), check_margin=float("inf"))
    assert [g.text for g in every] == [g.text for g in want] and all(g.rechecked for g in every)
    plain = generate_greedy(Scorer(bf16), tok, ids, max_new_tokens=12, batch_size=3)
    never = generate_greedy(Scorer(bf16), tok, ids, max_new_tokens=12, batch_size=3, reference=Scorer(fp32), check_margin=0.0)
    assert [g.text for g in never] == [g.text for g in plain] and not any(g.rechecked for g in never)


def test_the_recheck_decodes_again_exactly_the_rows_with_a_close_token(lively):
    """A reference that is another model entirely shows which rows were decoded by it."""
    tok, model = lively.tokenizer, lively.model
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    scorer = Scorer(model)
    with torch.inference_mode():  # each row's smallest top-2 gap, by the obvious full-forward route
        gaps = []
        for p, g in zip(ids, generate_greedy(scorer, tok, ids, max_new_tokens=6, batch_size=2)):
            seq = p + tok(g.text, add_special_tokens=False)["input_ids"]
            lp = model(torch.tensor([seq])).logits[0, len(p) - 1 : len(p) - 1 + max(g.n_tokens, 1)].float().log_softmax(-1)
            top = lp.topk(2, dim=-1).values
            gaps.append(float((top[:, 0] - top[:, 1]).min()))
    cut = sorted(gaps)[len(gaps) // 2]  # about half the rows below it
    gens = generate_greedy(scorer, tok, ids, max_new_tokens=6, batch_size=2, reference=scorer, check_margin=cut)
    assert [g.rechecked for g in gens] == [gap < cut for gap in gaps]


def test_stop_strings_cut_the_output():
    assert cut_at_stop("positive\nnegative", ("\n",)) == ("positive", True)
    assert cut_at_stop("a. b; c", (";", ".")) == ("a", True)
    assert cut_at_stop("abc", ("\n",)) == ("abc", False)


def _predictions(out: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{task}.predictions.jsonl").read_text().splitlines()]


def test_results_do_not_depend_on_batch_size_in_either_mode(lively, tmp_path):
    tasks = resolver(FakeSentiment(), FakeSentiment("fmulti", labels=("Bullish", "Bearish", "neutral outlook")), FakeNumeric())
    runs = {}
    for bs in (1, 3, 8):
        config = EvalConfig(model=lively.path, tasks=["fsent", "fmulti", "fnum"], batch_size=bs, out=tmp_path / f"bs{bs}", data_dir=tmp_path)
        runs[bs] = run_eval(config, resolve_task=tasks, loaded=lively)
    for task in ("fsent", "fmulti"):
        for bs in (3, 8):
            a, b = _predictions(tmp_path / "bs1", task), _predictions(tmp_path / f"bs{bs}", task)
            assert [x["extracted"] for x in a] == [x["extracted"] for x in b]
            for x, y in zip(a, b):
                assert list(x["choice_logprobs"].values()) == pytest.approx(list(y["choice_logprobs"].values()), abs=1e-4)
    gen_task = FakeSentiment()
    for bs in (3, 8):
        a, b = _predictions(tmp_path / "bs1", "fnum"), _predictions(tmp_path / f"bs{bs}", "fnum")
        assert [x["raw_output"] for x in a] == [x["raw_output"] for x in b]
    # generate mode on the classification task too
    outs = []
    for bs in (1, 3, 8):
        config = EvalConfig(model=lively.path, tasks=["fsent"], mode="generate", batch_size=bs, out=tmp_path / f"g{bs}", data_dir=tmp_path)
        run_eval(config, resolve_task=resolver(gen_task), loaded=lively)
        outs.append([x["raw_output"] for x in _predictions(tmp_path / f"g{bs}", "fsent")])
    assert outs[0] == outs[1] == outs[2]
    assert len(set(outs[0])) > 1


def test_outputs_metrics_and_run_card(lively, tmp_path):
    task = FakeSentiment()
    out = tmp_path / "run"
    run = run_eval(EvalConfig(model=lively.path, tasks=["fsent", "fnum"], out=out, data_dir=tmp_path), resolve_task=resolver(task, FakeNumeric()), loaded=lively)
    rows = _predictions(out, "fsent")
    examples = task.load("test", tmp_path)
    assert [r["id"] for r in rows] == [e.id for e in examples]
    for r, e in zip(rows, examples):
        best = max(r["choice_logprobs"], key=r["choice_logprobs"].get)
        assert r["extracted"] == best and r["gold"] == e.target and r["correct"] == (best == e.target)
    metrics = json.loads((out / "fsent.metrics.json").read_text())
    assert metrics["metrics"]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert metrics["parse_failure_rate"] == 0.0 and metrics["mode"] == "choice"
    low, high = metrics["interval"]["low"], metrics["interval"]["high"]
    assert 0 <= low <= metrics["metrics"]["accuracy"] <= high <= 1
    num = json.loads((out / "fnum.metrics.json").read_text())
    num_rows = _predictions(out, "fnum")
    assert num["mode"] == "generate" and num["metric"] == "exact_match"
    assert num["parse_failure_rate"] == pytest.approx(sum(r["extracted"] is None for r in num_rows) / len(num_rows))
    assert "strict_exact_match" in num["metrics"]
    card = json.loads((out / "run_card.json").read_text())
    assert card["tasks"]["fsent"]["version"] == "fsent@test"
    assert card["config"]["batch_size"] == 8 and card["config"]["mode"] == "auto"
    assert "torch" in card["library_versions"] and card["wall_seconds"] >= 0
    assert run.results[0].examples_per_s > 0
    with pytest.raises(ConfigError, match="already holds"):
        run_eval(EvalConfig(model=lively.path, tasks=["fsent"], out=out, data_dir=tmp_path), resolve_task=resolver(task), loaded=lively)


def test_k_shot_demonstrations_are_seeded_and_prepended(lively, tmp_path):
    task = FakeSentiment(sizes={"train": 30, "test": 5})
    a = select_demos(task, tmp_path, 3, seed=0)
    assert [d.id for d in a] == [d.id for d in select_demos(task, tmp_path, 3, seed=0)]
    assert [d.id for d in a] != [d.id for d in select_demos(task, tmp_path, 3, seed=1)]
    ex = task.load("test", tmp_path)[0]
    pair = build_pair(task, ex, "instruction", None, a)
    zero = render(task, ex)
    assert pair.prompt.endswith(zero.prompt) and pair.target == zero.target
    first = render(task, a[0])
    assert pair.prompt.startswith(first.prompt + first.target + "\n\n")
    chat = build_pair(task, ex, "chat", lively.tokenizer, a)
    assert chat.prompt.count("<|im_start|>assistant") == 4 and chat.prompt.endswith("<|im_start|>assistant\n")
    # two runs of the same k-shot evaluation give identical prompts and answers
    for name in ("k1", "k2"):
        run_eval(EvalConfig(model=lively.path, tasks=["fsent"], shots=3, out=tmp_path / name, data_dir=tmp_path), resolve_task=resolver(task), loaded=lively)
    assert _predictions(tmp_path / "k1", "fsent") == _predictions(tmp_path / "k2", "fsent")
    card = json.loads((tmp_path / "k1" / "run_card.json").read_text())
    assert card["tasks"]["fsent"]["demo_ids"] == [d.id for d in a]
    p_ids, _ = encode_pair(lively.tokenizer, pair, add_eos=False)
    assert _predictions(tmp_path / "k1", "fsent")[0]["prompt_tokens"] == len(p_ids)


def test_adapter_is_applied(lively_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(lively_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    run_dir = tmp_path / "run"
    peft_model.save_pretrained(run_dir / "adapter")
    plain = load_for_eval(str(lively_model_dir))
    tuned = load_for_eval(str(lively_model_dir), adapter=run_dir)
    assert tuned.adapter == str(run_dir / "adapter")
    ids = torch.tensor([plain.tokenizer(PROMPTS[0])["input_ids"]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        assert not torch.allclose(plain.model(ids).logits, expected, atol=1e-4)
        assert torch.allclose(tuned.model(ids).logits, expected, atol=1e-4)
    with pytest.raises(Exception, match="no such folder"):  # a typo'd adapter path is a usage error, named
        load_for_eval(str(lively_model_dir), adapter=tmp_path / "nothing")


def test_bf16_eval_merges_the_adapter_in_fp32_then_casts(lively_model_dir, tmp_path):
    """Merging into bf16 weights would round W + BA as a whole; the fp32 merge keeps the update."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(lively_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = {k: v.to(torch.bfloat16) for k, v in peft_model.merge_and_unload().state_dict().items()}
    tuned = load_for_eval(str(lively_model_dir), adapter=tmp_path / "adapter", dtype="bfloat16")
    got = tuned.model.state_dict()
    assert tuned.model.dtype == torch.bfloat16
    assert tuned.model.model.rotary_emb.inv_freq.dtype == torch.float32  # as a direct bf16 load keeps it
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_follows_the_cpu(lively_model_dir, monkeypatch, native):
    monkeypatch.setattr("fincocktail.evaluation.loading.native_bf16", lambda device="cpu": native)
    loaded = load_for_eval(str(lively_model_dir), dtype="auto")
    if native:  # bf16 body plus the fp32 model that re-checks close calls
        assert loaded.model.dtype == torch.bfloat16 and loaded.reference.dtype == torch.float32
    else:
        assert loaded.model.dtype == torch.float32 and loaded.reference is None


def test_auto_dtype_rechecks_close_calls_in_fp32(lively_model_dir, monkeypatch, tmp_path):
    """Margin infinity: every example is re-scored, so predictions and log-probs equal the fp32
    run's; margin 0: none is, so they equal the plain bf16 run's. Generation runs in fp32."""
    import fincocktail.evaluation.runner as runner_mod

    monkeypatch.setattr("fincocktail.evaluation.loading.native_bf16", lambda device="cpu": True)
    tasks = resolver(FakeSentiment(), FakeNumeric())
    auto = load_for_eval(str(lively_model_dir), dtype="auto")

    def run(name, loaded, mode="choice", task="fsent"):
        run_eval(EvalConfig(model=str(lively_model_dir), tasks=[task], mode=mode, batch_size=4, out=tmp_path / name, data_dir=tmp_path), resolve_task=tasks, loaded=loaded)
        return _predictions(tmp_path / name, task)

    fp32 = run("fp32", load_for_eval(str(lively_model_dir)))
    bf16 = run("bf16", load_for_eval(str(lively_model_dir), dtype="bfloat16"))
    monkeypatch.setattr(runner_mod, "CHECK_MARGIN", float("inf"))
    all_checked = run("all", auto)
    assert [r["choice_logprobs"] for r in all_checked] == [r["choice_logprobs"] for r in fp32]
    assert all(r.get("rescored_fp32") for r in all_checked)
    monkeypatch.setattr(runner_mod, "CHECK_MARGIN", 0.0)
    none_checked = run("none", auto)
    assert [r["choice_logprobs"] for r in none_checked] == [r["choice_logprobs"] for r in bf16]
    assert not any(r.get("rescored_fp32") for r in none_checked)
    assert [r["choice_logprobs"] for r in bf16] != [r["choice_logprobs"] for r in fp32]  # the check can matter
    gen_fp32 = run("gen32", load_for_eval(str(lively_model_dir)), "generate", "fnum")
    gen_auto = run("genauto", auto, "generate", "fnum")
    assert [r["raw_output"] for r in gen_auto] == [r["raw_output"] for r in gen_fp32]


def test_bf16_scorer_keeps_the_head_and_log_softmax_in_fp32(lively_model_dir):
    model = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.bfloat16).eval()
    scorer = Scorer(model)
    ids = torch.tensor([[5, 9, 14, 3]])
    with torch.no_grad():
        hidden, _ = scorer.hidden(ids, torch.ones_like(ids), torch.arange(4).unsqueeze(0))
        logp = scorer.log_probs(hidden[0])
        independent = (hidden[0].float() @ model.get_output_embeddings().weight.float().T).log_softmax(-1)
    assert hidden.dtype == torch.bfloat16 and logp.dtype == torch.float32
    assert torch.allclose(logp, independent, atol=1e-5)


def test_user_errors_are_one_line(lively, tmp_path):
    with pytest.raises(ConfigError, match="chat APIs"):
        run_eval(EvalConfig(model="openai:gpt-4o", tasks=["fsent"], mode="choice", out=tmp_path / "x"), resolve_task=resolver(FakeSentiment()))
    with pytest.raises(ConfigError, match="no split"):
        run_eval(EvalConfig(model=lively.path, tasks=["fsent"], split="dev", out=tmp_path / "y", data_dir=tmp_path), resolve_task=resolver(FakeSentiment()), loaded=lively)


def test_max_prompt_tokens_keeps_the_end_of_long_prompts(lively, tmp_path):
    """Prompts over the limit lose tokens from the left (as training's max_length does); the
    outputs are those of greedy decoding on the kept ids, and the cut is counted."""
    task = FakeNumeric()
    tok = lively.tokenizer
    examples = task.load("test", tmp_path)
    ids = [encode_pair(tok, build_pair(task, e, "instruction", tok, []), add_eos=False)[0] for e in examples]
    lengths = sorted({len(i) for i in ids})
    assert len(lengths) > 1, "the fake task's prompts should differ in length"
    limit = lengths[-1] - 1  # the longest prompts are cut, the others kept whole
    out = tmp_path / "cut"
    run = run_eval(EvalConfig(model=lively.path, tasks=["fnum"], out=out, data_dir=tmp_path, max_prompt_tokens=limit),
                   resolve_task=resolver(task), loaded=lively)
    rows = _predictions(out, "fnum")
    longer = [len(i) > limit for i in ids]
    assert 0 < sum(longer) < len(ids)
    assert [r["prompt_tokens"] for r in rows] == [min(len(i), limit) for i in ids]
    assert [r.get("prompt_truncated", False) for r in rows] == longer
    assert run.results[0].truncated_prompts == sum(longer)
    expected = generate_greedy(Scorer(lively.model), tok, [i[-limit:] for i in ids], task.generation.max_new_tokens,
                               tuple(task.generation.stop), batch_size=1, share_prefix=False)
    assert [r["raw_output"] for r in rows] == [g.text for g in expected]
    card = json.loads((out / "run_card.json").read_text())
    assert card["config"]["max_prompt_tokens"] == limit


def test_the_eval_dtype_has_one_default_everywhere():
    """`fincocktail eval`, `serve`, EvalConfig, a sweep file and a sweep's resolved settings agree."""
    import typer

    from fincocktail.cli import app
    from fincocktail.sweep.spec import EvalSettings, EvalSpec

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    cli = {name: next(p.default for p in commands[name].params if p.name == "dtype") for name in ("eval", "serve")}
    defaults = {
        **cli,
        "EvalConfig": EvalConfig(model="m", tasks=["fpb"]).dtype,
        "sweep eval": EvalSpec().dtype,
        "EvalSettings": EvalSettings.model_fields["dtype"].default,
    }
    assert set(defaults.values()) == {"float32"}, defaults


def test_the_close_call_margin_is_the_smaller_top_two_gap_of_either_ranking():
    from fincocktail.models.choice import close_margin

    # raw: best -1.0, runner-up -1.2 -> 0.2; normalised: -0.5 vs -0.6 -> 0.1 (the order differs from raw's)
    assert close_margin([-1.0, -3.0, -1.2], [-0.5, -0.6, -2.0]) == pytest.approx(0.1)
    assert close_margin([-4.0, -1.0], [-2.0, -1.0]) == pytest.approx(1.0)
    assert close_margin([-1.0], [-1.0]) == float("inf")  # one choice: never a close call
