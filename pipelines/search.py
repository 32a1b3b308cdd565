"""Find a query object (e.g. a jacket's catalogue photo) in images and video frames.

Python API; the ``synth search`` command is a thin layer over it::

    from pipelines.search import Searcher, find

    searcher = Searcher()                        # untrained default: pretrained backbone + correlation
    result = searcher.find("jacket.png", "street.jpg")   # paths or RGB uint8 arrays
    for det in result.detections:                # highest score first, one per instance
        print(det.box, det.score, det.area)      # box = [x0, y0, x1, y1] in medium pixels
    heat = result.heatmap                        # float32 H x W in [0, 1] at the medium's size
    picture = result.highlight()                 # RGB: object kept, the rest dimmed, outlined
    line = result.to_json()                      # the dict written to detections.jsonl

    result = find("jacket.png", "street.jpg", threshold=0.5)   # one-off convenience

An alpha channel in the query (or ``query_mask=``) limits the search kernel to the object's pixels,
so a catalogue photo's white background does not match white walls. The query keeps its pixel
size: objects from ``min(query_scales)`` to ``max(query_scales)`` times the query's size are found
(the network's own (query, medium) scale pairs cover the gaps between pyramid levels). A query
larger than the (working size of the) medium is shrunk to fit, with a logged warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from augment.imageio import InputError, read_image, read_mask
from augment.system import tune_malloc
from train.backbones import fold_batchnorm
from train.model import GRID_STRIDE, QueryFeatures, QuerySearchNet, SearchNetConfig

logger = logging.getLogger(__name__)

ImageLike = Union[str, Path, np.ndarray]

# Heat-map threshold of the untrained default model. Calibrated with
# `python benchmarks/search.py --calibrate` (calibrate_threshold over 120 generated cases: crops of
# skimage photos, half of them with an elliptic alpha, pasted 0-2 times at 0.3-3x the query's size
# into other skimage photos, 30% partly occluded; F1 of detections at IoU >= 0.5 maximised over
# thresholds 0.20-0.80 in steps of 0.02): 0.34 (F1 0.73, precision 0.81, recall 0.66) with the
# default three scale pairs. On real garments (benchmarks/search_ccp_demo.py --calibrate,
# catalogue-style cut-outs of CCP photos 0001-0599) the best was 0.34 as well.
DEFAULT_THRESHOLD = 0.34
# Relative object sizes (object in the medium / query) searched as pyramid levels: levels <= 1
# shrink the query, levels > 1 shrink the medium instead (cheaper than growing the kernel). The
# network's scale pairs (0.5x-2x) fill the gaps, so the default covers about 0.25x-4x.
DEFAULT_QUERY_SCALES: tuple[float, ...] = (0.5, 1.0, 2.0)
# Media are searched at most this many pixels on their longer side (the query shrinks alike).
DEFAULT_MAX_SIDE = 1024
# Smallest query side in pixels worth correlating (two cells of the stride-8 grid).
MIN_QUERY_SIDE = 16
# A query object smaller than this on either side (after cropping to its mask) has no texture left to
# match: refused with one line rather than searched with detections that mean nothing.
MIN_QUERY_INPUT_SIDE = 8
# Bounds of --scales: past them a level's query is under a pixel or larger than any medium.
MIN_QUERY_SCALE, MAX_QUERY_SCALE = 0.05, 20.0
# Boxes overlapping by this IoU, or the smaller one this much inside the larger, are one
# instance (non-maximum suppression).
NMS_IOU = 0.5
NMS_CONTAINMENT = 0.7
# Object size estimate: the largest scale whose standardised cosine is within this many standard
# deviations of the best one (1.5-2.0 gave the most IoU >= 0.5 boxes on generated cases).
SCALE_MARGIN = 1.75
# Heat peaks closer than this fraction of the smallest searched query side are one peak.
PEAK_WINDOW_FRACTION = 0.5
# Highlight: pixels outside the (dilated) detections keep this fraction of their brightness.
DIM_FACTOR = 0.3
OUTLINE_RGB = (255, 40, 40)

# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Detection:
    """One instance: ``box`` = [x0, y0, x1, y1] (pixel edges, x1/y1 exclusive), ``score`` (the
    heat at its peak) and ``area`` (its estimated object pixels: the query's mask fitted into the
    box, clipped to the medium)."""

    box: tuple[int, int, int, int]
    score: float
    area: int

    def to_json(self) -> dict[str, Any]:
        return {"box": [int(v) for v in self.box], "score": round(float(self.score), 4),
                "area": int(self.area)}


@dataclass
class Result:
    """What a search found in one image or frame."""

    heatmap: np.ndarray  # float32 H x W in [0, 1]
    detections: list[Detection]
    threshold: float
    image: np.ndarray | None = None  # the medium (RGB uint8), kept for highlight()
    source: str | None = None
    query: str | None = None
    frame: int | None = None
    query_mask: np.ndarray | None = field(default=None, repr=False)  # object shape for highlight

    @property
    def height(self) -> int:
        return int(self.heatmap.shape[0])

    @property
    def width(self) -> int:
        return int(self.heatmap.shape[1])

    def heat_png(self) -> np.ndarray:
        """The heat map as 8-bit grey."""
        return np.clip(self.heatmap * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def object_mask(self) -> np.ndarray:
        """H x W uint8, 1 on the detected objects' pixels (the query's shape fitted to each box)."""
        return object_mask((self.height, self.width), self.detections, self.query_mask)

    def highlight(self, image: np.ndarray | None = None) -> np.ndarray:
        """The medium with detected objects kept, the rest dimmed and each instance outlined."""
        image = self.image if image is None else image
        if image is None:
            raise ValueError("no medium image kept in this Result; pass image=")
        return highlight(image, self.detections, self.query_mask)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "query": self.query, "frame": self.frame,
                "width": self.width, "height": self.height,
                "detections": [d.to_json() for d in self.detections]}


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def _duplicate(box: Sequence[float], kept: Sequence[float]) -> bool:
    """Same instance: boxes overlap by IoU >= NMS_IOU, or one mostly contains the other (the
    same object seen at two pyramid levels gives nested boxes of different sizes)."""
    inter = _intersection(box, kept)
    smaller = min(_area(box), _area(kept))
    return box_iou(box, kept) >= NMS_IOU or (smaller > 0 and inter / smaller >= NMS_CONTAINMENT)


def detect(heatmap: np.ndarray, object_height: np.ndarray, aspect: float, threshold: float,
           peak_window: int, fill: float = 1.0) -> list[Detection]:
    """Instances from a heat map: local maxima above ``threshold`` (one per ``peak_window``-sized
    neighbourhood), each boxed with the object size estimated where its heat came from
    (``object_height`` pixels, ``aspect`` = width / height), then non-maximum suppression.

    The network's heat is a correlation peak at the object's centre rather than its silhouette,
    so the box comes from the matched scale, not from the extent of the thresholded region.
    """
    h, w = heatmap.shape
    window = max(3, peak_window | 1)
    local_max = cv2.dilate(heatmap, cv2.getStructuringElement(cv2.MORPH_RECT, (window, window)))
    ys, xs = np.nonzero((heatmap >= threshold) & (heatmap >= local_max))
    order = np.argsort(-heatmap[ys, xs], kind="stable")
    ys, xs = ys[order], xs[order]
    # All peaks' boxes at once (a frame can hold hundreds of peaks at a low threshold).
    oh = object_height[ys, xs].astype(np.float64)
    half_w, half_h = oh * aspect / 2, oh / 2
    boxes = np.stack([np.maximum(0, np.round(xs + 0.5 - half_w)), np.maximum(0, np.round(ys + 0.5 - half_h)),
                      np.minimum(w, np.round(xs + 0.5 + half_w)), np.minimum(h, np.round(ys + 0.5 + half_h))],
                     axis=1)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    # Greedy NMS, highest first: each kept box suppresses its duplicates among all the rest at
    # once (a duplicate of an earlier kept box is never kept: the same result as pairwise checks).
    suppressed = ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    kept_rows: list[int] = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        kept_rows.append(i)
        suppressed[i + 1:] |= _duplicates(boxes[i], areas[i], boxes[i + 1:], areas[i + 1:])
    return [Detection(tuple(int(v) for v in boxes[i]), float(heatmap[ys[i], xs[i]]),
                      max(1, round(float(areas[i]) * fill))) for i in kept_rows]


def _duplicates(box: np.ndarray, area: float, kept: np.ndarray, kept_areas: np.ndarray) -> np.ndarray:
    """:func:`_duplicate` of one box against many boxes (vectorised)."""
    inter = (np.clip(np.minimum(box[2], kept[:, 2]) - np.maximum(box[0], kept[:, 0]), 0, None)
             * np.clip(np.minimum(box[3], kept[:, 3]) - np.maximum(box[1], kept[:, 1]), 0, None))
    union = area + kept_areas - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    smaller = np.minimum(area, kept_areas)
    contained = (smaller > 0) & (inter >= NMS_CONTAINMENT * np.where(smaller > 0, smaller, 1))
    return (iou >= NMS_IOU) | contained


def object_mask(size: tuple[int, int], detections: Sequence[Detection],
                query_mask: np.ndarray | None) -> np.ndarray:
    """The union of the query's shape (or the whole box, without a mask) fitted into each box."""
    region = np.zeros(size, np.uint8)
    for det in detections:
        x0, y0, x1, y1 = det.box
        if query_mask is None:
            region[y0:y1, x0:x1] = 1
        else:
            shape = cv2.resize(query_mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            region[y0:y1, x0:x1] |= (shape >= 0.5).astype(np.uint8)
    return region


def highlight(image: np.ndarray, detections: Sequence[Detection],
              query_mask: np.ndarray | None = None) -> np.ndarray:
    """Keep the detected objects' pixels and those near them (dilated by ~2% of the diagonal),
    dim the rest, and outline them. Drawn once per frame whatever the number of instances: the
    union of their shapes is dilated once (a distance transform: a disc of the radius), so
    instances whose kept regions touch share one outline."""
    h, w = image.shape[:2]
    radius = max(2, round(0.02 * math.hypot(h, w)))
    out = (image.astype(np.float32) * DIM_FACTOR).astype(np.uint8)
    if not detections:
        return out
    thickness = max(1, radius // 3)
    outside = 1 - object_mask((h, w), detections, query_mask)
    region = (cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius)
    out[region] = image[region]
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness=thickness)
    return out


# ----------------------------------------------------------------------------------------------
# Inputs


def load_rgb(image: ImageLike) -> np.ndarray:
    """RGB uint8 H x W x 3 from a path or an array (grey, RGB or RGBA; float arrays in [0, 1])."""
    if isinstance(image, (str, Path)):
        return read_image(image, "rgb")
    return _as_uint8(image)[..., :3] if image.ndim == 3 else np.dstack([_as_uint8(image)] * 3)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def load_query(query: ImageLike, query_mask: ImageLike | None = None,
               name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The query's RGB and object mask (float [0, 1], None = every pixel), cropped to the object.

    The mask is ``query_mask`` if given, else the query's alpha channel if it has a non-opaque one.
    """
    name = name or (str(query) if isinstance(query, (str, Path)) else "query")
    rgba = read_image(query, "rgba") if isinstance(query, (str, Path)) else None
    if rgba is None:
        array = _as_uint8(np.asarray(query))
        if array.ndim == 2:
            array = np.dstack([array] * 3)
        rgba = array if array.shape[2] == 4 else np.dstack(
            [array, np.full(array.shape[:2], 255, np.uint8)])
    rgb = np.ascontiguousarray(rgba[:, :, :3])
    if query_mask is not None:
        mask_name = str(query_mask) if isinstance(query_mask, (str, Path)) else "query mask"
        raw = read_mask(query_mask) if isinstance(query_mask, (str, Path)) else np.asarray(query_mask)
        if raw.ndim == 3:
            raw = raw[..., -1] if raw.shape[2] == 4 else raw[..., 0]
        if raw.shape[:2] != rgb.shape[:2]:
            raise InputError(f"{mask_name}: mask is {raw.shape[1]}x{raw.shape[0]} but the query "
                             f"{name} is {rgb.shape[1]}x{rgb.shape[0]}")
        mask = (raw > 0).astype(np.float32) if raw.dtype != np.float32 else np.clip(raw, 0, 1)
        source = mask_name
    elif rgba[:, :, 3].min() < 255:
        mask = rgba[:, :, 3].astype(np.float32) / 255.0
        source = f"{name} (alpha)"
    else:
        _check_query_size(name, rgb.shape[1], rgb.shape[0])
        return rgb, None
    ys, xs = np.nonzero(mask > 0.5)
    if ys.size == 0:
        raise InputError(f"{source}: the query mask is empty (no object pixels)")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    _check_query_size(name, x1 - x0, y1 - y0, " (its mask's extent)")
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1])


def _check_query_size(name: str, width: int, height: int, what: str = "") -> None:
    if min(width, height) < MIN_QUERY_INPUT_SIDE:
        raise InputError(f"{name}: query is {width}x{height} px{what}; at least {MIN_QUERY_INPUT_SIDE} px "
                         "per side is needed to search for it")


def _to_tensor(images: Sequence[np.ndarray], device: torch.device,
               channels_last: bool) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else
                            torch.contiguous_format)


def _resize_hw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------
# Model


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for absent CUDA is an InputError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def load_model(checkpoint: Path | str | None) -> tuple[QuerySearchNet, float | None]:
    """The search network and the threshold calibrated for it (None = not stored).

    No checkpoint: the untrained network (pretrained backbone + normalised correlation + the
    conversion net's initial monotone readout). A checkpoint is a ``synth train`` checkpoint; a
    float under its ``search_threshold`` key is taken as its calibrated threshold.
    """
    if checkpoint is None:
        return QuerySearchNet(SearchNetConfig()), None
    from train.checkpoint import load_checkpoint, load_model_state
    from train.config import TrainConfig

    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_checkpoint(state)
    model = QuerySearchNet(config.model_config())
    load_model_state(model, state, checkpoint)
    threshold = state.get("search_threshold")
    return model, None if threshold is None else float(threshold)


@dataclass
class SearchMaps:
    """Per medium of a batch: heat (N x H x W in [0, 1]) and the height in pixels of the object
    that would explain the heat at each pixel (from the best-matching scale)."""

    heat: np.ndarray
    object_height: np.ndarray


@dataclass
class PreparedQuery:
    """A query's pixels and its encoded features, cached per working size (computed once)."""

    name: str
    rgb: np.ndarray
    mask: np.ndarray | None
    # Features per query size in pixels; valid for the Searcher (network) that computed them.
    features: dict[tuple[int, int], QueryFeatures] = field(default_factory=dict)
    warned_shrink: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


class Searcher:
    """Searches queries in media with one loaded network; see the module docstring for an example.

    ``threshold`` None takes the checkpoint's calibrated threshold, else :data:`DEFAULT_THRESHOLD`.
    ``query_scales``: relative object sizes searched (see :data:`DEFAULT_QUERY_SCALES`).
    """

    def __init__(self, checkpoint: Path | str | None = None, device: str = "auto",
                 threshold: float | None = None,
                 query_scales: Sequence[float] = DEFAULT_QUERY_SCALES,
                 max_side: int = DEFAULT_MAX_SIDE, amp: bool = True) -> None:
        tune_malloc()
        if not query_scales or any(not MIN_QUERY_SCALE <= s <= MAX_QUERY_SCALE for s in query_scales):
            raise InputError(f"query scales must lie in [{MIN_QUERY_SCALE:g}, {MAX_QUERY_SCALE:g}], "
                             f"not {list(query_scales)}")
        self.device = resolve_device(device)
        model, stored = load_model(checkpoint)
        self.threshold = float(threshold if threshold is not None else
                               stored if stored is not None else DEFAULT_THRESHOLD)
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1, not {self.threshold}")
        self.query_scales = tuple(sorted(float(s) for s in query_scales))
        self.max_side = int(max_side)
        self.scale_margin = SCALE_MARGIN
        self.channels_last = self.device.type == "cpu"
        model = fold_batchnorm(model).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: QuerySearchNet = model
        self.amp = amp and self.device.type == "cuda"

    # -- queries --------------------------------------------------------------------------------

    def prepare(self, query: ImageLike | PreparedQuery,
                query_mask: ImageLike | None = None) -> PreparedQuery:
        """Read a query once; its features are computed on first use and then reused."""
        if isinstance(query, PreparedQuery):
            return query
        name = str(query) if isinstance(query, (str, Path)) else "query"
        rgb, mask = load_query(query, query_mask, name)
        return PreparedQuery(name, rgb, mask)

    def _query_features(self, query: PreparedQuery, size: tuple[int, int]) -> QueryFeatures:
        if size not in query.features:
            rgb = _resize_hw(query.rgb, *size)
            with torch.inference_mode(), self._autocast():
                tensor = _to_tensor([rgb], self.device, self.channels_last)
                mask = None
                if query.mask is not None:
                    mask = torch.from_numpy(_resize_hw(query.mask, *size)).to(self.device)[None, None]
                query.features[size] = self.model.encode_query(tensor, mask)
        return query.features[size]

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def working_size(self, height: int, width: int) -> tuple[int, int, float]:
        """(height, width, factor) the medium is searched at: the longer side at most max_side."""
        factor = min(1.0, self.max_side / max(height, width))
        return max(1, round(height * factor)), max(1, round(width * factor)), factor

    def _levels(self, query: PreparedQuery, work_h: int, work_w: int,
                factor: float) -> list[tuple[tuple[int, int], float]]:
        """Per pyramid level: the query's size in pixels and the medium's zoom (<= 1)."""
        qh, qw = query.size[0] * factor, query.size[1] * factor
        fit = min(1.0, work_h / qh, work_w / qw)
        if fit < 1.0:
            if not query.warned_shrink:  # once per query, not once per video batch
                query.warned_shrink = True
                logger.warning("%s: query (%dx%d) is larger than the medium; shrinking it by %.2f "
                               "to fit", query.name, round(qw), round(qh), fit)
            qh, qw = qh * fit, qw * fit
        levels: list[tuple[tuple[int, int], float]] = []
        for scale in self.query_scales:
            q_zoom, m_zoom = (scale, 1.0) if scale <= 1.0 else (1.0, 1.0 / scale)
            size = (round(qh * q_zoom), round(qw * q_zoom))
            if min(size) < MIN_QUERY_SIDE:
                grow = MIN_QUERY_SIDE / min(size)
                size = (round(size[0] * grow), round(size[1] * grow))
            if (size, m_zoom) not in levels:
                levels.append((size, m_zoom))
        return levels

    # -- search ---------------------------------------------------------------------------------

    def maps(self, query: PreparedQuery, media: Sequence[np.ndarray]) -> SearchMaps:
        """Heat and object-size maps of one query in same-size RGB media (a batch of frames).

        Per pyramid level the network's heat is taken; the per-pixel maximum over levels is the
        heat map, and the winning level and (query, medium) scale pair give the object's size.
        """
        height, width = media[0].shape[:2]
        work_h, work_w, factor = self.working_size(height, width)
        levels = self._levels(query, work_h, work_w, factor)
        frames = [_resize_hw(m, work_h, work_w) for m in media]
        pair_scales = [q / m for q, m in self.model.cfg.scale_pairs]
        num_pairs = len(pair_scales)
        grid = (-(-work_h // GRID_STRIDE), -(-work_w // GRID_STRIDE))
        with torch.inference_mode(), self._autocast():
            batch = _to_tensor(frames, self.device, self.channels_last)
            heat: torch.Tensor | None = None
            cosines: list[torch.Tensor] = []  # per (level, pair): N x 1 x grid cosine
            heights: list[float] = []  # the object height (medium pixels) each one stands for
            encoded: dict[float, Any] = {}
            for q_size, m_zoom in levels:
                if m_zoom not in encoded:
                    scaled = batch if m_zoom == 1.0 else F.interpolate(
                        batch, size=(max(8, round(work_h * m_zoom)), max(8, round(work_w * m_zoom))),
                        mode="area")
                    encoded[m_zoom] = self.model.encode_medium(scaled)
                out = self.model.search(self._query_features(query, q_size), encoded[m_zoom],
                                        medium_size=(height, width))
                probs = out["logits"].float().sigmoid()
                heat = probs if heat is None else torch.maximum(heat, probs)
                corr = out["correlation"].float()
                corr = corr.reshape(corr.shape[0], -1, num_pairs, *corr.shape[-2:]).mean(dim=1)
                corr = F.interpolate(corr, size=grid, mode="bilinear", align_corners=False)
                cosines.extend(corr.split(1, dim=1))
                heights.extend(q_size[0] / m_zoom / factor * rel for rel in pair_scales)
            size = self._object_height(torch.cat(cosines, dim=1), heights)
            size = F.interpolate(size, size=(height, width), mode="nearest")
        assert heat is not None
        return SearchMaps(heat[:, 0].cpu().numpy(), size[:, 0].cpu().numpy())

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

    def heatmaps(self, query: ImageLike | PreparedQuery, media: Sequence[np.ndarray]) -> np.ndarray:
        """Heat maps (N x H x W float32 in [0, 1]) of one query in same-size RGB media."""
        return self.maps(self.prepare(query), media).heat

    def detect(self, query: PreparedQuery, heat: np.ndarray, object_height: np.ndarray,
               threshold: float | None = None) -> list[Detection]:
        """Instances in one frame's maps (see :func:`detect`)."""
        qh, qw = query.size
        peak_window = round(PEAK_WINDOW_FRACTION * min(qh, qw) * min(self.query_scales))
        fill = 1.0 if query.mask is None else float((query.mask >= 0.5).mean())
        return detect(heat, object_height, qw / qh, self.threshold if threshold is None else
                      threshold, peak_window, fill)

    def find_many(self, query: ImageLike | PreparedQuery, media: Sequence[np.ndarray],
                  sources: Sequence[str | None] | None = None,
                  frames: Sequence[int | None] | None = None,
                  keep_images: bool = True) -> list[Result]:
        """Search one query in a batch of same-size RGB media (e.g. video frames)."""
        prepared = self.prepare(query)
        maps = self.maps(prepared, media)
        results = []
        for i, (heat, size) in enumerate(zip(maps.heat, maps.object_height)):
            results.append(Result(
                heatmap=heat, detections=self.detect(prepared, heat, size),
                threshold=self.threshold, image=media[i] if keep_images else None,
                source=sources[i] if sources else None, query=prepared.name,
                frame=frames[i] if frames else None, query_mask=prepared.mask))
        return results

    def find(self, query: ImageLike | PreparedQuery, medium: ImageLike,
             query_mask: ImageLike | None = None) -> Result:
        """Search ``query`` (path, RGB(A) array or prepared query) in one image."""
        prepared = self.prepare(query, query_mask)
        image = load_rgb(medium)
        source = str(medium) if isinstance(medium, (str, Path)) else None
        return self.find_many(prepared, [image], sources=[source])[0]


def find(query: ImageLike, medium: ImageLike, query_mask: ImageLike | None = None,
         **searcher_options: Any) -> Result:
    """One-off search with a fresh :class:`Searcher` (build a Searcher to search many media)."""
    return Searcher(**searcher_options).find(query, medium, query_mask)


# ----------------------------------------------------------------------------------------------
# Threshold calibration


@dataclass
class CalibrationCase:
    """A query, a medium and the true boxes of the query's instances in it (may be empty)."""

    query: ImageLike
    medium: ImageLike
    boxes: list[tuple[float, float, float, float]]
    query_mask: ImageLike | None = None


@dataclass
class Calibration:
    threshold: float
    f1: float
    precision: float
    recall: float
    table: list[dict[str, float]]  # per candidate threshold: threshold, f1, precision, recall


def match_counts(detections: Sequence[Detection], boxes: Sequence[Sequence[float]],
                 iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), greedy by score at IoU >= ``iou``."""
    unmatched = list(boxes)
    tp = 0
    for det in detections:
        best = max(range(len(unmatched)), key=lambda j: box_iou(det.box, unmatched[j]),
                   default=None)
        if best is not None and box_iou(det.box, unmatched[best]) >= iou:
            unmatched.pop(best)
            tp += 1
    return tp, len(detections) - tp, len(unmatched)


def calibrate_threshold(searcher: Searcher, cases: Iterable[CalibrationCase],
                        thresholds: Sequence[float] | None = None,
                        iou: float = 0.5) -> Calibration:
    """The heat threshold maximising F1 of detections (IoU >= ``iou``) over ``cases``.

    Each case's heat map is computed once; every candidate threshold is applied to all of them.
    """
    candidates = list(thresholds) if thresholds is not None else [
        round(t, 2) for t in np.arange(0.2, 0.81, 0.02)]
    maps: list[tuple[PreparedQuery, SearchMaps, list]] = []
    for case in cases:
        prepared = searcher.prepare(case.query, case.query_mask)
        maps.append((prepared, searcher.maps(prepared, [load_rgb(case.medium)]), list(case.boxes)))
    if not maps:
        raise InputError("no calibration cases")
    table = []
    for t in candidates:
        tp = fp = fn = 0
        for prepared, found, boxes in maps:
            detections = searcher.detect(prepared, found.heat[0], found.object_height[0], t)
            a, b, c = match_counts(detections, boxes, iou)
            tp, fp, fn = tp + a, fp + b, fn + c
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        table.append({"threshold": float(t), "f1": f1, "precision": precision, "recall": recall})
    best = max(table, key=lambda row: (row["f1"], -abs(row["threshold"] - 0.5)))
    return Calibration(best["threshold"], best["f1"], best["precision"], best["recall"], table)
