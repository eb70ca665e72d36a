"""An LLM judge for open-answer tasks (FinanceBench), as the study scored them.

Token-overlap F1 punishes a right answer worded differently ("$1.2 billion" against "1,200
million") and rewards a wrong one that copies the question's words; the study graded
FinanceBench with an LLM judge instead. `--judge openai:MODEL` sends every (question, reference,
answer) triple to any OpenAI-compatible endpoint (`--judge-base-url`, e.g. a `fincocktail
serve` of a local model) with a versioned prompt, and records per example the verdict, the
judge and the prompt version. Responses go through `ChatClient`, so they are cached on disk
(keyed by endpoint, model and the full prompt) and a rerun sends no request; the key comes from
OPENAI_API_KEY only, and never reaches a file.

The judge's score sits beside token F1 in metrics.json (`judge_accuracy` with its interval),
with their agreement: the share of examples where the verdict equals the F1 pass mark
(F1 >= 0.5), and Cohen's kappa, which discounts the agreement expected by chance.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from fincocktail.errors import ConfigError
from fincocktail.evaluation.bootstrap import mean_interval
from fincocktail.tasks.base import Example, Task

JUDGE_PROMPT_VERSION = "fincocktail-judge-v1"
JUDGED_KINDS = ("open_qa",)
SYSTEM = (
    "You grade answers to questions about companies' financial filings. You compare a candidate "
    "answer with the reference answer and decide whether the candidate is correct."
)
USER = """Question: {question}

Reference answer: {reference}

Candidate answer: {candidate}

The candidate is CORRECT if it gives the same facts and figures as the reference (numbers may be rounded or written differently, and extra explanation is fine). It is INCORRECT if it contradicts the reference, misses its key figure or fact, or does not answer.
Reply with one word: CORRECT or INCORRECT."""
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """CORRECT or INCORRECT, when the reply says exactly one of them; None for neither or both.

    A small judge often echoes the instruction ("CORRECT or INCORRECT."): that is no verdict.
    """
    found = {m.group(1).upper() for m in _VERDICT.finditer(text or "")}
    return (found == {"CORRECT"}) if len(found) == 1 else None


def judge_messages(question: str, reference: str, candidate: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER.format(question=question.strip(), reference=reference.strip(), candidate=(candidate or "").strip() or "(no answer)")},
    ]


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Agreement of two binary raters beyond chance: (p_o - p_e) / (1 - p_e); 1.0 when both are constant and equal."""
    n = len(a)
    if n == 0:
        return float("nan")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


class Judge:
    """`openai:MODEL` behind an OpenAI-compatible endpoint, with the versioned prompt."""

    def __init__(self, spec: str, base_url: str | None = None, concurrency: int = 4, cache_path: Path | None = None):
        from fincocktail.evaluation.api import ChatClient, api_model_name, is_api_model

        if not is_api_model(spec):
            raise ConfigError(f"--judge {spec!r}: expected openai:MODEL (any OpenAI-compatible endpoint, see --judge-base-url)")
        kwargs: dict[str, Any] = {"model": api_model_name(spec), "cache_path": cache_path}
        if base_url:
            kwargs["base_url"] = base_url
        self.client = ChatClient(**kwargs)
        self.spec = spec
        self.concurrency = concurrency
        self.id = f"{spec}@{JUDGE_PROMPT_VERSION}"

    def describe(self) -> dict[str, Any]:
        return {"judge": self.spec, "prompt_version": JUDGE_PROMPT_VERSION, "base_url": self.client.base_url,
                "api_requests_sent": self.client.requests_sent}

    def verdicts(self, triples: Sequence[tuple[str, str, str]]) -> list[tuple[bool | None, str, bool]]:
        """(verdict, reply, cached) per (question, reference, candidate)."""

        def one(t: tuple[str, str, str]) -> tuple[bool | None, str, bool]:
            res = self.client.chat(judge_messages(*t), max_tokens=8)
            return parse_verdict(res.text), res.text, res.cached

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, triples))

    def close(self) -> None:
        self.client.close()


def apply_judge(judge: Judge, task: Task, examples: Sequence[Example], out_dir: Path, result: Any, seed: int = 0, n_resamples: int = 1000) -> None:
    """Judge a finished task's predictions: a `judge` entry per prediction line, judge metrics in the results."""
    from fincocktail.evaluation.results import result_json
    from fincocktail.plumbing.fileio import safe_name, write_json_atomic, write_text_atomic

    path = out_dir / f"{safe_name(task.id)}.predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_id = {e.id: e for e in examples}
    triples = []
    for row in rows:
        ex = by_id[row["id"]]
        question = str(ex.meta.get("question") or ex.input)
        answer = row.get("extracted") if row.get("extracted") is not None else row.get("raw_output")
        triples.append((question, ex.target, answer or ""))
    verdicts = judge.verdicts(triples)
    for row, (verdict, reply, cached) in zip(rows, verdicts):
        row["judge"] = {"verdict": verdict, "judge": judge.id, "reply": reply[:200], "cached": cached}
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    passed = [v is True for v, _, _ in verdicts]  # an unreadable verdict counts as not correct
    f1_pass = [bool(r.get("correct")) for r in rows]
    interval = mean_interval([float(p) for p in passed], n_resamples, seed)
    result.metrics.update({
        "judge_accuracy": sum(passed) / len(passed) if passed else 0.0,
        "judge_ci_low": interval.low if interval else float("nan"),
        "judge_ci_high": interval.high if interval else float("nan"),
        "judge_agreement": sum(a == b for a, b in zip(passed, f1_pass)) / len(passed) if passed else float("nan"),
        "judge_kappa": cohen_kappa(passed, f1_pass),
        "judge_unparsed_rate": sum(v is None for v, _, _ in verdicts) / len(verdicts) if verdicts else 0.0,
    })
    write_json_atomic(out_dir / f"{safe_name(task.id)}.metrics.json", result_json(result), default=str, ensure_ascii=False)


def judge_table(results: Sequence[Any]):
    """Judge scores beside the headline metric, for the eval command's output; None without a judge."""
    from rich.table import Table

    judged = [r for r in results if "judge_accuracy" in r.metrics]
    if not judged:
        return None
    table = Table(title=f"LLM judge ({JUDGE_PROMPT_VERSION})")
    for col in ("task", "n", "metric", "value", "judge accuracy", "95% CI", "agreement", "kappa", "unparsed"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for r in judged:
        m = r.metrics
        table.add_row(r.task, str(r.n), r.metric, f"{m[r.metric]:.3f}", f"{m['judge_accuracy']:.3f}",
                      f"[{m['judge_ci_low']:.3f}, {m['judge_ci_high']:.3f}]", f"{m['judge_agreement']:.1%}",
                      f"{round(m['judge_kappa'], 2) + 0.0:.2f}", f"{m['judge_unparsed_rate']:.1%}")
    return table
