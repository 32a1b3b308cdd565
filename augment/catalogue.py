"""Turn an object cut from a real photo into a catalogue shot, and tile photos into one scene.

A catalogue shot is how a query arrives in practice: the product alone on a plain background, in
another pose, size and light than in the scene where it must be found. :class:`CatalogueTransform`
makes one from a photo and an object mask (mirror, rescale, small rotation, recolour, plain
background), albumentations-style: :meth:`~CatalogueTransform.sample` draws the parameters from a
seeded generator, :meth:`~CatalogueTransform.apply` is a pure function of them, so a case replays
from its recorded parameters. Training pairs from real photos, ``synth calibrate`` on labelled
photos and the real-photo benchmarks all use this one transform.

:func:`tile_photos` puts several photos side by side at one height (a scene with look-alikes from
other photos), returning where each photo landed so masks can follow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from augment.imageio import InputError
from augment.resizing import resize_labels


@dataclass
class CatalogueConfig:
    """How an object becomes a catalogue-style query."""

    mirror_probability: float = 1.0  # chance of a horizontal flip (catalogue shots are not the street pose)
    scale: tuple[float, float] = (0.6, 1.4)  # query size / the object's size in its photo
    rotation: float = 10.0  # rotated by up to ± this many degrees
    hue_shift: float = 12.0  # hue moved by up to ± this many degrees
    brightness: tuple[float, float] = (0.85, 1.15)  # value (HSV) multiplied by a factor in this range
    saturation: tuple[float, float] = (0.85, 1.15)  # saturation multiplied by a factor in this range
    background: tuple[int, int, int] = (255, 255, 255)  # the plain background's RGB
    min_side: int = 8  # the query's shorter side is at least this many pixels

    def validate(self, origin: str = "catalogue") -> None:
        checks = [
            (0.0 <= self.mirror_probability <= 1.0, "mirror_probability must lie in [0, 1]"),
            (0.0 < self.scale[0] <= self.scale[1], "scale must be 0 < lo <= hi"),
            (0.0 <= self.rotation <= 45.0, "rotation must lie in [0, 45] degrees"),
            (0.0 <= self.hue_shift <= 180.0, "hue_shift must lie in [0, 180] degrees"),
            (0.0 < self.brightness[0] <= self.brightness[1], "brightness must be 0 < lo <= hi"),
            (0.0 < self.saturation[0] <= self.saturation[1], "saturation must be 0 < lo <= hi"),
            (len(self.background) == 3 and all(0 <= int(c) <= 255 for c in self.background),
             "background must be three values in [0, 255]"),
            (self.min_side >= 1, "min_side must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{origin}: {message}")


class CatalogueTransform:
    """Object in a photo -> RGBA catalogue shot (alpha = the object's mask)."""

    def __init__(self, config: CatalogueConfig | None = None) -> None:
        self.config = config or CatalogueConfig()
        self.config.validate()

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        return {
            "mirror": bool(rng.random() < c.mirror_probability),
            "scale": float(rng.uniform(*c.scale)),
            "angle": float(rng.uniform(-c.rotation, c.rotation)),
            "hue": float(rng.uniform(-c.hue_shift, c.hue_shift)),
            "value": float(rng.uniform(*c.brightness)),
            "saturation": float(rng.uniform(*c.saturation)),
        }

    def apply(self, image: np.ndarray, mask: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        """The object of ``mask`` (H×W, non-zero = object) in ``image`` (H×W×3 RGB) as an RGBA shot."""
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            raise InputError("catalogue: the object's mask is empty")
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        rgb = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
        alpha = np.ascontiguousarray((mask[y0:y1, x0:x1] > 0).astype(np.uint8) * 255)
        if params["mirror"]:
            rgb, alpha = np.ascontiguousarray(rgb[:, ::-1]), np.ascontiguousarray(alpha[:, ::-1])
        rgb, alpha = _rotate_and_scale(rgb, alpha, params["angle"], params["scale"], self.config.min_side)
        rgb = _recolour(rgb, params["hue"], params["value"], params["saturation"])
        background = np.array(self.config.background, np.float32)
        weight = alpha[..., None].astype(np.float32) / 255.0
        on_plain = rgb.astype(np.float32) * weight + background * (1.0 - weight)
        return np.dstack([np.clip(on_plain + 0.5, 0, 255).astype(np.uint8), alpha])

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        params = self.sample(rng)
        return self.apply(image, mask, params), params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def _rotate_and_scale(rgb: np.ndarray, alpha: np.ndarray, angle: float, scale: float,
                      min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre onto a canvas that holds the whole rotated object, then resize."""
    h, w = alpha.shape
    scale = max(scale, min_side / max(1, min(h, w)))
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    out_w, out_h = max(1, int(np.ceil(h * sin + w * cos))), max(1, int(np.ceil(h * cos + w * sin)))
    # Move the rotated centre to the canvas centre.
    matrix[0, 2] = out_w / 2.0 - (matrix[0, 0] * w / 2.0 + matrix[0, 1] * h / 2.0)
    matrix[1, 2] = out_h / 2.0 - (matrix[1, 0] * w / 2.0 + matrix[1, 1] * h / 2.0)
    shrink = scale < 1.0
    interpolation = cv2.INTER_AREA if shrink and abs(angle) < 1e-6 else cv2.INTER_LINEAR
    rgb = cv2.warpAffine(rgb, matrix, (out_w, out_h), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(alpha, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)
    ys, xs = np.nonzero(alpha >= 128)
    if ys.size == 0:
        raise InputError("catalogue: the object vanished when resized (too small)")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1])


def _recolour(rgb: np.ndarray, hue_degrees: float, value: float, saturation: float) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_degrees / 2.0, 180.0)  # OpenCV's 8-bit hue is degrees / 2
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * value, 0, 255)
    return cv2.cvtColor((hsv + 0.5).astype(np.uint8), cv2.COLOR_HSV2RGB)


@dataclass(frozen=True)
class Placement:
    """Where a photo landed in a tiled scene: scene pixel = photo pixel * factor + (x_offset, 0)."""

    x_offset: int
    width: int
    height: int
    factor: float


def tile_photos(photos: Sequence[np.ndarray], height: int) -> tuple[np.ndarray, list[Placement]]:
    """Photos resized to ``height`` (aspect kept) and put side by side, left to right."""
    if not photos:
        raise ValueError("tile_photos needs at least one photo")
    tiles, placements, x = [], [], 0
    for photo in photos:
        factor = height / photo.shape[0]
        width = max(1, round(photo.shape[1] * factor))
        interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
        tiles.append(cv2.resize(photo[..., :3], (width, height), interpolation=interpolation))
        placements.append(Placement(x, width, height, factor))
        x += width
    return np.ascontiguousarray(np.concatenate(tiles, axis=1)), placements


def place_mask(mask: np.ndarray, placement: Placement, scene_shape: tuple[int, int]) -> np.ndarray:
    """A photo's mask moved into the tiled scene (bool, scene height × width)."""
    scene = np.zeros(scene_shape, bool)
    small = resize_labels(mask.astype(np.uint8), placement.height, placement.width)
    scene[:, placement.x_offset:placement.x_offset + placement.width] = small > 0
    return scene
