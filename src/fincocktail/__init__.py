"""fincocktail: multi-task ("cocktail") fine-tuning and evaluation of LMs on financial tasks."""

__version__ = "0.1.0"
