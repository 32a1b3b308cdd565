"""Pyramid levels of the search: which relative object sizes are searched for a query in a medium
(default, given or automatic scales), and at which kernel size and zoom of the medium each is
matched (:func:`plan_levels`): geometry only (tiles of a zoomed medium too large to encode whole:
:mod:`pipelines.search_tiles`); :mod:`pipelines.search_maps` runs the network over these levels.

Each query scale (relative object size, object in the medium / query) is one *level*: the query's
pixels at that size become the correlation kernel, at least ``min_side`` on its shorter side and
(for a query smaller than that) ``min_mean`` on the geometric mean of its sides, at most
``max_side`` on that mean, by zooming the medium instead. A big query (a catalogue photo at full
resolution) is thus searched with a kernel of about 12 x 12 feature cells at most in a shrunk
medium, which costs a fraction of searching the full-size medium; a small query (a player of 34 x 81
px in a broadcast frame) is searched in the medium up-sampled (zoom > 1), so it spans enough cells
of the stride-8 grid to be matched at all.
"""

from __future__ import annotations

import math
import numbers
from collections import abc
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from augment.imageio import InputError

# Relative object sizes (object in the medium / query) searched as pyramid levels. The network's
# scale pairs (0.5x-2x) fill the gaps, so these cover about 0.25x-4x. Without explicit scales they
# are the base of the automatic range (:func:`auto_scales`).
DEFAULT_QUERY_SCALES: tuple[float, ...] = (0.5, 1.0, 2.0)
# ``query_scales`` of the default search: DEFAULT_QUERY_SCALES less those at which the object would be
# implausibly small (under the automatic range's lower bound, :func:`smallest_plausible_scale`); no
# octaves added. A 30-60 px query cut from a crowd mosaic is then not also searched at half its size
# (look-alikes match small kernels): calibration mosaics prec@20 / succAUC 0.850 / 0.686 -> 0.900 /
# 0.736 (heat map alone, 20 cases); the Crossing and Skating1 whole-frame queries keep all three.
DEFAULT_SCALES = "default"
# The automatic range extends the base downwards, an octave a level, to the smallest octave at which
# the object's longer side still spans this fraction of the medium's shorter side: smaller objects
# are a few cells of the stride-8 grid even zoomed in. A query cut at a catalogue photo's resolution
# is often 4-10x larger than its instance in a street scene, which the base range never reaches.
AUTO_MIN_OBJECT_FRACTION = 1.0 / 16.0
# ... with at most this many levels (from 1/16 to the whole medium is five octaves).
AUTO_MAX_LEVELS = 5
# The heat of an added level is multiplied by this per octave below the base range: a prior that the
# object is near the query's size, so that more levels (more chances for a look-alike to match at
# some size) do not outvote the base range where it holds the object.
AUTO_OCTAVE_PRIOR = 0.9
# The default search's second pass: where the best heat of a frame's default levels stays under
# this, and the query is large against the medium, the frame is searched again for the object
# EXTEND_OCTAVES smaller than the default's smallest size (:func:`smaller_scales`, its heat
# weighted by AUTO_OCTAVE_PRIOR per octave). A garment cut at its catalogue photo's resolution is
# 4-8x larger than that garment on a person in a crowd; the default levels (0.5x-2x) then match only
# look-alikes, weakly, while where they hold the object its heat is higher and the costlier small
# level is not run. Chosen on CCP calibration photos (benchmarks/crowd.py, split "calibrate"; fused
# search): every one of 30 crowd mosaics with an original-resolution query stays under 0.28 (the
# highest 0.264), 7 of 160 catalogue -> scene positives (and 34 of 60 negatives) do too.
# Test (benchmarks/search_small.py --mosaics 10 --negatives 4 --only mosaic, stop 20): original-
# resolution queries prec@20 / succAUC 0.100 / 0.010 -> 0.900 / 0.557 (--scales auto 0.800 / 0.471 at
# ~1.7x the time), mosaic-cut queries and tracking sequences unchanged; CCP catalogue -> scene
# unchanged; benchmarks/search.py --photos 20 --threads 1: the verified search 1.36-1.41x -> 1.51-1.52x
# the backbone (93-94 -> 95-97 ms a scene, alternated in one session).
DEFAULT_EXTEND_HEAT = 0.28
# ... two octaves (0.125x the query): the default's 0.5x level reaches 0.25x with its (0.5, 1) scale
# pair and this level covers 0.0625x-0.25x with its own. Calibration crowd mosaics (30, fused),
# prec@20 / succAUC: the default 0.000 / 0.002; 0.25x and 0.125x levels 0.800 / 0.505 (the medium up
# to 4x up-sampled) or 0.800 / 0.544 (at most 2x); 0.125x alone, at most 2x, 0.833 / 0.565 in 0.7 s
# a case instead of 1.2-1.6 s; automatic scales' octaves (0.0625x for a 480-px query, 4x up-sampled)
# 0.733 / 0.454.
EXTEND_OCTAVES = 2
# ... its level up-samples the medium at most this much (a 20-px-wide object is matched with a 40-px
# kernel, not 48): a quarter of MAX_ZOOM's cost and better boxes (above); 1.41x lost (0.733 / 0.444).
EXTEND_MAX_ZOOM = 2.0
# The up-sampled level runs only where the same level without up-sampling (a probe: one encoding of
# the medium as it is) scores at least this multiple of the default levels' best heat (both
# weighted as they are merged): the smaller object must match better than the sizes searched.
# Calibration photos (benchmarks/crowd.py split "calibrate", benchmarks/ccp.py 0501-0600):
# probe / first-pass ratios of the 30 original-resolution crowd mosaics 0.99-2.13 (29 >= 1.15);
# of the catalogue -> scene cases under DEFAULT_EXTEND_HEAT, 7 positives 0.60-1.01 and 34 of the 60
# negatives 0.65-1.59. At 0.9, 22 of those negatives paid the up-sampled level (~4 backbone passes);
# at 1.05, 15, and no positive; mosaics (fused, prec@20 / succAUC) 0.833 / 0.565 -> 0.800 / 0.544 (at
# 1.0 and 1.15 alike). Scenes without the object are what a folder search mostly holds, so their
# cost decided it; 1.15 (11 negatives) would lose tests' 6x-smaller astronaut (ratio 1.12).
# The probe's heat is not merged (it found a false 0.683 in one case).
EXTEND_PROBE_RATIO = 1.05
# ... and is searched only around the places where the probe scores at least this fraction of its
# best (coarse to fine: windows around those places, grown by the level's kernel and the
# tiles' context, NetworkSearch._windows), not over the whole up-sampled medium, unless the windows
# cover EXTEND_WINDOW_AREA of it (searched whole then). The probe is the same size in the medium as
# it is, but a poor locator: the object's probe heat was 0.47-1.00 of the probe's best on the 30
# calibration crowd mosaics (original-resolution queries; 0.71-1.00 on the test ones), so the ratio
# sits under all of them. There the hot places cover most of a mosaic (searched whole: calibration
# prec@20 / succAUC 0.800 / 0.592 either way); on CCP scenes without the object fewer: the 20
# speed negatives' verified search 3.14-3.16x -> 2.80-2.86x the backbone at one thread
# (benchmarks/search.py --photos 20 --negatives 20 --threads 1, alternated), one best answer of the
# 20 moved; CCP test and crowd test figures unchanged. Not exact: a window's deep features see less
# of the scene than the whole medium's (as tiles' do).
EXTEND_WINDOW_RATIO = 0.45
# Tried at stop 27 (issue 8, negatives' cost), not kept: where the windows cover EXTEND_WINDOW_AREA,
# searching the up-sampled level whole only where the probe's hot places grown by its kernel cover
# at least 0.45 of the medium (crowds), else not at all. Calibration (CrowdMosaics("calibrate")
# 30+10 per variant, ccp.search_cases("calibrate"), fused): the 27 original-resolution mosaics that
# reach this level cover 0.55-1.00, 8 of the 14 CCP negatives searched whole 0.14-0.39; figures
# unchanged. Test: a crowd mosaic (benchmarks/search_small.py --mosaics 10 --negatives 4 --only
# mosaic, case 9) was cut and lost, prec@20 / succAUC 0.900 / 0.662 -> 0.800 / 0.576, and
# benchmarks/search.py --photos 20 --negatives 20 --threads 1: negatives 2.87-2.97x -> 2.94-2.96x the
# backbone (verified, main and the gate alternated twice): no gain there.
# Nor did tiling that whole medium in equal tiles of <= 0.8 M px help (in the pipeline two 832x944
# tiles took about as long as the whole 832x1670), though the backbone alone, best of 3, costs
# 230-290 ns/px up to ~0.8 M px and 350-380 from ~0.85 M px at one thread.
EXTEND_WINDOW_AREA = 0.6
# Bounds of --scales: past them a level's query is under a pixel or larger than any medium.
MIN_QUERY_SCALE, MAX_QUERY_SCALE = 0.05, 20.0
# Media are searched at most this many pixels on their longer side (the query shrinks alike).
DEFAULT_MAX_SIDE = 1024
# A scale at which the object would be up to 1% larger than the medium is still searched as it is
# (plan_levels); only past that is the query shrunk to fit.
FIT_TOLERANCE = 1.01
# A level's kernel (the query at that level's size) spans at least this many pixels on its shorter
# side (6 cells of the stride-8 grid): a smaller object is searched in the medium up-sampled. 72
# (9 cells) was tried at stop 18: crowd mosaics of CCP calibration photos gained (--scales auto,
# mirrored: prec@20 0.750 -> 0.800, succAUC 0.467 -> 0.569) but the thin pedestrian of the Crossing
# sequence, searched whole per frame, was lost (every 5th frame: prec@20 0.292 -> 0.042; its
# 17-px-wide query zoomed 4x); CCP calibration photos were the same (heat top-1 0.900 vs 0.917).
MIN_KERNEL_SIDE = 48
# ... and at least this many as the geometric mean of its sides (9 x 9 cells' worth) where the query
# itself is smaller than that (cut as coarse as the medium, like a player cropped from a frame): a
# compact one gets the 72-px kernel that helped the crowd mosaics, an elongated one (aspect over
# 2.25) keeps the 48-px shorter side, so the Crossing pedestrian (17 x 50, aspect 2.9) is zoomed as
# before. Stop 19, CCP calibration photos, 20 crowd cases per row, heat map alone, 48 -> this 72:
# mosaic-cut default scales prec@20 0.750 -> 0.850, succAUC 0.550 -> 0.686, --scales auto 0.900 ->
# 0.900, 0.681 -> 0.736 (a 72-px shorter side: 0.850/0.724, 0.900/0.769); Crossing whole every 5th
# frame the same (0.292); CCP calibration the same. 84 lost on the mosaic cuts (default
# 0.800/0.645, auto 0.850/0.698); 96, or 56 on the shorter side, lost Crossing (0.000): it is found
# only at its present zoom (2.83x). Held to it, larger queries (original-resolution cuts, auto)
# gained too (0.700/0.407 -> 0.850/0.536), but the sharp query shrunk against the medium up-sampled
# lowered the heat of a 0.6x instance in tests/test_search.py from 0.575 to 0.439, under the fused
# search's threshold 0.52 (main at stop 19), and the test lost it.
MIN_KERNEL_MEAN = 72.0
# ... and at most this many as the geometric mean of its sides (12 x 12 cells' worth): a larger
# object is searched in the medium shrunk, which bounds the correlation's cost whatever the
# query's resolution.
MAX_KERNEL_SIDE = 96
# Up-sampling the medium stops here (cost grows with its square).
MAX_ZOOM = 4.0
# Zoomed media above this many pixels are searched in overlapping tiles.
MAX_TILE_PIXELS = 1600 * 1200
MAX_TILE_GROWTH = 8  # how far past MAX_TILE_PIXELS a window may grow for a kernel reaching past it
# Zoom factors are rounded to quarter octaves so levels share encoded media.
ZOOM_STEPS_PER_OCTAVE = 4
# A level zoomed out is searched at the next finer zoom of the same search where that is at most
# this many octaves finer (:func:`share_zooms`): a larger kernel costs less than another encoding
# of the medium (a 0.84x zoom alone is 0.71 backbone passes).
SHARE_ZOOM_OCTAVES = 0.5
# Smallest kernel side in pixels worth correlating (two cells of the stride-8 grid).
MIN_QUERY_SIDE = 16
# Smallest object side (the query's shorter side at the working size, zoomed MAX_ZOOM) the search
# still finds (stop 51, measured: the astronaut's 2:3 crop, as query and pasted at the query's size in
# a 2400x600 coffee photo, untrained network, heat map, searched at max_side 512: the best peak's box
# at IoU >= 0.5 at zoomed shorter sides of 22.2, 23.9, 27.3-41 px (IoU 0.34 once at 25.6), IoU 0 at
# 20.5 and under; a 39x60 coat was found in 4K (41.6 px) and missed in 8K (20.8 px) at the default
# 1024); a 16x24 query and object in 2400x600 (tests/test_max_side.py): IoU 0.48 at 23.9 px, found at
# 27.3. Three cells of the stride-8 grid (half MIN_KERNEL_SIDE) is the line; under it a search warns
# once and names the --max-side that brings the query over it (NetworkSearch.unseen_warning).
MIN_SEEN_SIDE = 24


