"""Image distortions of the synthetic-data compositor: the default order, the registry by name,
chains (:func:`sample_chain`, :func:`apply_chain`) and the config section (:class:`DistortionConfig`).

The sample/apply contract is :class:`augment.distortion_base.Distortion`; the transforms live in
:mod:`augment.object_distortions` (one cutout, before pasting) and :mod:`augment.scene_distortions`
(the composite). Their names are re-exported here, so ``from augment.distortions import Affine``
keeps working.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from augment.distortion_base import Distortion, Range  # noqa: F401
from augment.object_distortions import Affine, Lighting, SuperpixelOcclusion, Tear, Transparency
from augment.scene_distortions import (UPSCALE_INTERPOLATIONS, LensBlur, MotionBlur, Noise,  # noqa: F401
                                       PillarBox, ResolutionLoss, SceneLighting)

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
        image, mask = _applier(registry[name]).apply(image, mask, params, superpixels)
    return image, mask


@functools.cache
def _applier(kind: type[Distortion]) -> Distortion:
    """One default instance per class, made once: ``apply`` reads only the recorded params (every
    distortion's apply uses static helpers, no setting), and making an instance checks every setting,
    which made about 8% of a composite's rendering when done per step."""
    return kind()


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
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"distortions: expected a mapping of distortion settings, got {data!r}")
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
