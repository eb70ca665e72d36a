"""Export tasks as lm-evaluation-harness tasks, to cross-check our numbers in that harness.

Each task becomes `fincocktail_<task>.yaml` plus `fincocktail_<task>.<split>.jsonl` holding the
prompts exactly as fincocktail renders them (demonstrations included, so the harness runs them
zero-shot), and a tiny loader module shared by all tasks that reads the JSONL next to it. The
folder is self-contained and can be moved: `lm_eval --include_path DIR --tasks fincocktail_fpb`.

Classification and multiple-choice tasks become `multiple_choice` (choices carry the style's
answer separator, so `target_delimiter` is empty and the harness scores the very continuation
strings we score); the others become `generate_until` with the task's stop strings and token
budget, with the raw gold answer as target (our own extraction and metrics are not replicated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from fincocktail.errors import ConfigError
from fincocktail.evaluation.fewshot import build_pair, choice_target, select_demos
from fincocktail.evaluation.runner import CHOICE_KINDS
from fincocktail.plumbing.fileio import safe_name, write_text_atomic
from fincocktail.tasks.base import Task
from fincocktail.tasks.sampling import SAMPLE_METHODS, draw_sample

LOADER_MODULE = "fincocktail_lmeval_loader"
LOADER_SOURCE = '''"""Written by `fincocktail export lm-eval`: loads a JSONL file that sits next to this module."""

import json
from pathlib import Path


def load(data_file, **_):
    import datasets

    path = Path(__file__).resolve().parent / data_file
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
'''


@dataclass(frozen=True)
class ExportedTask:
    name: str  # the lm-eval task name
    yaml_path: Path
    data_path: Path
    output_type: str
    n: int


def lmeval_task_name(task_id: str) -> str:
    return f"fincocktail_{safe_name(task_id)}"


def export_lmeval(
    out_dir: Path,
    task_ids: Sequence[str],
    data_dir: Path,
    resolve_task: Callable[[str], Task],
    split: str = "test",
    limit: int | None = None,
    sample: str = "stratified",
    sample_seed: int = 0,
    shots: int = 0,
    seed: int = 0,
    style: str = "instruction",
    tokenizer: Any | None = None,
) -> list[ExportedTask]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / f"{LOADER_MODULE}.py", LOADER_SOURCE)
    exported = []
    for task_id in task_ids:
        task = resolve_task(task_id)
        problem = task.why_not_evaluable(split)
        if problem is not None:
            raise ConfigError(problem)
        if sample not in SAMPLE_METHODS:
            raise ConfigError(f"--sample {sample!r}: expected one of {', '.join(SAMPLE_METHODS)}")
        examples = draw_sample(
            task.load(split, data_dir), limit, task_id=task.id, split=split, kind=task.kind,
            seed=sample_seed, method=sample,  # type: ignore[arg-type]
        ).examples
        demos = select_demos(task, data_dir, shots, seed, exclude=[e.id for e in examples])
        name = lmeval_task_name(task.id)
        data_file = f"{name}.{split}.jsonl"
        choice = task.kind in CHOICE_KINDS
        rows = []
        for ex in examples:
            try:
                pair = build_pair(task, ex, style, tokenizer, demos)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            row: dict[str, Any] = {"id": ex.id, "prompt": pair.prompt, "target": pair.target}
            if choice:
                choices = list(ex.choices or task.labels or ())
                if ex.target not in choices:
                    raise ConfigError(f"task {task.id!r}: example {ex.id} has gold {ex.target!r} outside its choices {choices}")
                row["choices"] = [choice_target(task, ex, c, style, tokenizer) for c in choices]  # type: ignore[arg-type]
                row["labels"] = choices
                row["gold"] = choices.index(ex.target)
            rows.append(row)
        write_text_atomic(out_dir / data_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        config: dict[str, Any] = {
            "task": name,
            "dataset_kwargs": {"data_file": data_file},
            "test_split": "test",
            "doc_to_text": "prompt",
            "target_delimiter": "",
            # metadata is also passed to the loader as keyword arguments: keep its keys prefixed
            "metadata": {
                "version": 1.0,
                "fincocktail_task": task.id,
                "fincocktail_task_version": task.version,
                "fincocktail_split": split,
                "fincocktail_style": style,
                "fincocktail_shots": shots,
                "fincocktail_seed": seed,
            },
        }
        if choice:
            config.update(
                output_type="multiple_choice",
                doc_to_choice="choices",
                doc_to_target="gold",
                metric_list=[
                    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                ],
            )
        else:
            config.update(
                output_type="generate_until",
                doc_to_target="target",
                generation_kwargs={
                    "until": list(task.generation.stop),
                    "max_gen_toks": task.generation.max_new_tokens,
                    "do_sample": False,
                    "temperature": 0.0,
                },
                metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            )
        text = (
            f"# Exported by `fincocktail export lm-eval` from task {task.id} ({task.version}), split {split}.\n"
            f"custom_dataset: !function {LOADER_MODULE}.load\n"
            + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        )
        yaml_path = out_dir / f"{name}.yaml"
        write_text_atomic(yaml_path, text)
        exported.append(ExportedTask(name, yaml_path, out_dir / data_file, config["output_type"], len(rows)))
    return exported
