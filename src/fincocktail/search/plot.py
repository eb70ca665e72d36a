"""Predicted against measured validation scores, one panel per task and one for the objective."""

from __future__ import annotations

import math
from typing import Any

from fincocktail.report.plots import png_bytes, plt


def predicted_vs_measured(summary: dict[str, Any]) -> bytes:
    """Leave-one-mixture-out predictions (±1 sd) against measurements; search proposals in orange."""
    main = summary["objectives"][0]
    panels: list[tuple[str, list[tuple[float, float, float, bool]]]] = []
    for t in summary["tasks"]:
        pts = [(r["measured"][t], r["loo"][t][0], r["loo"][t][1], r["kind"] == "mixture")
               for r in summary["mixtures"] if t in r["measured"]]
        panels.append((t, pts))
    pts = [(r["objectives"][main]["measured"], *r["objectives"][main]["loo"], r["kind"] == "mixture")
           for r in summary["mixtures"] if r["objectives"][main]["measured"] is not None]
    panels.append((f"objective: {main}", pts))
    stats = {**summary["surrogate"]["tasks"], f"objective: {main}": summary["surrogate"]["objectives"][main]}
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, pts) in zip(axes.flat, panels):
        for proposed, colour, label in ((False, "tab:blue", "sweep runs"), (True, "tab:orange", "search proposals")):
            sel = [p for p in pts if p[3] == proposed]
            if sel:
                ax.errorbar([p[0] for p in sel], [p[1] for p in sel], yerr=[p[2] for p in sel], fmt="o", ms=4,
                            color=colour, ecolor=colour, alpha=0.8, capsize=2, label=label)
        values = [v for p in pts for v in (p[0], p[1])]
        if values:
            lo, hi = min(values) - 0.02, max(values) + 0.02
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        rho = stats.get(name, {}).get("spearman")
        ax.set_title(f"{name}\nSpearman (LOO) {rho:.2f}" if rho is not None and rho == rho else name, fontsize=9)
        ax.set_xlabel("measured (validation)", fontsize=8)
        ax.set_ylabel("predicted (leave one out)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"mix search {summary['name']}: surrogate predictions vs measurements", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)
