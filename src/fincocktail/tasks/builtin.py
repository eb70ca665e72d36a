"""The built-in task ids, each named as "module:Class" so that listing tasks imports no loader.

Its own module because both the registry (which imports the classes) and user YAML tasks
(whose ids may not reuse a built-in one) need the table, and neither should import the other.
"""

from __future__ import annotations

BUILTIN_TASKS: dict[str, str] = {
    "fpb": "fincocktail.tasks.sentiment:FPB",
    "fiqa_sa": "fincocktail.tasks.sentiment:FiQASA",
    "tfns": "fincocktail.tasks.sentiment:TFNS",
    "headline": "fincocktail.tasks.headline:Headline",
    "finner": "fincocktail.tasks.finner:FinNER",
    "ner_cls": "fincocktail.tasks.ner_cls:NERCls",
    "finqa": "fincocktail.tasks.finqa:FinQA",
    "convfinqa": "fincocktail.tasks.finqa:ConvFinQA",
    "gsm8k": "fincocktail.tasks.gsm8k:GSM8K",
    "general": "fincocktail.tasks.general:General",
    "cfa": "fincocktail.tasks.knowledge:CFA",
    "financebench": "fincocktail.tasks.financebench:FinanceBench",
}

# The study's financial tasks in the order reports list them (sentiment, headlines, NER, numerical reasoning).
FINANCIAL_TASKS: tuple[str, ...] = ("fpb", "fiqa_sa", "tfns", "headline", "finner", "ner_cls", "finqa", "convfinqa")

# The domain-knowledge checks (claim d of the study): evaluated, never trained on.
KNOWLEDGE_TASKS: tuple[str, ...] = ("cfa", "financebench")

# The numerical-reasoning tasks: what claim (c), math data helping, is judged on.
NUMERICAL_TASKS: tuple[str, ...] = ("finqa", "convfinqa", "gsm8k")
