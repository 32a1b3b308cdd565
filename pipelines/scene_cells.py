"""A medium's network cells for verification (pipelines/verify.py), encoded only where needed.

Verification matches the query against the stride-8 backbone cells of a window around each
candidate. Where the search did not encode the medium whole at the working size (a large query is
searched in the medium shrunk), encoding it all for verification cost as much as the search's own
backbone pass; but when the top candidate is verified nothing else is checked, and its window is a
fifth to a half of the medium. :class:`SceneCells` encodes regions around the windows asked for,
with enough context that their cells are the ones encoding the whole medium gives:

- the backbone's stride-8 cells see 67 px (the receptive field of EfficientNet-Lite0's first
  three stages), so a region reaching :data:`CONTEXT` px beyond a window on every side that is not
  the medium's edge gives that window's cells the same inputs;
- its 'same' padding pads a stride-2 layer by one pixel less at the start when that layer's input
  is even, so a region starts on the stride-8 grid and its size is congruent to the medium's
  modulo 8: every layer's grid then lines up with the whole medium's.

    cells = SceneCells(network, small_medium)
    cells.prepare([window_a, window_b])       # one region spanning both
    keypoints = cells.inside(window_a)        # cells within the window (shrunk medium pixels)
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipelines.local_features import Keypoints, NetworkFeatures

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

# Context encoded around a window, pixels of the shrunk medium: past the stride-8 cells' receptive
# field radius (33 px), in whole cells.
CONTEXT = 40
# A region at least this share of the medium is encoded as the whole medium (the same cost, and
# later windows then need nothing more).
WHOLE_SHARE = 0.8


class SceneCells:
    """The cells of one (shrunk) medium, encoded per region on demand; see the module docstring.

    ``whole`` instead of the medium: its stride-8 feature map where the search already computed it
    (nothing is encoded then).
    """

    def __init__(self, network: NetworkFeatures, medium: np.ndarray | None,
                 whole: np.ndarray | None = None) -> None:
        if (medium is None) == (whole is None):
            raise ValueError("SceneCells needs either the medium or its whole feature map")
        self.network = network
        self.medium = medium
        if medium is not None:
            self.height, self.width = medium.shape[:2]
        else:  # the map's own size in pixels: those of the medium covered by its last cells
            self.height, self.width = (n * NetworkFeatures.stride for n in whole.shape[1:])
        self.regions: list[tuple[Box, Keypoints]] = []
        self.encoded_pixels = 0  # for tests and profiles: how much was encoded
        if whole is not None:
            self.regions.append(((0, 0, self.width, self.height), network.cells(whole)))

    def covers(self, region: Box, window: Sequence[int]) -> bool:
        """Whether ``region``'s cells in ``window`` are those of the whole medium."""
        x0, y0, x1, y1 = region
        return ((x0 == 0 or x0 <= window[0] - CONTEXT) and (y0 == 0 or y0 <= window[1] - CONTEXT)
                and (x1 == self.width or x1 >= window[2] + CONTEXT)
                and (y1 == self.height or y1 >= window[3] + CONTEXT))

    def region(self, windows: Sequence[Sequence[int]]) -> Box:
        """The region encoded for ``windows``: their span with context, aligned to the grid."""
        x0, x1 = self._span(min(w[0] for w in windows), max(w[2] for w in windows), self.width)
        y0, y1 = self._span(min(w[1] for w in windows), max(w[3] for w in windows), self.height)
        if (x1 - x0) * (y1 - y0) >= WHOLE_SHARE * self.width * self.height:
            return 0, 0, self.width, self.height
        return x0, y0, x1, y1

    @staticmethod
    def _span(start: int, end: int, length: int) -> tuple[int, int]:
        stride = NetworkFeatures.stride
        lo = max(0, (start - CONTEXT) // stride * stride)
        hi = min(length, end + CONTEXT)
        # The region's size congruent to the medium's modulo the stride (see the module docstring);
        # reaching the medium's end satisfies it, as ``lo`` is on the grid.
        hi = min(length, hi + (length - hi) % stride)
        return lo, hi

    def prepare(self, windows: Sequence[Sequence[int]]) -> None:
        """Encode one region spanning those of ``windows`` no region covers yet."""
        missing = [w for w in windows if not any(self.covers(r, w) for r, _ in self.regions)]
        if missing:
            self._encode(self.region(missing))

    def inside(self, window: Sequence[int]) -> Keypoints:
        """The medium's cells within ``window`` (shrunk medium pixels, x0 y0 x1 y1)."""
        for region, cells in self.regions:
            if self.covers(region, window):
                return cells.inside(window)
        return self._encode(self.region([window])).inside(window)

    def _encode(self, region: Box) -> Keypoints:
        x0, y0, x1, y1 = region
        features = self.network.encode(np.ascontiguousarray(self.medium[None, y0:y1, x0:x1]))[0]
        found = self.network.cells(features)
        cells = Keypoints(found.points + np.float32([x0, y0]), found.descriptors)
        self.regions.append((region, cells))
        self.encoded_pixels += (x1 - x0) * (y1 - y0)
        logger.debug("verification encoded %dx%d px at (%d, %d) of a %dx%d medium",
                     x1 - x0, y1 - y0, x0, y0, self.width, self.height)
        return cells

