"""Search and calibrate given valid files of degenerate geometry or values, found by QA as a user
whose queries and media are odd: a query far wider than a thin medium is tall. Small generated
images; the untrained network on the CPU."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

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
