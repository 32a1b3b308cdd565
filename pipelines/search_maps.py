"""The network-facing half of the search: heat and object-size maps per frame, over the pyramid
levels of :mod:`pipelines.search_levels` (a kernel per relative object size, the medium zoomed
so that the kernel spans enough cells of the stride-8 grid, in overlapping tiles where a zoomed
medium is too large). The network's own (query, medium) scale pairs cover the gaps between levels.
The model, the prepared query and the media tensors it runs on: :mod:`pipelines.search_inputs`.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from augment.imageio import InputError
from pipelines.search_levels import (AUTO_MAX_LEVELS, AUTO_MIN_OBJECT_FRACTION, AUTO_OCTAVE_PRIOR,  # noqa: F401
                                     DEFAULT_EXTEND_HEAT, DEFAULT_MAX_SIDE, EXTEND_MAX_ZOOM, FIT_TOLERANCE, EXTEND_OCTAVES, EXTEND_PROBE_RATIO,
                                     EXTEND_WINDOW_AREA, EXTEND_WINDOW_RATIO,
                                     DEFAULT_QUERY_SCALES, DEFAULT_SCALES, MAX_KERNEL_SIDE,
                                     MAX_QUERY_SCALE, MAX_TILE_PIXELS, MAX_ZOOM, MIN_KERNEL_MEAN,
                                     MIN_KERNEL_SIDE, MIN_QUERY_SCALE, MIN_QUERY_SIDE, MIN_SEEN_SIDE,
                                     SHARE_ZOOM_OCTAVES, ZOOM_STEPS_PER_OCTAVE, Level, auto_scales, check_scales,
                                     describe, plan_levels, share_zooms, smaller_scales, smallest_plausible_scale)
from pipelines.object_size import object_height
from pipelines.search_inputs import (PreparedQuery, SearchMaps, load_checkpoint_model, resize_hw,  # noqa: F401 (API)
                                     resolve_device, to_tensor, untrained_model)
from pipelines.search_tiles import cores_on_grid, hot_windows
from pipelines.search_zoom import ZoomSearch
from train.backbones import fold_batchnorm
from train.model import GRID_STRIDE, MediumFeatures, QuerySearchNet

logger = logging.getLogger(__name__)

# The object's size at a place is the largest scale whose standardised cosine is within this many
# standard deviations of the best (NetworkSearch._object_height). 0.75, not 1.75: the wider margin
# boxed small garments 2-3x too large (CCP calibration, heat map alone with the mirror and 72-px
# kernels: top-1 0.867 -> 0.917; crowd mosaics succAUC 0.528 -> 0.569); 0 lost a fused case on CCP
# calibration. With pipelines/object_size.py's penalty (then on every resampled pair) and refinement,
# 0.35 did as 0.75 on calibration photos (crowd succAUC 0.597 / mosaic-cut 0.690, CCP heat top-1 0.990).
SCALE_MARGIN = 0.75
# Origins and sizes (modulo) of the up-sampled level's windows, working pixels (NetworkSearch._windows).
# With the grid stride's 8 instead, the generated 6x-smaller astronaut's box moved (IoU 0.68 -> 0.60).
WINDOW_ALIGN = 32


class NetworkSearch(ZoomSearch):
    """Runs the search network over pyramid levels; see the module docstring.

    ``mirror`` also searches the query mirrored left-right (a catalogue shot need not face the way
    the object does in the scene) and keeps the better match per pixel. ``query_scales`` None
    chooses them per query and medium size (:func:`auto_scales` from :data:`DEFAULT_QUERY_SCALES`);
    :data:`DEFAULT_SCALES` searches DEFAULT_QUERY_SCALES less the implausibly small ones, and a frame
    where none of these reaches ``extend_heat`` again for a smaller object
    (:meth:`smaller_levels`; None: never); given scales are searched as they are.
    """

    def __init__(self, model: QuerySearchNet, device: torch.device, query_scales: Sequence[float] | str | None,
                 max_side: int = DEFAULT_MAX_SIDE, amp: bool = True, mirror: bool = True,
                 min_kernel_side: int = MIN_KERNEL_SIDE, max_kernel_side: int = MAX_KERNEL_SIDE,
                 max_zoom: float = MAX_ZOOM, max_tile_pixels: int = MAX_TILE_PIXELS,
                 scale_margin: float = SCALE_MARGIN, octave_prior: float = AUTO_OCTAVE_PRIOR,
                 min_object_fraction: float = AUTO_MIN_OBJECT_FRACTION,
                 min_kernel_mean: float = MIN_KERNEL_MEAN,
                 extend_heat: float | None = DEFAULT_EXTEND_HEAT, extend_octaves: int = EXTEND_OCTAVES,
                 extend_max_zoom: float = EXTEND_MAX_ZOOM, extend_probe_ratio: float = EXTEND_PROBE_RATIO,
                 share_zoom_octaves: float = SHARE_ZOOM_OCTAVES,
                 extend_window_ratio: float | None = EXTEND_WINDOW_RATIO,
                 extend_window_area: float = EXTEND_WINDOW_AREA) -> None:
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
        self.query_scales = tuple(sorted({float(s) for s in given}))  # each once: 1,1,2 is 2,1's search
        self.max_side = int(max_side)
        self.warned_unseen = False  # NetworkSearch.unseen_warning said (once per search)
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
        if extend_heat is not None and not 0.0 < extend_heat <= 1.0:
            raise InputError(f"extend_heat must be in (0, 1] or None, not {extend_heat}")
        self.extend_heat = extend_heat
        if extend_octaves < 1:
            raise InputError(f"extend_octaves must be at least 1, not {extend_octaves}")
        self.extend_octaves = int(extend_octaves)
        self.extend_max_zoom = min(max_zoom, extend_max_zoom)
        self.extend_probe_ratio = float(extend_probe_ratio)
        if extend_window_ratio is not None and not 0.0 < extend_window_ratio <= 1.0:
            raise InputError(f"extend_window_ratio must be in (0, 1] or None, not {extend_window_ratio}")
        self.extend_window_ratio = extend_window_ratio  # None: the up-sampled level over the whole medium
        self.extend_window_area = float(extend_window_area)
        self.share_zoom_octaves = float(share_zoom_octaves)
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
        self.onnx = False  # media encoded by onnxruntime once use_onnx is called

    def use_onnx(self) -> None:
        """Encode media with onnxruntime from now on where it can stand in for PyTorch (on the CPU:
        ~25% less time per encoding; pipelines/onnx_backbone.py). Its graph is exported at the
        first encoding, once per process and thread count (~1.3 s at one thread, so long jobs
        call this, not one image's search), in the thread that searches."""
        self.onnx = not self.amp and self.device.type == "cpu"

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def working_size(self, height: int, width: int) -> tuple[int, int, float]:
        """(height, width, factor) the medium is searched at: the longer side at most max_side."""
        factor = min(1.0, self.max_side / max(height, width))
        return max(1, round(height * factor)), max(1, round(width * factor)), factor

    def unseen_warning(self, query: PreparedQuery, height: int, width: int) -> str | None:
        """What to say where an object of the query's size in a medium of ``height`` x ``width`` is
        under :data:`MIN_SEEN_SIDE` at the working size even zoomed ``max_zoom``: the ``max_side`` that
        brings it over (a multiple of 128, at most the medium's own size); None where it is seen."""
        _, _, factor = self.working_size(height, width)
        short = min(query.size)
        if factor >= 1.0 or short * factor * self.max_zoom >= MIN_SEEN_SIDE:
            return None
        longer = max(height, width)
        needed = min(longer, math.ceil(longer * MIN_SEEN_SIDE / (self.max_zoom * short) / 128) * 128)
        return (f"the query ({query.size[1]}x{query.size[0]} px) is {query.size[1] * factor:.0f}x"
                f"{query.size[0] * factor:.0f} px at the search's working size ({self.max_side} px on the medium's "
                f"longer side, {width}x{height} here), under the {MIN_SEEN_SIDE / self.max_zoom:g} px it finds even "
                f"zoomed {self.max_zoom:g}x: an object of its size is likely missed; pass --max-side {needed} (slower)")

    def level_prior(self, scale: float) -> float:
        """The weight of a level's heat: 1 for given scales and the automatic range's base,
        ``octave_prior`` per octave below the base for the levels the automatic range (or the
        default's second pass, :meth:`smaller_levels`) adds."""
        if not (self.auto_scales or self.default_scales) or scale >= self.query_scales[0]:
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
        # plan_levels searches a scale up to 1% larger than the medium as it is (FIT_TOLERANCE): only
        # beyond that is the query shrunk (the warning said "shrinking it by 1.00" for a fit of 0.996).
        if fit * FIT_TOLERANCE < 1.0 and not query.warned_shrink:  # once per query, not once per video batch
            query.warned_shrink = True
            # In the files' own pixels, and the size searched instead: "shrinking it by 1.00" (a fit
            # of 0.996 rounded) and the query's full size called its smallest scale's misled.
            logger.warning("%s: the query (%dx%d px) at its smallest searched size (%gx) is larger than the "
                           "medium (%dx%d px); searched at %.3gx its size instead, the largest that fits",
                           query.name, query.size[1], query.size[0], scales[0], width, height, scales[0] * fit)
        if self.auto_scales and (height, width) not in query.logged_scales:
            query.logged_scales.add((height, width))
            logger.debug("%s: searching relative sizes %s in %dx%d media", query.name,
                        ", ".join(f"{s:g}" for s in scales), width, height)
        levels = plan_levels((qh, qw), (work_h, work_w), scales, self.min_kernel_side,
                             self.max_kernel_side, self.max_zoom, self.min_kernel_mean)
        return share_zooms(levels, (qh, qw), (work_h, work_w), self.share_zoom_octaves)

    def smaller_levels(self, query: PreparedQuery, height: int, width: int, searched: Sequence[Level] = (),
                       max_zoom: float | None = None) -> list[Level]:
        """The levels of the default search's second pass (see :data:`DEFAULT_EXTEND_HEAT`): the
        object ``extend_octaves`` smaller than the default scales' smallest, the medium up-sampled
        at most ``extend_max_zoom`` (or ``max_zoom``), less the ``searched`` ones (the first pass's);
        none for given or automatic scales, or a query small against the medium."""
        if not self.default_scales or self.extend_heat is None:
            return []
        work_h, work_w, factor = self.working_size(height, width)
        qh, qw = query.size[0] * factor, query.size[1] * factor
        scales = smaller_scales((qh, qw), (work_h, work_w), self.query_scales, self.extend_octaves)
        if not scales:
            return []
        first = {(l.query_size, l.zoom) for l in searched}
        levels = plan_levels((qh, qw), (work_h, work_w), scales, self.min_kernel_side, self.max_kernel_side,
                             self.extend_max_zoom if max_zoom is None else max_zoom, self.min_kernel_mean)
        return [l for l in levels if (l.query_size, l.zoom) not in first]

    def maps(self, query: PreparedQuery, media: Sequence[np.ndarray]) -> SearchMaps:
        """Heat and object-size maps of one query in same-size RGB media (a batch of frames).

        Per level the network's heat is taken; the per-pixel maximum over levels (and over the
        mirrored query) is the heat map, and the winning level and scale pair give the object's size.
        Levels sharing a zoom share one encoding of the medium. Frames whose best heat stays under
        ``extend_heat`` are searched again at :meth:`smaller_levels` (the default scales only).
        """
        height, width = media[0].shape[:2]
        work_h, work_w, factor = self.working_size(height, width)
        frames = [resize_hw(m, work_h, work_w) for m in media]
        grid = (-(-work_h // GRID_STRIDE), -(-work_w // GRID_STRIDE))
        with torch.inference_mode(), self.autocast():
            batch = to_tensor(frames, self.device, self.channels_last)
            levels = self.levels(query, height, width)
            # The media encoded whole per zoom, for the second pass's probe (often at zoom 1, which
            # the first pass may have encoded already: one backbone pass saved).
            encoded: dict[float, MediumFeatures] = {}
            heat, cosines, heights, features = self._search(query, batch, levels, grid, factor, encoded=encoded)
            size = self._object_height(cosines, heights)
            if self.default_scales and self.extend_heat is not None:
                probed = self._second_pass(query, batch, levels, (height, width), grid, factor, heat, size, cosines,
                                           heights, encoded)
                # The probe's encoding of the medium as it is serves verification where the first
                # pass had none (it would encode those cells again).
                features = probed if features is None else features
            if (height, width) != (work_h, work_w):
                heat = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)
            size = F.interpolate(size, size=(height, width), mode="nearest")
        return SearchMaps(heat[:, 0].clamp(0, 1).cpu().numpy(), size[:, 0].cpu().numpy(), features)

    def _second_pass(self, query: PreparedQuery, batch: torch.Tensor, searched: list[Level], medium_hw: tuple[int, int],
                     grid: tuple[int, int], factor: float, heat: torch.Tensor, size: torch.Tensor,
                     cosines: torch.Tensor, heights: list[float],
                     encoded: dict[float, MediumFeatures] | None = None) -> np.ndarray | None:
        """The frames whose best heat stays under ``extend_heat`` searched again at
        :meth:`smaller_levels` (where the probe, that level in the medium as it is, scores),
        merged into ``heat`` and ``size`` in place. ``encoded``: the first pass's encodings of the
        whole batch per zoom (reused where every frame is searched again). Returns the probe's raw
        stride-8 features of the whole batch where it encoded them (else None)."""
        assert self.extend_heat is not None
        best = heat.flatten(1).amax(dim=1)
        weak = (best < self.extend_heat).nonzero().flatten()
        if not len(weak):
            return None
        smaller = self.smaller_levels(query, *medium_hw, searched)
        if not smaller:
            return None
        probe = self.smaller_levels(query, *medium_hw, searched, max_zoom=1.0)
        features = None
        windows = None
        if probe and probe != smaller:  # the up-sampled level only where its probe scores
            whole = len(weak) == len(batch)
            found, _, _, features = self._search(query, self._frames(batch, weak), probe, grid, factor,
                                                 second_pass=True, encoded=encoded if whole else None)
            features = features if whole else None
            scores = found.flatten(1).amax(dim=1) >= self.extend_probe_ratio * best[weak]
            weak, found = weak[scores], found[scores]
            if not len(weak):
                return features
            windows = self._windows(found, smaller)
        logger.debug("%s: %d of %d frames searched again at relative size %s%s", query.name, len(weak),
                     len(batch), ", ".join(f"{l.scale:g} (zoom {l.zoom:g})" for l in smaller),
                     "" if windows is None else f" in {len(windows)} windows")
        more, more_cosines, more_heights, more_features = self._search(query, self._frames(batch, weak), smaller,
                                                                       grid, factor, second_pass=True, windows=windows)
        heat[weak] = torch.maximum(heat[weak], more)
        valid = None if windows is None else torch.from_numpy(cores_on_grid(windows, grid)).to(more.device)[None, None]
        merged = self._object_height(torch.cat([cosines[weak], more_cosines], dim=1), heights + more_heights,
                                     None if valid is None else [None] * cosines.shape[1] + [valid] * more_cosines.shape[1])
        # Outside the windows the up-sampled level was not searched: the first pass's sizes stand.
        size[weak] = merged if valid is None else torch.where(valid, merged, size[weak])
        return features if features is not None or len(weak) < len(batch) else more_features

    def _windows(self, probed: torch.Tensor, levels: list[Level]
                 ) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] | None:
        """Where the up-sampled ``levels`` are searched (coarse to fine, :data:`EXTEND_WINDOW_RATIO`):
        windows around the working pixels where the probe's heat ``probed`` (N x 1 x H x W) reaches
        ``extend_window_ratio`` of its frame's best, in any of the frames; None: the whole medium."""
        if self.extend_window_ratio is None:
            return None
        best = probed.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
        hot = (probed >= self.extend_window_ratio * best).any(dim=0)[0].cpu().numpy()
        reach = (math.ceil(max(l.query_size[0] / l.zoom for l in levels)),
                 math.ceil(max(l.query_size[1] / l.zoom for l in levels)))
        # As much context past a core as a tile has past its owned part (_zoom's overlap, halved).
        context = -(-(max(math.ceil(max(l.query_size) / l.zoom) for l in levels) + 32) // 2)
        # Windows start on the grid of the backbone's coarsest stride (32 px) in the zoomed medium for
        # zooms up to 2 and match its size modulo that stride, so every layer's grid lines up with
        # the whole medium's (see pipelines/scene_cells.py); what differs is what lies past them.
        return hot_windows(hot, reach, context, self.extend_window_area, align=WINDOW_ALIGN)

    def _frames(self, batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The frames ``index`` of ``batch`` (all of it where that is all), in its memory format."""
        if len(index) == len(batch):
            return batch
        return batch[index].contiguous(memory_format=torch.channels_last if self.channels_last
                                       else torch.contiguous_format)

    def _search(self, query: PreparedQuery, batch: torch.Tensor, levels: list[Level], grid: tuple[int, int],
                factor: float, second_pass: bool = False, encoded: dict[float, MediumFeatures] | None = None,
                windows: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list[float], np.ndarray | None]:
        """Over ``levels`` of the working media ``batch``: the heat (N x 1 x work size, each level's
        weighted by :meth:`level_prior` for automatic scales and the default's ``second_pass``), the per-(level, pair) cosines (N x P x grid), the object
        height (original pixels) each cosine stands for, and the raw features where a level searched
        the media unzoomed and whole. ``encoded`` (zoom -> the whole batch's encoding) is read and
        filled where a zoom's medium is encoded whole. ``windows`` ((window, core) pairs, working
        pixels): only these are searched, and only their cores' maps written (zero elsewhere)."""
        by_zoom: dict[float, list[Level]] = {}
        for level in levels:
            by_zoom.setdefault(level.zoom, []).append(level)
        heat: torch.Tensor | None = None
        cosines: list[torch.Tensor] = []  # per (level, pair): N x 1 x grid cosine
        heights: list[float] = []  # the object height (original pixels) each one stands for
        pair_scales = [q / m for q, m in self.model.cfg.scale_pairs]
        features = None
        for zoom, zoom_levels in by_zoom.items():
            found, skip = self._zoom(query, batch, zoom, zoom_levels, grid, encoded, windows)
            if skip is not None and zoom == 1.0:
                features = skip.float().contiguous().cpu().numpy()
            for probs, corr, level in found:
                weight = self.level_prior(level.scale) if self.auto_scales or second_pass else 1.0
                probs = probs if weight == 1.0 else probs * weight
                heat = probs if heat is None else torch.maximum(heat, probs)
                cosines.extend(corr.split(1, dim=1))
                heights.extend(level.query_size[0] / level.zoom / factor * rel for rel in pair_scales)
        assert heat is not None
        return heat, torch.cat(cosines, dim=1), heights, features

    def _object_height(self, cosines: torch.Tensor, heights: list[float],
                       valid: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Per grid cell, the object height (pixels) of the best-matching size, N x 1 x grid
        (:func:`pipelines.object_size.object_height`). ``heights`` come per level in the order of
        the network's scale pairs (:meth:`_search`), so a height's pair is its index modulo theirs."""
        pairs = self.model.cfg.scale_pairs
        assert len(heights) % len(pairs) == 0
        resampled = [pairs[i % len(pairs)] != (1.0, 1.0) for i in range(len(heights))]
        return object_height(cosines, heights, resampled, self.scale_margin, valid=valid)

