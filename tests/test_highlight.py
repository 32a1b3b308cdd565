"""Still highlights (pipelines/highlight.py) drawn within the detections' span: the same pixels as
drawing the whole image, which cost more than the search on large photos."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipelines.detections import Detection
from pipelines.highlight import BOX_RGB, DIM_FACTOR, GUESS_RGB, KEEP_LEVEL, OUTLINE_RGB, highlight


def _whole_image_highlight(image: np.ndarray, heat: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """The highlight as it was drawn before stop 39 (every step over the whole image)."""
    h, w = image.shape[:2]
    out = (image.astype(np.float32) * DIM_FACTOR).astype(np.uint8)
    level = np.full((h, w), np.inf, np.float32)
    for det in detections:
        x0, y0, x1, y1 = det.box
        region = level[y0:y1, x0:x1]
        np.minimum(region, KEEP_LEVEL * (det.score if det.heat is None else det.heat), out=region)
    radius = max(2, round(0.01 * math.hypot(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    region = cv2.dilate((heat >= level).astype(np.uint8), kernel)
    keep = region.astype(bool)
    out[keep] = image[keep]
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness=max(1, radius // 2))
    for det in detections:
        x0, y0, x1, y1 = det.box
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_RGB, thickness=1)
    return out


def test_a_highlight_drawn_in_the_detections_span_is_the_whole_image_drawing_to_the_bit() -> None:
    rng = np.random.default_rng(1)
    h, w = 300, 420
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    heat = cv2.resize(cv2.GaussianBlur(rng.random((30, 42)).astype(np.float32), (0, 0), 2), (w, h))
    heat /= heat.max()
    cases = [
        [Detection((100, 80, 200, 180), 0.9, 1, heat=float(heat[80:180, 100:200].max()))],
        # Overlapping boxes, one at the image's corner and edge (the dilation meets the border).
        [Detection((0, 0, 90, 70), 0.8, 1, heat=0.6), Detection((60, 40, 160, 120), 0.7, 1),
         Detection((330, 200, 420, 300), 0.5, 1, heat=float(heat[200:, 330:].max()))],
    ]
    for detections in cases:
        assert np.array_equal(highlight(image, heat, detections), _whole_image_highlight(image, heat, detections))


def test_a_highlight_without_detections_dims_every_pixel_as_the_float_product_did() -> None:
    image = np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3).astype(np.uint8)
    out = highlight(image, np.zeros((16, 16), np.float32), [], None)
    assert np.array_equal(out, (image.astype(np.float32) * DIM_FACTOR).astype(np.uint8))
    guess = highlight(np.full((60, 80, 3), 200, np.uint8), np.zeros((60, 80), np.float32), [],
                      Detection((10, 10, 40, 40), 0.1, 1))
    assert tuple(guess[10, 20]) == GUESS_RGB  # the best guess's box, on the dimmed image
    assert tuple(guess[25, 70]) == (60, 60, 60)  # beside the box: its label is under it


def test_heat_png_rounds_as_the_plain_formula() -> None:
    """Result.heat_png (one scratch array) gives np.clip(heat * 255 + 0.5, 0, 255)'s bytes, halves
    and the ends included, and leaves the heat map itself untouched."""
    from pipelines.search import Result

    rng = np.random.default_rng(0)
    heat = rng.random((61, 83), dtype=np.float32)
    heat[0, :6] = [0.0, 1.0, 0.5 / 255, 1.5 / 255, 254.5 / 255, 127.5 / 255]
    kept = heat.copy()
    grey = Result(heatmap=heat, detections=[], threshold=0.5).heat_png()
    assert grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, np.clip(kept * 255.0 + 0.5, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(heat, kept)
    assert grey[0, :6].tolist() == [0, 255, 1, 2, 255, 128]
