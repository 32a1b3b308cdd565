"""README's Python examples run as written: a newcomer copies them, so an API change that breaks one
fails here instead of in their hands. The files they name are made first (a small expansion of
sample_data/, generated query and street images) in a scratch working folder. Its shell examples' commands
and options are checked in test_doc_recipes.py."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from augment.imageio import save_image
from cli_checks import run_cli

REPO = Path(__file__).resolve().parents[1]


def _snippets() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.S | re.M)


def _snippet(needle: str) -> str:
    found = [code for code in _snippets() if needle in code]
    assert len(found) == 1, f"README: expected one Python example with {needle!r}, found {len(found)}"
    return found[0]


def test_readme_has_the_python_examples_these_tests_run() -> None:
    assert len(_snippets()) == 3, "a new Python example in README.md: add a test that runs it here"


def test_the_shard_reading_example_reads_an_expanded_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("expand", REPO / "sample_data/objects", "-b", REPO / "sample_data/backgrounds",
                     "-o", "expanded/sample", "-n", 2, "--workers", 1, "--seed", 0)
    assert result.exit_code == 0, result.output
    scope: dict = {}
    exec(_snippet("pq.read_table"), scope)  # noqa: S102 - README's own example, run as a user would
    image, instances = scope["image"], scope["instances"]
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert instances.shape[:2] == image.shape[:2] and instances.max() >= 1  # at least one object's id


def test_the_search_example_finds_the_jacket_in_the_street(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    jacket = cv2.resize(data.astronaut()[30:190, 150:310], (80, 80), interpolation=cv2.INTER_AREA)
    street = cv2.resize(data.coffee(), (320, 240), interpolation=cv2.INTER_AREA)
    street[60:140, 150:230] = jacket
    save_image(tmp_path / "jacket.png", jacket)
    save_image(tmp_path / "street.jpg", street)
    scope: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(_snippet("Searcher()"), scope)  # noqa: S102 - README's own example, run as a user would
    result = scope["result"]
    assert result.best is not None and result.detections, printed.getvalue()
    x0, y0, x1, y1 = result.detections[0].box
    assert abs((x0 + x1) / 2 - 190) < 20 and abs((y0 + y1) / 2 - 100) < 20, result.detections[0].box
    assert scope["heat"].shape == street.shape[:2] and scope["picture"].shape == street.shape
    assert str(result.detections[0].score) in printed.getvalue()  # the loop printed each detection


def test_the_onnx_example_runs_the_exported_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason='onnxruntime not installed (pip install -e ".[test]")')
    monkeypatch.chdir(tmp_path)
    result = run_cli("export-onnx", "--out", "search.onnx", "--query-size", 64, "--medium-size", 128, "--no-check")
    assert result.exit_code == 0, result.output
    shapes = {i.name: i.shape for i in onnxruntime.InferenceSession("search.onnx").get_inputs()}
    rng = np.random.default_rng(0)
    scope: dict = {name: rng.random(shapes[name], dtype=np.float32) for name in ("query", "medium")}
    exec(_snippet("onnxruntime.InferenceSession"), scope)  # noqa: S102 - README's own example, run as a user would
    heat = scope["heat"]
    assert heat.shape == (1, 1, 128, 128) and 0.0 <= heat.min() <= heat.max() <= 1.0
