"""Search and calibrate given valid files of degenerate geometry or values, found by QA as a user
whose queries and media are odd: a query far wider than a thin medium is tall. Small generated
images; the untrained network on the CPU."""

from __future__ import annotations

import json
import math

import cv2

import numpy as np
import pytest

from augment.imageio import InputError
from pipelines.search import Searcher
from pipelines.search_levels import plan_levels


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return Searcher(untrained=True, device="cpu", verify=False)


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_wide_query_in_a_tall_thin_medium_is_searched_not_a_zero_division():
    """A 200 x 8 query in a 8-px-wide medium: at the largest size that fits, the query's height
    rounded to 0 px before it was fitted to the medium, a ZeroDivisionError in _level."""
    levels = plan_levels((1.6, 41.0), (1024, 2), (0.5, 1.0, 2.0))
    assert levels and all(min(level.query_size) >= 1 for level in levels)


def test_a_wide_query_in_a_tall_thin_medium_gives_a_box_inside_it(searcher):
    result = searcher.find(_noise(8, 200), _noise(5000, 8, seed=1))
    line = json.loads(json.dumps(result.to_json(), allow_nan=False))
    x0, y0, x1, y1 = line["best"]["box"]
    assert 0 <= x0 < x1 <= 8 and 0 <= y0 < y1 <= 5000
    assert math.isfinite(line["best"]["score"])


@pytest.mark.parametrize("value", [0.3, 0.8])
def test_a_float_query_mask_means_the_same_in_float32_and_float64(value):
    """A query_mask of floats was soft weights in float32 but 'non-zero = object' in float64 (and
    float16): 0.3 was an empty mask in one and the whole object in the other."""
    from pipelines.search_inputs import load_query

    query = _noise(40, 40)
    read = []
    for dtype in (np.float32, np.float64, np.float16):
        mask = np.zeros((40, 40), dtype)
        mask[5:35, 5:35] = value
        try:
            read.append(("mask", load_query(query, mask)[1].round(3).tolist()))
        except InputError as error:
            read.append(("error", str(error)))
    assert read[0] == read[1] == read[2]
    if value < 0.5:  # no pixel of the object: one line that says why
        assert "values stay under 0.5, the highest 0.3" in read[0][1]


def test_a_query_mask_of_a_few_scattered_pixels_is_refused_as_a_tiny_query_is():
    """Alpha on two pixels at opposite corners of a 400 x 400 query spans 400 x 400 px, so the 8-px
    bar let it through: searched with a kernel of nothing, its detections had an area of 1 px."""
    from pipelines.search_inputs import load_query

    rgba = np.dstack([_noise(400, 400), np.zeros((400, 400), np.uint8)])
    rgba[0, 0, 3] = rgba[399, 399, 3] = 255
    with pytest.raises(InputError, match="its mask holds 2 object pixels; at least 32"):
        load_query(rgba)
    rgba[100:108, 200:208, 3] = 255  # an 8 x 8 object and the specks: searched
    assert load_query(rgba)[1].shape == (400, 400)
    alpha = np.zeros((9, 9), np.uint8)
    cv2.circle(alpha, (4, 4), 4, 255, -1)  # a solid 9-px disk (under 64 pixels) is an object, no speck
    assert load_query(np.dstack([_noise(9, 9), alpha]))[1].shape == (9, 9)


def test_a_query_mask_of_exactly_one_half_is_the_object():
    """A float mask of 0.5 was 'empty' to the crop (> 0.5) while its fill and silhouette count
    0.5 as the object (>= 0.5)."""
    from pipelines.search_inputs import load_query

    mask = np.zeros((40, 40), np.float32)
    mask[4:36, 4:36] = 0.5
    assert load_query(_noise(40, 40), mask)[1].shape == (32, 32)


def test_a_small_fused_score_is_written_as_its_label_shows_it_not_zero():
    """detections.jsonl rounded scores to four decimals: a fused best guess of heat 0.02 (3.4e-05)
    was written 0.0 while its highlight said 'best guess 3.4e-05', and --threshold 0.01's fused bar
    (9.3e-06) was written 0.0 (a best guess of 0.0 'reached' it)."""
    from augment.draw_labels import format_score
    from pipelines.detections import Detection
    from pipelines.search import Result

    best = Detection((0, 0, 8, 8), 3.42e-05, 64, heat=0.02, verified=False)
    line = best.to_json()
    assert line["score"] > 0 and format_score(line["score"]) == format_score(best.score) == "3.4e-05"
    result = Result(np.zeros((8, 8), np.float32), [], threshold=9.29e-06, best=best, score_kind="fused",
                    heat_threshold=0.01)
    written = json.loads(json.dumps(result.to_json()))
    assert written["threshold"] == 9.29e-06 and written["best"]["score"] > written["threshold"]
    assert Detection((0, 0, 8, 8), 0.73456, 64).to_json()["score"] == 0.7346  # four decimals as before


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_a_highlighted_video_of_odd_size_keeps_its_last_column_and_row(tmp_path, suffix):
    """The encoders take even sizes: a 13 x 9 medium's highlight came out 12 x 8, its last column and
    row (a box drawn along that edge) cut away. Now one black pixel pads each odd side."""
    import cv2

    from pipelines.video_writer import VideoWriter

    frame = np.zeros((9, 13, 3), np.uint8)
    frame[:, -1] = frame[-1, :] = 255
    with VideoWriter(tmp_path / f"odd{suffix}", 10.0, 13, 9) as writer:
        writer.write(frame)
    capture = cv2.VideoCapture(str(tmp_path / f"odd{suffix}"))
    ok, read = capture.read()
    capture.release()
    assert ok and read.shape[:2] == (10, 14)
    assert read[:9, 12].mean() > 128 and read[8, :13].mean() > 128  # the medium's last column and row


