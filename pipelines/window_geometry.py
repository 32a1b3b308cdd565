"""Windows of a frame for the temporal mode: the affine that takes frame pixels to a window around
the target, sampling it (only the part of the frame it covers), boxes, the Hann prior, shifting a
map by a sub-pixel offset."""

from __future__ import annotations

import math

from typing import Any

import cv2
import numpy as np

from augment.picture_arrays import ArrayInputError



def crop_affine(center: tuple[float, float], zoom: float, out_w: int, out_h: int, angle: float = 0.0) -> np.ndarray:
    """2 x 3 affine taking frame pixels to a window of out_w x out_h centred on ``center``,
    magnified by ``zoom`` (pixel centres at +0.5), and turned back by ``angle`` degrees: a target
    turned by ``angle`` in the frame (counter-clockwise on screen, as cv2.getRotationMatrix2D
    turns) stands upright in the window."""
    cx, cy = center
    if angle == 0.0:
        return np.array([[zoom, 0.0, out_w / 2 - zoom * cx + 0.5 * (zoom - 1)],
                         [0.0, zoom, out_h / 2 - zoom * cy + 0.5 * (zoom - 1)]], np.float64)
    # window = zoom R (frame + 0.5 - centre) + out / 2 - 0.5, R undoing the turn
    linear = zoom * turn_matrix(-angle)
    shift = linear @ np.array([0.5 - cx, 0.5 - cy]) + np.array([out_w / 2 - 0.5, out_h / 2 - 0.5])
    return np.hstack([linear, shift[:, None]])


def turn_matrix(angle: float) -> np.ndarray:
    """2 x 2 matrix turning image vectors (x right, y down) by ``angle`` degrees counter-clockwise
    on screen, as cv2.getRotationMatrix2D(centre, angle, 1) turns pixels."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.array([[c, s], [-s, c]])


def turned_size(width: float, height: float, angle: float) -> tuple[float, float]:
    """(w, h) of the upright box around a width x height box turned by ``angle`` degrees."""
    if angle == 0.0:
        return width, height
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    return width * c + height * s, width * s + height * c


def sample_window(frame: np.ndarray, affine: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """The window an affine from :func:`crop_affine` describes; outside the frame, edge pixels."""
    if affine[0, 1] != 0.0 or affine[1, 0] != 0.0:
        return _sample_turned(frame, affine, out_w, out_h)
    # Only the part of the frame the window covers (plus a pixel) is resampled.
    zoom = affine[0, 0]
    x0 = max(0, int(math.floor(-affine[0, 2] / zoom)) - 1)
    y0 = max(0, int(math.floor(-affine[1, 2] / affine[1, 1])) - 1)
    x1 = min(frame.shape[1], int(math.ceil((out_w - affine[0, 2]) / zoom)) + 2)
    y1 = min(frame.shape[0], int(math.ceil((out_h - affine[1, 2]) / affine[1, 1])) + 2)
    if x1 - x0 >= 2 and y1 - y0 >= 2 and (x0, y0, x1, y1) != (0, 0, *frame.shape[1::-1]):
        affine = affine.copy()
        affine[0, 2] += zoom * x0
        affine[1, 2] += affine[1, 1] * y0
        frame = frame[y0:y1, x0:x1]
    shrink = affine[0, 0] < 1.0
    if shrink:  # area-average first, so a large target's window does not alias
        if min(frame.shape[1] * affine[0, 0], frame.shape[0] * affine[1, 1]) >= 1:
            small = cv2.resize(frame, None, fx=affine[0, 0], fy=affine[1, 1], interpolation=cv2.INTER_AREA)
        else:  # a target far larger than the frame (a --box of 1e9 px): a pixel a side, not nothing (refused)
            small = cv2.resize(frame, (max(1, round(frame.shape[1] * affine[0, 0])),
                                       max(1, round(frame.shape[0] * affine[1, 1]))), interpolation=cv2.INTER_AREA)
        ratio_x, ratio_y = small.shape[1] / frame.shape[1], small.shape[0] / frame.shape[0]
        inner = affine.copy()
        inner[0, 0] /= ratio_x
        inner[1, 1] /= ratio_y
        return cv2.warpAffine(small, inner, (out_w, out_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(frame, affine, (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def box_from(center: tuple[float, float], size: tuple[float, float],
             frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1] of a centre and (w, h), clipped to the frame (a box wholly beyond an edge
    becomes an empty one on that edge, x0 <= x1 and y0 <= y1 always)."""
    cx, cy = center
    w, h = size
    x0, y0 = min(max(0, round(cx - w / 2)), frame_w), min(max(0, round(cy - h / 2)), frame_h)
    return x0, y0, max(x0, min(frame_w, round(cx + w / 2))), max(y0, min(frame_h, round(cy + h / 2)))


