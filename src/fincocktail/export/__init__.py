"""Handing work to others: a trained model as a Hugging Face folder with a model card (`model`,
`modelcard`), and tasks as lm-evaluation-harness YAMLs (`lmeval`).

Above evaluation in the layers (the card carries the run's scores and a load check), so it is
not part of `fincocktail.models`, which evaluation and training build on.
"""
