"""`fincocktail export model RUN_DIR --out DIR [--merge]`: a training run as a Hugging Face folder with a model card."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(export_app: typer.Typer) -> None:
    @export_app.command("model")
    def export_model_cmd(
        run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A `fincocktail train` run folder, or a sweep run folder (RUN/train)."),
        out: Path = typer.Option(..., "--out", help="New folder for the exported model."),
        merge: bool = typer.Option(False, "--merge", help="Merge the LoRA adapter into the base weights (plain transformers loads it)."),
        evals: List[Path] = typer.Option([], "--eval", help="Eval run folder of this model (or of its base) to put in the card; repeatable. Sweep runs add theirs."),
        name: Optional[str] = typer.Option(None, "--name", help="Model name in the card (default: the --out folder name)."),
    ) -> None:
        """Write a folder that plain peft / transformers load, with README.md (model card: data, licences, scores)."""
        from rich.console import Console

        from fincocktail.export.model import export_model
        from fincocktail.plumbing.fileio import check_out_dir

        check_out_dir(out)
        res = export_model(run_dir, out, merge=merge, eval_dirs=evals, name=name)
        console = Console()
        kind = "merged model (transformers)" if res.merged else "model folder"
        console.print(f"{kind} with model card -> {res.out}", highlight=False)
        for s in res.licences:
            console.print(f"  source {s.task}: {s.licence} (commercial use: {s.status})", highlight=False)
        if any(s.commercial is not True for s in res.licences):
            console.print("[bold yellow]warning:[/] some training data is not licensed for commercial use; the card says so at the top")
        console.print(f"  {len(res.scores)} evaluation score(s) in the card", highlight=False)
