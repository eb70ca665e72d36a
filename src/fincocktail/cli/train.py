"""`fincocktail train CONFIG.yaml`: fine-tune a base model on a cocktail.

Every config field can be overridden: a few named flags for the common ones, and the generic
`--set key.sub=value` for the rest. The config is validated (overrides included) before any
model is loaded, so a bad value costs milliseconds, not a model load.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _overrides(
    sets: list[str],
    model: str | None,
    lr: float | None,
    max_steps: int | None,
    batch_size: int | None,
    epochs: int | None,
    seed: int | None,
    data_dir: Path | None,
    out: Path | None,
    merge: bool,
    eval_every: int | None = None,
) -> list[str]:
    named = {
        "model": model,
        "lr": lr,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "epochs": epochs,
        "seed": seed,
        "data_dir": str(data_dir) if data_dir else None,
        "output_dir": str(out) if out else None,
        "merge": "true" if merge else None,
        "eval_every": eval_every,
    }
    return list(sets) + [f"{k}={v}" for k, v in named.items() if v is not None]


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., help="Run config YAML (see configs/train/)."),
        sets: list[str] = typer.Option([], "--set", help="Override any field: --set lora.r=8 (repeatable)."),
        model: str | None = typer.Option(None, "--model", help="Base model: registry name or local folder."),
        lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
        max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per micro-batch."),
        epochs: int | None = typer.Option(None, "--epochs", help="Passes over the cocktail."),
        seed: int | None = typer.Option(None, "--seed", help="Seed for sampling, batching and init."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default: output_dir, else runs/<config name>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in the output folder from its last checkpoint."),
        merge: bool = typer.Option(False, "--merge", help="Also save the base model with the adapter merged in."),
        eval_every: int | None = typer.Option(
            None, "--eval-every", help="Learning curves: score every task's validation sample every N steps (docs/training.md)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Fine-tune a base model (LoRA or full) on a cocktail; writes adapter/, run_card.json, train_log.jsonl."""
        from fincocktail.training.config import load_train_config

        overrides = _overrides(sets, model, lr, max_steps, batch_size, epochs, seed, data_dir, out, merge, eval_every)
        cfg = load_train_config(config, overrides)
        run_dir = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / config.stem
        from fincocktail.plumbing.fileio import check_out_dir
        from fincocktail.models.loading import check_model_name

        check_out_dir(run_dir)
        check_model_name(cfg.model)  # before torch loads: a typo costs milliseconds

        from rich.console import Console

        from fincocktail.training.trainer import train

        console = Console(stderr=True, quiet=quiet)
        result = train(cfg, run_dir, resume=resume, progress=not quiet, console=console)
        loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "-"
        Console().print(
            f"[bold green]done[/]: {result.steps} steps, {result.tokens_seen:,} tokens, final loss {loss}, "
            f"{result.wall_time_s:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB -> {result.adapter_dir}",
            highlight=False,
        )
