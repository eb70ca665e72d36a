"""`fincocktail tasks`: the task suite (built-ins plus the user's YAML tasks): list, show, sample.

Split sizes are computed by loading the data, so a task whose files are absent shows "missing"
instead of failing the whole listing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fincocktail.errors import ConfigError, FincocktailError

app = typer.Typer(no_args_is_help=True)
console = Console()

DataDirOpt = typer.Option(None, "--data-dir", help="Data folder (default: $FINCOCKTAIL_DATA, ./data, ../shared/data).")
TasksDirOpt = typer.Option(None, "--tasks-dir", help="Folder of user task YAML files (default: $FINCOCKTAIL_TASKS).")


def _data_dir(data_dir: Path | None) -> tuple[Path | None, str | None]:
    """The resolved data folder, or (None, why) when there is none: listing still works without it."""
    from fincocktail.plumbing.paths import find_data_dir

    try:
        return find_data_dir(data_dir), None
    except FincocktailError as exc:
        if data_dir is not None:
            raise
        return None, str(exc)


def _sizes(task: Any, data_dir: Path | None, no_data: str | None) -> tuple[dict[str, int] | None, str | None]:
    """({split: size}, None) or (None, why the data could not be read)."""
    is_user = hasattr(task, "spec_path")
    if data_dir is None and not is_user:
        return None, no_data
    try:
        return {split: len(task.load(split, data_dir)) for split in task.splits}, None
    except FincocktailError as exc:
        return None, str(exc)


def _task_info(task: Any) -> dict[str, Any]:
    return task.card().as_json()


def _load_task(task_id: str, tasks_dir: Path | None) -> tuple[Any | None, str | None]:
    from fincocktail.tasks.registry import get_task

    try:
        return get_task(task_id, tasks_dir), None
    except ImportError as exc:  # a built-in whose module is not installed / not written yet
        return None, f"not available ({exc})"


@app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the tasks as JSON."),
    tasks_dir: Path | None = TasksDirOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Every task: id, kind, headline metric, version and split sizes ("missing" when its data is absent)."""
    from fincocktail.tasks.registry import task_ids

    folder, no_data = _data_dir(data_dir)
    rows: list[dict[str, Any]] = []
    ids = task_ids(tasks_dir)
    with console.status("loading tasks to count their splits...", spinner="dots") if not as_json else _nullcontext():
        for task_id in ids:
            task, why = _load_task(task_id, tasks_dir)
            if task is None:
                rows.append({"id": task_id, "error": why, "sizes": None})
                continue
            sizes, problem = _sizes(task, folder, no_data)
            rows.append({**_task_info(task), "sizes": sizes, "error": problem})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Tasks (data: {folder or 'not found'})", title_justify="left")
    for col in ("id", "kind", "metric", "version", "train", "validation", "test"):
        numeric = col in ("train", "validation", "test")
        table.add_column(col, no_wrap=col != "version", overflow="fold", justify="right" if numeric else "left")
    notes: list[str] = []
    for row in rows:
        if "kind" not in row:
            table.add_row(row["id"], "-", "-", "-", "[yellow]n/a[/]", "[yellow]n/a[/]", "[yellow]n/a[/]")
            notes.append(f"{row['id']}: {row['error']}")
            continue
        sizes = row["sizes"]
        cells = []
        for split in ("train", "validation", "test"):
            if split not in row["splits"]:
                cells.append("[dim]-[/]")
            elif sizes is None:
                cells.append("[red]missing[/]")
            else:
                cells.append(str(sizes[split]))
        if sizes is None:
            notes.append(f"{row['id']}: {row['error']}")
        name = row["id"] + (" [dim](user)[/]" if row["user_task"] else "")
        table.add_row(name, row["kind"], row["metric"], row["version"], *cells)
    console.print(table)
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False, soft_wrap=True)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@app.command("show")
def show_cmd(
    task_id: str = typer.Argument(..., help="Task id (see `fincocktail tasks list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    tasks_dir: Path | None = TasksDirOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Everything about one task: description, labels, source files, licence, splits and their sizes."""
    task, why = _load_task(task_id, tasks_dir)
    if task is None:
        raise ConfigError(f"task {task_id!r} is {why}")
    folder, no_data = _data_dir(data_dir)
    sizes, problem = _sizes(task, folder, no_data)
    info = {**_task_info(task), "sizes": sizes, "error": problem}
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(f"[bold]{task.id}[/]  {task.version}")
    if task.description:
        console.print(task.description)
    if task.__doc__ and not info["user_task"]:
        console.print(f"[dim]{' '.join(task.__doc__.split())}[/]")
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("kind", "metric", "labels", "instruction", "source", "licence", "eval_only", "user_task"):
        value = info[key]
        if value in (None, "", False) and key not in ("eval_only",):
            continue
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    if sizes is None:
        table.add_row("splits", f"[red]missing[/]: {problem}")
    else:
        table.add_row("splits", ", ".join(f"{s} {n}" for s, n in sizes.items()))
    console.print(table)


@app.command("sample")
def sample_cmd(
    task_id: str = typer.Argument(..., help="Task id (see `fincocktail tasks list`)."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    n: int = typer.Option(3, "-n", "--num", min=1, help="How many examples (the first n of the split)."),
    style: str = typer.Option("instruction", "--style", help="instruction (FinGPT text) or chat (the model's template)."),
    model: str | None = typer.Option(None, "--model", help="Model (name or HF folder) whose chat template renders --style chat."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    tasks_dir: Path | None = TasksDirOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Show rendered prompts and targets exactly as training and evaluation will see them."""
    from fincocktail.tasks import prompts
    from fincocktail.plumbing.paths import find_data_dir

    if style not in ("instruction", "chat"):
        raise ConfigError(f"--style {style!r} is not supported; expected 'instruction' or 'chat'")
    task, why = _load_task(task_id, tasks_dir)
    if task is None:
        raise ConfigError(f"task {task_id!r} is {why}")
    tokenizer = None
    if style == "chat":
        if model is None:
            raise ConfigError("--style chat needs --model NAME_OR_FOLDER (its tokenizer's chat template renders the prompt)")
        from fincocktail.models import load_tokenizer

        tokenizer = load_tokenizer(model)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"model {model!r} has no chat template; use --style instruction")
    folder = None if hasattr(task, "spec_path") else find_data_dir(data_dir)
    examples = task.load(split, folder)[:n]
    rendered = [(ex, prompts.render(task, ex, style=style, tokenizer=tokenizer)) for ex in examples]
    if as_json:
        print(json.dumps([{"id": ex.id, "prompt": p.prompt, "target": p.target} for ex, p in rendered], indent=2))
        return
    for ex, pair in rendered:
        console.rule(f"[bold]{ex.id}[/]")
        console.print(pair.prompt, markup=False, highlight=False, soft_wrap=True, end="")
        console.print(pair.target, style="bold green", markup=False, highlight=False, soft_wrap=True)
    if not rendered:
        console.print(f"[yellow]split {split!r} of {task_id} is empty[/]")