@dataclass(frozen=True)
class Level:
    """One pyramid level: the relative object size it stands for, the query's pixel size there
    (the kernel), and the zoom of the medium's working size it is searched at."""

    scale: float
    query_size: tuple[int, int]
    zoom: float


def plan_levels(query_hw: tuple[float, float], work_hw: tuple[int, int], scales: Sequence[float],
                min_side: int = MIN_KERNEL_SIDE, max_side: int = MAX_KERNEL_SIDE,
                max_zoom: float = MAX_ZOOM, min_mean: float = MIN_KERNEL_MEAN) -> list[Level]:
    """Levels for a query of ``query_hw`` pixels (at the medium's working scale) in a medium of
    ``work_hw`` pixels; one per distinct (kernel size, zoom).

    Scales at which the object would be larger than the medium are left out (no such object can
    be there, and a kernel nearly as large as the medium only matches padding); if that leaves
    none, the object is searched as large as the medium fits."""
    levels: list[Level] = []
    largest = min(work_hw[0] / query_hw[0], work_hw[1] / query_hw[1])  # the scale that fills the medium
    possible = [s for s in sorted(scales) if s <= largest * FIT_TOLERANCE]
    # The mean-side minimum holds for a query no larger than it (cut as coarse as the medium): a
    # larger, sharper query shrunk to the kernel would be matched against an up-sampled, blurred
    # medium, which lowers the heat of its instances (see MIN_KERNEL_MEAN).
    if math.sqrt(query_hw[0] * query_hw[1]) >= min_mean:
        min_mean = 0.0
    for scale in possible or [largest]:
        oh, ow = query_hw[0] * scale, query_hw[1] * scale  # the object's size in the medium
        short, mean_side = min(oh, ow), math.sqrt(oh * ow)
        zoom = 1.0
        if short < min_side or mean_side < min_mean:  # too few cells across: zoom in
            zoom = min(max_zoom, max(min_side / short, min_mean / mean_side))
        elif mean_side > max_side:  # more cells than needed: zoom out (the cost follows the area)
            zoom = max(max_side / mean_side, MIN_QUERY_SIDE / short)
        zoom = 2.0 ** (round(math.log2(zoom) * ZOOM_STEPS_PER_OCTAVE) / ZOOM_STEPS_PER_OCTAVE)
        level = _level(query_hw, work_hw, scale, zoom)
        _add_distinct(levels, level)
    return levels


