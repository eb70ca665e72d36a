"""`fincocktail sweep`: not built yet (issue #5)."""

import typer

from fincocktail.errors import FincocktailError

app = typer.Typer(no_args_is_help=True)


@app.command("plan")
def plan(sweep_file: str = typer.Argument(..., help="Sweep YAML.")) -> None:
    """List the runs a sweep expands to (not built yet: issue #5)."""
    raise FincocktailError("`fincocktail sweep` is not implemented yet (tracked in issue #5)")
