"""`synth search` / `synth calibrate --max-side`: the working size media are searched at (it was the
Searcher's alone, 1024 px: a 39x60 coat in an 8K photo, 5x8 px there, was missed without a word)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from skimage import data

from augment.imageio import save_image
from cli_checks import assert_one_line_error, run_cli

BOX = (1500, 300, 1516, 324)  # the object: 16x24 px in a 2400x600 medium


@pytest.fixture
def wide(tmp_path) -> tuple[Path, Path]:
    obj = cv2.resize(data.astronaut()[30:230, 150:290], (16, 24), interpolation=cv2.INTER_AREA)
    medium = cv2.resize(data.coffee(), (2400, 600), interpolation=cv2.INTER_LINEAR)
    medium[BOX[1]:BOX[3], BOX[0]:BOX[2]] = obj
    save_image(tmp_path / "query.png", obj)
    save_image(tmp_path / "wide.png", medium)
    return tmp_path / "query.png", tmp_path / "wide.png"


def search(tmp_path: Path, images: tuple[Path, ...], name: str, *flags: str):
    out = tmp_path / name
    result = run_cli("search", *images, "--out", out, "--untrained", "--no-verify", "--device", "cpu",
                     "--workers", "1", *flags)
    assert result.exit_code == 0, result.output
    line = json.loads((out / "detections.jsonl").read_text().splitlines()[0])
    x0, y0, x1, y1 = line["best"]["box"]
    return result, BOX[0] <= (x0 + x1) / 2 <= BOX[2] and BOX[1] <= (y0 + y1) / 2 <= BOX[3]  # found there


def test_a_query_too_small_at_the_working_size_is_said_once_and_max_side_finds_it(tmp_path, wide):
    import shutil

    shutil.copy(wide[1], tmp_path / "wide2.png")  # once per run, not once per medium
    result, found = search(tmp_path, (*wide, tmp_path / "wide2.png"), "small", "--max-side", "512")
    warnings = [line for line in result.output.splitlines() if "at the search's working size" in line]
    assert len(warnings) == 1 and str(wide[1]) in warnings[0] and "pass --max-side 1024" in warnings[0], result.output
    assert not found  # missed, as the warning says (its best peak in the coffee, 1500 px off)
    result, found = search(tmp_path, wide, "larger", "--max-side", "1024")
    assert "working size" not in result.output and found


def test_a_bad_max_side_is_one_line(tmp_path, wide):
    for value, says in (("4", "--max-side must be a whole number of pixels, at least 8, not 4"),
                        ("big", "valid integer")):
        result = run_cli("search", *wide, "--out", tmp_path / "found", "--untrained", "--max-side", value)
        assert_one_line_error(result, 2, "--max-side", says)
        assert not (tmp_path / "found").exists()
    result = run_cli("calibrate", "--photos", tmp_path, "--out", tmp_path / "t.json", "--max-side", "0")
    assert_one_line_error(result, 2, "--max-side must be a whole number of pixels")


def test_a_calibration_of_another_working_size_is_refused(tmp_path, wide):
    """The working size moves the heat a threshold cuts (`synth calibrate` records it)."""
    from pipelines.calibration_report import search_settings
    from pipelines.search import Searcher

    assert search_settings(Searcher(device="cpu", untrained=True, verify=False, max_side=640))["max_side"] == 640
    report = tmp_path / "threshold.json"
    report.write_text(json.dumps({"threshold": 0.4, "f1": 0.5, "model": "untrained", "verify": False,
                                  "max_side": 1024, "table": []}))
    result = run_cli("search", *wide, "--out", tmp_path / "found", "--untrained", "--no-verify", "--device", "cpu",
                     "--max-side", "512", "--threshold", report)
    assert_one_line_error(result, 2, str(report), "max_side 1024, not 512", "--max-side")