def _add_distinct(levels: list[Level], level: Level) -> None:
    """Append ``level`` unless one of the same kernel size and zoom is there (the same search)."""
    if all((l.query_size, l.zoom) != (level.query_size, level.zoom) for l in levels):
        levels.append(level)


def _level(query_hw: tuple[float, float], work_hw: tuple[int, int], scale: float, zoom: float) -> Level:
    """The level of relative size ``scale`` searched at ``zoom``: its kernel the object's size there."""
    exact = (query_hw[0] * scale * zoom, query_hw[1] * scale * zoom)
    # The kernel must fit in the zoomed medium (same padding needs the object inside it). Fitted
    # before rounding: a side under half a pixel (a 3000-px-wide query in an 8-px-wide medium)
    # rounded to 0 first was a ZeroDivisionError.
    fit = min(1.0, work_hw[0] * zoom / exact[0], work_hw[1] * zoom / exact[1])
    size = (max(1, round(exact[0] * fit)), max(1, round(exact[1] * fit)))
    if min(size) < MIN_QUERY_SIDE:
        grow = MIN_QUERY_SIDE / min(size)
        size = (round(size[0] * grow), round(size[1] * grow))
    return Level(float(scale), size, zoom)


def share_zooms(levels: Sequence[Level], query_hw: tuple[float, float], work_hw: tuple[int, int],
                octaves: float = SHARE_ZOOM_OCTAVES) -> list[Level]:
    """``levels`` with each one that was zoomed out moved to the next finer zoom another level is
    searched at, where that is at most ``octaves`` finer: its kernel grows by up to 2**octaves (past
    MAX_KERNEL_SIDE), but the medium is encoded once less (see SHARE_ZOOM_OCTAVES)."""
    zooms = sorted({l.zoom for l in levels})
    shared: list[Level] = []
    for level in levels:
        finer = [z for z in zooms if level.zoom < z <= level.zoom * 2.0 ** octaves * 1.001]
        if level.zoom < 1.0 and finer:
            level = _level(query_hw, work_hw, level.scale, max(finer))
        _add_distinct(shared, level)
    return shared


