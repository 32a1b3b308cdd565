"""Where in a medium the search network runs: tiles of a zoomed medium too large to encode whole
(:func:`tiles`, each writing its owned part, :func:`owned_span`), and the windows the default search's
second pass searches around the probe's hot places (:func:`hot_windows`, :func:`cores_on_grid`);
geometry only, in working pixels (the levels themselves: :mod:`pipelines.search_levels`).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from pipelines.search_levels import EXTEND_WINDOW_AREA, MAX_TILE_GROWTH, MAX_TILE_PIXELS
from train.model import GRID_STRIDE


def tiles(height: int, width: int, zoom: float, overlap: int,
          max_pixels: int = MAX_TILE_PIXELS) -> list[tuple[int, int, int, int]]:
    """Windows (y0, y1, x0, x1) of the working medium whose zoomed size stays under
    ``max_pixels`` (up to :data:`MAX_TILE_GROWTH` times that where the kernel reaches further than
    such a window), overlapping by ``overlap`` working pixels; one window when it fits whole.
    Window origins are multiples of the grid stride, so their grids line up with the frame's."""
    if height * width * zoom * zoom <= max_pixels:
        return [(0, height, 0, width)]
    side = max(4 * GRID_STRIDE, int(math.sqrt(max_pixels) / zoom) // GRID_STRIDE * GRID_STRIDE)
    # Each window owns at least half its side: an elongated query's kernel (10 x 300 px zoomed 4x)
    # overlapped windows by more than their side, and they stepped 8 px at a time (684 windows of a
    # 640 x 480 photo, each encoded: minutes, hours for a larger one). Such windows exceed max_pixels,
    # by MAX_TILE_GROWTH at most: the memory an encoding takes stays bounded. A kernel reaching further
    # still is cut at window edges rather than searched in windows a few pixels apart.
    ceiling = int(math.sqrt(max_pixels * MAX_TILE_GROWTH) / zoom) // GRID_STRIDE * GRID_STRIDE
    side = max(side, min(ceiling, -(-2 * overlap // GRID_STRIDE) * GRID_STRIDE))
    step = max(GRID_STRIDE, (side - overlap) // GRID_STRIDE * GRID_STRIDE, side // 2 // GRID_STRIDE * GRID_STRIDE)

    def spans(length: int) -> list[tuple[int, int]]:
        if length <= side:
            return [(0, length)]
        starts = list(range(0, length - side, step)) + [max(0, (length - side) // GRID_STRIDE * GRID_STRIDE)]
        return [(a, a + side) for a in starts[:-1]] + [(starts[-1], length)]  # the last one reaches the edge

    return [(y0, y1, x0, x1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def hot_windows(hot: np.ndarray, reach: tuple[int, int], context: int, max_area: float = EXTEND_WINDOW_AREA,
                align: int = GRID_STRIDE) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] | None:
    """Windows of a medium to search around its ``hot`` pixels (H x W bool, working pixels):
    ((y0, y1, x0, x1) of the window, (y0, y1, x0, x1) of its core). Each core is the bounding box of
    a group of hot pixels grown by ``reach`` (h, w) each way, the part whose maps the window
    writes; the window is the core grown by ``context`` more (the tiles' context: the network sees
    as far past the core as past a tile's owned part), its origin a multiple of ``align`` and its
    size the medium's modulo ``align`` (or reaching the medium's edge). Windows that would
    overlap are merged into one. None where they would cover ``max_area`` of the medium or more
    (searched whole then), and where no pixel is hot."""
    height, width = hot.shape
    if not hot.any():
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(hot.astype(np.uint8), connectivity=8)
    cores = []
    for x, y, w, h, _ in stats[1:count]:
        cores.append((max(0, y - reach[0]), min(height, y + h + reach[0]),
                      max(0, x - reach[1]), min(width, x + w + reach[1])))

    def span(start: int, end: int, length: int) -> tuple[int, int]:
        lo = max(0, (start - context) // align * align)
        hi = min(length, end + context)
        return lo, min(length, hi + (length - hi) % align)  # its size congruent to the medium's

    def window(core: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return (*span(core[0], core[1], height), *span(core[2], core[3], width))

    merged = True
    while merged:  # windows that overlap become one (their cores' bounding box)
        merged = False
        for i in range(len(cores)):
            for j in range(i + 1, len(cores)):
                a, b = window(cores[i]), window(cores[j])
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    c, d = cores[i], cores[j]
                    cores[i] = (min(c[0], d[0]), max(c[1], d[1]), min(c[2], d[2]), max(c[3], d[3]))
                    del cores[j]
                    merged = True
                    break
            if merged:
                break
    found = [(window(core), core) for core in cores]
    if sum((y1 - y0) * (x1 - x0) for (y0, y1, x0, x1), _ in found) >= max_area * height * width:
        return None
    return found


def cores_on_grid(windows: Sequence[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]],
                  grid: tuple[int, int]) -> np.ndarray:
    """grid-shaped bool: the stride-8 cells the windows' cores write (as tiles' owned parts)."""
    valid = np.zeros(grid, bool)
    for _, (y0, y1, x0, x1) in windows:
        valid[y0 // GRID_STRIDE:-(-y1 // GRID_STRIDE), x0 // GRID_STRIDE:-(-x1 // GRID_STRIDE)] = True
    return valid


def owned_span(start: int, end: int, length: int, others: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The part of window [start, end) whose pixels it writes: halfway into each overlap."""
    lo, hi = start, end
    for a, b in others:
        if a < start < b <= end:  # a window before this one overlaps its start
            lo = max(lo, (start + b) // 2)
        if start <= a < end < b:  # one after it overlaps its end
            hi = min(hi, (a + end) // 2)
    return lo, hi
