"""An out-of-memory batch is split and retried, never a crash mid-sweep (models.forward.split_on_oom).

There is no GPU here, so the error is simulated: the scorer's forward raises
`torch.OutOfMemoryError` for batches above a size, as a GPU would. The split run must give
exactly what a plain run at the smaller batch size gives, and the same predictions as the
unsplit run at the larger one.
"""

from __future__ import annotations

import pytest
import torch

from eval_fakes import FakeSentiment, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.errors import ModelError
from fincocktail.models.choice import ChoiceItem, score_choices
from fincocktail.models.forward import OUT_OF_MEMORY, Scorer, split_on_oom
from fincocktail.evaluation.generate import generate_greedy
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    "Instruction: What is the sentiment?\nInput: Operating profit rose to EUR 13.1 mn\nAnswer:",
    "Input: short\nAnswer:",
    "The company said net sales decreased by 5 % to EUR 100 million. Answer:",
    "Question: what was the change in revenue?",
    "Input: shares fell sharply after the profit warning\nAnswer:",
    "Input: the board approved the dividend\nAnswer:",
    "Input: neutral news about a merger\nAnswer:",
]
CHOICES = [" positive", " negative", " Bullish Bearish", " neutral Goldman Sachs London"]


class OomScorer(Scorer):
    """A Scorer whose forward fails like a full GPU for batches of more than `limit` rows."""

    def __init__(self, model, limit: int):
        super().__init__(model)
        self.limit, self.failures, self.sizes = limit, 0, []

    def hidden(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False):
        if input_ids.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        self.sizes.append(int(input_ids.shape[0]))
        return super().hidden(input_ids, attention_mask, position_ids, cache=cache, use_cache=use_cache)


@pytest.fixture(scope="module")
def lively(lively_model_dir):
    return load_for_eval(str(lively_model_dir))


def _items(tok):
    return [ChoiceItem(tok(p)["input_ids"], [tok(c, add_special_tokens=False)["input_ids"] for c in CHOICES]) for p in PROMPTS]


def test_the_error_caught_is_torch_out_of_memory():
    assert torch.cuda.OutOfMemoryError in OUT_OF_MEMORY or torch.OutOfMemoryError in OUT_OF_MEMORY


def test_split_on_oom_halves_keeps_the_smaller_size_and_covers_every_index():
    calls: list[int] = []

    def run(idx):
        calls.append(len(idx))
        if len(idx) > 3:
            raise torch.OutOfMemoryError("simulated")
        return [i * 10 for i in idx]

    got = list(split_on_oom(list(range(10)), 8, run, "test"))
    assert calls == [8, 4, 2, 2, 2, 2, 2]  # 8 fails, 4 fails, then 2 for the rest of the call
    assert [i for idx, _ in got for i in idx] == list(range(10))
    assert all(out == [i * 10 for i in idx] for idx, out in got)


def test_one_example_that_does_not_fit_is_a_one_line_error():
    def run(idx):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(ModelError) as info:
        list(split_on_oom([0, 1, 2], 4, run, "choice scoring"))
    assert "does not fit in the GPU's memory" in str(info.value) and "\n" not in str(info.value)


def _argmax(scores):
    return max(range(len(scores)), key=lambda j: scores[j])


def test_choice_scoring_split_equals_a_plain_run_at_the_smaller_size(lively):
    """One-token choices: the forward sees one row per example, so it fails above 2 rows."""
    tok, model = lively.tokenizer, lively.model
    yes, no = tok(" yes", add_special_tokens=False)["input_ids"][:1], tok(" no", add_special_tokens=False)["input_ids"][:1]
    items = [ChoiceItem(tok(p)["input_ids"], [yes, no]) for p in PROMPTS]
    ticks: list[int] = []
    scorer = OomScorer(model, limit=2)
    split = score_choices(scorer, items, tok.pad_token_id, batch_size=8, on_batch=ticks.append)
    assert scorer.failures == 2 and scorer.sizes == [2, 2, 2, 1] and ticks == [2, 2, 2, 1]  # 8 and 4 ran out
    assert split == score_choices(Scorer(model), items, tok.pad_token_id, batch_size=2)  # identical, float for float
    plain8 = score_choices(Scorer(model), items, tok.pad_token_id, batch_size=8)
    for a, b in zip(split, plain8):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4) and _argmax(a.logprobs) == _argmax(b.logprobs)


