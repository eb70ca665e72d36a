"""`Task.source_files`: each task names exactly the files its loader opens, and the cocktail manifest hashes them.

The files a loader really opens are recorded by wrapping the file-opening calls the readers use
(`io.open`, which `pathlib` goes through, and `Path.read_bytes` / `read_text`) while the split
loads, so a stale `data_files` entry or a loader reading a new file fails here.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fincocktail.cocktail import parse_cocktail, prepare_cocktail, source_file_hashes
from fincocktail.tasks.custom import load_user_tasks
from fincocktail.tasks.registry import BUILTIN_TASKS, get_task
from fincocktail.tasks.sentiment import FPB, TFNS


@contextmanager
def opened_files(monkeypatch: pytest.MonkeyPatch, under: Path) -> Iterator[set[Path]]:
    """The resolved paths under `under` opened (for reading or otherwise) inside the block."""
    root = under.resolve()
    seen: set[Path] = set()

    def note(file: object) -> None:
        if isinstance(file, (str, os.PathLike)):
            path = Path(os.fspath(file)).resolve()
            if path.is_relative_to(root):
                seen.add(path)

    real_open = io.open
    real_read_bytes = pathlib.Path.read_bytes
    real_read_text = pathlib.Path.read_text

    def open_(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        note(file)
        return real_open(file, *args, **kwargs)

    def read_bytes(self):  # type: ignore[no-untyped-def]
        note(self)
        return real_read_bytes(self)

    def read_text(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        note(self)
        return real_read_text(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(io, "open", open_)
        m.setattr(builtins, "open", open_)
        m.setattr(pathlib.Path, "read_bytes", read_bytes)
        m.setattr(pathlib.Path, "read_text", read_text)
        yield seen


def _resolved(paths: list[Path]) -> set[Path]:
    return {Path(p).resolve() for p in paths}


@pytest.mark.parametrize("task_id", list(BUILTIN_TASKS))
def test_builtin_source_files_are_exactly_what_load_opens(task_id: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    every_split: set[Path] = set()
    for split in get_task(task_id).splits:
        task = get_task(task_id)  # a fresh instance per split: loaders cache parsed files per instance
        with opened_files(monkeypatch, data_dir) as seen:
            examples = task.load(split, data_dir)
        assert examples, f"{task_id}/{split} loaded nothing"
        listed = task.source_files(data_dir, split=split)
        assert all(p.is_file() for p in listed), listed
        assert _resolved(listed) == seen, f"{task_id}/{split}: listed {sorted(map(str, listed))}, opened {sorted(map(str, seen))}"
        every_split |= seen
    all_listed = get_task(task_id).source_files(data_dir)
    assert len(all_listed) == len(set(all_listed))
    assert _resolved(all_listed) == every_split


def test_split_dependent_files(data_dir: Path) -> None:
    gsm = get_task("gsm8k")
    assert [p.name for p in gsm.source_files(data_dir, split="test")] == ["test.jsonl"]
    assert [p.name for p in gsm.source_files(data_dir, split="validation")] == ["train.jsonl"]
    assert get_task("ner_cls").source_files(data_dir, split="test") == [data_dir / "fingpt_test" / "ner_test.jsonl"]


def test_hub_source_reads_no_local_file(data_dir: Path) -> None:
    assert FPB(source="hub").source_files(data_dir) == []
    assert source_file_hashes(TFNS(source="hub"), data_dir) is None


def test_cocktail_manifest_hashes_real_files(data_dir: Path) -> None:
    data = prepare_cocktail(parse_cocktail({"ingredients": ["fpb", "tfns"]}), data_dir)
    manifest = data.manifest()
    expected = {
        "fpb": ["fpb/Sentences_50Agree.txt", "fingpt_test/fpb_test.jsonl"],
        "tfns": ["tfns/sent_train.csv", "tfns/sent_valid.csv"],
    }
    for task_id, names in expected.items():
        hashes = manifest["sources"][task_id]["files_sha256"]
        assert hashes == {n: hashlib.sha256((data_dir / n).read_bytes()).hexdigest() for n in names}
    json.dumps(manifest)  # it still serialises


def test_cocktail_lists_only_train_files(data_dir: Path) -> None:
    hashes = source_file_hashes(get_task("gsm8k"), data_dir)
    assert hashes is not None and list(hashes) == ["gsm8k/train.jsonl"]


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_user_task_source_files_per_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "".join(json.dumps({"text": f"Sentence {i}.", "tone": ["up", "down"][i % 2]}) + "\n" for i in range(30))
    for name in ("one.jsonl", "tr.jsonl", "te.jsonl"):
        _write(tmp_path / name, rows)
    common = "kind: classification\nfields: {input: text, label: tone}\nlabels: [up, down]\ninstruction: Tone?\n"
    _write(tmp_path / "one.yaml", "id: one\ndata: one.jsonl\n" + common)
    _write(tmp_path / "two.yaml", "id: two\nfiles: {train: tr.jsonl, test: te.jsonl}\n" + common)
    tasks = load_user_tasks(tmp_path)
    assert tasks["one"].source_files(None) == [tmp_path / "one.jsonl"]
    assert tasks["two"].source_files(None) == [tmp_path / "tr.jsonl", tmp_path / "te.jsonl"]
    for task in tasks.values():
        for split in task.splits:
            with opened_files(monkeypatch, tmp_path) as seen:
                task.load(split, None)
            assert _resolved(task.source_files(None, split=split)) == seen, (task.id, split)
