"""Heat maps -> detections: peaks, boxes from each peak's heat region, non-maximum suppression.

A peak is a local maximum of the heat map. Its box comes from the heat map's own region around it
(the pixels connected to the peak whose heat is at least ``REGION_LEVEL`` of the highest heat near
them: the conversion net predicts object pixels, so for a trained head this region is the object)
where that region is *object-shaped*; otherwise, e.g. for the untrained network whose heat is a
correlation blob at the object's centre, from the object size of the scale that matched best.

Everything per frame is vectorised: one pooling for the peaks, one connected-component pass for
all regions, one pairwise-overlap matrix for the suppression, so a frame with 150 peaks costs
about what a frame with one does (issue 12's video tracking searches every frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

# Boxes overlapping by this IoU, or the smaller one this much inside the larger, are one
# instance (non-maximum suppression).
NMS_IOU = 0.5
NMS_CONTAINMENT = 0.7
# A pixel belongs to a peak's heat region when its heat is at least this fraction of the highest
# heat within a peak window around it (and it is connected to the peak).
REGION_LEVEL = 0.5
# The region is object-shaped when its box's area is within these factors of the scale box's area
# (a blob much smaller than the matched scale is a correlation peak, not the object's pixels) and
# the region fills at least REGION_MIN_FILL of its own box.
REGION_AREA_RANGE = (0.2, 2.5)
REGION_MIN_FILL = 0.25
# Peaks are looked for on a grid this many pixels apart (the heat is up-sampled from stride 4-8).
PEAK_CELL = 4
# At most this many peaks per frame are boxed (the highest); more are noise at any threshold.
MAX_PEAKS = 256


def json_score(value: float) -> float:
    """A score or threshold as detections.jsonl writes it: four decimals, four significant digits
    under 0.1, so a small fused score keeps the digits its label shows (augment.draw_labels.format_score:
    a best guess of 3.4e-05 was written 0.0, as though nothing had matched at all)."""
    value = float(value)
    return float(f"{value:.4g}") if abs(value) < 0.1 else round(value, 4)


@dataclass(frozen=True)
class Detection:
    """One instance: ``box`` = [x0, y0, x1, y1] (pixel edges, x1/y1 exclusive), ``score`` (the
    heat at its peak), ``area`` (its estimated object pixels), ``peak`` (x, y) and ``source`` of the
    box: ``heat`` (the heat region), ``scale`` (the matched scale) or ``verified`` (fitted by
    geometric verification, :mod:`pipelines.fusion`)."""

    box: tuple[int, int, int, int]
    score: float
    area: int
    peak: tuple[int, int] = (0, 0)
    source: str = "scale"
    # Verification (issue 13, pipelines/fusion.py): the heat at the peak (``score`` is then the
    # fused score), whether the candidate was verified (None: not checked) and by how many inliers.
    heat: float | None = None
    verified: bool | None = None
    inliers: int = 0

    def to_json(self) -> dict[str, Any]:
        line = {"box": [int(v) for v in self.box], "score": json_score(self.score),
                "area": int(self.area), "peak": [int(v) for v in self.peak], "box_from": self.source}
        if self.heat is not None:  # verification ran
            line.update(heat=json_score(self.heat), verified=self.verified, inliers=int(self.inliers))
        return line


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    return float(pairwise_overlaps(np.asarray([a], float), np.asarray([b], float))[0][0, 0])


def pairwise_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, intersection / smaller area) of every box of ``a`` (n x 4) with every box of ``b``."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        contained = np.where(smaller > 0, inter / smaller, 0.0)
    return iou, contained


def find_peaks(heat: np.ndarray, floor: float, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``heat`` at or above ``floor``, highest first, as (ys, xs).

    The heat is max-pooled into ``PEAK_CELL``-pixel cells first (each cell remembers where its
    maximum is), so a plateau gives one peak and the cost does not grow with the number of peaks.
    A cell is a peak when it is the maximum within ``window`` pixels.
    """
    h, w = heat.shape
    cell = PEAK_CELL
    ch, cw = -(-h // cell), -(-w // cell)
    padded = np.full((ch * cell, cw * cell), -np.inf, np.float32)
    padded[:h, :w] = heat
    blocks = padded.reshape(ch, cell, cw, cell).transpose(0, 2, 1, 3).reshape(ch, cw, cell * cell)
    where = blocks.argmax(axis=2)
    pooled = np.take_along_axis(blocks, where[..., None], axis=2)[..., 0]
    radius = max(1, int(window) // (2 * cell))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    # Ties (a plateau) go to the first cell in raster order: a float64 ramp far below float32's
    # resolution of heat values separates them without reordering distinct values.
    ranked = pooled.astype(np.float64) - 1e-12 * np.arange(pooled.size, dtype=np.float64).reshape(pooled.shape)
    local_max = cv2.dilate(ranked, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=-np.inf)
    cy, cx = np.nonzero((ranked >= local_max) & (pooled >= floor))
    order = np.argsort(-pooled[cy, cx], kind="stable")[:MAX_PEAKS]
    cy, cx = cy[order], cx[order]
    inner = where[cy, cx]
    return cy * cell + inner // cell, cx * cell + inner % cell


def heat_regions(heat: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions of pixels whose heat is at least ``REGION_LEVEL`` of the highest heat
    within ``window`` pixels: (labels H x W int32, stats per label as cv2 gives them)."""
    size = max(3, int(window) | 1)
    near_max = cv2.dilate(heat, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
    mask = (heat >= REGION_LEVEL * near_max) & (near_max > 0)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels, stats


def detect(heat: np.ndarray, object_height: np.ndarray, aspect: float, threshold: float,
           peak_window: int, fill: float = 1.0, heat_boxes: bool = True) -> tuple[list[Detection], Detection]:
    """(Instances above ``threshold``, the best peak whatever its score) of one frame's maps.

    ``object_height`` holds per pixel the object height in pixels of the scale that matched best
    there, ``aspect`` the query's width / height, ``fill`` the query's object pixels / box.
    ``heat_boxes`` False boxes every peak by its scale (a network whose heat was never trained to
    cover the object's pixels, like the untrained readout, has no object-shaped regions).
    """
    h, w = heat.shape
    top = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ys, xs = find_peaks(heat, float(threshold), peak_window)
    if ys.size == 0 or (ys[0], xs[0]) != top:  # the best peak is boxed whatever its score
        ys, xs = np.concatenate([[top[0]], ys]), np.concatenate([[top[1]], xs])
    boxes, areas, sources, redundant = _boxes(heat, object_height, aspect, fill, ys, xs, peak_window, heat_boxes)
    scores = heat[ys, xs].astype(float)
    keep = [i for i in _suppress(boxes, scores) if not redundant[i]]
    detections = [Detection(tuple(int(v) for v in boxes[i]), float(scores[i]), int(areas[i]),
                            (int(xs[i]), int(ys[i])), sources[i]) for i in keep]
    best = detections[0]  # the global maximum: first by score, never suppressed
    return [d for d in detections if d.score >= threshold], best


def _boxes(heat: np.ndarray, object_height: np.ndarray, aspect: float, fill: float, ys: np.ndarray,
           xs: np.ndarray, window: int,
           heat_boxes: bool) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Per peak (highest first): the heat region's box where it is object-shaped, else the scale
    box; and whether the peak is redundant (a lower peak of an object-shaped region: the same
    object as the region's top peak)."""
    h, w = heat.shape
    oh = object_height[ys, xs].astype(float)
    ow = oh * aspect
    scale_boxes = np.stack([np.maximum(0, np.round(xs + 0.5 - ow / 2)), np.maximum(0, np.round(ys + 0.5 - oh / 2)),
                            np.minimum(w, np.round(xs + 0.5 + ow / 2)), np.minimum(h, np.round(ys + 0.5 + oh / 2))],
                           axis=1)
    scale_areas = np.maximum(1.0, (scale_boxes[:, 2] - scale_boxes[:, 0]) * (scale_boxes[:, 3] - scale_boxes[:, 1]))
    if not heat_boxes:
        return (scale_boxes, np.maximum(1.0, np.round(scale_areas * fill)), ["scale"] * len(ys),
                np.zeros(len(ys), bool))
    labels, stats = heat_regions(heat, max(window, int(np.median(oh))))
    peak_labels = labels[ys, xs]
    x, y, bw, bh, pixels = (stats[peak_labels, k].astype(float) for k in range(5))
    region_boxes = np.stack([x, y, x + bw, y + bh], axis=1)
    ratio = (bw * bh) / scale_areas
    shaped = ((peak_labels > 0) & (ratio >= REGION_AREA_RANGE[0]) & (ratio <= REGION_AREA_RANGE[1])
              & (pixels >= REGION_MIN_FILL * bw * bh))
    _, first = np.unique(peak_labels, return_index=True)
    top = np.zeros(len(ys), bool)
    top[first] = True  # peaks come highest first, so a region's first peak is its top
    boxes = np.where(shaped[:, None], region_boxes, scale_boxes)
    areas = np.where(shaped, pixels, np.maximum(1.0, np.round(scale_areas * fill)))
    return boxes, areas, ["heat" if s else "scale" for s in shaped], shaped & ~top


def _suppress(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """Greedy non-maximum suppression by score over one pairwise-overlap matrix."""
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = [int(i) for i in np.argsort(-scores, kind="stable") if valid[i]]
    return [order[i] for i in first_unique(boxes[order])]


def first_unique(boxes: np.ndarray) -> list[int]:
    """Indices of ``boxes`` (n x 4, best first) kept by greedy suppression: each box that does not
    duplicate one kept before it, from one pairwise-overlap matrix. Duplicates are the same instance:
    boxes overlapping by IoU >= NMS_IOU, or one mostly containing the other (the same object seen at
    two pyramid levels gives nested boxes of different sizes)."""
    if len(boxes) <= 1:
        return list(range(len(boxes)))
    iou, contained = pairwise_overlaps(boxes, boxes)
    duplicates = (iou >= NMS_IOU) | (contained >= NMS_CONTAINMENT)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= duplicates[i]
    return keep


def match_counts(detections: Sequence[Detection], boxes: Sequence[Sequence[float]],
                 iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), greedy by score at IoU >= ``iou``."""
    unmatched = list(boxes)
    tp = 0
    for det in detections:
        best = max(range(len(unmatched)), key=lambda j: box_iou(det.box, unmatched[j]), default=None)
        if best is not None and box_iou(det.box, unmatched[best]) >= iou:
            unmatched.pop(best)
            tp += 1
    return tp, len(detections) - tp, len(unmatched)
