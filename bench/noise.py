"""Where a contrast's noise comes from, on real runs: seed part and test-sample part, paired and unpaired.

For every contrast the Findings of a sweep test (or the pairs named with --pair), and for each
metric (the task's primary metric and the likelihood metric), this prints the effect, the seed
and test-sample parts of its standard error, the standard error and z = effect / se, with the
runs paired by seed and unpaired (each recipe's between-seed variance over its seeds). Then,
per task, how well each validation metric predicts a run's test accuracy (Spearman over the
runs scored on both), the question `eval.selection_metric` answers.

    .venv/bin/python bench/noise.py SWEEP_DIR [--pair TASK:RECIPE:REFERENCE ...] [--json]

RECIPE and REFERENCE are report labels, e.g. fpb:fpb+fiqa_sa+tfns+headline+ner_cls:fpb.
Needs >= 2 seeds per recipe (3 or more for a seed variance worth reading).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def rows_for(sweep: Path, pairs: list[str]) -> tuple[list[dict], list[dict]]:
    from fincocktail.report.analysis import Analysis
    from fincocktail.report.contrast_stats import contrast
    from fincocktail.report.findings import design_pairs
    from fincocktail.report.records import from_store
    from fincocktail.sweep.store import ResultsStore

    an = Analysis(from_store(ResultsStore.in_dir(sweep, create=False)))
    by_label = {an.recipe_label(rec): rec for rec in an.recipes}
    if pairs:
        wanted = []
        for p in pairs:
            task, rec, ref = p.split(":")
            wanted.append(("-", task, by_label[rec], by_label[ref]))
    else:
        wanted = design_pairs(an)[0]
    out = []
    for claim, task, rec, ref in wanted:
        for kind in ("primary", "likelihood"):
            a, b = an.side(an.recipes[rec], task, kind), an.side(an.recipes[ref], task, kind)  # type: ignore[arg-type]
            if a is None or b is None:
                continue
            for paired in (True, False):
                st = contrast(a[1], b[1], an.pooled_seed_variance(task, kind), pair=paired)  # type: ignore[arg-type]
                if not paired and st.design != "unpaired":
                    continue  # a zero-shot side: there is nothing to pair, the row above says it all
                out.append({"claim": claim, "task": task, "recipe": an.recipe_label(rec), "reference": an.recipe_label(ref),
                            "metric": a[0], "design": st.design, "seeds": f"{len(a[1].scores)}v{len(b[1].scores)}",
                            "n": st.n_examples, "effect": st.effect, "seed_se": math.sqrt(st.seed_part),
                            "sample_se": math.sqrt(st.sample_part), "se": st.se,
                            "z": st.effect / st.se if st.se > 0 else float("nan"), "half_width_95": st.interval()[1] - st.effect})
    return out, selection_signal(an)


def selection_signal(an) -> list[dict]:
    """Per task: Spearman of validation accuracy and of validation likelihood with test accuracy, over runs."""
    from scipy.stats import spearmanr

    out = []
    for task in an.eval_tasks:
        val_acc, val_lik, test_acc, val_n = [], [], [], set()
        for runs in an.recipes.values():
            for r in runs:
                test, val = an.metric(r.run_id, task, "test"), an.metric(r.run_id, task, "validation")
                lik = an.validation_likelihood([r], task) if val is not None else None
                if test is not None and val is not None and lik is not None:
                    val_acc.append(val.value)
                    val_lik.append(lik)
                    test_acc.append(test.value)
                    val_n.add(val.n)
        if len(test_acc) >= 4:
            out.append({"task": task, "runs": len(test_acc), "validation_n": "/".join(map(str, sorted(val_n))),
                        "spearman_val_primary": float(spearmanr(val_acc, test_acc).statistic),
                        "spearman_val_likelihood": float(spearmanr(val_lik, test_acc).statistic)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path, help="a sweep's output folder (results.sqlite inside)")
    ap.add_argument("--pair", action="append", default=[], help="TASK:RECIPE:REFERENCE (default: the Findings' contrasts)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    args = ap.parse_args()
    rows, selection = rows_for(args.sweep, args.pair)
    if args.json:
        print(json.dumps({"contrasts": rows, "selection": selection}, indent=1))
        return
    print(f"{'claim':5} {'task':9} {'metric':22} {'design':9} {'seeds':5} {'n':>4} {'effect':>7} {'seed_se':>7} "
          f"{'sample_se':>9} {'se':>6} {'z':>6} {'±95%':>6}  recipe vs reference")
    for r in rows:
        print(f"{r['claim']:5} {r['task']:9} {r['metric']:22} {r['design']:9} {r['seeds']:5} {r['n']:>4} {r['effect']:+7.3f} "
              f"{r['seed_se']:7.4f} {r['sample_se']:9.4f} {r['se']:6.4f} {r['z']:+6.2f} {r['half_width_95']:6.3f}  "
              f"{r['recipe']} vs {r['reference']}")
    print("\nselection: how well each validation metric predicts a run's test score (Spearman over runs)")
    for s in selection:
        print(f"  {s['task']:9} {s['runs']:>3} runs, validation n={s['validation_n']}: primary {s['spearman_val_primary']:+.2f}, "
              f"likelihood {s['spearman_val_likelihood']:+.2f}")


if __name__ == "__main__":
    main()