def test_multi_token_choices_split_too(lively, monkeypatch):
    """Several-token choices run a second forward (one row per choice), so the simulated memory
    limit is put on the batch of examples instead: more than 3 at once runs out."""
    import fincocktail.models.choice as choice  # where score_choices looks _score_batch up

    tok, model = lively.tokenizer, lively.model
    items = _items(tok)
    real, failures = choice._score_batch, []

    def full_gpu(scorer, batch, *args):
        if len(batch) > 3:
            failures.append(len(batch))
            raise torch.OutOfMemoryError("simulated")
        return real(scorer, batch, *args)

    monkeypatch.setattr(choice, "_score_batch", full_gpu)
    split = score_choices(Scorer(model), items, tok.pad_token_id, batch_size=7)
    monkeypatch.setattr(choice, "_score_batch", real)
    assert failures == [7]  # then 3 for the rest
    assert split == score_choices(Scorer(model), items, tok.pad_token_id, batch_size=3)
    for a, b in zip(split, score_choices(Scorer(model), items, tok.pad_token_id, batch_size=7)):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4) and _argmax(a.logprobs) == _argmax(b.logprobs)


def test_generation_split_equals_the_unsplit_run(lively):
    tok, model = lively.tokenizer, lively.model
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    scorer = OomScorer(model, limit=3)
    split = generate_greedy(scorer, tok, ids, max_new_tokens=8, batch_size=7)
    assert scorer.failures == 1 and max(scorer.sizes) == 3
    assert split == generate_greedy(Scorer(model), tok, ids, max_new_tokens=8, batch_size=3)  # 7 ran out
    assert [g.text for g in split] == [g.text for g in generate_greedy(Scorer(model), tok, ids, max_new_tokens=8, batch_size=7)]


def test_a_streamed_generation_is_not_retried(lively):
    """Its tokens already went to the client: a retry would send them twice."""
    tok, model = lively.tokenizer, lively.model
    ids = [tok(p)["input_ids"] for p in PROMPTS[:3]]
    with pytest.raises(torch.OutOfMemoryError):
        generate_greedy(OomScorer(model, limit=1), tok, ids, max_new_tokens=4, batch_size=3, on_token=lambda i, t: None)


def test_an_evaluation_with_oom_batches_writes_the_unsplit_predictions(lively, lively_model_dir, tmp_path, monkeypatch):
    """Through run_eval (what a sweep calls): the run finishes, with the predictions of a run that never ran out."""
    import json

    import fincocktail.models.forward as forward

    tasks = resolver(FakeSentiment())

    def run(name):
        run_eval(EvalConfig(model=str(lively_model_dir), tasks=["fsent"], mode="choice", batch_size=8, out=tmp_path / name,
                            data_dir=tmp_path, device="cpu"), resolve_task=tasks, loaded=lively)
        return [json.loads(line) for line in (tmp_path / name / "fsent.predictions.jsonl").read_text().splitlines()]

    plain = run("plain")
    real_hidden = forward.Scorer.hidden

    def full_gpu(self, input_ids, *args, **kwargs):
        if input_ids.shape[0] > 3:
            raise torch.OutOfMemoryError("simulated")
        return real_hidden(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(forward.Scorer, "hidden", full_gpu)
    split = run("split")
    assert [r["extracted"] for r in split] == [r["extracted"] for r in plain]
    for a, b in zip(split, plain):
        assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-4)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_batched_prefill_gives_the_row_by_row_outputs(lively, share_prefix):
    """The GPU's prefill (one padded forward, then a preallocated cache) decodes what the CPU's
    row-by-row prefill decodes."""
    tok, model = lively.tokenizer, lively.model
    head = "Instruction: What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}.\nInput: "
    ids = [tok(head + p)["input_ids"] for p in PROMPTS]
    rows = generate_greedy(Scorer(model), tok, ids, max_new_tokens=10, batch_size=3, share_prefix=share_prefix, batched_prefill=False)
    batched = generate_greedy(Scorer(model), tok, ids, max_new_tokens=10, batch_size=3, share_prefix=share_prefix, batched_prefill=True)
    assert [g.text for g in batched] == [g.text for g in rows]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in rows]


