"""Small tasks and a 'lively' tiny model for the evaluation tests.

The tasks generate their examples from a seed (no data files). The tiny model of conftest has
near-uniform random weights and greedy decoding repeats one token forever, which would make
batch-invariance and round-trip tests pass trivially; the lively copy has larger random
weights, so its outputs vary from prompt to prompt and across steps.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from fincocktail.tasks.base import Example, GenerationSpec, Task

WORDS = "profit revenue sales rose fell company quarter net operating EUR million percent year market price".split()


class FakeSentiment(Task):
    """3-label classification; the labels tokenize to one token or several depending on `labels`."""

    kind = "classification"
    metric = "accuracy"
    instruction = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
    generation = GenerationSpec(max_new_tokens=6, stop=("\n",))

    def __init__(self, task_id: str = "fsent", sizes: dict[str, int] | None = None, labels: Sequence[str] = ("negative", "neutral", "positive")):
        self.id = task_id
        self.version = f"{task_id}@test"
        self.sizes = sizes or {"train": 12, "test": 14}
        self.labels = tuple(labels)

    def load(self, split: str, data_dir: Path) -> list[Example]:
        rng = random.Random(f"{self.id}:{split}")
        return [
            Example(
                id=f"{self.id}/{split}/{i}",
                input=" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))),
                target=rng.choice(self.labels),
                choices=self.labels,
            )
            for i in range(self.sizes.get(split, 0))
        ]

    def extract(self, text, mode="flexible"):
        cleaned = text.strip().lower()
        if mode == "strict":
            return next((lab for lab in self.labels if cleaned == lab.lower()), None)
        return next((lab for lab in self.labels if lab.lower() in cleaned), None)

    def is_correct(self, prediction, example):
        return prediction == example.target

    def score(self, predictions, examples):
        n = max(len(examples), 1)
        return {
            "accuracy": sum(self.is_correct(p, e) for p, e in zip(predictions, examples)) / n,
            "parse_failure_rate": sum(p is None for p in predictions) / n,
        }


class FakeNumeric(Task):
    """Generate-only numeric answers; the headline metric is not accuracy, to exercise the generic bootstrap."""

    kind = "numeric"
    metric = "exact_match"
    instruction = "Compute the answer."
    generation = GenerationSpec(max_new_tokens=10, stop=("\n",))

    def __init__(self, task_id: str = "fnum", n: int = 10):
        self.id = task_id
        self.version = f"{task_id}@test"
        self.n = n

    def load(self, split: str, data_dir: Path) -> list[Example]:
        rng = random.Random(f"{self.id}:{split}")
        out = []
        for i in range(self.n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            out.append(Example(id=f"{self.id}/{split}/{i}", input=f"Revenue {a} million, cost {b} million. Profit?", target=str(a - b)))
        return out

    def extract(self, text, mode="flexible"):
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*", text) if mode == "strict" else re.search(r"-?\d+(?:\.\d+)?", text)
        return m.group(1 if mode == "strict" else 0) if m else None

    def is_correct(self, prediction, example):
        return prediction is not None and float(prediction) == float(example.target)

    def score(self, predictions, examples):
        n = max(len(examples), 1)
        return {
            "exact_match": sum(self.is_correct(p, e) for p, e in zip(predictions, examples)) / n,
            "parse_failure_rate": sum(p is None for p in predictions) / n,
        }


def resolver(*tasks: Task):
    table = {t.id: t for t in tasks}
    return lambda task_id: table[task_id]


def make_lively(src: Path, dst: Path, std: float = 0.3, seed: int = 1) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    model.save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def lively_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_lively(tiny_model_dir, tmp_path_factory.mktemp("lively-model"))


class ScriptedServer:
    """A local JSON endpoint: every POST is answered by `respond(body, headers) -> (status, payload)` and recorded."""

    def __init__(self, respond: Callable[[dict, Any], tuple[int, dict[str, Any]]]):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                status, payload = respond(body, self.headers)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def chat_body(text: str) -> dict[str, Any]:
    """A chat-completions response body carrying `text`."""
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
