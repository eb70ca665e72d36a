"""The `fincocktail` command line: one typer app, one module per command group.

Heavy libraries (torch, transformers) are imported inside the commands, never at module
level here, so `fincocktail --help` stays instant.
"""

from __future__ import annotations

import os
import sys

# Piped or captured output (CI logs, `| less`) would make rich wrap tables at 80 columns and
# fold every cell; give it room unless the user set COLUMNS. Must run before any Console exists.
if "COLUMNS" not in os.environ and not sys.stdout.isatty():
    os.environ["COLUMNS"] = "160"

import typer
from rich.console import Console
from rich.markup import escape

from fincocktail import __version__
from fincocktail.errors import FincocktailError
from fincocktail.plumbing.redact import redact

err_console = Console(stderr=True)

app = typer.Typer(
    name="fincocktail",
    help="Multi-task ('cocktail') fine-tuning and evaluation of language models on financial tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"fincocktail {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", help="Show library warnings and progress bars (hidden by default)."),
) -> None:
    """fincocktail: which mix of training data makes a small model beat a large general one?"""
    from fincocktail.plumbing.quiet import VERBOSE_ENV, quiet_libraries

    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # worker processes inherit it
    quiet_libraries()


def _register() -> None:
    from fincocktail.cli import compare, data, eval as eval_cmd, export_model, mix, models, report, reproduce, results, serve, sweep, tasks, train

    app.add_typer(models.app, name="models", help="Base-model registry: list, pull (download + convert), show.")
    app.add_typer(data.app, name="data", help="Datasets: check the data folder, fetch public copies, contamination.")
    app.add_typer(tasks.app, name="tasks", help="The financial task suite: list, show, sample prompts.")
    app.add_typer(sweep.app, name="sweep", help="Experiment sweeps: plan, run (local or Ray), status.")
    app.add_typer(mix.app, name="mix", help="Mixture search: find the training mix that wins on validation; predict one.")
    train.register(app)
    eval_cmd.register(app)
    export_model.register(eval_cmd.export_app)
    compare.register(app)
    serve.register(app)
    report.register(app)
    reproduce.register(app)
    results.register(app)


_register()


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except FincocktailError as exc:
        err_console.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
