"""Mutual nearest neighbours between a query view's network cells and many windows of one medium's
cell grid, with one similarity block per query view (network-feature verification,
pipelines/verify.py).

Verification matches the query's cells to the medium's cells inside each candidate's window. The
windows of nearby candidates overlap, and several candidates share a query view (views are encoded
per power-of-two size), so taking query x window similarities per candidate repeats most of the
work: on random-noise frames that product was three quarters of the whole search. Here one block
(query cells x the cells of the union of the windows) is computed per view; a column's best query
cell does not depend on the window, so it is found once over the block, and each window only takes
its rows' best column among its own. The matches are those of
:func:`~pipelines.local_features.mutual_matches` on each window's cells: the same float products
(rows of one matrix product) and the same tie rule (the first maximal row or column wins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.local_features import Keypoints

CellRange = tuple[int, int, int, int]  # rows y0:y1, columns x0:x1 of a cell grid


@dataclass
class CellGrid:
    """A medium's cells (:meth:`NetworkFeatures.cells` of its whole feature map: row-major, one per
    cell of a ``rows`` x ``cols`` grid of ``stride``-pixel cells)."""

    cells: Keypoints
    rows: int
    cols: int
    stride: int

    def cell_range(self, window: tuple[float, float, float, float]) -> CellRange:
        """The cells whose centres lie in ``window`` = [x0, y0, x1, y1] (pixel edges): the same
        cells :meth:`Keypoints.inside` keeps, as a block of the grid."""
        x0, y0, x1, y1 = window

        def span(count: int, lo: float, hi: float) -> tuple[int, int]:
            # The centre coordinates exactly as NetworkFeatures.cells and Keypoints.inside compute them.
            edges = (np.arange(count).astype(np.float32) + 0.5) * self.stride - 0.5 + 0.5
            inside = np.nonzero((edges >= lo) & (edges < hi))[0]
            return (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)

        ya, yb = span(self.rows, y0, y1)
        xa, xb = span(self.cols, x0, x1)
        return (ya, yb, xa, xb) if ya < yb and xa < xb else (0, 0, 0, 0)

    def indices(self, block: CellRange) -> np.ndarray:
        """Row-major indices (into ``cells``) of the cells of ``block``."""
        y0, y1, x0, x1 = block
        return (np.arange(y0, y1)[:, None] * self.cols + np.arange(x0, x1)[None, :]).ravel()


def _area(block: CellRange) -> int:
    return (block[1] - block[0]) * (block[3] - block[2])


def match_windows(query: Keypoints, grid: CellGrid,
                  windows: list[CellRange]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per window: indices (query cell, cell among the window's, row-major) of the mutual nearest
    neighbours by cosine, as ``mutual_matches(query, Keypoints of the window's cells)``."""
    empty = (np.zeros(0, int), np.zeros(0, int))
    used = [w for w in windows if _area(w) > 0]
    if len(query) == 0 or not used:
        return [empty] * len(windows)
    union = (min(w[0] for w in used), max(w[1] for w in used), min(w[2] for w in used), max(w[3] for w in used))
    if len(used) > 1 and _area(union) > sum(_area(w) for w in used):  # apart: one block each
        return [_match_block(query, grid, w, [w])[0] if _area(w) else empty for w in windows]
    return _match_block(query, grid, union, windows)


def _match_block(query: Keypoints, grid: CellGrid, union: CellRange,
                 windows: list[CellRange]) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`match_windows` for windows inside ``union``, from one similarity block."""
    uh, uw = union[1] - union[0], union[3] - union[2]
    medium = grid.cells.descriptors[grid.indices(union)]
    similarity = query.descriptors @ medium.T  # query cells x the union's cells
    rows = np.arange(len(query))
    column_max = similarity.max(axis=0)
    at_max = similarity == column_max
    # A column's first maximal row; only needed where some column has tied maxima (numpy's
    # column-wise argmax is slow: it reduces one strided column at a time).
    first_row = None if np.count_nonzero(at_max) == uh * uw else at_max.argmax(axis=0)
    blocks = similarity.reshape(len(query), uh, uw)
    out = []
    for y0, y1, x0, x1 in windows:
        if y1 <= y0 or x1 <= x0:
            out.append((np.zeros(0, int), np.zeros(0, int)))
            continue
        ay, ax, wh, ww = y0 - union[0], x0 - union[2], y1 - y0, x1 - x0
        if (wh, ww) == (uh, uw):
            best = similarity.argmax(axis=1)  # per query cell, its best cell in the window
        else:  # the same first maximum in row-major order, without copying the window out
            inside = blocks[:, ay:ay + wh, ax:ax + ww]
            y = inside.max(axis=2).argmax(axis=1)  # the first window row holding a row's maximum
            best = y * ww + blocks[rows[:, None], (ay + y)[:, None], ax + np.arange(ww)].argmax(axis=1)
        column = (best // ww + ay) * uw + best % ww + ax  # ... as a union column
        if first_row is None:
            q = np.nonzero(similarity[rows, column] == column_max[column])[0]
        else:
            q = np.nonzero(first_row[column] == rows)[0]
        out.append((q, best[q]))
    return out
