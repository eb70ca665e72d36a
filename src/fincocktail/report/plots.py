"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fincocktail.report.analysis import Analysis, Delta, Score  # noqa: E402

MAIN_COLUMNS = ("base zero-shot", "best single-task", "best cocktail", "cocktail + general", "cocktail + math")


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (closed after, so a long report does not hold every figure);
    public because the search's report section draws its own plot with it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def main_bars(rows: list[dict]) -> bytes:
    tasks = [r["task"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks) + 2), 4))
    width = 0.8 / len(MAIN_COLUMNS)
    x = np.arange(len(tasks))
    for k, col in enumerate(MAIN_COLUMNS):
        vals, lo, hi = [], [], []
        for r in rows:
            s = r.get(col)
            s = s[1] if isinstance(s, tuple) else s
            if isinstance(s, Score):
                vals.append(s.value)
                lo.append(s.value - (s.low if s.low is not None else s.value))
                hi.append((s.high if s.high is not None else s.value) - s.value)
            else:
                vals.append(np.nan)
                lo.append(0)
                hi.append(0)
        ax.bar(x + (k - len(MAIN_COLUMNS) / 2 + 0.5) * width, vals, width, yerr=[lo, hi], capsize=2, label=col)
    ax.set_xticks(x, tasks)
    ax.set_ylabel("test score (task's headline metric)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title("Per task: base, single-task, cocktails (95% intervals)")
    return png_bytes(fig)


def deltas_plot(deltas: list[Delta], title: str) -> bytes:
    labels = [f"{d.task}: {d.recipe}" + (f" vs {d.reference}" if "vs" in title else "") for d in deltas]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.32 * len(deltas) + 1)))
    y = np.arange(len(deltas))
    vals = np.array([d.value for d in deltas])
    # A bootstrap interval of per-example correctness need not contain a delta of the headline metric
    # (headline's average F1): draw the part of the bar on each side of the point, never a negative length.
    lo = np.array([max(d.value - d.low, 0.0) if np.isfinite(d.low) else 0 for d in deltas])
    hi = np.array([max(d.high - d.value, 0.0) if np.isfinite(d.high) else 0 for d in deltas])
    colours = ["tab:green" if d.significant and d.value > 0 else "tab:red" if d.significant else "tab:gray" for d in deltas]
    ax.errorbar(vals, y, xerr=[lo, hi], fmt="none", ecolor="black", capsize=2, lw=1)
    ax.scatter(vals, y, c=colours, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("difference in test score (95% interval; coloured when it excludes 0)")
    ax.set_title(title)
    return png_bytes(fig)


def heatmap(row_labels: list[str], col_labels: list[str], mat: np.ndarray) -> bytes:
    fig, ax = plt.subplots(figsize=(1.1 * len(col_labels) + 3, 0.35 * len(row_labels) + 1.5))
    im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_xlabel("evaluation task (test)")
    ax.set_ylabel("training cocktail")
    ax.set_title("Transfer: test score of each training cocktail on each task")
    return png_bytes(fig)


def curves_plot(an: Analysis) -> bytes | None:
    """Per task, the validation likelihood over optimizer steps of its single-task recipe and of the
    cocktails containing it (mean over seeds), from the runs' `training.eval_every` curves."""
    from fincocktail.training.curves import read_curves

    series: dict[str, dict[str, dict[int, list[float]]]] = {}  # task -> recipe label -> step -> values
    metric: dict[str, str] = {}
    for rec, runs in an.recipes.items():
        if rec[0] not in ("single", "cocktail", "matched"):
            continue
        for r in runs:
            if r.run_dir is None:
                continue
            for point in read_curves(r.run_dir / "train" / "train_log.jsonl"):
                for task, value in point.values.items():
                    series.setdefault(task, {}).setdefault(an.recipe_label(rec), {}).setdefault(point.step, []).append(value)
                    metric.setdefault(task, point.metrics.get(task, "gold_prob"))
    if not series:
        return None
    tasks = sorted(series)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for label, by_step in sorted(series[task].items()):
            steps = sorted(by_step)
            ax.plot(steps, [float(np.mean(by_step[s])) for s in steps], marker=".", label=label)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric[task] + " (validation)")
        ax.legend(fontsize=6)
    fig.suptitle("Learning curves: each task's validation likelihood during training (mean over seeds)")
    return png_bytes(fig)


def all_plots(an: Analysis) -> dict[str, bytes]:
    plots = {"main": main_bars(an.main_table())}
    effects = an.cocktail_effects()
    if effects:
        plots["cocktail_effect"] = deltas_plot(effects, "Cocktail effect: cocktail vs single-task")
    rows, cols, mat = an.transfer_matrix()
    if rows and cols:
        plots["transfer"] = heatmap(rows, cols, mat)
    abl = an.ablations()
    if abl:
        plots["ablation"] = deltas_plot(abl, "Ingredient ablation: with vs without general / math data")
    know = an.knowledge_check()
    if know:
        plots["knowledge"] = deltas_plot(know, "Domain knowledge: fine-tuned vs base")
    curves = curves_plot(an)
    if curves is not None:
        plots["curves"] = curves
    return plots
