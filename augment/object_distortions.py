"""Object-level distortions: what happens to one cutout before it is pasted.

Lighting, superpixel occlusion, transparency, tear and affine (rotate, scale,
shear, flips); ``image`` is H×W×4 uint8 RGBA and ``mask`` H×W uint8 binary (see
:mod:`augment.distortion_base` for the sample/apply contract). Geometric ones
warp premultiplied colour, so transparent pixels never bleed into the edges.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from augment.distortion_base import Distortion, Range, _seed, _uniform
from augment.resizing import resize_labels
from augment.straight_alpha import premultiply, unpremultiply

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers


def _fit_canvas(matrices: list[np.ndarray], height: int, width: int) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Translate 2×3 affine matrices so the union of the transformed canvases starts at 0.

    Works on pixel *edges* (−0.5 … size−0.5) so a 90° rotation or a flip maps
    pixel centres to pixel centres and the result is exact.
    """
    left, top, right, bottom = -0.5, -0.5, width - 0.5, height - 0.5
    corners = np.array([[left, top, 1], [right, top, 1], [left, bottom, 1], [right, bottom, 1]])
    points = np.concatenate([corners @ matrix.T for matrix in matrices])
    low, high = points.min(axis=0), points.max(axis=0)
    # The epsilon absorbs rounding of cos/sin at exact right angles.
    out_width = max(1, math.ceil(high[0] - low[0] - 1e-6))
    out_height = max(1, math.ceil(high[1] - low[1] - 1e-6))
    shifted = []
    for matrix in matrices:
        matrix = matrix.copy()
        matrix[:, 2] += -0.5 - low
        shifted.append(matrix)
    return shifted, (out_height, out_width)


def _warp_premultiplied(
    premultiplied: np.ndarray, mask: np.ndarray, matrix: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a premultiplied RGBA cutout (bilinear) and its mask (nearest) onto a transparent canvas."""
    height, width = size
    warped = cv2.warpAffine(
        premultiplied, matrix, (width, height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0),
    )
    warped_mask = cv2.warpAffine(
        mask, matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return warped, warped_mask


def _warp_object(
    image: np.ndarray, mask: np.ndarray, matrix: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a straight-alpha RGBA cutout and its mask; see :func:`_warp_premultiplied`."""
    warped, warped_mask = _warp_premultiplied(premultiply(image), mask, matrix, size)
    return unpremultiply(warped), warped_mask


# --------------------------------------------------------------------------- object level


@dataclass
class Affine(Distortion):
    """Rotate, scale, shear and flip the cutout; the canvas grows so nothing is cut off."""

    name: ClassVar[str] = "affine"
    level: ClassVar[str] = "object"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"rotate": (-360, 360), "scale": (0.05, 20), "shear": (-80, 80)}
    p: float = 0.5  #: probability of applying (default 0.5)
    rotate: Range = (-30.0, 30.0)  #: rotation in degrees, counter-clockwise (default [-30, 30])
    scale: Range = (0.85, 1.15)  #: isotropic scale factor on the pasted size (default [0.85, 1.15])
    shear: Range = (-10.0, 10.0)  #: horizontal shear in degrees (default [-10, 10])
    hflip_p: float = 0.5  #: probability of a horizontal (mirror) flip (default 0.5)
    vflip_p: float = 0.05  #: probability of an upside-down flip, rare in real footage (default 0.05)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        return {
            "angle": _uniform(rng, self.rotate),
            "scale": _uniform(rng, self.scale),
            "shear": _uniform(rng, self.shear),
            "hflip": bool(rng.random() < self.hflip_p),
            "vflip": bool(rng.random() < self.vflip_p),
        }

    @staticmethod
    def linear(params: dict) -> np.ndarray:
        """The 2 x 2 matrix of recorded ``params`` (image coordinates, y down); also used by the
        temporal mode's first-frame views (pipelines/first_views.py), which warp a window of the
        frame instead of a cutout."""
        angle, shear = math.radians(params["angle"]), math.radians(params["shear"])
        # Image coordinates have y pointing down, so negate the angle for a counter-clockwise turn on screen.
        cos, sin = math.cos(-angle), math.sin(-angle)
        return (
            np.array([[cos, -sin], [sin, cos]])
            @ np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
            @ np.diag([-1.0 if params["hflip"] else 1.0, -1.0 if params["vflip"] else 1.0])
            * params["scale"]
        )

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        linear = self.linear(params)
        (matrix,), size = _fit_canvas([np.hstack([linear, np.zeros((2, 1))])], *mask.shape)
        # A canvas past MAX_CANVAS_PIXELS (scale 20 and shear 80 made ~2.5 GB per cutout, which the composite
        # then shrank to its frame) is drawn smaller: the same shape, fewer pixels. A constant, not the
        # environment's pixel limit, so a row replays to the same bytes on every machine.
        if size[0] * size[1] > MAX_CANVAS_PIXELS:
            linear = linear * (math.sqrt(MAX_CANVAS_PIXELS / (size[0] * size[1])) * 0.999)
            (matrix,), size = _fit_canvas([np.hstack([linear, np.zeros((2, 1))])], *mask.shape)
        return _warp_object(image, mask, matrix, size)


