"""Published reference scores on the FinGPT-benchmark test sets (not measured by fincocktail).

Accuracy as a fraction, from the FinLoRA README as quoted in the data folder's SOURCES.md.
The report labels them "published" so nobody mistakes them for our measurements.
"""

PUBLISHED_SOURCE = "FinLoRA README (accuracy on the fingpt_test sets), as quoted in data/SOURCES.md"

PUBLISHED: dict[str, dict[str, float]] = {
    "GPT-4o": {"fpb": 0.8113, "fiqa_sa": 0.7234, "tfns": 0.7332, "ner_cls": 0.5211, "headline": 0.8053},
    "Llama-3.1-8B-Instruct": {"fpb": 0.6873, "fiqa_sa": 0.4655, "tfns": 0.6997},
    "Llama-3.1-8B + single-task LoRA": {"fpb": 0.8564, "fiqa_sa": 0.8128, "tfns": 0.8802},
}
