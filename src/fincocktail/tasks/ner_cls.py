"""Entity-type classification (person / organization / location), the FinGPT benchmark's NER task.

test: `fingpt_test/ner_test.jsonl` (3502 prompts) as is. How FinGPT built it, worked out from
the file and FinNER's FIN3 (all 3502 reproduced): for each FIN3 sentence with entities, for
each distinct non-MISC entity, 17 prompts (17 instruction templates, options in shuffled
order). A loop bug in their builder makes every prompt of a sentence ask about the sentence's
*last* entity, so the 3502 prompts hold only 98 distinct (sentence, entity) questions.

train: built from FIN5 (the FinNER training file) the way FinGPT meant to: one prompt per
distinct (entity, type) of each sentence, asking about *that* entity, with one of the same 17
templates and an option order both picked by hashing (deterministic). MISC entities are left
out (not an option), as are strings tagged with two types in one sentence. FIN5 sentences
whose text also occurs in the test file are dropped; validation is 10% of sentences by hash.
"""

from __future__ import annotations

import re
from itertools import permutations
from pathlib import Path
from types import MappingProxyType

from fincocktail.errors import DataError
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, versioned
from fincocktail.tasks.classification import ClassificationTask
from fincocktail.tasks.conll import read_conll
from fincocktail.tasks.io import field, read_jsonl, require_file
from fincocktail.tasks.splits import carve_validation, normalize_text, unit_hash

ENTITY_TYPES = {"PER": "person", "ORG": "organization", "LOC": "location"}

# The 17 instruction templates of the FinGPT ner_cls test file, in its order.
TEMPLATES: tuple[str, ...] = (
    "What is the entity type of '{entity}' in the input sentence.",
    "With the input text as context, identify the entity type of '{entity}'.",
    "Using the input sentence as a reference, analyze and specify the entity type of '{entity}'.",
    "In the context of the input sentence, examine and categorize the entity type of '{entity}'.",
    "Utilize the input text as context to explore and ascertain the entity type of '{entity}'.",
    "Leverage the input sentence to evaluate and define the entity type for '{entity}'.",
    "Considering the input sentence as context, inspect and classify the entity type of '{entity}'.",
    "With the input sentence as a backdrop, scrutinize and determine the entity type of '{entity}'.",
    "Interpreting the input sentence as context, specify the entity type for '{entity}'.",
    "Assessing the input sentence as context, label the entity type of '{entity}'.",
    "In the input sentence, determine the entity type for '{entity}'.",
    "Within the input text, identify the entity type of '{entity}'.",
    "Analyze the input sentence to find the entity type of '{entity}'.",
    "Check the input sentence for the entity type associated with '{entity}'.",
    "Explore the input sentence to ascertain the entity type of '{entity}'.",
    "Examine the input text to classify the entity type of '{entity}'.",
    "Scrutinize the input sentence to define the entity type of '{entity}'.",
)
OPTION_ORDERS = tuple(permutations(("person", "organization", "location")))
VALIDATION_FRACTION = 0.1

_CONTEXT = re.compile(
    r"^Instruction: (?P<instruction>.*?)\nOptions: (?P<options>.*?)\nInput: (?P<input>.*)\nAnswer: ?$", re.DOTALL
)
_ENTITY = re.compile(r"'(.*)'")
_QUOTED = re.compile(r"(?<!\w)'([^'\n]+)'(?!\w)")


