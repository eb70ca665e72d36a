"""`fincocktail report`: not built yet."""

import typer

from fincocktail.errors import FincocktailError


def register(app: typer.Typer) -> None:
    @app.command("report", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _cmd() -> None:
        """Not implemented yet."""
        raise FincocktailError("`fincocktail report` is not implemented yet")
