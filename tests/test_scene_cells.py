"""A medium's network cells encoded around windows (pipelines/scene_cells.py) are those of the
whole medium, for less encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.local_features import Keypoints, NetworkFeatures, backbone_encoder
from pipelines.scene_cells import CONTEXT, SceneCells
from pipelines.search import Searcher


@pytest.fixture(scope="module")
def network() -> NetworkFeatures:
    return NetworkFeatures(backbone_encoder(Searcher(device="cpu", verify=False).model))


def _medium() -> np.ndarray:
    # Odd sizes, not multiples of 8: the 'same' padding of every stride-2 layer is uneven.
    return cv2.resize(data.astronaut(), (397, 301), interpolation=cv2.INTER_AREA)


def _same(a: Keypoints, b: Keypoints) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-4)


@pytest.mark.parametrize("window", [(150, 100, 230, 180), (0, 0, 90, 70), (300, 210, 397, 301)])
def test_cells_of_a_window_are_those_of_the_whole_medium(network: NetworkFeatures,
                                                          window: tuple[int, int, int, int]) -> None:
    medium = _medium()
    whole = SceneCells(network, None, network.encode(medium[None])[0])
    cropped = SceneCells(network, medium)
    _same(cropped.inside(window), whole.inside(window))
    assert 0 < cropped.encoded_pixels < 0.8 * medium.shape[0] * medium.shape[1]
    (x0, y0, x1, y1), _ = cropped.regions[0]
    assert x0 % 8 == 0 and y0 % 8 == 0
    assert (x1 - x0) % 8 == 397 % 8 and (y1 - y0) % 8 == 301 % 8


def test_covered_windows_reuse_a_region_and_large_spans_encode_the_whole(network: NetworkFeatures) -> None:
    medium = _medium()
    cells = SceneCells(network, medium)
    cells.prepare([(150, 100, 230, 180)])
    encoded = cells.encoded_pixels
    cells.inside((160, 110, 220, 170))  # within the first region's context margin
    assert cells.encoded_pixels == encoded and len(cells.regions) == 1
    cells.prepare([(10, 10, 60, 60), (330, 240, 390, 290)])  # their span is nearly the medium
    assert cells.regions[-1][0] == (0, 0, 397, 301)
    assert cells.covers(cells.regions[-1][0], (0, 0, 397, 301))
    assert not cells.covers((64, 0, 397, 301), (64 + CONTEXT - 1, 20, 120, 60))


def test_needs_the_medium_or_its_features(network: NetworkFeatures) -> None:
    with pytest.raises(ValueError):
        SceneCells(network, None)
