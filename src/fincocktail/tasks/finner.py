"""FinNER: person / organization / location entities in SEC filings (Salinas Alvarado et al. 2015).

Version `finner@fingpt-v1` follows FinGPT's NER task (`FinGPT/fingpt-ner`) so scores line up
with it:

* files: FIN5 is train, FIN3 is test (CoNLL lines `token POS - tag`, IO tags PER/ORG/LOC/MISC;
  1164 and 303 sentences).
* MISC is dropped (tagged O), as FinGPT's `ent_dict` knows only PER, ORG and LOC.
* only sentences with at least one PER/ORG/LOC entity are kept, as in FinGPT's data: 511 of
  FIN5 and 98 of FIN3. (The others are mostly headings and boilerplate such as "2 .".)
* a FIN5 sentence whose text also occurs in FIN3 is dropped from train (7 such texts in the
  release, all entity-free headings, so none remains after the previous rule; the rule stays
  to protect other copies of the data). Duplicate sentences within FIN5 share a group and so
  stay on one side of the validation split.
* validation: about 10% of the train sentences, chosen by hash of the normalised sentence.
* input: the sentence's tokens joined by spaces; target: FinGPT's answer wording
  "SILICON VALLEY BANK is an organization, California is a location." in sentence order.
  An adjacent run of same-type IO tags is one entity (the IO scheme cannot separate two
  neighbouring entities of one type).

Scored with entity-level F1 (seqeval over IOB2 sequences placed on the sentence tokens, see
`fincocktail.tasks.scoring` and `fincocktail.metrics.entities`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from fincocktail.tasks.answers import Entity, extract_entities, format_entities
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, versioned
from fincocktail.tasks.conll import Sentence, read_conll
from fincocktail.tasks.generative import GenerativeTask, hub_dataset
from fincocktail.tasks.io import require_file
from fincocktail.tasks.scoring import entities_equal, entity_scores
from fincocktail.tasks.splits import carve_validation, normalize_text

TYPE_NAMES = {"PER": "person", "ORG": "organization", "LOC": "location"}
VALIDATION_FRACTION = 0.1
HUB_ID = "tner/fin"
# tner/fin stores tags as integers; this is its label2id, inverted.
TNER_FIN_TAGS = {0: "O", 1: "B-PER", 2: "B-LOC", 3: "B-ORG", 4: "B-MISC", 5: "I-PER", 6: "I-LOC", 7: "I-ORG", 8: "I-MISC"}


def entities_from_tags(tokens: Sequence[str], tags: Sequence[str]) -> list[Entity]:
    """(text, type) for each PER/ORG/LOC entity, in sentence order; MISC is dropped.

    A run of I- tags of one type is one entity; a B- tag starts a new one.
    """
    out: list[Entity] = []
    current: list[str] = []
    current_type: str | None = None

    def close() -> None:
        if current and current_type in TYPE_NAMES:
            out.append((" ".join(current), TYPE_NAMES[current_type]))

    for token, tag in zip(tokens, tags):
        prefix, _, kind = tag.partition("-")
        if tag == "O":
            close()
            current, current_type = [], None
        elif prefix == "B" or kind != current_type:
            close()
            current, current_type = [token], kind
        else:
            current.append(token)
    close()
    return out


class FinNER(GenerativeTask):
    id = "finner"
    version = versioned("finner@fingpt-v1")
    kind = "extraction"
    description = (
        "Named entities (person, organization, location) in SEC filings, FinGPT's NER format; "
        "train FIN5, test FIN3, sentences with at least one entity; scored by entity-level F1."
    )
    instruction = (
        "Please extract entities and their types from the input sentence, "
        "entity types should be chosen from {person/organization/location}."
    )
    metric = "entity_f1"
    splits = ("train", "validation", "test")
    # The longest answer has 615 characters (~200 tokens): room for it, not for rambling.
    generation = GenerationSpec(max_new_tokens=256, stop=("\n",))
    source = "finner/FIN5.txt (train), finner/FIN3.txt (test) (hub: tner/fin)"
    data_files = ("finner/FIN5.txt", "finner/FIN3.txt")  # every split reads both: train drops test sentences
    licence = "CC BY 3.0"

    # loading --------------------------------------------------------------------------------

    def _sentences(self, data_dir: Path) -> tuple[list[Sentence], list[Sentence]]:
        if self.data_source == "hub":
            return self._hub_sentences()
        train = read_conll(require_file(Path(data_dir) / "finner" / "FIN5.txt", self.id))
        test = read_conll(require_file(Path(data_dir) / "finner" / "FIN3.txt", self.id))
        return train, test

    def _hub_sentences(self) -> tuple[list[Sentence], list[Sentence]]:
        ds = hub_dataset(self.id, HUB_ID)
        out: dict[str, list[Sentence]] = {}
        for split in ("train", "validation", "test"):
            rows = ds[split] if split in ds else []
            out[split] = [
                Sentence(tuple(r["tokens"]), tuple(TNER_FIN_TAGS[int(t)] for t in r["tags"]), i + 1, f"{HUB_ID}:{split}")
                for i, r in enumerate(rows)
            ]
        return out["train"] + out["validation"], out["test"]

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        train, test = self._sentences(data_dir)
        test_texts = {normalize_text(s.text) for s in test}
        if split == "test":
            chosen = [s for s in test if entities_from_tags(s.tokens, s.tags)]
        else:
            pool = [
                s
                for s in train
                if entities_from_tags(s.tokens, s.tags) and normalize_text(s.text) not in test_texts
            ]
            rest, validation = carve_validation(
                pool, key=lambda s: normalize_text(s.text), salt="finner@fingpt-v1/validation", fraction=VALIDATION_FRACTION
            )
            chosen = rest if split == "train" else validation
        return [self._example(s, split) for s in chosen]

    def _example(self, sentence: Sentence, split: str) -> Example:
        entities = entities_from_tags(sentence.tokens, sentence.tags)
        meta: dict[str, Any] = {
            "tokens": list(sentence.tokens),
            "entities": [list(e) for e in entities],
            "source_file": sentence.file,
            "source_line": sentence.line,
        }
        return Example(
            id=f"{self.id}/{split}/{Path(sentence.file).stem}-{sentence.line}",
            input=sentence.text,
            target=format_entities(entities),
            group=normalize_text(sentence.text),
            meta=meta,
        )

    # answers ----------------------------------------------------------------------------------

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_entities(text, mode)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return entities_equal(prediction, example.target)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        tokens = [e.meta.get("tokens") or e.input.split() for e in examples]
        return entity_scores(predictions, [e.target for e in examples], tokens)