def smallest_plausible_scale(query_hw: tuple[float, float], work_hw: tuple[int, int],
                             min_fraction: float = AUTO_MIN_OBJECT_FRACTION) -> float:
    """The smallest relative size of a plausible object: its longer side ``min_fraction`` of the
    medium's shorter side, or the query's own size where that is smaller."""
    return min(1.0, min_fraction * min(work_hw) / max(query_hw))


def auto_scales(query_hw: tuple[float, float], work_hw: tuple[int, int],
                base: Sequence[float] = DEFAULT_QUERY_SCALES,
                min_fraction: float = AUTO_MIN_OBJECT_FRACTION, max_levels: int = AUTO_MAX_LEVELS) -> tuple[float, ...]:
    """The relative sizes searched when none are given, for a query of ``query_hw`` pixels in a
    medium of ``work_hw`` (both at the medium's working scale).

    Plausible objects fill at most the medium and span at least ``min_fraction`` of its shorter
    side (longer side against shorter side) -- or the query's own size where that is smaller: the
    user's query shows the object can be that small. Searched: the ``base`` scales within these
    bounds (a query is often cut from media like the searched one, at its instance's size), then
    octaves below the base down to the lower bound, at most ``max_levels`` in all (those nearest
    the base kept). With the defaults a query whose longer side is under a quarter of the
    medium's shorter side gets the base alone (less its 0.5 where that object would be under
    1/16 of the medium: a 20 x 12 px object in a 640 x 480 frame, up-sampled 4x to be matched at
    all), and a large one (a catalogue photo at full resolution searched in a street scene) is
    also searched shrunk 4x, 8x, ... Scales above the base are not added: a query is seldom a
    thumbnail of its instance, and each level costs an encoding of the medium.
    """
    fits = min(work_hw[0] / query_hw[0], work_hw[1] / query_hw[1])  # the object as large as the medium
    smallest = smallest_plausible_scale(query_hw, work_hw, min_fraction)
    scales = [s for s in sorted(base) if smallest * 0.99 <= s <= fits * 1.01]
    # Octaves from the base's smallest down (a level's scale pairs reach half an octave and more
    # below it, so the last one need not go under ``smallest``).
    scale = min(base) / 2
    while scale >= smallest * 0.99 and len(scales) < max_levels:
        if scale <= fits * 1.01:
            scales.append(scale)
        scale /= 2
    return tuple(sorted(scales)) if scales else (min(1.0, fits),)