# An affine canvas's most pixels (16.8 MP, 67 MB of RGBA): past every composite frame's needs.
MAX_CANVAS_PIXELS = 4096 * 4096


@dataclass
class Tear(Distortion):
    """Split the cutout along a jagged line and pull the two pieces apart (torn photo, occluding strip)."""

    name: ClassVar[str] = "tear"
    level: ClassVar[str] = "object"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"offset": (-1, 1), "jitter": (0, 1), "gap": (0, 1), "rotate": (-180, 180)}
    knots: ClassVar[int] = 8  # vertices of the jagged polyline
    p: float = 0.15  #: probability of applying (default 0.15)
    offset: Range = (-0.4, 0.4)  #: line position across the object, fraction of its half extent (default [-0.4, 0.4])
    jitter: Range = (0.02, 0.08)  #: jaggedness: vertex displacement, fraction of object size (default [0.02, 0.08])
    gap: Range = (0.04, 0.15)  #: distance the pieces are pulled apart, fraction of object size, at least 3 px (default [0.04, 0.15])
    rotate: Range = (-8.0, 8.0)  #: extra rotation of one piece in degrees (default [-8, 8])
    rotate_p: float = 0.5  #: probability that one piece is rotated at all (default 0.5)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        angle = _uniform(rng, (0.0, 180.0))
        offset = _uniform(rng, self.offset)
        jitter = _uniform(rng, self.jitter)
        vertices = rng.uniform(-1.0, 1.0, self.knots) * jitter
        gap = _uniform(rng, self.gap)
        rotate = _uniform(rng, self.rotate)
        rotated = rng.random() < self.rotate_p
        return {
            "angle": angle,
            "offset": offset,
            "vertices": [float(v) for v in vertices],
            "gap": gap,
            "rotate": rotate if rotated else 0.0,
        }

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        height, width = mask.shape
        x0, y0, box_w, box_h = cv2.boundingRect(mask)  # the box of the mask's pixels
        if box_w:
            y1, x1 = y0 + box_h, x0 + box_w
        else:
            y0, y1, x0, x1 = 0, height, 0, width
        box_w, box_h = float(x1 - x0), float(y1 - y0)
        size = max(box_w, box_h)
        theta = math.radians(params["angle"])
        direction = np.array([math.cos(theta), math.sin(theta)])
        normal = np.array([-math.sin(theta), math.cos(theta)])
        half_normal = 0.5 * (box_w * abs(normal[0]) + box_h * abs(normal[1]))
        centre = np.array([(x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2]) + params["offset"] * half_normal * normal

        # Rasterise the region beyond the jagged line: the polyline, extended straight out at
        # both ends and closed far away on the +normal side, covers that side of any canvas.
        half_length = 0.5 * math.hypot(box_w, box_h) + 1.0
        along = np.linspace(-half_length, half_length, len(params["vertices"]))
        across = np.asarray(params["vertices"], dtype=np.float64) * size
        line = centre + along[:, None] * direction + across[:, None] * normal
        far = 2.0 * (height + width)
        start, end = line[0] - far * direction, line[-1] + far * direction
        polygon = np.vstack([start, line, end, end + far * normal, start + far * normal])
        side = np.zeros((height, width), np.uint8)
        cv2.fillPoly(side, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        other_side = 1 - side

        # Whole-pixel shifts keep the unrotated piece an exact copy (no resampling).
        # At least 3 px, so the pieces never touch even diagonally after rounding.
        gap = max(3.0, params["gap"] * size)
        shift_a = np.round(-0.5 * gap * normal)
        shift_b = np.round(0.5 * gap * normal)
        turn = math.radians(-params["rotate"])
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        matrix_a = np.hstack([np.eye(2), shift_a[:, None]])
        matrix_b = np.hstack([rotation, (centre - rotation @ centre + shift_b)[:, None]])
        (matrix_a, matrix_b), out_size = _fit_canvas([matrix_a, matrix_b], height, width)

        premultiplied = premultiply(image)
        piece_a, mask_a = _warp_premultiplied(
            cv2.bitwise_and(premultiplied, premultiplied, mask=other_side),
            cv2.bitwise_and(mask, mask, mask=other_side), matrix_a, out_size,
        )
        piece_b, mask_b = _warp_premultiplied(
            cv2.bitwise_and(premultiplied, premultiplied, mask=side),
            cv2.bitwise_and(mask, mask, mask=side), matrix_b, out_size,
        )
        # The pieces are disjoint except where a rotated edge swings back over the other;
        # the per-channel maximum keeps the more opaque one there.
        return unpremultiply(cv2.max(piece_a, piece_b)), cv2.max(mask_a, mask_b)


@dataclass
class SuperpixelOcclusion(Distortion):
    """Remove or darken random superpixels of the object (partial occlusion, shadows, damage).

    Which superpixels are picked depends on the cutout's label map, which
    :meth:`sample` never sees; params therefore record a ``seed`` from which
    :meth:`apply` picks the superpixels deterministically.
    """

    name: ClassVar[str] = "superpixel_occlusion"
    level: ClassVar[str] = "object"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"fraction": (0, 1), "remove_ratio": (0, 1), "darken": (0, 1)}
    p: float = 0.3  #: probability of applying (default 0.3)
    fraction: Range = (0.05, 0.3)  #: fraction of the object's area affected, in whole superpixels (default [0.05, 0.3])
    remove_ratio: float = 0.5  #: chance that an affected superpixel is removed rather than darkened (default 0.5)
    darken: Range = (0.3, 0.7)  #: colour factor of darkened superpixels (default [0.3, 0.7])

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        return {
            "fraction": _uniform(rng, self.fraction),
            "remove_ratio": float(self.remove_ratio),
            "darken": _uniform(rng, self.darken),
            "seed": _seed(rng),
        }

    @staticmethod
    def choose(labels: np.ndarray, mask: np.ndarray, params: dict) -> tuple[list[int], list[int]]:
        """Superpixel ids to remove and to darken, among those that overlap the mask: the first of them in
        the recorded seed's order whose area comes nearest to ``fraction`` of the object's (none where a
        single superpixel overshoots it further than nothing falls short). Picking a count of superpixels
        (at least one) affected far more than the fraction said where there are few: the whole of a flat
        object (one superpixel), on CCP's garments a fifth of the area on average for a fraction of 0.05."""
        counts = np.bincount(labels[mask > 0].ravel(), minlength=1)
        counts[0] = 0
        candidates = np.flatnonzero(counts)
        if candidates.size == 0:
            return [], []
        rng = np.random.default_rng(params["seed"])
        order = rng.permutation(candidates)
        covered = np.concatenate([[0], np.cumsum(counts[order])]) / counts.sum()
        count = int(np.argmin(np.abs(covered - params["fraction"])))  # the first of equally near ones: fewer
        chosen = np.sort(order[:count])
        removed = rng.random(count) < params["remove_ratio"]
        return chosen[removed].tolist(), chosen[~removed].tolist()

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if superpixels is None:
            logger.debug("superpixel_occlusion without superpixels: skipped")
            return image.copy(), mask.copy()
        labels = resize_labels(superpixels, *mask.shape)
        remove, darken = self.choose(labels, mask, params)
        action = np.zeros(int(labels.max()) + 1, np.uint8)
        action[remove] = 1
        action[darken] = 2
        per_pixel = action[labels]
        # Darkened: colour x -> uint8(x * darken + 0.5) in float32, as a table over the 256 levels (alpha kept),
        # copied where the superpixel is darkened; removed: alpha and mask cleared. (OpenCV's masked calls:
        # about twice as fast as numpy's boolean indexing, the same bytes.)
        levels = (np.arange(256, dtype=np.uint8) * np.float32(params["darken"]) + 0.5).astype(np.uint8)
        table = np.stack([levels, levels, levels, np.arange(256, dtype=np.uint8)], axis=-1)[None]
        out_image = image.copy()
        cv2.copyTo(cv2.LUT(image, table), cv2.compare(per_pixel, 2, cv2.CMP_EQ), out_image)
        kept = cv2.compare(per_pixel, 1, cv2.CMP_NE)
        out_image[:, :, 3] = cv2.bitwise_and(image[:, :, 3], kept)
        return out_image, cv2.bitwise_and(mask, kept)


@dataclass
class Transparency(Distortion):
    """Make the whole object see-through (glass, reflections); the mask keeps the object."""

    name: ClassVar[str] = "transparency"
    level: ClassVar[str] = "object"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"factor": (0, 1)}
    p: float = 0.15  #: probability of applying (default 0.15)
    factor: Range = (0.4, 0.9)  #: alpha multiplier (default [0.4, 0.9])

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        return {"factor": _uniform(rng, self.factor)}

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        out = image.copy()
        out[:, :, 3] = cv2.convertScaleAbs(image[:, :, 3], alpha=params["factor"])
        return out, mask.copy()


