"""Object sizes from the searched sizes' cosines (pipelines/object_size.py) and the heat's alignment
with the object's centre (pipelines/alignment.py)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from pipelines.alignment import kernel_offset, translate
from pipelines.detections import box_iou
from pipelines.object_size import object_height
from pipelines.search import Searcher


def _cosines(peaks: list[float]) -> torch.Tensor:
    """1 x S x 8 x 8 cosine maps: the same noise everywhere, ``peaks[s]`` at cell (4, 4) of map s."""
    noise = np.random.default_rng(0).normal(0.3, 0.02, (8, 8)).astype(np.float32)
    maps = np.repeat(noise[None, None], len(peaks), axis=1)
    for s, peak in enumerate(peaks):
        maps[0, s, 4, 4] = peak
    return torch.from_numpy(maps)


def _height(cosines: torch.Tensor, heights: list[float], resampled: list[bool], margin: float = 0.75) -> float:
    return float(object_height(cosines, heights, resampled, margin)[0, 0, 4, 4])


def test_a_resampled_pair_near_its_levels_score_does_not_double_the_size():
    """A level's own kernel (40 px) matches best, its 2x pair (80 px, stretched features) nearly as
    well: the size stays near 40 px (it was 80: boxes twice too large)."""
    cosines = _cosines([0.45, 0.50, 0.49])  # 20 px (0.5x pair), 40 px (own), 80 px (2x pair)
    height = _height(cosines, [20.0, 40.0, 80.0], [True, False, True])
    assert 40 / math.sqrt(2) <= height <= 40 * math.sqrt(2)
    # The same scores from the levels' own kernels: the larger one wins, as before.
    assert _height(cosines, [20.0, 40.0, 80.0], [False, False, False]) >= 80 / math.sqrt(2)


def test_sizes_are_refined_between_the_searched_ones():
    """Own kernels of 20, 40 and 80 px: equal scores either side keep 40 px; a better score at 80
    than at 20 moves the size up, never past half-way (in log size) to the neighbour."""
    own = [False, False, False]
    assert _height(_cosines([0.40, 0.50, 0.40]), [20.0, 40.0, 80.0], own, margin=0.0) == pytest.approx(40.0, rel=1e-3)
    up = _height(_cosines([0.36, 0.50, 0.44]), [20.0, 40.0, 80.0], own, margin=0.0)
    assert 41.0 < up <= 40 * math.sqrt(2) + 1e-3
    # Sizes at the ends of the searched range stay as searched (nothing to interpolate with).
    assert _height(_cosines([0.50, 0.40, 0.30]), [20.0, 40.0, 80.0], own, margin=0.0) == pytest.approx(20.0, rel=1e-3)


def test_even_kernels_peak_half_a_cell_up_left():
    pairs = ((1.0, 1.0),)
    assert kernel_offset([(5, 7)], [8], pairs) == (0.0, 0.0)  # odd: centred
    assert kernel_offset([(6, 7)], [8], pairs) == (4.0, 0.0)
    assert kernel_offset([(6, 4), (3, 2)], [8, 16], pairs) == (2.0, 6.0)  # the mean over strides
    # The network's pairs: (1, 1) odd, its 0.5x pair round(2.5) = 2 x round(3.5) = 4 and 2x pair 10 x 14 even.
    assert kernel_offset([(5, 7)], [8], ((1.0, 1.0), (0.5, 1.0), (2.0, 1.0))) == pytest.approx((8 / 3, 8 / 3))


def test_translate_moves_the_content_down_and_right():
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 2] = 1.0
    moved = translate(x, 2.0, 0.6, whole=True)  # 0.6 rounds to 1
    assert moved.shape == x.shape and moved[0, 0, 4, 3] == 1.0 and moved.sum() == 1.0
    half = translate(x, 0.5, 0.0)  # fractions interpolated
    assert half[0, 0, 2, 2] == pytest.approx(0.5) and half[0, 0, 3, 2] == pytest.approx(0.5)
    edge = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 1, 6, 6)
    assert translate(edge, 1.0, 0.0)[0, 0, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]  # first row repeated
    assert torch.equal(translate(x, 0.4, 0.0, whole=True), x)
    # A whole-pixel move down does not make the move right whole too: 0.5 px stays interpolated.
    both = translate(x, 1.0, 0.5)
    assert both[0, 0, 3, 2] == pytest.approx(0.5) and both[0, 0, 3, 3] == pytest.approx(0.5)


def test_a_large_query_found_6x_smaller_gets_a_box_close_to_the_object():
    """The default search's second pass finds a 300x240 query 6x smaller (50x40 px): the best box is
    within 1.35x of the object's size and centred on it (IoU 0.68; before the sizes' refinement and
    the alignment 0.54, its centre 3 px up-left)."""
    query = np.ascontiguousarray(data.astronaut()[20:320, 140:380])
    scene = cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    x, y = 430, 150
    scene[y:y + 50, x:x + 40] = cv2.resize(query, (40, 50), interpolation=cv2.INTER_AREA)
    best = Searcher(device="cpu", untrained=True, verify=False).find(query, scene).best
    assert best is not None
    height = best.box[3] - best.box[1]
    assert 50 / 1.35 <= height <= 50 * 1.35, best
    assert box_iou(best.box, (x, y, x + 40, y + 50)) >= 0.62, best


def test_a_size_computed_in_windows_is_standardised_over_its_windows_alone():
    """A map valid on every cell gives the sizes it gives without ``valid``; a map computed only on
    some cells (zero elsewhere) is standardised over those, so the zeros outside do not sink its
    peak under the other size's."""
    cosines = _cosines([0.45, 0.5])  # the 40-px size matches best
    heights = [20.0, 40.0]
    everywhere = [None, torch.ones((1, 1, 8, 8), dtype=torch.bool)]
    assert torch.equal(object_height(cosines, heights, [False, False], 0.75),
                       object_height(cosines, heights, [False, False], 0.75, valid=everywhere))
    assert _height(cosines, heights, [False, False]) == pytest.approx(40.0)
    inside = torch.zeros((1, 1, 8, 8), dtype=torch.bool)
    inside[..., 1:8, 1:8] = True
    windowed = cosines.clone()
    windowed[:, 1][~inside[0]] = 0.0  # the 40-px map computed in a window only
    assert _height(windowed, heights, [False, False]) == pytest.approx(20.0)  # standardised with the zeros
    cells = object_height(windowed, heights, [False, False], 0.75, valid=[None, inside])
    assert float(cells[0, 0, 4, 4]) == pytest.approx(40.0)
