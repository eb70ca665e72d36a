"""The model card of an exported model: what it was trained on, how it scored, under which licences.

A tuned model that leaves the tool as a bare adapter folder loses its provenance. The card puts it
back, in the Hugging Face format (README.md with a YAML metadata header), from the run's own
records only: the training run card (config, library versions, the cocktail manifest with the
sha256 of every source file), the evaluation run cards, and the data catalogue's licences.
Training data licences propagate to the model in practice, so any non-commercial source is
stated at the top of the card, not in a footnote.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from fincocktail.data.catalog import DATASETS, HUB_DATASETS, Dataset

LICENCE_FILE = "LICENSES.md"  # written beside the card; the card's `license_link` points at it
SPDX = {"apache-2.0": "apache-2.0", "mit": "mit", "cc by 4.0": "cc-by-4.0", "cc by 3.0": "cc-by-3.0"}


@dataclass(frozen=True)
class SourceLicence:
    """One training source (a cocktail ingredient) and the licences of the files it read."""

    task: str
    datasets: tuple[str, ...]
    licence: str
    commercial: bool | None  # None: no catalogue entry says

    @property
    def status(self) -> str:
        if self.commercial is None:
            return "unknown: check before any commercial use"
        return "allowed" if self.commercial else "NOT allowed (non-commercial or no licence stated)"


def source_licences(manifest: dict[str, Any], task_licence: dict[str, str] | None = None) -> list[SourceLicence]:
    """Per manifest source: the catalogue datasets behind its files (the first folder of each path)."""
    catalogue: dict[str, Dataset] = {d.name: d for d in DATASETS}
    out = []
    for task_id, entry in (manifest.get("sources") or {}).items():
        if not sum(entry.get("examples_per_epoch") or [0]):
            continue  # nothing of it was trained on (e.g. all dropped by decontamination)
        names = sorted({Path(f).parts[0] for f in (entry.get("files_sha256") or {})} & set(catalogue))
        if names:
            ds = [catalogue[n] for n in names]
            licence = "; ".join(f"{d.name}: {d.licence}" for d in ds)
            out.append(SourceLicence(task_id, tuple(names), licence, all(d.commercial_use for d in ds)))
        else:
            out.append(SourceLicence(task_id, (), (task_licence or {}).get(task_id) or "not recorded", None))
    return out


@dataclass(frozen=True)
class EvalScore:
    task: str
    split: str
    n: int
    limit: int | None
    shots: int
    mode: str
    metric: str
    value: float
    low: float | None
    high: float | None
    subject: str  # "this model" or "base model"
    extra: dict[str, float]  # e.g. the LLM judge's score
    sample: dict[str, Any] | None = None  # the run card's: method, seed, n, population, sha256


def _md(value: Any) -> str:
    """User text (names, licences, paths) as inert Markdown text on one line.

    Why: the card is rendered as HTML by the Hub and by Markdown viewers, so a `--name` or a
    task licence holding `<script>` or `<img onerror=...>` must show as text, never run; a `|`
    or a newline would break the tables it sits in.
    """
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def _code(value: Any) -> str:
    """User text inside a `code span` (HTML there is inert): a backtick would end the span, a `|` a table cell."""
    return " ".join(str(value).split()).replace("`", "'").replace("|", "\\|")


def _spdx(licence: str) -> str | None:
    return SPDX.get(licence.strip().lower())


def _card_metadata(name: str, base_hub_id: str | None, base_licence: str, method: str, merged: bool,
                   scores: Sequence[EvalScore], licences: Sequence[SourceLicence]) -> dict[str, Any]:
    """The Hub's YAML header: base model, library, licence (`other` when the data restricts it), scores."""
    restricted = [s for s in licences if s.commercial is not True]
    meta: dict[str, Any] = {}
    if base_hub_id:
        meta["base_model"] = base_hub_id
        meta["base_model_relation"] = "finetune" if merged or method == "full" else "adapter"
    meta["library_name"] = "transformers" if merged or method == "full" else "peft"
    base_spdx = _spdx(base_licence)
    if restricted or not base_spdx:
        meta["license"] = "other"
        meta["license_name"] = "non-commercial-training-data" if restricted else base_licence
    else:
        meta["license"] = base_spdx
    meta["license_link"] = LICENCE_FILE  # the base's and every training source's terms, in one file
    hub_datasets = sorted({HUB_DATASETS[d] for s in licences for d in s.datasets if d in HUB_DATASETS})
    if hub_datasets:
        meta["datasets"] = hub_datasets
    meta["pipeline_tag"] = "text-generation"
    meta["language"] = ["en"]
    meta["tags"] = ["fincocktail", "finance", "text-generation"] + (["lora"] if method == "lora" else [])
    if scores:
        meta["model-index"] = [{
            "name": name,
            "results": [
                {"task": {"type": "text-generation"}, "dataset": {"name": s.task, "type": s.task, "split": s.split},
                 "metrics": [{"type": s.metric, "value": round(s.value, 4), "name": f"{s.metric} ({s.n} examples)"}]}
                for s in scores if s.subject == "this model"
            ],
        }]
    return meta


