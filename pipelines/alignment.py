"""Where the heat peaks against the object's centre: the half-cell offset of even-sized kernels.

The correlation's 'same' padding (train/correlation.py: (U-1)//2 cells before, U//2 after) puts the
window of an even-sized kernel's output cell i around i + 1/2 cells, so an object centred at c
peaks at c - 1/2 cell: up and left by half a cell of that map's stride (4 px at stride 8, 8 at
stride 16, in the zoomed medium). The heat mixes the maps of every feature stride and scale pair,
each with its own kernel size, so its peak lies up-left by about the mean of their offsets.
:func:`kernel_offset` gives that mean and :func:`translate` moves the heat back by it.

Found on calibration photos (benchmarks/crowd.py split "calibrate"; ccp 0501-0600): the truth's
centre lay right of and below the best box's by 1.7 / 2.6 px (crowd, original-resolution query,
sd 1.5 / 1.8), 0.9 / 1.5 px (mosaic-cut), 4.3 / 6.3 px (catalogue -> scene), which for a 20-40 px
object costs a fifth of its IoU. Moved back by :func:`kernel_offset` (the heat by whole pixels, the
cosines for the sizes by fractions of a cell): 0.6 / -0.3, 1.4 / 0.2 and 1.9 / -0.8 px left of and
above the truth's centre (the horizontal rest is not the kernels'; not corrected).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def kernel_offset(kernel_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                  scale_pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The mean (dy, dx) in pixels of the (zoomed) medium by which the heat's peak lies up-left of
    the object's centre, for query feature maps of ``kernel_sizes`` (cells, one per stride of
    ``strides``) correlated at each of the network's ``scale_pairs`` (query, medium)."""
    dy = dx = 0.0
    count = 0
    for (u, v), stride in zip(kernel_sizes, strides):
        for q, m in scale_pairs:
            cell = stride / m  # the medium's features are resized by m
            # As train.model.QuerySearchNet._scale_query sizes a resampled kernel.
            uu, vv = (u, v) if q == 1.0 else (max(1, round(u * q)), max(1, round(v * q)))
            dy += cell / 2 if uu % 2 == 0 else 0.0
            dx += cell / 2 if vv % 2 == 0 else 0.0
            count += 1
    return (dy / count, dx / count) if count else (0.0, 0.0)


def translate(x: torch.Tensor, dy: float, dx: float, whole: bool = False) -> torch.Tensor:
    """``x`` (N x C x H x W) with its content moved down by ``dy`` and right by ``dx`` pixels, the
    first row and column repeated into the gap; fractions interpolated, or with ``whole`` rounded
    (interpolating a 640x480 heat map cost 1.5 ms, a few per cent of a frame's search)."""
    for dim, shift in ((2, dy), (3, dx)):
        if whole:
            shift = round(shift)
        if shift <= 0.0 or x.shape[dim] < 2:
            continue
        pixels = math.floor(shift)
        moved = _move(x, pixels, dim)
        x = moved if shift == pixels else torch.lerp(moved, _move(x, pixels + 1, dim), shift - pixels)
    return x


def _move(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """``x`` moved forward by ``n`` >= 0 whole pixels along ``dim``, its first slice repeated."""
    n = min(n, x.shape[dim] - 1)
    if n == 0:
        return x
    pad = [0, 0, 0, 0]
    pad[2 * (3 - dim)] = n  # F.pad lists the last dimension first
    return F.pad(x, pad, mode="replicate").narrow(dim, 0, x.shape[dim])
