"""Handing a trained model to others: a Hugging Face folder with a model card.

Above evaluation in the layers (the card carries the run's scores and a load check), so it is
not part of `fincocktail.models`, which evaluation and training build on.
"""