def _licence_warning(licences: Sequence[SourceLicence], base_licence: str) -> list[str]:
    """The not-for-commercial-use banner when any training source restricts or omits its terms."""
    restricted = [s for s in licences if s.commercial is not True]
    non_commercial = [s for s in licences if s.commercial is False]
    if not (non_commercial or restricted):
        return []
    what = ", ".join(f"{_md(s.task)} ({_md(s.licence)})" for s in restricted)
    return [
        "> **Warning: not for commercial use.** This model was trained on data whose licence does not allow "
        f"commercial use or states none: {what}. The training data's terms apply to the model; the base "
        f"model's own licence ({_md(base_licence)}) does not lift them.",
        "",
    ]


def _data_section(manifest: dict[str, Any], licences: Sequence[SourceLicence]) -> list[str]:
    """The cocktail: one row per source (version, counts, file hashes, licence) and the epoch fingerprints."""
    lines = [
        "## Training data (the cocktail)",
        "",
        f"Cocktail `{_code(manifest.get('name', '?'))}`, seed {_md(manifest.get('seed', '?'))}, {_md(manifest.get('n_epochs', '?'))} epoch(s), "
        f"examples per epoch {_md(manifest.get('examples_per_epoch', '?'))}. Every source is the `train` split of a fincocktail task.",
        "",
        "| source | task version | examples per epoch | unique | dropped (contamination) | files (sha256) | licence | commercial use |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_task = {s.task: s for s in licences}
    for task_id, e in (manifest.get("sources") or {}).items():
        files = "<br>".join(f"`{_code(f)}` `{_code(h)}`" for f, h in (e.get("files_sha256") or {}).items()) or "-"
        lic = by_task.get(task_id)
        lic_text, lic_status = (lic.licence, lic.status) if lic else ("-", "not used (0 examples)")
        lines.append(
            f"| {_md(task_id)} | {_md(e.get('task_version'))} | {_md(e.get('examples_per_epoch'))} | {_md(e.get('unique_examples_per_epoch'))} | "
            f"{_md(e.get('dropped_contaminated', 0))} | {files} | {_md(lic_text)} | {_md(lic_status)} |"
        )
    return lines + ["", "Epoch fingerprints (sha256 of the drawn example ids): " + ", ".join(f"`{_code(h[:16])}`" for h in manifest.get("epoch_sha256", [])), ""]


def _training_section(train_card: dict[str, Any]) -> list[str]:
    """The training settings and outcome from the run card, and the library versions."""
    config = train_card.get("config") or {}
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    keys = ("method", "lora", "lr", "scheduler", "warmup_steps", "batch_size", "grad_accum", "epochs", "max_steps",
            "max_length", "prompt_style", "precision", "seed")
    for key in keys:
        if key in config:
            lines.append(f"| {key} | `{_code(_inline(config[key]))}` |")
    for key in ("steps", "tokens_seen", "final_loss", "train_time_s", "device", "started_at", "git_commit"):
        if train_card.get(key) is not None:
            lines.append(f"| {key} | `{_code(_inline(train_card[key]))}` |")
    versions = train_card.get("library_versions") or train_card.get("versions") or {}  # cards before library_versions
    if versions:
        lines.append("| libraries | " + ", ".join(f"{_md(k)} {_md(v)}" for k, v in versions.items()) + " |")
    return lines


def _evaluation_section(scores: Sequence[EvalScore]) -> list[str]:
    """The scores table (with intervals and any extra metrics), or how to add one."""
    lines = ["", "## Evaluation", ""]
    if not scores:
        return lines + ["Not evaluated: export with `--eval EVAL_RUN_DIR` to include scores."]
    extra_keys = sorted({k for s in scores for k in s.extra})
    head = ["model", "task", "split", "examples", "shots", "mode", "metric", "value", "95% CI"] + [_md(k) for k in extra_keys]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        sample = _sample_text(s)
        ci = f"[{s.low:.3f}, {s.high:.3f}]" if s.low is not None and s.high is not None else "-"
        row = [_md(s.subject), _md(s.task), _md(s.split), _md(sample), str(s.shots), _md(s.mode), _md(s.metric), f"{s.value:.3f}", ci]
        row += [f"{s.extra[k]:.3f}" if k in s.extra else "-" for k in extra_keys]
        lines.append("| " + " | ".join(row) + " |")
    return lines + ["", "Intervals: 95% bootstrap over the evaluated examples (`fincocktail eval`)."]


def render_card(
    *,
    name: str,
    base_model: str,
    base_hub_id: str | None,
    base_licence: str,
    base_note: str,
    base_weights: str,
    method: str,
    merged: bool,
    train_card: dict[str, Any],
    scores: Sequence[EvalScore],
    licences: Sequence[SourceLicence],
    prompt_example: str = "",
    local_weights: str = "",
) -> str:
    """README.md text: the YAML metadata header, then the card.

    `prompt_example` is one prompt exactly as the model saw them in training (a prompt in
    another format gets other answers); `local_weights` what the trained-on weights are
    relative to the hub id (e.g. dequantized from a GGUF).
    """
    meta = _card_metadata(name, base_hub_id, base_licence, method, merged, scores, licences)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {_md(name)}", ""]
    lines += _licence_warning(licences, base_licence)
    kind = {"lora": "a LoRA adapter", "full": "a fully fine-tuned model"}.get(method, method)
    form = "merged into the base weights (plain `transformers` loads it)" if merged else (
        "as a peft adapter (`peft` loads it on top of the base model)" if method == "lora" else "a full model (plain `transformers` loads it)")
    lines += [
        f"Fine-tuned with fincocktail on a cocktail of financial tasks: {kind}, exported {form}.",
        "",
        "## Base model",
        "",
        f"- model: `{_code(base_model)}`" + (f" (from [{_md(base_hub_id)}](https://huggingface.co/{_md(base_hub_id)}))" if base_hub_id else ""),
        f"- licence: {_md(base_licence)}" + (f" ({_md(base_note)})" if base_note else ""),
        f"- weights trained on: {_md(base_weights)}",
        "",
    ]
    lines += _data_section(train_card.get("data_manifest") or {}, licences)
    lines += _training_section(train_card)
    lines += _evaluation_section(scores)
    style = str((train_card.get("config") or {}).get("prompt_style", "instruction"))
    lines += _prompt_section(style, prompt_example)
    lines += _load_section(merged or method == "full", base_hub_id, local_weights, prompt_example)
    return "\n".join(lines)


def _sample_text(s: EvalScore) -> str:
    """"100 of 1212 (stratified, seed 0, `3f2a...`)", or "1212 (all)"."""
    info = s.sample or {}
    population = info.get("population")
    if not s.limit or (population is not None and s.n >= population):
        return f"{s.n} (all)"
    how = f"{info.get('method', 'head')}, seed {info.get('seed', 0)}"
    if info.get("sha256"):
        how += f", `{str(info['sha256'])[:12]}`"
    return f"{s.n} of {population if population is not None else '?'} ({how})"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
    return str(value)


def _prompt_section(style: str, example: str) -> list[str]:
    """The prompt format the model was trained in, with one prompt exactly as it saw them."""
    from fincocktail.tasks.prompts import INSTRUCTION_TEMPLATE, INSTRUCTION_TEMPLATE_NO_INPUT

    lines = ["", "## Prompt format", "", f"Trained with prompt style `{_code(style)}`. "]
    if style == "instruction":
        lines[-1] += ("Prompts are plain text (no chat template); the answer follows `Answer:` after one space, "
                      "and the model ends it with the tokenizer's EOS token:")
        lines += ["", "```text", INSTRUCTION_TEMPLATE, "```", "",
                  "or, for an example without input:", "", "```text", INSTRUCTION_TEMPLATE_NO_INPUT, "```"]
    else:
        lines[-1] += ("Prompts go through the tokenizer's chat template (`tokenizer.apply_chat_template(messages, "
                      "add_generation_prompt=True)`), with one user message holding the instruction, a blank line and the input.")
    if example:
        lines += ["", "Example (exactly as in training; the model's answer follows it):", "", "```text", example, "```"]
    return lines + ["", "A prompt in another format (e.g. a chat message for an instruction-style model) gets other answers.", ""]


def _load_section(standalone: bool, base_hub_id: str | None, local_weights: str, example: str) -> list[str]:
    """How to load it with plain transformers (+ peft for an adapter) and ask it one prompt."""
    base = base_hub_id or "BASE_MODEL"
    lines = ["## How to load", "", "With plain `transformers`" + ("" if standalone else " and `peft`") + ":", "", "```python"]
    if standalone:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("PATH")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        ]
    else:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("{_code(base)}")  # base_model_name_or_path of adapter_config.json',
            'model = PeftModel.from_pretrained(base, "PATH")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        ]
    lines += [
        f"prompt = {json.dumps(example) if example else '...  # see Prompt format'}",
        'ids = tokenizer(prompt, return_tensors="pt")',
        "out = model.generate(**ids, max_new_tokens=16, do_sample=False)",
        'print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
    ]
    if local_weights and "dequantized" in local_weights and not standalone:
        lines += [f"The adapter was trained on the base's local weights, {_md(local_weights)}. For the exact model "
                  "that was evaluated, load the base from the folder `fincocktail models pull` makes instead of the hub id.", ""]
    return lines


def render_licences(base_model: str, base_licence: str, base_note: str, licences: Sequence[SourceLicence]) -> str:
    """LICENSES.md: the terms that apply to the exported model, the card's `license_link`.

    Why a file: the Hub's `license: other` needs a link, and the terms are several (the base's
    and each training source's), none of which alone is the model's licence.
    """
    lines = ["# Licences", "", "The terms of the base model and of every training source apply to this model.", "",
             f"- base model `{_code(base_model)}`: {_md(base_licence)}" + (f" ({_md(base_note)})" if base_note else "")]
    for s in licences:
        lines.append(f"- training source `{_code(s.task)}`: {_md(s.licence)}; commercial use: {_md(s.status)}")
    return "\n".join(lines) + "\n"
