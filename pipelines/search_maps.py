"""The network-facing half of the search: pyramid levels, and heat and object-size maps per frame.

Each query scale (relative object size, object in the medium / query) is one *level*: the query's
pixels at that size become the correlation kernel, at least ``min_kernel_side`` on its shorter side
and (for a query smaller than that) ``min_kernel_mean`` on the geometric mean of its sides, at most
``max_kernel_side`` on that mean, by zooming the medium instead. A big query (a catalogue photo at
full resolution) is thus searched with a kernel of about 12 x 12 feature cells at most in a shrunk
medium, which costs a fraction of searching the full-size medium; a small query (a player of 34 x 81
px in a broadcast frame) is searched in the medium up-sampled (zoom > 1), so it spans enough cells
of the stride-8 grid to be matched at all. A zoomed medium too large for memory is searched in
overlapping tiles. The network's own (query, medium) scale pairs cover the gaps between levels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from augment.imageio import InputError
from train.backbones import fold_batchnorm
from train.model import GRID_STRIDE, QueryFeatures, QuerySearchNet, SearchNetConfig

logger = logging.getLogger(__name__)

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
# Bounds of --scales: past them a level's query is under a pixel or larger than any medium.
MIN_QUERY_SCALE, MAX_QUERY_SCALE = 0.05, 20.0
# Media are searched at most this many pixels on their longer side (the query shrinks alike).
DEFAULT_MAX_SIDE = 1024
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
# The object's size at a place is the largest scale whose standardised cosine is within this many
# standard deviations of the best (NetworkSearch._object_height). 0.75, not 1.75: the wider margin
# boxed small garments 2-3x too large (CCP calibration, heat map alone with the mirror and 72-px
# kernels: top-1 0.867 -> 0.917; crowd mosaics succAUC 0.528 -> 0.569); 0 lost a fused case on CCP
# calibration.
SCALE_MARGIN = 0.75
# Zoomed media above this many pixels are searched in overlapping tiles.
MAX_TILE_PIXELS = 1600 * 1200
# Zoom factors are rounded to quarter octaves so levels share encoded media.
ZOOM_STEPS_PER_OCTAVE = 4
# Smallest kernel side in pixels worth correlating (two cells of the stride-8 grid).
MIN_QUERY_SIDE = 16


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
    possible = [s for s in sorted(scales) if s <= largest * 1.01]
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
        size = (round(oh * zoom), round(ow * zoom))
        # The kernel must fit in the zoomed medium (same padding needs the object inside it).
        fit = min(1.0, work_hw[0] * zoom / size[0], work_hw[1] * zoom / size[1])
        size = (max(1, round(size[0] * fit)), max(1, round(size[1] * fit)))
        if min(size) < MIN_QUERY_SIDE:
            grow = MIN_QUERY_SIDE / min(size)
            size = (round(size[0] * grow), round(size[1] * grow))
        level = Level(float(scale), size, zoom)
        if all((l.query_size, l.zoom) != (level.query_size, level.zoom) for l in levels):
            levels.append(level)
    return levels


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


def tiles(height: int, width: int, zoom: float, overlap: int,
          max_pixels: int = MAX_TILE_PIXELS) -> list[tuple[int, int, int, int]]:
    """Windows (y0, y1, x0, x1) of the working medium whose zoomed size stays under
    ``max_pixels``, overlapping by ``overlap`` working pixels; one window when it fits whole.
    Window origins are multiples of the grid stride, so their grids line up with the frame's."""
    if height * width * zoom * zoom <= max_pixels:
        return [(0, height, 0, width)]
    side = max(4 * GRID_STRIDE, int(math.sqrt(max_pixels) / zoom) // GRID_STRIDE * GRID_STRIDE)
    step = max(GRID_STRIDE, (side - overlap) // GRID_STRIDE * GRID_STRIDE)

    def spans(length: int) -> list[tuple[int, int]]:
        if length <= side:
            return [(0, length)]
        starts = list(range(0, length - side, step)) + [max(0, (length - side) // GRID_STRIDE * GRID_STRIDE)]
        return [(a, a + side) for a in starts[:-1]] + [(starts[-1], length)]  # the last one reaches the edge

    return [(y0, y1, x0, x1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def _owned(start: int, end: int, length: int, others: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The part of window [start, end) whose pixels it writes: halfway into each overlap."""
    lo, hi = start, end
    for a, b in others:
        if a < start < b <= end:  # a window before this one overlaps its start
            lo = max(lo, (start + b) // 2)
        if start <= a < end < b:  # one after it overlaps its end
            hi = min(hi, (a + end) // 2)
    return lo, hi


def check_scales(scales: Sequence[float] | str | None) -> None:
    """Given query scales must be some, each in [MIN_QUERY_SCALE, MAX_QUERY_SCALE]; None = automatic,
    :data:`DEFAULT_SCALES` = the default."""
    if scales is None or (isinstance(scales, str) and scales == DEFAULT_SCALES):
        return
    if isinstance(scales, str):
        raise InputError(f"query scales must be numbers, None (automatic) or {DEFAULT_SCALES!r}, not {scales!r}")
    if not scales or any(not MIN_QUERY_SCALE <= s <= MAX_QUERY_SCALE for s in scales):
        raise InputError(f"query scales must lie in [{MIN_QUERY_SCALE:g}, {MAX_QUERY_SCALE:g}], "
                         f"not {list(scales)}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for absent CUDA is an InputError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def load_checkpoint_model(checkpoint: Path | str) -> tuple[QuerySearchNet, float | None]:
    """A ``synth train`` checkpoint's network and its calibrated threshold (``search_threshold``
    key; None = not stored)."""
    from train.checkpoint import load_checkpoint, load_model_state
    from train.config import TrainConfig

    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_checkpoint(state)
    model = QuerySearchNet(config.model_config())
    load_model_state(model, state, checkpoint)
    threshold = state.get("search_threshold")
    return model, None if threshold is None else float(threshold)


def untrained_model() -> QuerySearchNet:
    """Pretrained backbone + normalised correlation + the conversion net's initial readout."""
    return QuerySearchNet(SearchNetConfig())


@dataclass
class SearchMaps:
    """Per medium of a batch: heat (N x H x W in [0, 1]) and the height in pixels of the object
    that would explain the heat at each pixel (from the best-matching scale)."""

    heat: np.ndarray
    object_height: np.ndarray
    # The media's raw stride-8 backbone features at the working size (N x C x h x w), reused by
    # verification with the network's own features (pipelines/verify.py); None where no level
    # searched the medium unzoomed and whole.
    features: np.ndarray | None = None


@dataclass
class PreparedQuery:
    """A query's pixels and its encoded features, cached per kernel size (computed once)."""

    name: str
    rgb: np.ndarray
    mask: np.ndarray | None
    # Features per (kernel size, mirrored); valid for the network that computed them.
    features: dict[tuple[tuple[int, int], bool], QueryFeatures] = field(default_factory=dict)
    warned_shrink: bool = False
    # Medium sizes whose automatic scales were logged (once per size, not per frame).
    logged_scales: set[tuple[int, int]] = field(default_factory=set)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def to_tensor(images: Sequence[np.ndarray], device: torch.device, channels_last: bool) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def resize_hw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class NetworkSearch:
    """Runs the search network over pyramid levels; see the module docstring.

    ``mirror`` also searches the query mirrored left-right (a catalogue shot need not face the way
    the object does in the scene) and keeps the better match per pixel. ``query_scales`` None
    chooses them per query and medium size (:func:`auto_scales` from :data:`DEFAULT_QUERY_SCALES`);
    :data:`DEFAULT_SCALES` searches DEFAULT_QUERY_SCALES less the implausibly small ones; given
    scales are searched as they are.
    """

    def __init__(self, model: QuerySearchNet, device: torch.device, query_scales: Sequence[float] | str | None,
                 max_side: int = DEFAULT_MAX_SIDE, amp: bool = True, mirror: bool = True,
                 min_kernel_side: int = MIN_KERNEL_SIDE, max_kernel_side: int = MAX_KERNEL_SIDE,
                 max_zoom: float = MAX_ZOOM, max_tile_pixels: int = MAX_TILE_PIXELS,
                 scale_margin: float = SCALE_MARGIN, octave_prior: float = AUTO_OCTAVE_PRIOR,
                 min_object_fraction: float = AUTO_MIN_OBJECT_FRACTION,
                 min_kernel_mean: float = MIN_KERNEL_MEAN) -> None:
        check_scales(query_scales)
        if not 8 <= min_kernel_side <= max_kernel_side:
            raise InputError("kernel sides must satisfy 8 <= min_kernel_side <= max_kernel_side")
        if not 8 <= min_kernel_mean <= max_kernel_side:
            raise InputError("kernel sides must satisfy 8 <= min_kernel_mean <= max_kernel_side")
        self.device = device
        # Automatic scales: the base range, extended per query and medium size.
        self.auto_scales = query_scales is None
        self.default_scales = isinstance(query_scales, str)  # checked: DEFAULT_SCALES
        given = DEFAULT_QUERY_SCALES if query_scales is None or isinstance(query_scales, str) else query_scales
        self.query_scales = tuple(sorted(float(s) for s in given))
        self.max_side = int(max_side)
        self.mirror = mirror
        self.min_kernel_side, self.max_kernel_side, self.max_zoom = min_kernel_side, max_kernel_side, max_zoom
        self.min_kernel_mean = float(min_kernel_mean)
        self.max_tile_pixels = max_tile_pixels
        self.scale_margin = scale_margin
        if not 0.0 < octave_prior <= 1.0:
            raise InputError(f"octave_prior must be in (0, 1], not {octave_prior}")
        self.octave_prior = octave_prior
        # The automatic range's smallest object against the medium's shorter side: each halving
        # adds an octave of levels, up-sampled ones (the cost) for a large query.
        if not 0.0 < min_object_fraction <= 1.0:
            raise InputError(f"min_object_fraction must be in (0, 1], not {min_object_fraction}")
        self.min_object_fraction = min_object_fraction
        self.channels_last = device.type == "cpu"
        model = fold_batchnorm(model).to(device)
        # The untrained network's residual branches add exactly 0: not run (same heat maps).
        skipped = model.skip_inert_branches()
        if skipped:
            logger.debug("inert branches skipped: %s", ", ".join(skipped))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: QuerySearchNet = model
        self.amp = amp and device.type == "cuda"

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def working_size(self, height: int, width: int) -> tuple[int, int, float]:
        """(height, width, factor) the medium is searched at: the longer side at most max_side."""
        factor = min(1.0, self.max_side / max(height, width))
        return max(1, round(height * factor)), max(1, round(width * factor)), factor

    def level_prior(self, scale: float) -> float:
        """The weight of a level's heat: 1 for given scales and the automatic range's base,
        ``octave_prior`` per octave below the base for the levels the automatic range adds."""
        if not self.auto_scales or scale >= self.query_scales[0]:
            return 1.0
        return float(self.octave_prior ** math.log2(self.query_scales[0] / scale))

    def scales(self, query: PreparedQuery, height: int, width: int) -> tuple[float, ...]:
        """The relative sizes searched for ``query`` in a medium of ``height`` x ``width`` pixels:
        the given ones, the default ones that are plausible, or the automatic range for this query
        and medium size."""
        if not self.auto_scales and not self.default_scales:
            return self.query_scales
        work_h, work_w, factor = self.working_size(height, width)
        if self.default_scales:
            low = smallest_plausible_scale((query.size[0] * factor, query.size[1] * factor), (work_h, work_w),
                                           self.min_object_fraction)
            return tuple(s for s in self.query_scales if s >= low * 0.99) or self.query_scales[-1:]
        return auto_scales((query.size[0] * factor, query.size[1] * factor), (work_h, work_w), self.query_scales,
                           self.min_object_fraction)

    def levels(self, query: PreparedQuery, height: int, width: int) -> list[Level]:
        """The pyramid levels of ``query`` in a medium of ``height`` x ``width`` pixels."""
        work_h, work_w, factor = self.working_size(height, width)
        qh, qw = query.size[0] * factor, query.size[1] * factor
        scales = self.scales(query, height, width)
        fit = min(work_h / (qh * scales[0]), work_w / (qw * scales[0]))
        if fit < 1.0 and not query.warned_shrink:  # once per query, not once per video batch
            query.warned_shrink = True
            logger.warning("%s: query (%dx%d) at its smallest scale is larger than the medium; shrinking it by "
                           "%.2f to fit", query.name, round(qw), round(qh), fit)
        if self.auto_scales and (height, width) not in query.logged_scales:
            query.logged_scales.add((height, width))
            logger.debug("%s: searching relative sizes %s in %dx%d media", query.name,
                        ", ".join(f"{s:g}" for s in scales), width, height)
        return plan_levels((qh, qw), (work_h, work_w), scales, self.min_kernel_side,
                           self.max_kernel_side, self.max_zoom, self.min_kernel_mean)

    def query_features(self, query: PreparedQuery, size: tuple[int, int], mirrored: bool) -> QueryFeatures:
        key = (size, mirrored)
        if key not in query.features:
            rgb = resize_hw(query.rgb, *size)
            mask = None if query.mask is None else resize_hw(query.mask, *size)
            if mirrored:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
                mask = None if mask is None else np.ascontiguousarray(mask[:, ::-1])
            with torch.inference_mode(), self.autocast():
                tensor = to_tensor([rgb], self.device, self.channels_last)
                mask_t = None if mask is None else torch.from_numpy(mask).to(self.device)[None, None]
                query.features[key] = self.model.encode_query(tensor, mask_t)
        return query.features[key]

    def maps(self, query: PreparedQuery, media: Sequence[np.ndarray]) -> SearchMaps:
        """Heat and object-size maps of one query in same-size RGB media (a batch of frames).

        Per level the network's heat is taken; the per-pixel maximum over levels (and over the
        mirrored query) is the heat map, and the winning level and scale pair give the object's size.
        Levels sharing a zoom share one encoding of the medium.
        """
        height, width = media[0].shape[:2]
        work_h, work_w, factor = self.working_size(height, width)
        frames = [resize_hw(m, work_h, work_w) for m in media]
        grid = (-(-work_h // GRID_STRIDE), -(-work_w // GRID_STRIDE))
        by_zoom: dict[float, list[Level]] = {}
        for level in self.levels(query, height, width):
            by_zoom.setdefault(level.zoom, []).append(level)
        heat: torch.Tensor | None = None
        cosines: list[torch.Tensor] = []  # per (level, pair): N x 1 x grid cosine
        heights: list[float] = []  # the object height (original pixels) each one stands for
        pair_scales = [q / m for q, m in self.model.cfg.scale_pairs]
        features = None
        with torch.inference_mode(), self.autocast():
            batch = to_tensor(frames, self.device, self.channels_last)
            for zoom, levels in by_zoom.items():
                found, skip = self._zoom(query, batch, zoom, levels, grid)
                if skip is not None and zoom == 1.0:
                    features = skip.float().contiguous().cpu().numpy()
                for probs, corr, level in found:
                    weight = self.level_prior(level.scale)
                    probs = probs if weight == 1.0 else probs * weight
                    heat = probs if heat is None else torch.maximum(heat, probs)
                    cosines.extend(corr.split(1, dim=1))
                    heights.extend(level.query_size[0] / level.zoom / factor * rel for rel in pair_scales)
            size = self._object_height(torch.cat(cosines, dim=1), heights)
            assert heat is not None
            if (height, width) != (work_h, work_w):
                heat = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)
            size = F.interpolate(size, size=(height, width), mode="nearest")
        return SearchMaps(heat[:, 0].clamp(0, 1).cpu().numpy(), size[:, 0].cpu().numpy(), features)

    def _zoom(self, query: PreparedQuery, batch: torch.Tensor, zoom: float, levels: list[Level],
              grid: tuple[int, int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor, Level]], torch.Tensor | None]:
        """Per level of one zoom: (probabilities N x 1 x work size, per-pair cosines N x P x grid),
        the medium encoded once (per tile where the zoomed medium is too large); and the medium's
        raw stride-8 features where it was encoded whole (None when tiled)."""
        n, _, work_h, work_w = batch.shape
        overlap = math.ceil(max(max(l.query_size) for l in levels) / zoom) + 32
        windows = tiles(work_h, work_w, zoom, overlap=overlap, max_pixels=self.max_tile_pixels)
        if len(windows) == 1:
            found, skip = self._window(query, batch, zoom, levels, (work_h, work_w), grid)
            return [(p, c, level) for (p, c), level in zip(found, levels)], skip
        pairs = len(self.model.cfg.scale_pairs)
        probs = [batch.new_zeros((n, 1, work_h, work_w), dtype=torch.float32) for _ in levels]
        corr = [batch.new_zeros((n, pairs, *grid), dtype=torch.float32) for _ in levels]
        rows = sorted({(y0, y1) for y0, y1, _, _ in windows})
        cols = sorted({(x0, x1) for _, _, x0, x1 in windows})
        for y0, y1, x0, x1 in windows:
            h, w = y1 - y0, x1 - x0
            found, _ = self._window(query, batch[:, :, y0:y1, x0:x1], zoom, levels, (h, w),
                                    (-(-h // GRID_STRIDE), -(-w // GRID_STRIDE)))
            oy0, oy1 = _owned(y0, y1, work_h, rows)
            ox0, ox1 = _owned(x0, x1, work_w, cols)
            gy0, gy1 = oy0 // GRID_STRIDE, -(-oy1 // GRID_STRIDE)
            gx0, gx1 = ox0 // GRID_STRIDE, -(-ox1 // GRID_STRIDE)
            for k, (p, c) in enumerate(found):
                probs[k][:, :, oy0:oy1, ox0:ox1] = p[:, :, oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
                corr[k][:, :, gy0:gy1, gx0:gx1] = c[:, :, gy0 - y0 // GRID_STRIDE:gy1 - y0 // GRID_STRIDE,
                                                    gx0 - x0 // GRID_STRIDE:gx1 - x0 // GRID_STRIDE]
        return list(zip(probs, corr, levels)), None

    def _window(self, query: PreparedQuery, batch: torch.Tensor, zoom: float, levels: list[Level],
                size: tuple[int, int], grid: tuple[int, int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Search one (window of the) working medium at one zoom, for each of its levels; also
        the window's raw stride-8 features."""
        medium = batch
        if zoom != 1.0:
            zoomed = (max(8, round(size[0] * zoom)), max(8, round(size[1] * zoom)))
            halved = zoomed[0] * 2 == size[0] and zoomed[1] * 2 == size[1]
            # Area-averaging by exactly 2 is a 2 x 2 average pool: the same values, 1.6x faster.
            medium = (F.avg_pool2d(batch, 2) if halved else
                      F.interpolate(batch, size=zoomed, mode="area" if zoom < 1 else "bilinear",
                                    **({} if zoom < 1 else {"align_corners": False})))
        encoded = self.model.encode_medium(medium)
        num_pairs = len(self.model.cfg.scale_pairs)
        found = []
        for level in levels:
            probs = corr = None
            # The query as given and mirrored, correlated together (one transform of the medium).
            kernels = [self.query_features(query, level.query_size, mirrored)
                       for mirrored in ((False, True) if self.mirror else (False,))]
            for out in self.model.search_many(kernels, encoded, medium_size=size):
                p = out["logits"].float().sigmoid()
                c = out["correlation"].float()
                c = c.reshape(c.shape[0], -1, num_pairs, *c.shape[-2:]).mean(dim=1)
                probs = p if probs is None else torch.maximum(probs, p)
                corr = c if corr is None else torch.maximum(corr, c)
            assert probs is not None and corr is not None
            if corr.shape[-2:] != grid:
                corr = F.interpolate(corr, size=grid, mode="bilinear", align_corners=False)
            found.append((probs, corr))
        return found, encoded.skip

    def _object_height(self, cosines: torch.Tensor, heights: list[float]) -> torch.Tensor:
        """Per grid cell, the object height (pixels) of the best-matching scale, N x 1 x grid.

        Smaller kernels score higher cosines on any texture (less to match), so each scale's
        cosine map is first standardised over the frame (how much the cell stands out at that
        scale); of the scales within ``scale_margin`` standard deviations of the best, the largest
        wins, since a larger kernel that matches nearly as well covers more of the object.
        """
        order = sorted(range(len(heights)), key=lambda i: heights[i])
        cosines = cosines[:, order]
        flat = cosines.flatten(2)
        # A medium as small as one grid cell has no spread to standardise by (std of one value is NaN).
        spread = flat.std(dim=2) if flat.shape[2] > 1 else torch.zeros_like(flat[:, :, 0])
        z = (cosines - flat.mean(dim=2)[..., None, None]) / (spread[..., None, None] + 1e-6)
        near_best = z >= z.amax(dim=1, keepdim=True) - self.scale_margin
        # The last True along the ascending scale axis: argmax of rank-weighted flags.
        ranks = torch.arange(1, len(order) + 1, device=z.device).view(1, -1, 1, 1)
        largest = (near_best * ranks).argmax(dim=1, keepdim=True)
        sizes = torch.tensor([heights[i] for i in order], device=z.device)
        return sizes[largest]


def describe(levels: Sequence[Level]) -> list[dict[str, Any]]:
    """Levels as plain values (logged and benchmark output)."""
    return [{"scale": l.scale, "kernel": list(l.query_size), "zoom": round(l.zoom, 3)} for l in levels]
