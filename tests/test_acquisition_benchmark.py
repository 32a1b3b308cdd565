"""benchmarks/acquisition.py without the shared data: one line saying why, no traceback; its
on-target rule is OTB's 20 px on the centres."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.benchmark_modules import load_benchmark


def test_the_acquisition_benchmark_skips_with_a_message_without_the_shared_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("acquisition", "acquisition_bench")
    monkeypatch.setattr(bench, "DATA", tmp_path / "absent")
    monkeypatch.setattr(sys, "argv", ["acquisition.py"])
    bench.main()
    out = capsys.readouterr().out
    assert out.startswith("acquisition benchmark skipped:") and "absent" in out
    assert bench.on_target((0, 0, 10, 10), (10, 10, 20, 20))  # centres 14.1 px apart
    assert not bench.on_target((0, 0, 10, 10), (20, 20, 30, 30))  # 28.3 px
    assert not bench.on_target(None, (0, 0, 10, 10))


def test_loading_the_benchmark_leaves_the_repos_train_package_first_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """It put benchmarks/ first on sys.path: a process started afterwards that imports ``train`` afresh (a
    spawned DDP worker of tests/test_trainer.py run later in the same pytest process) got benchmarks/train.py,
    "No module named 'train.correlation'; 'train' is not a package"."""
    import importlib.machinery

    monkeypatch.setattr(sys, "path", list(sys.path))  # what the script adds goes with the test
    load_benchmark("acquisition", "acquisition_bench")
    spec = importlib.machinery.PathFinder.find_spec("train", sys.path)  # as a fresh process finds it
    assert spec is not None and spec.origin == str(Path(__file__).resolve().parents[1] / "train" / "__init__.py")
