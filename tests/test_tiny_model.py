from transformers import AutoModelForCausalLM, AutoTokenizer

from fincocktail.tasks.prompts import encode_pair, render_text


def test_tiny_model_loads_and_generates(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pair = render_text("What is the sentiment?", "Profit rose.", "positive")
    p, t = encode_pair(tok, pair)
    assert t[-1] == tok.eos_token_id
    assert tok.decode(t[:-1]) == " positive"
    out = model.generate(**tok(pair.prompt, return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == len(p) + 3 or out.shape[1] <= len(p) + 3
    chat = render_text("Q?", "x", "yes", style="chat", tokenizer=tok)
    assert chat.prompt.endswith("<|im_start|>assistant\n")
