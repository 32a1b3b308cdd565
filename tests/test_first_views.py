"""The online filter set from synthetic views of the first frame (pipelines/first_views.py,
``TemporalConfig.first_views``): the views are the same run to run, each view's label sits where
its geometric transform moved the target (and the filter set from them peaks there), bad settings
are one line, and with no views the track is the frame-alone filter's to the bit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.first_views import ViewsConfig, first_views, photometric_views
from pipelines.online_filter import CorrelationFilter
from pipelines.scale_filter import ScaleFilter
from pipelines.search import Searcher
from pipelines.temporal import TemporalConfig, TemporalSearcher
from tests.benchmark_modules import load_benchmark

# The generated video's pieces and the module fixtures (one torch thread, one Searcher) are
# test_temporal's.
from tests.test_temporal import SIDE, _lookalike_video, _target, one_thread, searcher  # noqa: F401

GEOMETRY_ONLY = dict(lighting=0.0, motion_blur=0.0, lens_blur=0.0, resolution=0.0, noise=0.0)


def _blob_frame(center: tuple[float, float]) -> np.ndarray:
    """A dark 320 x 240 frame with a bright round Gaussian blob (sigma 6 px) centred on ``center``:
    its centroid is its centre whatever the view's rotation and scale."""
    ys, xs = np.mgrid[0:240, 0:320].astype(np.float64) + 0.5
    blob = np.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * 6.0 ** 2))
    return np.repeat((blob * 250).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(view: np.ndarray) -> tuple[float, float]:
    weight = view[..., 0].astype(np.float64)
    weight[weight < 20] = 0  # the blob, not the edge replication's faint tail
    ys, xs = np.mgrid[0:view.shape[0], 0:view.shape[1]] + 0.5
    return float((xs * weight).sum() / weight.sum()), float((ys * weight).sum() / weight.sum())


def test_each_view_label_is_where_its_transform_moved_the_target() -> None:
    # The target 10 px right of and 6 px above the window's centre (as after a first look whose peak
    # was off the middle); views shifted up to 0.4 x 48 px, turned up to 30 degrees, scaled and
    # mirrored.
    center, zoom, side = (150.0, 110.0), 1.3, 144
    target = (side / 2 + 10, side / 2 - 6)
    frame = _blob_frame((center[0] + 10 / zoom, center[1] - 6 / zoom))
    config = ViewsConfig(count=8, shift=0.4, rotate=30.0, scale=0.2, flip=0.5, **GEOMETRY_ONLY)
    views, places = first_views(frame, center, zoom, side, target, 48.0, config)
    assert len(views) == len(places) == 8 and all(v.shape == (side, side, 3) for v in views)
    moved = [float(np.hypot(p[0] - target[0], p[1] - target[1])) for p in places]
    assert max(moved) > 8  # the views do move the target (the test could fail)
    for view, place in zip(views, places):
        x, y = _centroid(view)
        assert abs(x - place[0]) < 0.6 and abs(y - place[1]) < 0.6, (x, y, place)


def test_views_are_the_same_run_to_run_and_follow_the_seed() -> None:
    frame = cv2.resize(_target(), (320, 240))
    args = (frame, (160.0, 120.0), 1.0, 144, (72.0, 72.0), 48.0)
    first, places = first_views(*args, ViewsConfig(count=6, lighting=1.0, motion_blur=1.0, noise=1.0))
    again, places_again = first_views(*args, ViewsConfig(count=6, lighting=1.0, motion_blur=1.0, noise=1.0))
    other, _ = first_views(*args, ViewsConfig(count=6, lighting=1.0, motion_blur=1.0, noise=1.0, seed=1))
    assert places == places_again and all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_filter_set_from_shifted_views_peaks_where_each_view_put_the_target(searcher: Searcher) -> None:
    # Real features of a generated window: the filter set from the window and 6 shifted views
    # answers each view at its own label (within a cell), not at the window's centre.
    frames, truth = _lookalike_video()
    frame = frames[0]
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()),
                               TemporalConfig(first_views=ViewsConfig(count=6, shift=0.5, rotate=0.0, scale=0.0,
                                                                      **GEOMETRY_ONLY)),
                               initial_box=(truth[0][0] - SIDE / 2, truth[0][1] - SIDE / 2,
                                            truth[0][0] + SIDE / 2, truth[0][1] + SIDE / 2))
    tracker.step(frame)
    assert tracker.filter is not None
    side = tracker.window_side
    zoom = tracker.template_size[0] / tracker.height
    views, places = first_views(frame, truth[0], zoom, side, (side / 2, side / 2),
                                float(tracker.template_size[0]), tracker.config.first_views)
    features = tracker.net.features_many(views)
    far = 0
    for feature, (px, py) in zip(features, places):
        response = tracker.filter.response(feature)
        y, x = np.unravel_index(int(np.argmax(response)), response.shape)
        assert abs(y + 0.5 - py / 8) <= 1.0 and abs(x + 0.5 - px / 8) <= 1.0, ((y, x), (py / 8, px / 8))
        far += np.hypot(px - side / 2, py - side / 2) > 12
    assert far >= 3  # most views moved the target more than a cell and a half