def smaller_scales(query_hw: tuple[float, float], work_hw: tuple[int, int],
                   base: Sequence[float] = DEFAULT_QUERY_SCALES, octaves: int = EXTEND_OCTAVES) -> tuple[float, ...]:
    """The relative size of the default search's second pass (:data:`DEFAULT_EXTEND_HEAT`):
    ``octaves`` below the smallest of ``base``, for a query large against the medium. None where
    that object's longer side would be under half :data:`AUTO_MIN_OBJECT_FRACTION` of the medium's
    shorter side (the automatic range's bound, less the half octave its scale pairs reach below
    it): a 30-60 px query cut from a crowd, or a tracked person, is not searched at 4-8 px."""
    scale = min(base) / 2 ** octaves
    fits = min(work_hw[0] / query_hw[0], work_hw[1] / query_hw[1])
    if max(query_hw) * scale < AUTO_MIN_OBJECT_FRACTION / 2 * min(work_hw) * 0.99 or scale > fits * 1.01:
        return ()
    return (scale,)


def check_scales(scales: Sequence[float] | str | None) -> None:
    """Given query scales must be some, each in [MIN_QUERY_SCALE, MAX_QUERY_SCALE]; None = automatic,
    :data:`DEFAULT_SCALES` = the default."""
    if scales is None or (isinstance(scales, str) and scales == DEFAULT_SCALES):
        return
    # One number (query_scales=1.0) or an entry that is no number was a TypeError ('float' object is
    # not iterable, '<=' not supported between 'float' and 'str').
    if isinstance(scales, np.ndarray) and scales.ndim == 1:
        scales = scales.tolist()
    if isinstance(scales, (str, bytes)) or not isinstance(scales, abc.Sequence) \
            or any(isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real) for s in scales):
        raise InputError(f"query scales must be a list of numbers, None (automatic) or {DEFAULT_SCALES!r}, "
                         f"not {scales!r}")
    if len(scales) == 0 or any(not MIN_QUERY_SCALE <= s <= MAX_QUERY_SCALE for s in scales):
        raise InputError(f"query scales must lie in [{MIN_QUERY_SCALE:g}, {MAX_QUERY_SCALE:g}], "
                         f"not {list(scales)}")


def describe(levels: Sequence[Level]) -> list[dict[str, Any]]:
    """Levels as plain values (logged and benchmark output)."""
    return [{"scale": l.scale, "kernel": list(l.query_size), "zoom": round(l.zoom, 3)} for l in levels]
