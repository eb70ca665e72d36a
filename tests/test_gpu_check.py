"""bench/gpu_check.py, the device check, in what runs without a GPU: its arguments, the
GPU-vs-CPU comparison, the wheel handling, and the clear refusal when there is no GPU."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def gpu_check(load_bench):
    return load_bench("gpu_check")


def test_arguments_default_to_the_cpu_study_slice(gpu_check):
    args = gpu_check.parse_args([])
    assert (args.model, args.task, args.train_examples, args.eval_examples, args.device) == ("smollm2-135m-instruct", "fpb", 512, 400, "cuda")
    assert gpu_check.parse_args(["--device", "cuda:1", "--min-agreement", "1"]).device == "cuda:1"


@pytest.mark.parametrize("argv", [["--device", "cpu"], ["--max-steps", "0"], ["--min-agreement", "1.5"]])
def test_bad_arguments_are_usage_errors(gpu_check, argv, capsys):
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(argv)
    assert info.value.code == 2


def test_compare_predictions_matches_by_id(gpu_check):
    gpu = [{"id": "a", "extracted": "positive"}, {"id": "b", "extracted": "neutral"}, {"id": "c", "extracted": "negative"}]
    cpu = [{"id": "c", "extracted": "negative"}, {"id": "a", "extracted": "positive"}, {"id": "b", "extracted": "positive"}]
    agreement = gpu_check.compare_predictions(gpu, cpu)
    assert (agreement.n, agreement.same, agreement.missing, agreement.examples) == (3, 2, 0, ["b"])
    assert agreement.share == pytest.approx(2 / 3)
    assert gpu_check.compare_predictions(gpu, gpu[:2]).missing == 1  # an example in one run only counts as different
    assert gpu_check.compare_predictions([], []).share == 0.0


def test_ninety_nine_percent_passes_and_less_does_not(gpu_check):
    rows = [{"id": str(i), "extracted": "x"} for i in range(100)]
    one_off = rows[:99] + [{"id": "99", "extracted": "y"}]
    assert gpu_check.compare_predictions(rows, one_off).share >= 0.99
    two_off = one_off[:98] + [{"id": "98", "extracted": "y"}, one_off[99]]
    assert gpu_check.compare_predictions(rows, two_off).share < 0.99


def test_missing_packages_reads_installed_versions(gpu_check):
    assert gpu_check.missing_packages({"pytest": "1.0"}) == []
    assert gpu_check.missing_packages({"pytest": "999.0", "no-such-package-xyz": "1"}) == ["pytest", "no-such-package-xyz"]
    assert gpu_check._version_tuple("5.20.0rc1") == (5, 20, 0) and gpu_check._version_tuple("2.11.0+cu130") == (2, 11, 0)


def test_a_wheel_in_pieces_is_joined(gpu_check, tmp_path):
    data = bytes(range(256)) * 10
    (tmp_path / "big-1.0-py3-none-any.whl.part-aa").write_bytes(data[:1000])
    (tmp_path / "big-1.0-py3-none-any.whl.part-ab").write_bytes(data[1000:])
    assert gpu_check.join_parts(tmp_path) == [tmp_path / "big-1.0-py3-none-any.whl"]
    assert (tmp_path / "big-1.0-py3-none-any.whl").read_bytes() == data


def test_without_a_gpu_it_stops_with_a_clear_message(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "torch sees no CUDA GPU" in err and "tested on CPUs" in err
    assert not (tmp_path / "o").exists()  # nothing was trained or written


def test_a_missing_wheel_folder_is_named(gpu_check, capsys, tmp_path):
    assert gpu_check.main(["--wheels", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_the_report_prints_the_figures(gpu_check, capsys):
    ev = {"gpu": {"examples_per_s": 900.0}, "cpu": {"examples_per_s": 40.0}, "peak_gpu_mb": 812.0, "agreement": 1.0}
    report = {"gpu": "NVIDIA H100", "torch": "2.11", "training": {"steps": 64, "tokens_per_s": 51234.0, "peak_gpu_mb": 2048.0},
              "eval": {"choice": ev, "generate": ev}, "wall_time_s": 180.0, "passed": True}
    gpu_check.print_report(report, 0.99)
    out = capsys.readouterr().out
    assert "51234 tokens/s" in out and "900.0 examples/s" in out and "100.0%" in out and "PASSED" in out
    json.dumps(report)


def test_prepare_pins_what_is_installed_here(gpu_check):
    import importlib.metadata

    assert gpu_check.pinned("pydantic") == f"pydantic=={importlib.metadata.version('pydantic')}"
    assert gpu_check.pinned("no-such-package-xyz") == "no-such-package-xyz"


def test_the_check_runs_end_to_end_with_the_tiny_model_on_the_cpu(gpu_check, monkeypatch, tiny_model_dir, data_dir, tmp_path, one_thread):
    """Everything but the GPU: the 'GPU' side runs on the CPU too, with torch.cuda's memory and
    name calls faked, so the script's own plumbing is known to work before a GPU runs it."""
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 123 * 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    args = gpu_check.parse_args(["--model", str(tiny_model_dir), "--train-examples", "16", "--max-steps", "2", "--eval-examples", "12",
                                 "--generate-examples", "4", "--batch-size", "4", "--data-dir", str(data_dir), "--out", str(tmp_path)])
    args.device = "cpu"  # there is no GPU here
    report = gpu_check.run_check(args)
    assert report["gpu"] == "Fake GPU" and report["training"]["steps"] == 2 and report["training"]["peak_gpu_mb"] == 123.0
    assert set(report["eval"]) == {"choice", "generate"}
    assert report["eval"]["choice"]["gpu"]["n"] == 12 and report["eval"]["generate"]["cpu"]["n"] == 4
    assert all(e["agreement"] == 1.0 for e in report["eval"].values()) and report["passed"]  # the same device twice
    json.dumps(report)
