"""`fincocktail models`: being built."""

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def _list() -> None:
    """Not implemented yet."""
    raise SystemExit("not implemented yet")
