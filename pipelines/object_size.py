"""The object's size at each place of a frame, from the cosine maps of the searched sizes.

Each searched size has a cosine map on the stride-8 grid: a pyramid level's own kernel (the query
resized to that size) or one of the network's resampled scale pairs (the level's query *features*
resized 0.5x or 2x). Per cell, the size is chosen from these maps (:func:`object_height`):

1. each map is standardised over the frame (smaller kernels score higher cosines on any texture,
   so what counts is how much the cell stands out at that size);
2. a size that only resampled pairs stand for (no level's own kernel) has its standardised cosine
   lowered by :data:`RESAMPLED_PENALTY`: such a kernel is a level's features stretched, not the
   query seen at that size, so it must match clearly better to set the size;
3. of the sizes within ``margin`` of the best, the largest wins (a larger kernel that matches
   nearly as well covers more of the object);
4. the size is refined between the searched ones: the vertex of the parabola through the chosen
   size's score and its two neighbours' (log-size axis), at most half-way to either neighbour.

Without steps 2 and 4 the sizes were octaves apart, and a garment 1.2x its level's size was boxed
at the 2x pair's size (1.6-1.8x too large) whenever that pair's score was near the level's.
"""

from __future__ import annotations

from typing import Sequence

import torch

# Calibration photos (CCP 0501-0600; benchmarks/crowd.py split "calibrate"), the untrained network,
# success AUC of the best box (benchmarks/metrics.py), main -> steps 2 and 4 with the heat's
# alignment (pipelines/alignment.py): crowd mosaics with an original-resolution query (60, fused)
# 0.533 -> 0.595, mosaic-cut queries (40) 0.702 -> 0.695 (top-1 0.850 -> 0.875), catalogue -> scene,
# heat map alone (100 positives) 0.657 -> 0.761, top-1 0.88 -> 0.99 (fused unchanged: its boxes are
# the verified ones). The alignment alone: 0.552, 0.717, 0.684. Penalising every resampled pair
# (not only sizes no own kernel stands for) lost on mosaic-cut queries (0.676); offline over the same
# cosines, penalties 0.5-1.5 and margins 0.35-0.75 did alike.
RESAMPLED_PENALTY = 1.0
# Searched sizes within this factor of each other are one size (a level's resampled pair and
# another level's own kernel often stand for the same height): its best score counts.
SAME_SIZE = 1.06
# How many times as fast a size's score falls per octave (squared) above the object's size as below
# it: a kernel larger than the object reaches past it onto the background, one smaller still lies on
# the object's texture. Measured at stop 50 on generated scenes (the untrained network, objects at
# their query's size, its level's own kernel and the scores an octave either side): 1.1-1.9 with
# natural photos pasted on a textured background, 1.5-2.6 with blocky textures. With 1 (the ordinary
# parabola) sizes were ~6 % (photos) and ~14 % (blocks) small at the query's own size.
LARGER_FALL = 2.0