def test_correlation_filter_initialised_from_shifted_copies_answers_at_their_places() -> None:
    rng = np.random.default_rng(0)
    blob = rng.normal(size=(16, 5, 5)).astype(np.float32)
    maps, places = [], []
    for y, x in ((13, 13), (9, 16), (16, 10)):
        features = 0.1 * rng.normal(size=(16, 26, 26)).astype(np.float32)
        features[:, y - 2:y + 3, x - 2:x + 3] += blob
        maps.append(features)
        places.append((y + 0.5, x + 0.5))
    cf = CorrelationFilter((26, 26), (5, 5))
    cf.initialise(maps, places)
    for features, (y, x) in zip(maps, places):
        response = cf.response(features)
        assert np.unravel_index(int(np.argmax(response)), response.shape) == (int(y), int(x))
    single = CorrelationFilter((26, 26), (5, 5))
    single.initialise(maps[:1], places[:1])
    reference = CorrelationFilter((26, 26), (5, 5))
    reference.update(maps[0], places[0])  # one map: exactly the frame-alone filter
    np.testing.assert_allclose(single.numerator, reference.numerator, rtol=1e-6)
    with pytest.raises(ValueError, match="one place \\(and weight\\) per feature map"):
        cf.initialise(maps, places[:2])


def _track(searcher: Searcher, config: TemporalConfig) -> list[dict]:
    frames, truth = _lookalike_video()
    x, y = truth[0]
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), config,
                               initial_box=(x - SIDE / 2, y - SIDE / 2, x + SIDE / 2, y + SIDE / 2))
    return [tracker.step(frame).to_json() | {"confidence": tracker.filter_reference} for frame in frames[:10]]


def test_views_on_is_deterministic_and_off_is_the_frame_alone_filter(searcher: Searcher) -> None:
    on = TemporalConfig(first_views=ViewsConfig(count=8, scale_views=8))
    first, again = _track(searcher, on), _track(searcher, on)
    assert first == again
    plain = _track(searcher, TemporalConfig())
    # count 0: the other view settings are never read, the track is the default's to the bit
    off = _track(searcher, TemporalConfig(first_views=ViewsConfig(count=0, shift=0.9, rotate=45.0, seed=7)))
    assert off == plain
    assert [r["confidence"] for r in first] != [r["confidence"] for r in plain]  # the views do act


@pytest.mark.parametrize("settings, message", [
    (dict(count=-1), "count must be an integer"),
    (dict(count=100), "count must be an integer"),
    (dict(shift=1.5), "shift in"),
    (dict(scale=1.0), "scale in"),
    (dict(noise=2.0), "noise is a probability"),
    (dict(seed=-3), "seed must be"),
    (dict(scale_views=-1), "scale_views must be"),
    (dict(view_weight=0.0), "view_weight must lie"),
])
def test_bad_view_settings_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        ViewsConfig(**settings)
    assert "\n" not in str(error.value)


def _tracking():
    return load_benchmark("tracking", "tracking_benchmark")


def test_benchmark_sets_views_by_dotted_name_and_refuses_bad_ones() -> None:
    config = _tracking().temporal_config(["first_views.count=8", "first_views.rotate=5", "filter_candidates=6"])
    assert (config.first_views.count, config.first_views.rotate, config.filter_candidates) == (8, 5.0, 6)
    with pytest.raises(SystemExit, match="count must be an integer"):
        _tracking().temporal_config(["first_views.count=-2"])
    with pytest.raises(SystemExit, match="is not a number"):
        _tracking().temporal_config(["first_views.count=many"])


def test_scale_filter_set_from_photometric_views_still_reads_a_size_change() -> None:
    from tests.test_online_filters import _scene_with

    first, center = _scene_with(1.0)
    rgb = np.repeat((first * 255).astype(np.uint8)[..., None], 3, axis=2)
    views = photometric_views(rgb, 8, ViewsConfig(count=8, lighting=1.0, motion_blur=1.0, noise=1.0))
    assert len(views) == 8 and not any(np.array_equal(v, rgb) for v in views)
    sizer = ScaleFilter((40.0, 40.0))
    sizer.initialise([rgb, *views], center, (40.0, 40.0))
    alone = ScaleFilter((40.0, 40.0))
    alone.initialise([rgb], center, (40.0, 40.0))
    reference = ScaleFilter((40.0, 40.0))
    reference.update(rgb, center, (40.0, 40.0))
    np.testing.assert_allclose(alone.numerator, reference.numerator, rtol=1e-6)
    assert not np.allclose(sizer.numerator, reference.numerator)
    grown, _ = _scene_with(1.1)
    shrunk, _ = _scene_with(0.9)
    as_rgb = [np.repeat((image * 255).astype(np.uint8)[..., None], 3, axis=2) for image in (grown, shrunk)]
    assert sizer.estimate(as_rgb[0], center, (40.0, 40.0)) > 1.04
    assert sizer.estimate(as_rgb[1], center, (40.0, 40.0)) < 0.96
