"""Scene-level distortions: what happens to the whole composite after pasting.

Lighting (exposure and white balance), pillar-/letter-box, motion blur, lens
blur, resolution loss (down/up-scale, JPEG) and sensor noise; ``image`` is
H×W×3 uint8 RGB and ``mask`` an instance-id map of the same size (see
:mod:`augment.distortion_base` for the sample/apply contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
from scipy.special import ndtri

from augment.distortion_base import Distortion, Range, _seed, _uniform
from augment.imageio import decode_image, encode_jpeg
from augment.object_distortions import Lighting
from augment.resizing import resize_labels

# Interpolations resolution_loss may record for upscaling, by name so params stay JSON. Nearest takes
# the pixel under each output pixel's centre, as linear and cubic do (cv2.INTER_NEAREST's top-left
# corner moved the picture half a pixel right of and below its mask).
UPSCALE_INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST_EXACT,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
}


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
        """A streak of ``length`` pixels at ``angle`` degrees (counter-clockwise), centred on the kernel's
        middle: points spaced a quarter pixel along it, each spread bilinearly over its four pixels, so
        the kernel's centre of mass is its middle at any length and angle (filtering moves no picture off
        its mask). A length of 1 or less is no blur."""
        reach = 0.5 * max(0.0, length - 1.0)  # from the centre to each end point's pixel centre
        half = max(1, math.ceil(reach))
        size = 2 * half + 1
        kernel = np.zeros((size, size), np.float64)
        if reach == 0.0:
            kernel[half, half] = 1.0
            return kernel.astype(np.float32)
        theta = math.radians(angle)
        steps = np.linspace(-reach, reach, 2 * math.ceil(4 * reach) + 1)  # symmetric about 0
        xs, ys = half + steps * math.cos(theta), half - steps * math.sin(theta)
        x0, y0 = np.floor(xs), np.floor(ys)
        fx, fy = xs - x0, ys - y0
        corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
        for dx, dy, weight in corners:
            cols = np.clip(x0.astype(int) + dx, 0, size - 1)  # clipped only where the weight is 0
            rows = np.clip(y0.astype(int) + dy, 0, size - 1)
            np.add.at(kernel, (rows, cols), weight)
        return (kernel / kernel.sum()).astype(np.float32)

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
        content_mask = resize_labels(mask, inner_h, inner_w)
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