def object_height(cosines: torch.Tensor, heights: Sequence[float], resampled: Sequence[bool],
                  margin: float, penalty: float = RESAMPLED_PENALTY,
                  valid: Sequence[torch.Tensor | None] | None = None,
                  larger_fall: float = LARGER_FALL) -> torch.Tensor:
    """Per grid cell, the object height (pixels) that explains the cosines best, N x 1 x grid.

    ``cosines`` N x S x grid, one map per searched size; ``heights`` the object height each stands
    for; ``resampled`` whether it came from a resampled scale pair. ``valid``: per map, None or a
    1 x 1 x grid bool of the cells it was computed on (a level searched only in windows), over
    which alone it is standardised; the sizes hold where every map is valid. See the module
    docstring.
    """
    order = sorted(range(len(heights)), key=lambda i: heights[i])
    flat = cosines.flatten(2)
    # A medium as small as one grid cell has no spread to standardise by (std of one value is NaN).
    spread = flat.std(dim=2) if flat.shape[2] > 1 else torch.zeros_like(flat[:, :, 0])
    mean = flat.mean(dim=2)
    for i, cells in enumerate(valid or ()):
        if cells is not None:
            inside = flat[:, i][:, cells.flatten()]
            mean[:, i] = inside.mean(dim=1)
            spread[:, i] = inside.std(dim=1) if inside.shape[1] > 1 else 0.0
    z = (cosines - mean[..., None, None]) / (spread[..., None, None] + 1e-6)
    # Group equal sizes (ascending): one score each, their best, less the penalty where only
    # resampled pairs stand for that size.
    groups: list[list[int]] = []
    for i in order:
        if groups and heights[i] < heights[groups[-1][0]] * SAME_SIZE:
            groups[-1].append(i)
        else:
            groups.append([i])
    scores = torch.stack([z[:, g].amax(dim=1) - (penalty if all(resampled[i] for i in g) else 0.0)
                          for g in groups], dim=1)  # N x G x grid
    logs = torch.log2(torch.tensor([heights[g[0]] for g in groups], device=z.device, dtype=z.dtype))
    near_best = scores >= scores.amax(dim=1, keepdim=True) - margin
    # The last True along the ascending size axis: argmax of rank-weighted flags.
    ranks = torch.arange(1, len(groups) + 1, device=z.device).view(1, -1, 1, 1)
    k = (near_best * ranks).argmax(dim=1, keepdim=True)  # N x 1 x grid
    x = logs[k]
    if len(groups) < 3:
        return torch.exp2(x)
    # The peak of a parabola through (k-1, k, k+1) on the log-size axis that falls ``larger_fall``
    # times as fast above its peak as below; cells at either end keep their size.
    inner = (k > 0) & (k < len(groups) - 1)
    lo, hi = (k - 1).clamp(min=0), (k + 1).clamp(max=len(groups) - 1)
    z0, z1, z2 = scores.gather(1, lo), scores.gather(1, k), scores.gather(1, hi)
    d1, d2 = (x - logs[lo]).clamp(min=1e-6), (logs[hi] - x).clamp(min=1e-6)
    curve = ((z2 - z1) / d2 - (z1 - z0) / d1) / (d1 + d2)  # < 0: the three scores peak between lo and hi
    shift = torch.where(inner & (curve < 0), skewed_peak(z0, z1, z2, d1, d2, larger_fall), torch.zeros_like(x))
    return torch.exp2(x + shift)


def skewed_peak(z0: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor,
                larger_fall: float) -> torch.Tensor:
    """The peak (from the middle point, at most half-way to either neighbour) of the curve
    s(u) = top - a (u - peak)^2 below the peak and top - larger_fall a (u - peak)^2 above it
    through the scores ``z0, z1, z2`` at log sizes ``-d1, 0, d2`` (which peak between them);
    ``larger_fall`` 1: the parabola's vertex. With p = z1 - z0, q = z1 - z2, a peak v >= 0 solves
    p (k (d2 - v)^2 - v^2) = q d1 (d1 + 2 v) and one v < 0 solves p k d2 (d2 - 2 v) = q ((d1 + v)^2 - k v^2):
    each v = c / (s + sqrt(s^2 - (k - 1) r c)), c = p k d2^2 - q d1^2 (its sign says which side),
    s = p k d2 + q d1, r = p (v >= 0) or q (v < 0): the root that is the parabola's at k = 1."""
    k = float(larger_fall)
    p, q = z1 - z0, z1 - z2
    c = p * k * d2 * d2 - q * d1 * d1
    s = p * k * d2 + q * d1
    r = torch.where(c >= 0, p, q)
    root = torch.sqrt((s * s - (k - 1.0) * r * c).clamp(min=0.0))
    # s <= 0 only where z0 is well above z1: the peak lies at (or past) the lower half-way point.
    peak = torch.where(s > 0, c / (s + root).clamp(min=1e-12), -d1)
    return torch.maximum(torch.minimum(peak, d2 / 2), -d1 / 2)
