"""The temporal mode's per-frame arithmetic rewritten for speed gives the bits of the plain
formulas it replaced: the window's score blended in place (TemporalSearcher._score), the scale
filter's samples resampled into one stack (ScaleFilter._samples), one spectrum per feature map
shared by the online filter's response and update."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.online_filter import SPECTRA_KEPT, CorrelationFilter
from pipelines.scale_filter import ScaleFilter, gradient_cells
from pipelines.search import Searcher
from pipelines.temporal import TemporalConfig, TemporalSearcher
from pipelines.temporal_refine import refine_peak
from pipelines.temporal_track import GRID
from pipelines.window_geometry import shift_map
from tests.test_temporal import _covered_video, _target, one_thread, searcher  # noqa: F401


def _score_reference(tracker: TemporalSearcher, heat: np.ndarray, feature: np.ndarray,
                     prior: np.ndarray | None) -> tuple:
    """TemporalSearcher._score's arithmetic as first written (new arrays at every step)."""
    cfg = tracker.config
    side = tracker.window_side
    penalty = np.array([1.0 if s == 1.0 else cfg.scale_penalty for s in tracker.scales], np.float32)
    heat = heat * tracker.scale_bias[:, None, None]
    heat = np.stack([shift_map(h, -tracker.peak_offset * scale) for h, scale in zip(heat, tracker.scales)])
    appearance = heat * penalty[:, None, None]
    raw = response = None
    if tracker.filter is not None and cfg.filter_weight > 0:
        raw = tracker.filter.response(feature.copy())  # a copy: transformed afresh
        response = cv2.resize(raw, (side, side), interpolation=cv2.INTER_LINEAR)
        gate = np.sqrt(heat / np.maximum(heat.max(axis=(1, 2), keepdims=True), 1e-6))
        appearance = (1 - cfg.filter_weight) * appearance + cfg.filter_weight * np.clip(response, 0, 1)[None] * gate
    score = (1 - cfg.window_influence) * appearance + cfg.window_influence * (tracker.prior if prior is None else prior)[None]
    s, y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    fine = None if raw is None or cfg.refine_radius <= 0 else refine_peak(raw, y, x, cfg.refine_radius, GRID)
    return heat, score.max(), (s, y, x), fine


@pytest.mark.parametrize("config", [TemporalConfig(), TemporalConfig(lost_crops=True), TemporalConfig(scale_step=1.05),
                                    TemporalConfig(filter_weight=0.0)],
                         ids=["default", "crops", "three scales", "no filter"])
def test_score_in_place_gives_the_plain_formulas_bits(searcher: Searcher, monkeypatch: pytest.MonkeyPatch,
                                                       config: TemporalConfig) -> None:
    frames, truth = _covered_video(_target())
    real = TemporalSearcher._score
    checked = []

    def both(self, center, height, affine, heat, feature, prior=None, angle=None):  # type: ignore[no-untyped-def]
        want_heat, _, want_point, want_fine = _score_reference(self, heat, feature, prior)
        look = real(self, center, height, affine, heat, feature, prior, angle)
        assert np.array_equal(look.heat, want_heat)
        assert (look.s, look.y, look.x) == want_point
        assert look.peak == float(want_heat[want_point])
        assert look.shown == want_fine
        checked.append(prior is not None)
        return look

    monkeypatch.setattr(TemporalSearcher, "_score", both)
    x, y = truth[0]
    side = _target().shape[0]
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), config,
                               initial_box=(x - side / 2, y - side / 2, x + side / 2, y + side / 2))
    for frame in frames[:18]:  # covered from frame 12: the lost path too
        tracker.step(frame)
    assert len(checked) >= 18
    if config.lost_crops:
        assert any(checked)  # windows cut from the whole frame, with their own prior


def _samples_reference(sizer: ScaleFilter, image: np.ndarray, center: tuple[float, float],
                       size_wh: tuple[float, float]) -> np.ndarray:
    """ScaleFilter._samples as first written: one affine and one warp per scale, then stacked."""
    largest = size_wh[0] * sizer.factors[-1], size_wh[1] * sizer.factors[-1]
    x0 = max(0, int(center[0] - largest[0] / 2) - 1)
    y0 = max(0, int(center[1] - largest[1] / 2) - 1)
    x1 = min(image.shape[1], int(math.ceil(center[0] + largest[0] / 2)) + 2)
    y1 = min(image.shape[0], int(math.ceil(center[1] + largest[1] / 2)) + 2)
    region = image[y0:y1, x0:x1]
    if region.ndim == 3:
        region = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    patches = []
    for factor in sizer.factors:
        w, h = size_wh[0] * factor, size_wh[1] * factor
        sx, sy = sizer.model_wh[0] / w, sizer.model_wh[1] / h
        left, top = center[0] - w / 2 - x0, center[1] - h / 2 - y0
        affine = np.array([[sx, 0, -sx * left], [0, sy, -sy * top]], np.float32)
        patches.append(cv2.warpAffine(region, affine, sizer.model_wh, flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE))
    columns = gradient_cells(np.stack(patches), sizer.config.cell, sizer.config.orientations).T
    return (columns - columns.mean(axis=1, keepdims=True)) * sizer.window[None]


def test_scale_samples_resampled_into_one_stack_are_the_loops_bits() -> None:
    photo = data.astronaut()
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0  # a float64 grey image
    sizer = ScaleFilter((61.3, 97.7))
    for image in (photo, grey):
        for center, size in (((250.4, 180.7), (61.3, 97.7)), ((20.2, 500.9), (70.0, 40.5)), ((256.0, 256.0), (33.3, 33.3))):
            got = sizer._samples(image, center, size)
            want = _samples_reference(sizer, image, center, size)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_filter_spectrum_is_shared_by_a_maps_response_and_update_only() -> None:
    """The response's transform of a feature map serves the update on that same map: the filter
    learns exactly what it learns from a copy; other maps are transformed on their own."""
    rng = np.random.default_rng(2)
    maps = [rng.normal(size=(8, 12, 12)).astype(np.float32) for _ in range(SPECTRA_KEPT + 3)]
    shared, fresh = CorrelationFilter((12, 12), (3, 3)), CorrelationFilter((12, 12), (3, 3))
    shared.update(maps[0], (6.5, 6.5))
    fresh.update(maps[0].copy(), (6.5, 6.5))
    for i, features in enumerate(maps[1:], 1):
        got = shared.response(features)
        assert np.array_equal(got, fresh.response(features.copy()))
        place = (5.5 + i % 3, 6.5)
        shared.update(features, place)  # from the response's spectrum
        fresh.update(features.copy(), place)
        assert np.array_equal(shared.numerator, fresh.numerator)
        assert np.array_equal(shared.denominator, fresh.denominator)
    assert len(shared._spectra) == SPECTRA_KEPT
    assert not any(seen is maps[1] for seen, _ in shared._spectra)  # the oldest were let go