def part_inside(box: tuple[float, ...], width: int, height: int) -> tuple[float, float, float, float]:
    """The part of a box (x0, y0, x1, y1) inside a width x height frame (x1 < x0 or y1 < y0 where there
    is none): what of a starting box that overhangs the frame can be seen, and so tracked."""
    x0, y0, x1, y1 = box
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))


MAX_BOX_TO_FRAME = 4  # a starting box this many times the frame's width or height is a typo, not a target


def check_start_box(box: Any, width: int | None, height: int | None, name: str = "initial_box") -> tuple[float, ...]:
    """A tracker's starting box (x0, y0, x1, y1) as four floats, or one line naming ``name``
    (``synth search``'s ``--box``, the API's ``initial_box``): four finite numbers with x1 > x0 and
    y1 > y0, and, with the frame's ``width`` and ``height``, at least 2 px a side of it inside the
    frame and at most :data:`MAX_BOX_TO_FRAME` times its size. An ArrayInputError: a ValueError to
    the API's caller, one line (exit 2) on the command line."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= values[0] \
            or values[3] <= values[1]:
        raise ArrayInputError(f"{name} must be four finite numbers x0, y0, x1, y1 with x1 > x0 and y1 > y0, "
                              f"not {box!r}")
    if width is None or height is None:
        return values
    x0, y0, x1, y1 = values
    given = f"{name} {x0:g},{y0:g},{x1 - x0:g},{y1 - y0:g} (X,Y,W,H)"
    if x1 - x0 > MAX_BOX_TO_FRAME * width or y1 - y0 > MAX_BOX_TO_FRAME * height:
        raise ArrayInputError(f"{given} is more than {MAX_BOX_TO_FRAME} times the size of the {width}x{height} frames")
    ix0, iy0, ix1, iy1 = part_inside(values, width, height)
    inside_w, inside_h = ix1 - ix0, iy1 - iy0
    if inside_w < 2 or inside_h < 2:
        where = ("lies outside the" if inside_w <= 0 or inside_h <= 0 else
                 f"covers {max(inside_w, 0):g}x{max(inside_h, 0):g} px (at least 2 px a side is needed) of the")
        raise ArrayInputError(f"{given} {where} {width}x{height} frames")
    return values


def shift_map(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``image`` moved by ``offset`` (x, y) pixels (sub-pixel, edges replicated)."""
    affine = np.array([[1.0, 0.0, float(offset[0])], [0.0, 1.0, float(offset[1])]])
    return cv2.warpAffine(image, affine, image.shape[1::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def hann_window(height: int, width: int) -> np.ndarray:
    return np.outer(np.hanning(height + 2)[1:-1], np.hanning(width + 2)[1:-1]).astype(np.float32)


def _sample_turned(frame: np.ndarray, affine: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """:func:`sample_window` for a turned window: only the frame's part under the window's corners
    is resampled (area-averaged first where the window shrinks it)."""
    inverse = cv2.invertAffineTransform(affine)
    corners = np.array([[0, 0], [out_w, 0], [0, out_h], [out_w, out_h]], np.float64)
    reach = corners @ inverse[:, :2].T + inverse[:, 2]
    x0 = max(0, int(math.floor(reach[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(reach[:, 1].min())) - 1)
    x1 = min(frame.shape[1], int(math.ceil(reach[:, 0].max())) + 2)
    y1 = min(frame.shape[0], int(math.ceil(reach[:, 1].max())) + 2)
    affine = affine.copy()
    if x1 - x0 >= 2 and y1 - y0 >= 2:
        affine[:, 2] += affine[:, :2] @ np.array([x0, y0], np.float64)
        frame = frame[y0:y1, x0:x1]
    zoom = math.sqrt(abs(float(np.linalg.det(affine[:, :2]))))
    if zoom < 1.0:
        small = cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
        ratio_x, ratio_y = small.shape[1] / frame.shape[1], small.shape[0] / frame.shape[0]
        affine[:, 0] /= ratio_x
        affine[:, 1] /= ratio_y
        frame = small
    return cv2.warpAffine(frame, affine, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
