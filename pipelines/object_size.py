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


def object_height(cosines: torch.Tensor, heights: Sequence[float], resampled: Sequence[bool],
                  margin: float, penalty: float = RESAMPLED_PENALTY,
                  valid: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
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
    # The parabola through (k-1, k, k+1) on the log-size axis; cells at either end keep their size.
    inner = (k > 0) & (k < len(groups) - 1)
    lo, hi = (k - 1).clamp(min=0), (k + 1).clamp(max=len(groups) - 1)
    z0, z1, z2 = scores.gather(1, lo), scores.gather(1, k), scores.gather(1, hi)
    d1, d2 = (x - logs[lo]).clamp(min=1e-6), (logs[hi] - x).clamp(min=1e-6)
    s1, s2 = (z1 - z0) / d1, (z2 - z1) / d2
    curve = (s2 - s1) / (d1 + d2)  # the parabola's x^2 coefficient; < 0: a maximum
    slope = s1 + curve * d1
    shift = torch.where(inner & (curve < 0), -slope / (2 * curve.clamp(max=-1e-6)), torch.zeros_like(x))
    shift = torch.maximum(torch.minimum(shift, d2 / 2), -d1 / 2)
    return torch.exp2(x + shift)
