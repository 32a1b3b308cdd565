"""The temporal mode's borrowed classical parts on generated inputs: the online correlation filter
on feature maps (pipelines/online_filter.py) tells the target from a look-alike it was shown as
background and follows a shift; the 1-D scale filter
(pipelines/scale_filter.py) reads a size change of a textured object."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.online_filter import CorrelationFilter
from pipelines.scale_filter import ScaleConfig, ScaleFilter

GRID = (26, 26)


def _blob(rng: np.random.Generator, channels: int = 16) -> np.ndarray:
    """A 5 x 5-cell pattern of random features."""
    return rng.normal(size=(channels, 5, 5)).astype(np.float32)


def _place(features: np.ndarray, blob: np.ndarray, y: int, x: int) -> None:
    features[:, y - 2:y + 3, x - 2:x + 3] += blob


def test_filter_follows_the_target_not_the_lookalike_it_learned_as_background() -> None:
    rng = np.random.default_rng(0)
    target = _blob(rng)
    lookalike = target + 0.6 * _blob(rng)  # correlated with the target (same kit, other player)
    background = 0.2 * rng.normal(size=(16, *GRID)).astype(np.float32)
    first = background.copy()
    _place(first, target, 13, 13)
    _place(first, lookalike, 13, 20)
    cf = CorrelationFilter(GRID, (5, 5))
    cf.update(first, (13.5, 13.5))
    # Next frame: the target moved a little, the look-alike came closer to where it was.
    later = 0.2 * rng.normal(size=(16, *GRID)).astype(np.float32)
    _place(later, target, 14, 11)
    _place(later, lookalike, 13, 16)
    response = cf.response(later)
    y, x = np.unravel_index(int(np.argmax(response)), response.shape)
    assert (abs(y - 14), abs(x - 11)) <= (1, 1)
    assert response[14, 11] > 1.2 * response[13, 16]


def test_filter_learns_at_the_given_place_and_blends_updates() -> None:
    rng = np.random.default_rng(1)
    target = _blob(rng)
    features = 0.1 * rng.normal(size=(16, *GRID)).astype(np.float32)
    _place(features, target, 8, 17)
    cf = CorrelationFilter(GRID, (5, 5))
    cf.update(features, (8.5, 17.5))  # the target off-centre, taught where it is
    before = cf.numerator.copy()
    response = cf.response(features)
    assert np.unravel_index(int(np.argmax(response)), response.shape) == (8, 17)
    cf.update(features, (8.5, 17.5))  # the same frame again changes nothing but the average
    np.testing.assert_allclose(cf.numerator, before, rtol=1e-5, atol=1e-4)


def _scene_with(object_scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """A grey textured background (brick) with the astronaut's helmet, 40 x 40 px times
    ``object_scale``, centred at (160, 120)."""
    background = cv2.resize(data.brick(), (320, 240)).astype(np.float32) / 255.0 * 0.5
    side = round(40 * object_scale)
    patch = cv2.resize(cv2.cvtColor(data.astronaut()[30:190, 150:310], cv2.COLOR_RGB2GRAY),
                       (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    y0, x0 = 120 - side // 2, 160 - side // 2
    background[y0:y0 + side, x0:x0 + side] = patch
    return background, (160.0, 120.0)


def test_scale_filter_reads_growth_and_shrinkage() -> None:
    first, center = _scene_with(1.0)
    sizer = ScaleFilter((40.0, 40.0))
    sizer.update(first, center, (40.0, 40.0))
    assert sizer.estimate(first, center, (40.0, 40.0)) == 1.0
    grown, _ = _scene_with(1.1)
    shrunk, _ = _scene_with(0.9)
    assert sizer.estimate(grown, center, (40.0, 40.0)) > 1.04
    assert sizer.estimate(shrunk, center, (40.0, 40.0)) < 0.96


def _rescaled(image: np.ndarray, center: tuple[float, float], factor: float) -> np.ndarray:
    """The whole picture magnified by ``factor`` about ``center`` (the same size)."""
    affine = np.array([[factor, 0, center[0] * (1 - factor)], [0, factor, center[1] * (1 - factor)]], np.float32)
    return cv2.warpAffine(image, affine, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_scale_filter_reads_a_rescaled_photo_and_clamps_the_change() -> None:
    """A whole photo (no object on a plain ground: the target's surroundings change with scale too)
    magnified by 1.2 or 0.85: the filter reads the direction and most of the amount (before the
    features' mean over the scales was taken off, it answered 1.0 to both), the default config
    clamps the change per frame at 1.1, and without the clamp it reads the amount within 5%."""
    for photo, size in ((data.astronaut(), (60.0, 80.0)), (data.chelsea(), (120.0, 100.0))):
        h, w = photo.shape[:2]
        center = (w / 2, h / 2)
        for config, tolerance in ((ScaleConfig(), None), (ScaleConfig(max_change=None), 0.05)):
            sizer = ScaleFilter(size, config)
            sizer.update(photo, center, size)
            assert sizer.estimate(photo, center, size) == 1.0
            for factor in (1.2, 0.85):
                estimate = sizer.estimate(_rescaled(photo, center, factor), center, size)
                if tolerance is None:
                    assert estimate == pytest.approx(1.1 if factor > 1 else 1 / 1.1, abs=0.025), (factor, estimate)
                else:
                    assert abs(estimate / factor - 1) <= tolerance, (factor, estimate)


def test_scale_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        ScaleConfig(max_change=0.9)
    with pytest.raises(ValueError):
        ScaleConfig(step=1.0)