def test_scales_given_twice_or_unsorted_are_the_same_search_to_a_calibration(tmp_path):
    """`synth calibrate --scales 1,1,2` recorded [1, 1, 2]; `synth search --scales 2,1 --threshold`
    with its report was refused as another search, though the levels searched are the same."""
    from pipelines.search_commands import check_calibrated_network, search_settings

    calibrated = Searcher(untrained=True, device="cpu", verify=False, query_scales=(1.0, 1.0, 2.0))
    searched = Searcher(untrained=True, device="cpu", verify=False, query_scales=(2.0, 1.0))
    report = {"threshold": 0.4, "model": "untrained", "file": str(tmp_path / "t.json"), **search_settings(calibrated)}
    check_calibrated_network(report, None, searched)  # no InputError
    assert report["query_scales"] == [1.0, 2.0]


def test_query_scales_of_one_number_or_of_no_numbers_is_one_line_and_an_array_is_taken():
    """Searcher(query_scales=1.0) was TypeError "'float' object is not iterable", [1, '2'] "'<=' not
    supported", and a numpy array of scales 'the truth value of an array is ambiguous'."""
    from pipelines.search_levels import check_scales

    for given in (1.0, [1, "2"], [None], [True], {1: 2}, iter([1.0])):
        with pytest.raises(InputError, match="query scales must be a list of numbers"):
            check_scales(given)
    check_scales(np.array([0.5, 2.0]))
    assert Searcher(untrained=True, device="cpu", verify=False,
                    query_scales=np.array([2.0, 1.0])).query_scales == (1.0, 2.0)


@pytest.mark.parametrize("box", [(60, 40, 20, 30), (float("nan"), 0, 10, 10), (0, 0, 10), (5, 5, 5, 9)])
def test_a_calibration_case_whose_box_is_no_box_is_one_line_naming_it(searcher, box):
    """A true box no detection can match (COCO's x, y, w, h: x1 < x0; NaN; three numbers; no width)
    was a miss at every threshold: F1 0 and the threshold 0.5, without a word."""
    from pipelines.calibration import CalibrationCase, calibrate_threshold

    cases = [CalibrationCase(_noise(40, 40), _noise(64, 96), []), CalibrationCase(_noise(40, 40), _noise(64, 96), [box])]
    with pytest.raises(InputError, match=r"cases\[1\]\.boxes\[0\] must be four finite numbers x0, y0, x1, y1"):
        calibrate_threshold(searcher, cases)


def test_an_elongated_querys_tiles_step_at_least_half_a_window():
    """A 16 x 1500 query in a 1500 x 600 photo is zoomed 4x (its 11-px height): its kernel reached
    further than a tile's side, the tiles stepped 8 px at a time, 860 of them (7396 in a 1500 x 1500
    photo), each encoded: a 10 x 300 query in a 640 x 480 photo ran for minutes."""
    from pipelines.search_tiles import tiles

    assert len(tiles(410, 1024, 4.0, overlap=1056)) <= 2
    parts = tiles(1024, 2048, 4.0, overlap=600)
    assert len(parts) <= 4 * 4
    ordinary = tiles(1024, 1024, 4.0, overlap=100)  # an ordinary kernel's tiles are as they were
    assert len(ordinary) == 16 and max(y1 - y0 for y0, y1, _, _ in ordinary) == 344
    from pipelines.search_levels import MAX_TILE_GROWTH, MAX_TILE_PIXELS
    for reach in (520, 1056, 3000):  # however far the kernel reaches, no window past the growth allowed
        widest = max((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in tiles(2048, 2048, 4.0, overlap=reach))
        assert widest * 16 <= MAX_TILE_PIXELS * MAX_TILE_GROWTH
        assert len(tiles(2048, 2048, 4.0, overlap=reach)) <= 5 * 5


def test_a_calibration_that_finds_nothing_says_its_threshold_is_no_calibration(tmp_path, monkeypatch):
    """F1 0 at every threshold (16-px labelled photos, objects the search cannot see) wrote threshold 0.5
    with exit 0; only the printed 'F1 0.000' said so."""
    import pipelines.search as search
    from cli_checks import run_cli
    from pipelines.calibration import Calibration
    from shard_factory import make_shards

    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    monkeypatch.setattr(search, "calibrate_threshold",
                        lambda searcher, cases: Calibration(0.5, 0.0, 1.0, 0.0, []))
    result = run_cli("calibrate", "--shards", tmp_path / "shards", "--untrained", "--out", tmp_path / "cal.json")
    assert result.exit_code == 0, result.output
    assert "warning: no threshold found a single object" in result.stderr and "placeholder" in result.stderr
