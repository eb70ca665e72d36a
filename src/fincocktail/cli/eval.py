"""`fincocktail eval` and `fincocktail export lm-eval`.

Both live here because the export exists to cross-check what `eval` computes: same tasks, same
prompts, same demonstrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fincocktail.errors import ConfigError
from fincocktail.models.dtypes import DEFAULT_EVAL_DTYPE
from fincocktail.models.device import DEVICE_HELP, check_device

CHOICE_TASKS = "fpb,fiqa_sa,tfns,headline,ner_cls,cfa"

export_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Export tasks for other evaluation harnesses, or a tuned model as a Hugging Face folder.")


def _task_list(tasks: str) -> list[str]:
    out = [t.strip() for t in tasks.split(",") if t.strip()]
    if not out:
        raise ConfigError("--tasks: expected a comma-separated list of task ids, e.g. fpb,tfns")
    return out


def _config(**kwargs):
    from pydantic import ValidationError

    from fincocktail.evaluation.runner import EvalConfig
    from fincocktail.plumbing.fileio import format_validation_error

    try:
        return EvalConfig(**kwargs)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "", label=lambda loc: "--" + loc.replace("_", "-"))) from None


def _check_model_and_adapter(model: str, adapter: str | None) -> None:
    """A typo in --model or --adapter is a usage error found before anything loads."""
    from fincocktail.evaluation.api import is_api_model

    if is_api_model(model):
        return
    from fincocktail.evaluation.loading import adapter_folder
    from fincocktail.models.loading import check_model_name

    check_model_name(model)
    if adapter is not None:
        adapter_folder(adapter)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: str = typer.Option(..., "--model", help="Registry name, local HF folder, or openai:MODEL for an API model."),
        tasks: str = typer.Option(..., "--tasks", help="Comma-separated task ids, e.g. fpb,tfns,finqa."),
        adapter: Optional[str] = typer.Option(None, "--adapter", help="Training run folder (RUN_DIR/adapter) or peft adapter folder."),
        split: str = typer.Option("test", "--split"),
        limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a sample of N examples of each task (see --sample)."),
        sample: str = typer.Option(
            "stratified", "--sample",
            help="How --limit picks its rows: stratified (default: by gold label, or whole groups), random, "
            "or head (the first N; the files are ordered by label, so head is biased).",
        ),
        sample_seed: int = typer.Option(0, "--sample-seed", help="Seeds the sample (independent of --seed)."),
        shots: int = typer.Option(0, "--shots", help="Demonstrations from the train split (seeded; the same for every example)."),
        mode: str = typer.Option("auto", "--mode", help="auto | choice | generate. auto: choice for classification/multiple choice, else generate."),
        style: Optional[str] = typer.Option(None, "--style", help="instruction | chat (default: the style an --adapter was trained in, else instruction; chat for API models)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Examples per forward pass (API models: parallel requests)."),
        dtype: str = typer.Option(
            DEFAULT_EVAL_DTYPE, "--dtype",
            help="float32 (default, the reference) | auto: on a CPU with native bf16 or a bf16 GPU, score in bf16 and re-check "
            "close calls in fp32 (fp32's predictions, 1.3-1.6x faster on this CPU kind), generate in fp32; elsewhere float32 | bfloat16 | float16.",
        ),
        device: str = typer.Option("auto", "--device", help=f"Local models: {DEVICE_HELP}."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/eval/<timestamp>-<model>)."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Folder of user task YAMLs."),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for openai:MODEL."),
        seed: int = typer.Option(0, "--seed", help="Seeds the demonstrations and the bootstrap."),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Override every task's generation budget."),
        max_prompt_tokens: Optional[int] = typer.Option(
            None, "--max-prompt-tokens",
            help="Local models: longer prompts lose tokens from the left, as in training (default: whole prompts).",
        ),
        judge: Optional[str] = typer.Option(
            None, "--judge", help="openai:MODEL: an LLM judge also grades open-answer tasks (FinanceBench); key from OPENAI_API_KEY."
        ),
        judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="OpenAI-compatible endpoint of the judge (e.g. a fincocktail serve)."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Evaluate a model (base, fine-tuned with --adapter, or an API model) on tasks of the suite."""
        from rich.console import Console

        from fincocktail.evaluation.runner import run_eval, summary_table

        from fincocktail.plumbing.fileio import check_out_dir

        if out is not None:
            check_out_dir(out)
        _check_model_and_adapter(model, adapter)
        device = check_device(device)
        if mode not in ("auto", "choice", "generate"):
            raise ConfigError(f"--mode {mode!r}: expected auto, choice or generate")
        if style not in (None, "instruction", "chat"):
            raise ConfigError(f"--style {style!r}: expected instruction or chat")
        config = _config(
            model=model, adapter=adapter, tasks=_task_list(tasks), split=split, limit=limit, sample=sample,
            sample_seed=sample_seed, shots=shots, mode=mode,
            style=style, batch_size=batch_size, dtype=dtype, device=device, out=out, data_dir=data_dir, tasks_dir=tasks_dir,
            base_url=base_url, seed=seed, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
            judge=judge, judge_base_url=judge_base_url,
        )
        run = run_eval(config, progress=progress)
        console = Console()
        console.print(summary_table(run.results))
        from fincocktail.evaluation.judge import judge_table

        judged = judge_table(run.results)
        if judged is not None:
            console.print(judged)
        console.print(f"results in {run.out_dir}", highlight=False)

    _register_lmeval_export()
    app.add_typer(export_app, name="export", help="Export tasks for lm-evaluation-harness, or a tuned model as a Hugging Face folder with a model card.")


