"""The evaluation-side name of `fincocktail.models.choice` (choice mode's scoring).

The code moved down to `models` so that training's learning curves (`training.curves`) score
choices with the same function as evaluation; this module keeps every existing import working.
"""

from fincocktail.models.choice import (
    ChoiceItem,
    ChoiceScores,
    _score_batch,
    choice_item,
    close_margin,
    pick,
    score_choices,
)

__all__ = ["ChoiceItem", "ChoiceScores", "_score_batch", "choice_item", "close_margin", "pick", "score_choices"]