def test_with_room_preallocates_the_batch_cache(lively):
    from fincocktail.models.forward import left_pad, run_prompts, with_room

    tok, model = lively.tokenizer, lively.model
    scorer = Scorer(model)
    padded = left_pad([tok(p)["input_ids"] for p in PROMPTS[:3]], tok.pad_token_id)
    _, cache, _ = run_prompts(scorer, padded, None, 0, use_cache=True)
    width = cache.layers[0].keys.shape[2]
    roomy = with_room(cache, 5)
    assert type(roomy.layers[0]).__name__ == "PreallocatedLayer"
    assert roomy.layers[0]._k.shape[2] == width + 5 and torch.equal(roomy.layers[0].keys, cache.layers[0].keys)


# -- batches sized by tokens to the GPU's memory ---------------------------------------------------


def test_tokens_that_fit_counts_the_cache_and_one_layers_activations():
    from types import SimpleNamespace

    from fincocktail.models.forward import tokens_that_fit

    smollm2 = SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=30, intermediate_size=1536)
    per_token = (2 * 30 * 3 * 64 + 4 * 576 + 2 * 1536) * 4  # fp32: keys and values of 30 layers, one layer's activations
    assert tokens_that_fit(smollm2, 4, 10 * 2**30, share=1.0) == int(10 * 2**30 / per_token)
    assert tokens_that_fit(smollm2, 2, 10 * 2**30, share=1.0) == int(10 * 2**30 / (per_token / 2))  # bf16: twice the tokens
    assert tokens_that_fit(smollm2, 4, 0) == 1


def test_memory_batch_tokens_is_none_on_the_cpu_and_reads_free_gpu_memory(lively, monkeypatch):
    from types import SimpleNamespace

    from fincocktail.models.forward import MEMORY_SHARE, memory_batch_tokens, tokens_that_fit

    assert memory_batch_tokens(lively.model) is None  # CPU batches: the batch size alone, as before

    class OnGpu:
        device = torch.device("cuda:0")

        def element_size(self):
            return 2

    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128)
    fake = SimpleNamespace(parameters=lambda: iter([OnGpu()]), config=config)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**31))
    assert memory_batch_tokens(fake) == tokens_that_fit(config, 2, 2**30, MEMORY_SHARE)


def test_a_token_budget_bounds_each_batch_and_keeps_the_predictions(lively):
    """One-token choices, so each forward's rows are the batch's examples: the longest prompts go
    two at a time, shorter ones more, and every batch stays within the budget."""
    tok, model = lively.tokenizer, lively.model
    yes, no = tok(" yes", add_special_tokens=False)["input_ids"][:1], tok(" no", add_special_tokens=False)["input_ids"][:1]
    items = [ChoiceItem(tok(p)["input_ids"], [yes, no]) for p in PROMPTS]
    order = sorted(range(len(items)), key=lambda i: -len(items[i].prompt_ids))
    budget = 2 * (len(items[order[0]].prompt_ids) + 1)
    scorer = OomScorer(model, limit=100)
    capped = score_choices(scorer, items, tok.pad_token_id, batch_size=8, max_batch_tokens=budget, share_prefix=False)
    assert scorer.sizes[0] == 2 and max(scorer.sizes) > 2 and sum(scorer.sizes) == len(items)
    start = 0
    for rows in scorer.sizes:  # each batch's widest row times its rows fits the budget
        assert rows * (len(items[order[start]].prompt_ids) + 1) <= budget
        start += rows
    plain = score_choices(Scorer(model), items, tok.pad_token_id, batch_size=8, share_prefix=False)
    for a, b in zip(capped, plain):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4) and _argmax(a.logprobs) == _argmax(b.logprobs)
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    gens = generate_greedy(Scorer(model), tok, ids, max_new_tokens=6, batch_size=7, max_batch_tokens=2 * (max(map(len, ids)) + 6))
    assert [g.text for g in gens] == [g.text for g in generate_greedy(Scorer(model), tok, ids, max_new_tokens=6, batch_size=7)]


def test_a_token_capped_batch_that_runs_out_is_halved_too():
    calls: list[int] = []

    def run(idx):
        calls.append(len(idx))
        if len(idx) > 2:
            raise torch.OutOfMemoryError("simulated")
        return idx

    got = list(split_on_oom(list(range(8)), 16, run, "test", widths=[10] * 8, max_tokens=40))
    assert calls == [4, 2, 2, 2, 2] and [i for idx, _ in got for i in idx] == list(range(8))
