"""The lost path's peak picking (pipelines/temporal_lost.py's _top_peaks): masking each found
peak's disc in its bounding box only must pick the same peaks as masking over the whole map."""

from __future__ import annotations

import numpy as np

from pipelines.temporal_lost import _top_peaks


def _whole_map_peaks(heat: np.ndarray, count: int, radius: float) -> list[tuple[int, int]]:
    """The former form: each disc masked through a whole-map distance test."""
    heat = heat.copy()
    yy, xx = np.ogrid[:heat.shape[0], :heat.shape[1]]
    found = []
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        if not np.isfinite(heat[y, x]):
            break
        found.append((int(y), int(x)))
        heat[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = -np.inf
    return found


def test_top_peaks_match_whole_map_masking_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        heat = rng.random((int(rng.integers(3, 70)), int(rng.integers(3, 70)))).astype(np.float32)
        count = int(rng.integers(1, 10))
        # Fractional, whole and zero radii, and discs reaching past the map's edges.
        radius = float(rng.choice([rng.random() * 40, float(rng.integers(0, 40)), 0.0]))
        assert _top_peaks(heat, count, radius) == _whole_map_peaks(heat, count, radius)


def test_top_peaks_are_apart_and_stop_when_the_map_is_used_up() -> None:
    heat = np.zeros((40, 60), np.float32)
    heat[10, 10], heat[12, 13], heat[30, 50] = 3.0, 2.0, 1.0  # the second within the first's disc
    assert _top_peaks(heat, 2, 5.0) == [(10, 10), (30, 50)]
    assert len(_top_peaks(heat, 10_000, 25.0)) < 10  # discs cover the map: it stops early