def _register_lmeval_export() -> None:
    """`export lm-eval`: the suite's tasks as lm-evaluation-harness YAMLs (a sub-command of `export`)."""
    @export_app.command("lm-eval")
    def export_lmeval_cmd(
        directory: Path = typer.Argument(..., metavar="DIR", help="Folder to write the task YAMLs and data into."),
        tasks: str = typer.Option(CHOICE_TASKS, "--tasks", help="Comma-separated task ids."),
        split: str = typer.Option("test", "--split"),
        limit: Optional[int] = typer.Option(None, "--limit", help="Export a sample of N examples (see eval --sample)."),
        sample: str = typer.Option("stratified", "--sample", help="stratified (default) | random | head"),
        sample_seed: int = typer.Option(0, "--sample-seed"),
        shots: int = typer.Option(0, "--shots", help="Demonstrations baked into each prompt (same draw as `eval --shots`)."),
        seed: int = typer.Option(0, "--seed"),
        style: str = typer.Option("instruction", "--style", help="instruction | chat (chat needs --model for its template)."),
        model: Optional[str] = typer.Option(None, "--model", help="Model whose chat template renders the chat style."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir"),
    ) -> None:
        """Write tasks as lm-evaluation-harness YAMLs + JSONL (run with `lm_eval --include_path DIR`)."""
        from rich.console import Console

        from fincocktail.export.lmeval import export_lmeval
        from fincocktail.plumbing.fileio import check_out_dir
        from fincocktail.plumbing.paths import find_data_dir
        from fincocktail.tasks.registry import get_task

        check_out_dir(directory, "DIR")
        if style not in ("instruction", "chat"):
            raise ConfigError(f"--style {style!r}: expected instruction or chat")
        tokenizer = None
        if style == "chat":
            if not model:
                raise ConfigError("--style chat needs --model (its chat template renders the prompts)")
            from fincocktail.evaluation.loading import load_for_eval

            tokenizer = load_for_eval(model).tokenizer
        exported = export_lmeval(
            directory, _task_list(tasks), find_data_dir(data_dir), lambda t: get_task(t, tasks_dir),
            split=split, limit=limit, sample=sample, sample_seed=sample_seed, shots=shots, seed=seed, style=style,
            tokenizer=tokenizer,
        )
        console = Console()
        for e in exported:
            console.print(f"{e.name}: {e.n} examples ({e.output_type}) -> {e.yaml_path}", highlight=False)
        names = ",".join(e.name for e in exported)
        console.print(f"run: lm_eval --model hf --model_args pretrained=MODEL --include_path {directory} --tasks {names}", highlight=False)