def entity_spans(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(entity text, type) of each span: a run of one type (IO scheme; a B- tag starts a new span)."""
    spans: list[tuple[str, str]] = []
    words: list[str] = []
    current: str | None = None
    for word, tag in tokens:
        kind = None if tag == "O" else tag[2:]
        if kind != current or tag.startswith("B-"):
            if words and current:
                spans.append((" ".join(words), current))
            words, current = [], kind
        if kind:
            words.append(word)
    if words and current:
        spans.append((" ".join(words), current))
    return spans


def instruction_for(entity: str, key: str) -> str:
    """FinGPT-style instruction with options, template and option order picked by hashing `key`."""
    template = TEMPLATES[int(unit_hash(key, "ner_cls/template") * len(TEMPLATES))]
    order = OPTION_ORDERS[int(unit_hash(key, "ner_cls/options") * len(OPTION_ORDERS))]
    return template.format(entity=entity) + "\nOptions: " + ", ".join(order)


class NERCls(ClassificationTask):
    """Entity type of a named entity in an SEC-filing sentence: person, organization or location."""

    id = "ner_cls"
    version = versioned("ner_cls@fingpt")
    description = "FinNER entity-type classification (person/organization/location); FinGPT benchmark test file"
    instruction = TEMPLATES[0].format(entity="{entity}") + "\nOptions: person, organization, location"
    labels = ("person", "organization", "location")
    synonyms = MappingProxyType({"organisation": "organization", "company": "organization", "people": "person"})
    generation = GenerationSpec(max_new_tokens=6)
    source = "fingpt_test/ner_test.jsonl (test), finner/FIN5.txt (train)"
    licence = "CC BY 3.0 (FinNER); test file from FinLoRA (OpenMDW-1.0)"
    data_files = ("fingpt_test/ner_test.jsonl", "finner/FIN5.txt")

    def source_files(self, data_dir: Path, split: str | None = None) -> list[Path]:
        """The test split reads only the test file; train and validation also read it, to drop test sentences."""
        if split == "test":
            return [Path(data_dir) / self.data_files[0]]
        return super().source_files(data_dir, split)

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        """As for any label set, but a quoted echo of the entity ("The entity type of 'X Bank Company'
        is ...") is blanked first, so words inside the entity's name are not read as the answer."""
        if text is not None and mode == "flexible":
            text = _QUOTED.sub(lambda m: m.group(0) if m.group(1).strip().lower() in self.labels else "''", text)
        return super().extract(text, mode)

    def _test(self, data_dir: Path) -> list[Example]:
        path = require_file(Path(data_dir) / "fingpt_test" / "ner_test.jsonl", self.id)
        out = []
        for lineno, row in read_jsonl(path):
            context = field(row, "context", path, lineno)
            target = field(row, "target", path, lineno)
            if target not in self.labels:
                raise DataError(f"{path}:{lineno}: target {target!r} is not one of {', '.join(self.labels)}")
            m = _CONTEXT.match(context)
            if not m:
                raise DataError(f"{path}:{lineno}: field 'context' is not 'Instruction: ...\\nOptions: ...\\nInput: ...\\nAnswer: '")
            entity = _ENTITY.search(m.group("instruction"))
            text = m.group("input")
            out.append(
                self.make_example(
                    f"ner_cls-test-{lineno}",
                    text,
                    target,
                    normalize_text(text),
                    {
                        "instruction": m.group("instruction") + "\nOptions: " + m.group("options"),
                        "entity": entity.group(1) if entity else None,
                        "source_line": lineno,
                    },
                )
            )
        return out

    def _train_pool(self, data_dir: Path, test_groups: set[str]) -> list[tuple[str, str, str, str, dict]]:
        """(key, text, target, group, meta) per training question, before the validation carve."""
        path = require_file(Path(data_dir) / "finner" / "FIN5.txt", self.id)
        out = []
        for sentence in read_conll(path):
            start, tokens = sentence.line, list(zip(sentence.tokens, sentence.tags))
            text = " ".join(word for word, _ in tokens)
            group = normalize_text(text)
            if group in test_groups:
                continue
            spans = [(e, t) for e, t in entity_spans(tokens) if t in ENTITY_TYPES]
            types_of: dict[str, set[str]] = {}
            for entity, kind in spans:
                types_of.setdefault(entity, set()).add(kind)
            for n, (entity, kind) in enumerate(dict.fromkeys(spans)):
                if len(types_of[entity]) > 1:
                    continue  # the same string with two types in one sentence: no single right answer
                key = f"{start}-{n}"
                meta = {"instruction": instruction_for(entity, f"{start}:{entity}"), "entity": entity, "source_line": start}
                out.append((key, text, ENTITY_TYPES[kind], group, meta))
        return out

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        test = self.cached(("test", str(data_dir)), lambda: self._test(Path(data_dir)))
        if split == "test":
            return list(test)
        pool = self.cached(
            ("pool", str(data_dir)), lambda: self._train_pool(Path(data_dir), {e.group for e in test if e.group})
        )
        train, validation = carve_validation(pool, key=lambda r: r[3], salt="ner_cls/validation", fraction=VALIDATION_FRACTION)
        chosen = train if split == "train" else validation
        return [self.make_example(f"ner_cls-{split}-{key}", text, target, group, meta) for key, text, target, group, meta in chosen]
