"""Media with nothing to find: a flat frame (one colour, sensor noise on black, a single gradient, a flat
colour's JPEG) holds no texture, so no textured query is found there: no detection in a still, a frame
searched alone or a calibration case (its best guess stays), and a video's target never held nor
"re-detected" on a flat frame (pipelines.search_inputs.flat_region)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.search import Searcher
from pipelines.search_inputs import flat_region
from pipelines.temporal import REDETECTED, TRACKING, TemporalSearcher

SIZE = (240, 320)  # frame height, width
QUERY = "sample_data/objects/badge/badge_06.png"  # its heat on a grey frame was 0.39, over the 0.36 bar


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def _flat_media() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = SIZE
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    return {"grey": np.full((h, w, 3), 128, np.uint8), "black": np.zeros((h, w, 3), np.uint8),
            "white": np.full((h, w, 3), 255, np.uint8),
            "black with sensor noise": np.clip(rng.normal(3, 3, (h, w, 3)), 0, 255).astype(np.uint8),
            "gradient": np.repeat(np.broadcast_to(ramp, (h, w, 1)), 3, axis=2).astype(np.uint8),
            "JPEG of a flat colour": _jpeg(np.clip(rng.normal(90, 3, (h, w, 3)), 0, 255).astype(np.uint8), 10)}


def _photo() -> np.ndarray:
    return cv2.resize(data.astronaut(), SIZE[::-1], interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def heat_searcher() -> Searcher:
    return Searcher(device="cpu", verify=False)


def test_flat_near_flat_and_gradient_regions_are_flat_a_photos_are_not():
    box = (20, 20, 200, 180)
    for name, medium in _flat_media().items():
        assert flat_region(medium, box), name
    photo = _photo()
    assert not flat_region(photo, box)
    assert not flat_region(cv2.GaussianBlur(photo, (0, 0), 8), box)  # blurred, still shaded
    assert not flat_region(photo, (150, 40, 157, 47))  # a small box: its pixels as they are
    stripes = np.zeros((*SIZE, 3), np.uint8)
    stripes[:, ::4] = stripes[:, 1::4] = 255  # 2-px stripes: flat once averaged over 4 x 4, not flat
    assert not flat_region(stripes, box)
    assert not flat_region(np.zeros((*SIZE, 3), np.uint8), (400, 10, 420, 30))  # outside: not flat


def test_a_flat_medium_gives_no_detection_only_a_best_guess(heat_searcher: Searcher):
    """The heat map's correlation of a flat frame's near-constant features put a textured badge in a grey
    PNG at 0.39 (bar 0.36), a gradient at 0.46; the top peak stays the best guess."""
    for name, medium in _flat_media().items():
        result = heat_searcher.find(QUERY, medium)
        assert result.detections == [], (name, result.detections)
        assert result.best is not None, name
    # Flat around it, the object itself is still found.
    query = cv2.cvtColor(cv2.imread(QUERY), cv2.COLOR_BGR2RGB)
    scene = np.full((*SIZE, 3), 128, np.uint8)
    scene[40:40 + query.shape[0], 60:60 + query.shape[1]] = query
    assert heat_searcher.find(QUERY, scene).detections


def test_calibration_counts_no_detection_in_a_flat_case(heat_searcher: Searcher):
    """Calibration's cases are scored as the search reports them: a flat negative case's peaks were
    false alarms at every threshold under 0.39."""
    from pipelines.calibration import CalibrationCase, calibrate_threshold

    query = cv2.cvtColor(cv2.imread(QUERY), cv2.COLOR_BGR2RGB)
    qh, qw = query.shape[:2]
    scene = _photo()
    scene[40:40 + qh, 60:60 + qw] = query
    cases = [CalibrationCase(query, scene, [(60, 40, 60 + qw, 40 + qh)]),
             CalibrationCase(query, np.full((*SIZE, 3), 128, np.uint8), [])]
    result = calibrate_threshold(heat_searcher, cases, thresholds=[0.3, 0.35])
    assert [row["precision"] for row in result.table] == [1.0, 1.0], result.table


def test_a_flat_video_given_a_box_is_never_redetected():
    """A grey video given --box was "tracking" then "re-detected" in 8 of its 10 frames: the heat and
    the online filter's response on a flat window match their own flat references."""
    searcher = Searcher(device="cpu")
    query = cv2.resize(data.astronaut()[30:190, 150:310], (48, 48), interpolation=cv2.INTER_AREA)
    for value in (0, 128):
        tracker = TemporalSearcher(searcher, searcher.prepare(query), initial_box=(100, 80, 148, 128))
        states = [tracker.step(np.full((*SIZE, 3), value, np.uint8)).state for _ in range(8)]
        assert states[0] == TRACKING, states  # the box given: its frame as given
        assert REDETECTED not in states and TRACKING not in states[1:], (value, states)


def test_a_flat_querys_flat_match_is_still_reported(heat_searcher: Searcher):
    """A flat query (warned) matches flat regions: what it is searched for, so its detections are kept."""
    query = np.zeros((40, 40, 3), np.uint8)
    query[:] = (200, 30, 40)
    scene = _photo()
    scene[60:180, 100:220] = (200, 30, 40)  # the object larger than the query: boxes inside it are flat
    detections = heat_searcher.find(query, scene).detections
    assert any(flat_region(scene, d.box) for d in detections), detections


def test_a_query_cut_from_a_plain_region_finds_itself_and_is_judged_as_a_box_is():
    """A plain blue garment with sensor noise (or a smooth shading) pasted into a photo, the query cut from
    inside it: its raw pixels spread over 2 grey levels, so it counted as textured, while the same pixels
    in the medium made a flat box: the search dropped its own match at 1.0. The query is now judged by
    the medium's rule (flat_region)."""
    from pipelines.search_inputs import query_is_flat

    rng = np.random.default_rng(3)
    photo = _photo()
    garment = np.clip(rng.normal((40, 60, 170), 3, (120, 120, 3)), 0, 255).astype(np.uint8)
    photo[80:200, 100:220] = garment
    query = photo[100:180, 120:200].copy()
    shaded = np.clip(query.astype(np.float32) + np.linspace(0, 30, 80)[None, :, None], 0, 255).astype(np.uint8)
    assert query_is_flat(query, None) and query_is_flat(shaded, None)
    assert not query_is_flat(_photo()[60:200, 100:240], None)
    found = Searcher(device="cpu").find(query, photo).detections
    assert found, "the query's own match was dropped as flat"
    x0, y0, x1, y1 = found[0].box
    assert abs((x0 + x1) / 2 - 160) < 12 and abs((y0 + y1) / 2 - 140) < 12, found[0].box


def test_a_large_box_is_judged_shrunk_to_the_searchs_scale_alike():
    """A 2000-px box was judged at full size (three full-size float copies, 60-320 ms a 4K frame): now
    shrunk to FLAT_MAX_SIDE; a flat one is still flat, a photo's is not."""
    rng = np.random.default_rng(0)
    flat = np.clip(rng.normal(90, 3, (1600, 2000, 3)), 0, 255).astype(np.uint8)
    assert flat_region(flat, (0, 0, 2000, 1600))
    photo = cv2.resize(data.astronaut(), (2000, 1600), interpolation=cv2.INTER_CUBIC)
    assert not flat_region(photo, (0, 0, 2000, 1600))
