"""Synthetic views of the first frame for the temporal mode's online filter (issue 12).

The online correlation filter (pipelines/online_filter.py) is set from the first frame alone and
then moves at its learning rate. Classical and learned trackers set it from a synthetically
expanded first frame instead: MOSSE (Bolme et al. 2010) from 8 random affine perturbations, ATOM /
DiMP (Danelljan et al. 2019) from shifts, rotations, blur, flips and dropout. Here each view is the
first frame's window around the target moved, turned and scaled about the target (sampled from a
wider window of the frame itself, so the view shows real context, not padding), then put through
the dataset expansion's scene distortions (lighting, motion blur, lens blur, resolution loss,
noise). The parameters are drawn from a ``numpy.random.Generator`` seeded by the config, apart from
applying them (augment/distortion_base.py's sample / apply contract): the same views run to run.
Each view's label is placed where the target's centre lands under its geometric transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from augment.distortions import (Affine, LensBlur, MotionBlur, Noise, ResolutionLoss, SceneLighting,
                                 apply_chain, sample_chain)
from pipelines.window_geometry import crop_affine, sample_window

MAX_VIEWS = 64


@dataclass(frozen=True)
class ViewsConfig:
    """How many views of the first frame the online filter is set from (0 = the frame alone), and
    how each is distorted."""

    count: int = 0
    # Geometry, about the target's centre: shift up to ``shift`` x the target's side on each axis,
    # rotation within +-``rotate`` degrees, scale within [1 / (1 + scale), 1 + scale], a mirror
    # flip with probability ``flip``.
    shift: float = 0.2
    rotate: float = 10.0
    scale: float = 0.1
    flip: float = 0.0
    # Probability of each scene distortion of augment/ (its default strengths) in each view.
    lighting: float = 0.5
    motion_blur: float = 0.3
    lens_blur: float = 0.2
    resolution: float = 0.2
    noise: float = 0.3
    seed: int = 0
    # Whether the online filter's views go through those scene distortions (False: geometry only).
    online_photometric: bool = True
    # Each view's weight in the filter's first numerator and denominator, the frame's own being 1
    # (1: MOSSE's plain mean; 1 / count: the views together weigh as much as the frame).
    view_weight: float = 1.0
    # The scale filter (pipelines/scale_filter.py) set from the first frame and scale_views views
    # of it, photometric only (a moved or scaled view would move its label along the scale axis).
    scale_views: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or not 0 <= self.count <= MAX_VIEWS:
            raise ValueError(f"first_views.count must be an integer in [0, {MAX_VIEWS}], not {self.count}")
        if not 0.0 <= self.shift <= 1.0 or not 0.0 <= self.rotate <= 90.0 or not 0.0 <= self.scale < 1.0:
            raise ValueError(f"need first_views.shift in [0, 1], rotate in [0, 90] and scale in [0, 1), not "
                             f"{self.shift}, {self.rotate}, {self.scale}")
        for name in ("flip", "lighting", "motion_blur", "lens_blur", "resolution", "noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"first_views.{name} is a probability in [0, 1], not {value}")
        if not isinstance(self.scale_views, int) or not 0 <= self.scale_views <= MAX_VIEWS:
            raise ValueError(f"first_views.scale_views must be an integer in [0, {MAX_VIEWS}], not {self.scale_views}")
        if not 0.0 < self.view_weight <= 1.0:
            raise ValueError(f"first_views.view_weight must lie in (0, 1], not {self.view_weight}")
        if self.seed < 0:
            raise ValueError(f"first_views.seed must be >= 0, not {self.seed}")


def first_views(frame: np.ndarray, center: tuple[float, float], zoom: float, side: int,
                target_at: tuple[float, float], target_side: float, config: ViewsConfig
                ) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """``config.count`` distorted side x side views of the window that ``crop_affine(center, zoom,
    side, side)`` cuts from ``frame``, whose target's centre sits at window point ``target_at``
    (x, y; pixel i spans [i, i + 1)) and measures ``target_side`` window pixels; returns the views
    and where the target's centre lands in each (x, y)."""
    rng = np.random.default_rng(config.seed)
    # A window twice as wide around the same centre: a turned, shrunk or shifted view still shows
    # the frame around the target (at most (|cos| + |sin|) / (1 - scale) + 2 shift of it).
    wide_side = 2 * side
    wide = sample_window(frame, crop_affine(center, zoom, wide_side, wide_side), wide_side, wide_side)
    source = np.array(target_at, np.float64) + (wide_side - side) / 2
    geometry = Affine(p=1.0, rotate=(-config.rotate, config.rotate),
                      scale=(1.0 / (1.0 + config.scale), 1.0 + config.scale), shear=(0.0, 0.0),
                      hflip_p=config.flip, vflip_p=0.0)
    scene = [SceneLighting(p=config.lighting), MotionBlur(p=config.motion_blur), LensBlur(p=config.lens_blur),
             ResolutionLoss(p=config.resolution), Noise(p=config.noise)]
    blank = np.zeros((side, side), np.uint8)
    views, places = [], []
    for _ in range(config.count):
        params = geometry.sample(rng, side, side)
        shift = rng.uniform(-1.0, 1.0, size=2) * config.shift * target_side
        steps = sample_chain(scene, rng, side, side) if config.online_photometric else []
        linear = Affine.linear(params)
        # The target's centre goes to target_at + shift: view = linear (wide - source) + dest, in
        # pixel-centre coordinates (hence the 0.5s: warpAffine maps pixel indices).
        dest = np.array(target_at, np.float64) + shift
        offset = (dest - 0.5) - linear @ (source - 0.5)
        view = cv2.warpAffine(wide, np.hstack([linear, offset[:, None]]), (side, side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        view, _ = apply_chain(steps, view, blank)
        views.append(np.ascontiguousarray(view))
        places.append((float(dest[0]), float(dest[1])))
    return views, places


def photometric_views(region: np.ndarray, count: int, config: ViewsConfig) -> list[np.ndarray]:
    """``count`` copies of an RGB ``region`` through the scene distortions alone (for the scale
    filter); drawn from their own stream of the seed, apart from :func:`first_views`'."""
    rng = np.random.default_rng([config.seed, 1])
    scene = [SceneLighting(p=config.lighting), MotionBlur(p=config.motion_blur), LensBlur(p=config.lens_blur),
             ResolutionLoss(p=config.resolution), Noise(p=config.noise)]
    blank = np.zeros(region.shape[:2], np.uint8)
    height, width = blank.shape
    return [np.ascontiguousarray(apply_chain(sample_chain(scene, rng, height, width), region, blank)[0])
            for _ in range(count)]
