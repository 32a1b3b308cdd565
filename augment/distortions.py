"""Image distortions of the synthetic-data compositor.

Every distortion separates *sampling* its random parameters from *applying*
them, like albumentations' ``get_params`` / ``apply``: :meth:`Distortion.sample`
draws a JSON-ready dict from a ``numpy.random.Generator`` (no pixels involved)
and :meth:`Distortion.apply` is a pure function of (image, mask, params). A
recorded row therefore replays byte-identically with :func:`apply_chain`.
``apply`` never reads the distortion's configured ranges, only ``params``.

Two levels:

* object level acts on one cutout before it is pasted: ``image`` is H×W×4
  uint8 RGBA (alpha = blending coverage) and ``mask`` H×W uint8 binary (1 =
  object pixel). Affine and tear may grow the canvas; image and mask always
  stay the same size and aligned.
* scene level acts on the composite: ``image`` is H×W×3 uint8 RGB and ``mask``
  an H×W uint8/uint16 instance-id map. The size never changes and geometric
  operations move ids with nearest-neighbour sampling.

Pixel work uses OpenCV directly (albumentations' transforms draw their own
random numbers and add per-call overhead the speed budget has no room for).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import cv2
import numpy as np
from scipy.special import ndtri

from augment.imageio import decode_image, encode_jpeg
from augment.superpixels import resize_labels
from augment.validation import is_number, is_pair

logger = logging.getLogger(__name__)

Range = tuple[float, float]

# Interpolations resolution_loss may record for upscaling, by name so params stay JSON.
UPSCALE_INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
}


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _shown(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def _seed(rng: np.random.Generator) -> int:
    # 31 bits: a plain JSON int every consumer (and every language) reads exactly.
    return int(rng.integers(0, 2**31 - 1))


@dataclass
class Distortion(ABC):
    """Base class: ``p`` is the probability that :func:`sample_chain` switches it on."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = ""
    p: float = 0.0

    # Allowed interval of each numeric setting (both ends of a range must lie in it); settings named
    # ``p`` or ``*_p`` are probabilities in [0, 1] unless listed here.
    limits: ClassVar[dict[str, tuple[float, float]]] = {}

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, list):  # from YAML/JSON
                value = tuple(value)
                setattr(self, spec.name, value)
            self._check_setting(spec.name, spec.default, value)

    def _check_setting(self, name: str, default: Any, value: Any) -> None:
        """Type and range of one setting, judged by its default; a ValueError names ``distortion.setting``."""
        where = f"{self.name}.{name}"
        probability = name not in self.limits and (name == "p" or name.endswith("_p"))
        low, high = (0.0, 1.0) if probability else self.limits.get(name, (-math.inf, math.inf))
        if is_pair(default):
            if not (isinstance(value, tuple) and is_pair(value)):
                raise ValueError(f"{where}: expected a pair of numbers [low, high], got {_shown(value)}")
            if not value[0] <= value[1]:
                raise ValueError(f"{where}: range {list(value)} has low > high")
            if not (low <= value[0] and value[1] <= high):
                raise ValueError(f"{where}: range {list(value)} must lie within [{low:g}, {high:g}]")
        elif isinstance(default, float):
            if not is_number(value) or not low <= value <= high:
                expected = "a probability" if probability else "a number"
                raise ValueError(f"{where}: expected {expected} in [{low:g}, {high:g}], got {_shown(value)}")
        elif isinstance(default, tuple) and all(isinstance(v, int) for v in default):  # an RGB colour
            if not (isinstance(value, tuple) and len(value) == len(default)
                    and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
                raise ValueError(f"{where}: expected {len(default)} integers in [0, 255], got {_shown(value)}")
        elif isinstance(default, tuple):  # names to choose from
            if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{where}: expected a list of names, got {_shown(value)}")

    @abstractmethod
    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        """Draw this distortion's parameters for an image of height×width (no pixels)."""

    @abstractmethod
    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply recorded ``params``; returns new arrays and never modifies the inputs."""


# --------------------------------------------------------------------------- helpers


def _alpha_planes(image: np.ndarray) -> np.ndarray:
    """RGBA-shaped array (alpha, alpha, alpha, 255): one cv2 call then scales all four channels."""
    alpha = image[:, :, 3]
    return cv2.merge([alpha, alpha, alpha, np.full_like(alpha, 255)])


def _premultiply(image: np.ndarray) -> np.ndarray:
    """RGBA with colour multiplied by alpha, so interpolation never bleeds the colour of transparent pixels.

    Exact for opaque pixels (x·255/255 = x), so an unpremultiply restores them bit for bit.
    """
    return cv2.multiply(image, _alpha_planes(image), scale=1.0 / 255.0)


def _unpremultiply(image: np.ndarray) -> np.ndarray:
    # cv2.divide yields 0 where alpha is 0: fully transparent pixels become transparent black.
    return cv2.divide(image, _alpha_planes(image), scale=255.0)


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
    warped, warped_mask = _warp_premultiplied(_premultiply(image), mask, matrix, size)
    return _unpremultiply(warped), warped_mask


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

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        angle, shear = math.radians(params["angle"]), math.radians(params["shear"])
        # Image coordinates have y pointing down, so negate the angle for a counter-clockwise turn on screen.
        cos, sin = math.cos(-angle), math.sin(-angle)
        linear = (
            np.array([[cos, -sin], [sin, cos]])
            @ np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
            @ np.diag([-1.0 if params["hflip"] else 1.0, -1.0 if params["vflip"] else 1.0])
            * params["scale"]
        )
        (matrix,), size = _fit_canvas([np.hstack([linear, np.zeros((2, 1))])], *mask.shape)
        return _warp_object(image, mask, matrix, size)


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
    gap: Range = (0.04, 0.15)  #: distance the pieces are pulled apart, fraction of object size (default [0.04, 0.15])
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
        rows, cols = np.nonzero(mask)
        if rows.size:
            y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
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

        premultiplied = _premultiply(image)
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
        return _unpremultiply(cv2.max(piece_a, piece_b)), cv2.max(mask_a, mask_b)


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
    fraction: Range = (0.05, 0.3)  #: fraction of the object's superpixels affected (default [0.05, 0.3])
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
        """Superpixel ids to remove and to darken: those that overlap the mask, picked by the recorded seed."""
        counts = np.bincount(labels[mask > 0].ravel(), minlength=1)
        counts[0] = 0
        candidates = np.flatnonzero(counts)
        if candidates.size == 0:
            return [], []
        rng = np.random.default_rng(params["seed"])
        count = max(1, round(params["fraction"] * candidates.size))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
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
        out_image, out_mask = image.copy(), mask.copy()
        removed = per_pixel == 1
        out_image[removed, 3] = 0
        out_mask[removed] = 0
        darkened = per_pixel == 2
        out_image[darkened, :3] = (out_image[darkened, :3] * np.float32(params["darken"]) + 0.5).astype(np.uint8)
        return out_image, out_mask


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


# --------------------------------------------------------------------------- scene level


@dataclass
class SceneLighting(Lighting):
    """Lighting of the whole composite (exposure and white balance of the camera)."""

    name: ClassVar[str] = "scene_lighting"
    level: ClassVar[str] = "scene"
    p: float = 0.3  #: probability of applying (default 0.3)
    brightness: Range = (-0.1, 0.1)  #: added to intensities in [0, 1] (default [-0.1, 0.1])
    contrast: Range = (0.8, 1.2)  #: stretch around mid-grey (default [0.8, 1.2])
    gamma: Range = (0.8, 1.25)  #: intensity exponent (default [0.8, 1.25])
    temperature: Range = (-0.08, 0.08)  #: > 0 warmer, < 0 cooler (default [-0.08, 0.08])


@dataclass
class LensBlur(Distortion):
    """Defocus: convolution with an anti-aliased disc."""

    name: ClassVar[str] = "lens_blur"
    level: ClassVar[str] = "scene"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"radius": (0, 50)}
    p: float = 0.2  #: probability of applying (default 0.2)
    radius: Range = (1.0, 3.0)  #: disc radius in pixels (default [1, 3]; cost grows with radius²)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        return {"radius": _uniform(rng, self.radius)}

    @staticmethod
    def kernel(radius: float) -> np.ndarray:
        half = math.ceil(radius)
        offsets = np.arange(-half, half + 1, dtype=np.float64)
        distance = np.hypot(offsets[None, :], offsets[:, None])
        # Linear fall-off over one pixel at the rim, so the blur varies smoothly with the radius.
        disc = np.clip(radius + 0.5 - distance, 0.0, 1.0)
        return (disc / disc.sum()).astype(np.float32)

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        blurred = cv2.filter2D(image, -1, self.kernel(params["radius"]), borderType=cv2.BORDER_REFLECT_101)
        return blurred, mask.copy()


@dataclass
class MotionBlur(Distortion):
    """Camera or object motion: convolution with a line of given length and angle."""

    name: ClassVar[str] = "motion_blur"
    level: ClassVar[str] = "scene"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"length": (0, 200)}
    p: float = 0.2  #: probability of applying (default 0.2)
    length: Range = (3.0, 11.0)  #: streak length in pixels (default [3, 11])

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        return {"length": _uniform(rng, self.length), "angle": _uniform(rng, (0.0, 180.0))}

    @staticmethod
    def kernel(length: float, angle: float) -> np.ndarray:
        half = max(1, math.ceil((length - 1) / 2))
        size = 2 * half + 1
        theta = math.radians(angle)
        dx, dy = 0.5 * (length - 1) * math.cos(theta), -0.5 * (length - 1) * math.sin(theta)
        kernel = np.zeros((size, size), np.float32)
        # cv2.line takes fixed-point coordinates (shift bits) for sub-pixel end points.
        scale = 1 << 4
        start = (round((half - dx) * scale), round((half - dy) * scale))
        end = (round((half + dx) * scale), round((half + dy) * scale))
        cv2.line(kernel, start, end, 1.0, 1, cv2.LINE_AA, shift=4)
        if not kernel.any():  # degenerate length: no blur rather than a division by zero
            kernel[half, half] = 1.0
        return kernel / kernel.sum()

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        kernel = self.kernel(params["length"], params["angle"])
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101), mask.copy()


def _normal_quantiles(scale: float) -> np.ndarray:
    """Standard-normal quantiles of the 256 byte values, times ``scale`` and rounded.

    Drawing one random byte per value and looking its quantile up is several
    times faster than a float normal generator; 256 levels are plenty for
    sensor noise of a few grey levels.
    """
    return np.rint(ndtri((np.arange(256) + 0.5) / 256) * scale)


@dataclass
class Noise(Distortion):
    """Sensor noise: gaussian (constant sigma) or ISO-like (signal-dependent shot noise plus colour blotches)."""

    name: ClassVar[str] = "noise"
    level: ClassVar[str] = "scene"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"sigma": (0, 255), "shot": (0, 255), "color": (0, 255)}
    p: float = 0.35  #: probability of applying (default 0.35)
    iso_p: float = 0.5  #: chance the noise is ISO-like rather than plain gaussian (default 0.5)
    sigma: Range = (2.0, 8.0)  #: gaussian std in grey levels (default [2, 8])
    shot: Range = (4.0, 14.0)  #: ISO: std at full white, scaling with sqrt(intensity) (default [4, 14])
    color: Range = (1.0, 5.0)  #: ISO: std of low-frequency colour blotches in grey levels (default [1, 5])

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        iso = bool(rng.random() < self.iso_p)
        return {
            "kind": "iso" if iso else "gaussian",
            "sigma": _uniform(rng, self.sigma),
            "shot": _uniform(rng, self.shot),
            "color": _uniform(rng, self.color),
            "seed": _seed(rng),
        }

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        height, width, channels = image.shape
        # Raw 64-bit words viewed as bytes (little-endian on every platform we run on) are
        # the cheapest uniform source numpy offers; the quantile table shapes them.
        generator = np.random.SFC64(params["seed"])
        count = height * width * channels
        uniform = generator.random_raw(-(-count // 8)).view(np.uint8)[:count].reshape(image.shape)
        if params["kind"] == "gaussian":
            # Signed noise as two uint8 halves (positive, negative), worked in place: exactly
            # clip(image + noise), since each value has only one non-zero half, and ~3× faster
            # than going through int16 because no large temporary is allocated.
            quantiles = _normal_quantiles(params["sigma"])
            out = cv2.LUT(uniform, np.clip(quantiles, 0, 255).astype(np.uint8))
            cv2.add(image, out, dst=out)
            cv2.LUT(uniform, np.clip(-quantiles, 0, 255).astype(np.uint8), dst=uniform)
            cv2.subtract(out, uniform, dst=out)
            return out, mask.copy()
        # Shot noise: std ∝ sqrt(intensity); int16 with a 1/64 fixed-point scale, buffers reused.
        noise = cv2.LUT(uniform, _normal_quantiles(64.0).astype(np.int16)[None, :])
        root_table = np.rint(np.sqrt(np.arange(256) / 255.0) * 255).astype(np.int16)[None, :]
        scratch = cv2.LUT(image, root_table)
        cv2.multiply(noise, scratch, dst=noise, scale=params["shot"] / (64.0 * 255.0))
        # Colour noise: coarse per-channel blotches, as demosaicing and denoising leave them.
        coarse_h, coarse_w = max(1, height // 8), max(1, width // 8)
        coarse_count = coarse_h * coarse_w * channels
        coarse = generator.random_raw(-(-coarse_count // 8)).view(np.uint8)[:coarse_count]
        blotches = cv2.LUT(
            coarse.reshape(coarse_h, coarse_w, channels), _normal_quantiles(params["color"]).astype(np.int16)[None, :]
        )
        cv2.resize(blotches, (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR)
        cv2.add(noise, scratch, dst=noise)
        return cv2.add(image, noise, dtype=cv2.CV_8U), mask.copy()


@dataclass
class PillarBox(Distortion):
    """Bars left/right (pillar box) or top/bottom (letterbox), the content squeezed to fit between them."""

    name: ClassVar[str] = "pillar_box"
    level: ClassVar[str] = "scene"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"content": (0.05, 1)}
    p: float = 0.1  #: probability of applying (default 0.1)
    letterbox_p: float = 0.5  #: chance of top/bottom bars instead of left/right (default 0.5)
    content: Range = (0.7, 0.95)  #: fraction of the barred dimension left to the content (default [0.7, 0.95])
    color: tuple[int, int, int] = (0, 0, 0)  #: RGB colour of the bars (default black)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        letterbox = bool(rng.random() < self.letterbox_p)
        return {
            "orientation": "letterbox" if letterbox else "pillar",
            "content": _uniform(rng, self.content),
            "color": [int(c) for c in self.color],
        }

    @staticmethod
    def content_box(height: int, width: int, params: dict) -> tuple[int, int, int, int]:
        """x0, y0, content width, content height of the area between the bars."""
        if params["orientation"] == "pillar":
            inner = max(1, min(width, round(width * params["content"])))
            return (width - inner) // 2, 0, inner, height
        inner = max(1, min(height, round(height * params["content"])))
        return 0, (height - inner) // 2, width, inner

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        height, width = mask.shape
        x0, y0, inner_w, inner_h = self.content_box(height, width, params)
        # Bilinear is enough for the mild (≥ 0.5) squeeze and ~5× faster than INTER_AREA at odd factors.
        content = cv2.resize(image, (inner_w, inner_h), interpolation=cv2.INTER_LINEAR)
        content_mask = cv2.resize(mask, (inner_w, inner_h), interpolation=cv2.INTER_NEAREST)
        borders = (y0, height - inner_h - y0, x0, width - inner_w - x0)
        out_image = cv2.copyMakeBorder(content, *borders, cv2.BORDER_CONSTANT, value=tuple(params["color"]))
        out_mask = cv2.copyMakeBorder(content_mask, *borders, cv2.BORDER_CONSTANT, value=0)
        return out_image, out_mask


@dataclass
class ResolutionLoss(Distortion):
    """Low resolution and compression: downscale then upscale back, and/or JPEG re-encode."""

    name: ClassVar[str] = "resolution_loss"
    level: ClassVar[str] = "scene"
    limits: ClassVar[dict[str, tuple[float, float]]] = {"scale": (0.05, 1), "quality": (1, 100)}
    p: float = 0.3  #: probability of applying (default 0.3)
    scale: Range = (0.35, 0.8)  #: downscale factor before upscaling back (default [0.35, 0.8])
    #: upscaling methods to choose from uniformly (default all three: nearest, linear, cubic)
    interpolations: tuple[str, ...] = ("nearest", "linear", "cubic")
    jpeg_p: float = 0.25  #: chance of a JPEG re-encode (~2 ms at 512², so kept low; default 0.25)
    quality: Range = (25.0, 75.0)  #: JPEG quality (default [25, 75])

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.interpolations) - set(UPSCALE_INTERPOLATIONS)
        if unknown or not self.interpolations:
            problem = sorted(unknown) or "empty"
            raise ValueError(f"resolution_loss.interpolations: {problem}; choose from {sorted(UPSCALE_INTERPOLATIONS)}")

    def sample(self, rng: np.random.Generator, height: int, width: int) -> dict:
        jpeg = bool(rng.random() < self.jpeg_p)
        scale = _uniform(rng, self.scale)
        interpolation = self.interpolations[int(rng.integers(len(self.interpolations)))]
        quality = int(round(_uniform(rng, self.quality)))
        return {
            "scale": scale,
            "interpolation": interpolation,
            "jpeg_quality": quality if jpeg else 0,  # 0: no re-encode
        }

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: dict, superpixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        height, width = mask.shape
        out = image
        if params["scale"] < 1.0:
            small = (max(1, round(width * params["scale"])), max(1, round(height * params["scale"])))
            # Bilinear downscaling aliases a little, like cheap video scalers; INTER_AREA would be
            # ~10× slower at non-integer factors and blow the scene-level time budget.
            out = cv2.resize(image, small, interpolation=cv2.INTER_LINEAR)
            out = cv2.resize(out, (width, height), interpolation=UPSCALE_INTERPOLATIONS[params["interpolation"]])
        if params["jpeg_quality"] > 0:
            out = decode_image(encode_jpeg(out, params["jpeg_quality"]), cv2.IMREAD_COLOR)
        return (out.copy() if out is image else out), mask.copy()


# --------------------------------------------------------------------------- chains and config

# Default order. Superpixel occlusion runs before the geometric distortions so the
# stored label map still matches the cutout; photometric scene effects run after
# pillar boxing so the bars get blurred, noised and compressed like the content.
OBJECT_DISTORTIONS: list[type[Distortion]] = [Lighting, SuperpixelOcclusion, Transparency, Tear, Affine]
SCENE_DISTORTIONS: list[type[Distortion]] = [SceneLighting, PillarBox, MotionBlur, LensBlur, ResolutionLoss, Noise]

REGISTRY: dict[str, type[Distortion]] = {cls.name: cls for cls in OBJECT_DISTORTIONS + SCENE_DISTORTIONS}


def sample_chain(distortions: list[Distortion], rng: np.random.Generator, height: int, width: int) -> list[dict]:
    """Decide which distortions apply and draw their parameters, in order.

    Parameters are drawn whether or not the distortion is on, so every
    distortion consumes the same random numbers whatever ``p`` is: changing one
    probability does not reshuffle the others' parameters.
    Returns the applied steps, each ``{"name": ..., **params}`` (JSON-ready).
    """
    steps = []
    for distortion in distortions:
        on = rng.random() < distortion.p
        params = distortion.sample(rng, height, width)
        if on:
            steps.append({"name": distortion.name, **params})
    return steps


def apply_chain(
    steps: list[dict],
    image: np.ndarray,
    mask: np.ndarray,
    superpixels: np.ndarray | None = None,
    registry: dict[str, type[Distortion]] = REGISTRY,
) -> tuple[np.ndarray, np.ndarray]:
    """Replay recorded steps (from :func:`sample_chain` or a stored row) on image and mask."""
    for step in steps:
        params = dict(step)
        name = params.pop("name")
        if name not in registry:
            raise ValueError(f"unknown distortion {name!r} in recorded steps; known: {sorted(registry)}")
        image, mask = registry[name]().apply(image, mask, params, superpixels)
    return image, mask


@dataclass
class DistortionConfig:
    """Every distortion with its probability and ranges (the ``distortions`` section of the config)."""

    #: object level: rotation, scale, shear and flips of each cutout
    affine: Affine = field(default_factory=Affine)
    #: object level: cutout torn in two along a jagged line, pieces pulled apart
    tear: Tear = field(default_factory=Tear)
    #: object level: random superpixels removed (occlusion) or darkened (shadow)
    superpixel_occlusion: SuperpixelOcclusion = field(default_factory=SuperpixelOcclusion)
    #: object level: the whole cutout made see-through
    transparency: Transparency = field(default_factory=Transparency)
    #: object level: brightness, contrast, gamma, colour temperature of each cutout
    lighting: Lighting = field(default_factory=Lighting)
    #: scene level: brightness, contrast, gamma, colour temperature of the composite
    scene_lighting: SceneLighting = field(default_factory=SceneLighting)
    #: scene level: bars left/right or top/bottom
    pillar_box: PillarBox = field(default_factory=PillarBox)
    #: scene level: motion streaks
    motion_blur: MotionBlur = field(default_factory=MotionBlur)
    #: scene level: defocus
    lens_blur: LensBlur = field(default_factory=LensBlur)
    #: scene level: downscale/upscale and JPEG artefacts
    resolution_loss: ResolutionLoss = field(default_factory=ResolutionLoss)
    #: scene level: gaussian or ISO-like sensor noise
    noise: Noise = field(default_factory=Noise)

    def object_distortions(self) -> list[Distortion]:
        """Configured object-level distortions in the default order."""
        return [getattr(self, cls.name) for cls in OBJECT_DISTORTIONS]

    def scene_distortions(self) -> list[Distortion]:
        """Configured scene-level distortions in the default order."""
        return [getattr(self, cls.name) for cls in SCENE_DISTORTIONS]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DistortionConfig:
        """Defaults overridden by a nested dict ``{distortion: {field: value}}``; unknown keys raise ValueError."""
        kwargs = {}
        for key, overrides in (data or {}).items():
            if key not in REGISTRY:
                raise ValueError(f"distortions: unknown distortion {key!r}; known: {sorted(REGISTRY)}")
            if overrides is None:
                continue
            if not isinstance(overrides, dict):
                raise ValueError(f"distortions.{key}: expected a mapping of settings, got {overrides!r}")
            distortion_cls = REGISTRY[key]
            known = {spec.name for spec in fields(distortion_cls)}
            for name in overrides:
                if name not in known:
                    raise ValueError(f"distortions.{key}: unknown setting {name!r}; known: {sorted(known)}")
            kwargs[key] = distortion_cls(**overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (tuples as lists), the inverse of :meth:`from_dict`."""
        result = {}
        for spec in fields(self):
            distortion = getattr(self, spec.name)
            settings = {}
            for setting in fields(distortion):
                value = getattr(distortion, setting.name)
                settings[setting.name] = list(value) if isinstance(value, tuple) else value
            result[spec.name] = settings
        return result
