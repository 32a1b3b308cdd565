"""Text and lines drawn on pictures users look at (search highlights, the temporal mode's frames,
`synth show`'s contact sheet), sized to the picture and kept inside it.

OpenCV's text is a fixed number of pixels at a given scale: 0.4 is readable on a 640 x 480 frame and
a speck on a 4000 x 3000 photo seen whole, and a label placed at a box's corner ran off a narrow
picture's edge (a 20-px-wide strip showed "bes" of "best guess"). Here the scale and the line width
grow with the picture's diagonal (the sizes drawn so far up to :data:`BASE_DIAGONAL`), a label that
does not fit the picture's width is shrunk, or replaced by its shorter form, or left out below
:data:`MIN_SCALE`, and it is written with a dark edge so that it reads on bright and grey pictures.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
# Up to this diagonal (800 x 600) text and lines are drawn at their base sizes; above it they grow
# in proportion, so a label is the same fraction of the picture on a 4000 x 3000 photo.
BASE_DIAGONAL = 1000.0
MIN_SCALE = 0.3  # under this the text is unreadable: a shorter form, or none
EDGE_RGB = (0, 0, 0)


def size_factor(height: int, width: int) -> float:
    """How many times the base sizes text and lines are drawn at on a ``height`` x ``width`` picture."""
    return max(1.0, math.hypot(height, width) / BASE_DIAGONAL)


def line_width(height: int, width: int, base: int = 1) -> int:
    """A line ``base`` px wide at the base size, grown with the picture."""
    return max(1, round(base * size_factor(height, width)))


def format_score(score: float) -> str:
    """A score as a label shows it: two decimals, or two significant digits under 0.1 (a fused best
    guess of 0.0028 read '0.00', as though nothing had matched at all)."""
    score = float(score)
    if score == 0 or abs(score) >= 0.1:
        return f"{score:.2f}"
    return f"{score:.2g}"


def put_label(image: np.ndarray, texts: Sequence[str], anchor: tuple[int, int], rgb: tuple[int, int, int],
              base_scale: float = 0.4, above: bool = True, under: int | None = None) -> tuple[int, int, int, int] | None:
    """Write the first of ``texts`` (the full label, then shorter forms) that fits ``image``'s width
    at a readable size, at ``anchor`` (x, y): its bottom-left just above y (``above``; where there is
    no room above, its top-left just below ``under`` (a box's bottom edge) where the label fits there,
    else just below y) or its top-left at y, moved inside the picture. Returns the rectangle
    (x0, y0, x1, y1) the text covers, or None where no form fits."""
    fitted = fit_label(image.shape[0], image.shape[1], texts, anchor, base_scale, above, under)
    if fitted is None:
        return None
    text, scale, thickness, origin, rect = fitted
    # The dark edge: the text itself shifted a pixel each way (drawn thicker, OpenCV's glyphs
    # advance further and the edge runs ahead of the text).
    for dx, dy in ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)):
        cv2.putText(image, text, (origin[0] + dx, origin[1] + dy), FONT, scale, EDGE_RGB, thickness, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, scale, rgb, thickness, cv2.LINE_AA)
    return rect


def fit_label(h: int, w: int, texts: Sequence[str], anchor: tuple[int, int], base_scale: float = 0.4,
              above: bool = True, under: int | None = None
              ) -> tuple[str, float, int, tuple[int, int], tuple[int, int, int, int]] | None:
    """Where :func:`put_label` would write on an ``h`` x ``w`` picture, without writing: (text, scale,
    thickness, origin, rectangle), or None where no form of the label fits."""
    scale0 = base_scale * size_factor(h, w)
    for text in texts:
        thickness = max(1, round(scale0 / 0.4 * 0.5)) if scale0 > 0.8 else 1
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale0, thickness)
        edge = 1 + thickness // 2  # the dark edge drawn around the glyphs
        room = w - 2 * edge
        scale = scale0 if text_w <= room else scale0 * room / text_w
        while scale != scale0 and scale >= MIN_SCALE:  # the glyphs' sizes round: shrink till it fits
            (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
            if text_w <= room:
                break
            scale *= 0.97
        if scale < MIN_SCALE or text_h + baseline + 2 * edge > h:
            continue
        x, y = anchor
        gap = max(2, round(2 * scale / 0.4))
        top = y - gap - baseline - text_h if above else y + gap
        if top < edge and above:  # no room above the box: under it where the label fits there, else
            # just inside it, under its top edge (a label as tall as its box, on a 4000 x 200 panorama,
            # was written over the object it named where the room below was free)
            fits_under = under is not None and under + gap + text_h + baseline <= h - edge
            top = under + gap if fits_under else y + gap
        x = min(max(edge, x), w - edge - text_w)
        top = min(max(edge, top), h - edge - baseline - text_h)
        rect = (int(x), int(top), int(x + text_w), int(top + text_h + baseline))
        return text, scale, thickness, (int(x), int(top + text_h)), rect
    return None


def overlaps(a: tuple[int, int, int, int], b: Sequence[int], margin: int = 2) -> bool:
    """Whether rectangles ``a`` and ``b`` (x0, y0, x1, y1) meet, ``a`` grown by ``margin``."""
    return a[0] - margin < b[2] and b[0] < a[2] + margin and a[1] - margin < b[3] and b[1] < a[3] + margin
