"""`fincocktail compare`: is model B better than model A on my tasks, beyond sampling noise?

`runs` reads eval and sweep run folders and refuses comparisons that would not be paired (other
tasks, other examples, other gold answers); `stats` computes the paired statistics; `render`
writes the terminal table, JSON and the HTML page.
"""

from fincocktail.compare.runs import RunResults, TaskPredictions, load_run
from fincocktail.compare.stats import Comparison, compare_runs, mcnemar_exact

__all__ = ["Comparison", "RunResults", "TaskPredictions", "compare_runs", "load_run", "mcnemar_exact"]