def _lighting_lut(params: dict, channels: int) -> np.ndarray:
    """One 256-entry table per channel combining gamma, contrast, brightness and colour temperature."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    tone = (levels ** params["gamma"] - 0.5) * params["contrast"] + 0.5 + params["brightness"]
    # Warm light raises red and lowers blue; cool light the opposite.
    gains = [1.0 + params["temperature"], 1.0, 1.0 - params["temperature"]]
    tables = [np.clip(np.rint(tone * gain * 255.0), 0, 255) for gain in gains]
    if channels == 4:
        tables.append(np.arange(256, dtype=np.float64))  # alpha untouched
    return np.stack(tables, axis=-1).astype(np.uint8)[None, :, :]


@dataclass
class Lighting(Distortion):
    """Brightness, contrast, gamma and colour temperature of the object (RGB only, alpha untouched)."""

    name: ClassVar[str] = "lighting"
    level: ClassVar[str] = "object"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"brightness": (-1, 1), "contrast": (0, 10), "gamma": (0.01, 10),
                                                         "temperature": (-1, 1)}
    p: float = 0.5  #: probability of applying (default 0.5)
    brightness: Range = (-0.15, 0.15)  #: added to intensities in [0, 1] (default [-0.15, 0.15])
    contrast: Range = (0.75, 1.3)  #: stretch around mid-grey (default [0.75, 1.3])
    gamma: Range = (0.7, 1.4)  #: intensity exponent; < 1 brightens shadows (default [0.7, 1.4])
    temperature: Range = (-0.12, 0.12)  #: > 0 warmer (red up, blue down), < 0 cooler (default [-0.12, 0.12])

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        return {
            "brightness": _uniform(rng, self.brightness),
            "contrast": _uniform(rng, self.contrast),
            "gamma": _uniform(rng, self.gamma),
            "temperature": _uniform(rng, self.temperature),
        }

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return cv2.LUT(image, _lighting_lut(params, image.shape[2])), mask.copy()
