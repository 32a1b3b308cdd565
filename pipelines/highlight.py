"""Drawing what a search found: the medium with the detected objects kept and the rest dimmed.

The kept pixels are the heat map's own: inside each detection's box, the pixels whose heat is at
least ``KEEP_LEVEL`` of that detection's score (what the network says is the object), slightly
dilated. Everything for a frame is drawn in one pass, however many detections it has. Where nothing
passed the threshold, the best peak's box is drawn thinly with its score ("best guess"), so the
picture answers "where is it most likely" as ``best`` in detections.jsonl does.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from augment.draw_labels import format_score, line_width, put_label
from pipelines.detections import Detection

# Pixels outside the kept regions keep this fraction of their brightness.
DIM_FACTOR = 0.3
OUTLINE_RGB = (255, 40, 40)
BOX_RGB = (255, 200, 40)
GUESS_RGB = (80, 220, 255)  # the best peak's box where nothing passed the threshold
# Inside a detection's box, pixels with heat >= KEEP_LEVEL x its score are kept (the object).
KEEP_LEVEL = 0.4


def object_mask(heat: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """H x W uint8, 1 on the detected objects' pixels: per detection, its box's pixels whose heat
    reaches ``KEEP_LEVEL`` of its peak's heat (its score, unless verification fused the score)."""
    h, w = heat.shape
    mask = np.zeros((h, w), np.uint8)
    span = _boxes_span(detections, w, h)
    if span is not None:
        x0, y0, x1, y1 = span
        mask[y0:y1, x0:x1] = _mask_in(heat, detections, span)
    return mask


def _mask_in(heat: np.ndarray, detections: Sequence[Detection], span: tuple[int, int, int, int]) -> np.ndarray:
    """:func:`object_mask` within ``span`` (x0, y0, x1, y1), a rectangle holding every box (outside
    every box nothing is kept): one "level" image, each pixel the lowest cut among the boxes over it."""
    x0, y0, x1, y1 = span
    level = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
    for det in detections:
        bx0, by0, bx1, by1 = det.box
        region = level[max(by0, y0) - y0:max(by1, y0) - y0, max(bx0, x0) - x0:max(bx1, x0) - x0]
        peak_heat = det.score if det.heat is None else det.heat
        np.minimum(region, KEEP_LEVEL * peak_heat, out=region)
    return (heat[y0:y1, x0:x1] >= level).astype(np.uint8)


def _boxes_span(detections: Sequence[Detection], width: int, height: int,
                margin: int = 0) -> tuple[int, int, int, int] | None:
    """The rectangle (x0, y0, x1, y1) holding every detection's box grown by ``margin``, within the
    image; None where it is empty."""
    if not detections:
        return None
    x0 = max(0, min(d.box[0] for d in detections) - margin)
    y0 = max(0, min(d.box[1] for d in detections) - margin)
    x1 = min(width, max(d.box[2] for d in detections) + margin)
    y1 = min(height, max(d.box[3] for d in detections) + margin)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


# The dimmed value of each 8-bit level, as the float product truncated (a table: 7x faster on a
# 12-megapixel photo than multiplying it in float, the same values).
_DIMMED = (np.arange(256, dtype=np.float32) * np.float32(DIM_FACTOR)).astype(np.uint8)


def dim(image: np.ndarray) -> np.ndarray:
    """``image`` (uint8) with every pixel at :data:`DIM_FACTOR` of its brightness: what a highlight
    keeps nothing of."""
    return cv2.LUT(np.ascontiguousarray(image), _DIMMED)


def highlight(image: np.ndarray, heat: np.ndarray, detections: Sequence[Detection],
              best: Detection | None = None) -> np.ndarray:
    """Keep the detected objects' pixels (dilated by ~1% of the diagonal), dim the rest, outline
    the kept regions and draw each box thinly; with no detection, ``best`` (the top peak, under the
    threshold) is drawn as a thin box labelled with its score (lines and text grow with
    large pictures, :mod:`augment.draw_labels`)."""
    h, w = image.shape[:2]
    if heat.shape != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    out = dim(image)
    if not detections:
        if best is not None:
            x0, y0, x1, y1 = best.box
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), GUESS_RGB, line_width(h, w))
            # Sized to the picture and kept inside it (augment.draw_labels); the score as
            # detections.jsonl's best has it (a fused 0.0028 read '0.00').
            score = format_score(best.score)
            put_label(out, (f"best guess {score}", score), (x0, y0), GUESS_RGB, under=y1)
        return out
    radius = max(2, round(0.01 * math.hypot(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # The kept region is dilated, copied and outlined within the boxes' span grown by the radius
    # only: the mask is 0 beyond the boxes, so nothing outside that span changes (a 12-megapixel
    # photo with two instances took 1.1 s drawn whole, more than its search).
    thickness = max(1, radius // 2)
    span = _boxes_span(detections, w, h, margin=radius + 1)
    if span is not None:
        x0, y0, x1, y1 = span
        region = cv2.dilate(_mask_in(heat, detections, span), kernel)
        np.copyto(out[y0:y1, x0:x1], image[y0:y1, x0:x1], where=region.astype(bool)[..., None])
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
        cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness=thickness)
    for det in detections:
        x0, y0, x1, y1 = det.box
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_RGB, thickness=line_width(h, w))
    return out
