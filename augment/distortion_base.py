"""The contract every image distortion of the synthetic-data compositor follows: :class:`Distortion`.

Every distortion separates *sampling* its random parameters from *applying*
them, like albumentations' ``get_params`` / ``apply``: :meth:`Distortion.sample`
draws a JSON-ready dict from a ``numpy.random.Generator`` (no pixels involved)
and :meth:`Distortion.apply` is a pure function of (image, mask, params). A
recorded row therefore replays byte-identically with
:func:`augment.distortions.apply_chain`. ``apply`` never reads the distortion's
configured ranges, only ``params``.

Two levels:

* object level (:mod:`augment.object_distortions`) acts on one cutout before it
  is pasted: ``image`` is H×W×4 uint8 RGBA (alpha = blending coverage) and
  ``mask`` H×W uint8 binary (1 = object pixel). Affine and tear may grow the
  canvas; image and mask always stay the same size and aligned.
* scene level (:mod:`augment.scene_distortions`) acts on the composite:
  ``image`` is H×W×3 uint8 RGB and ``mask`` an H×W uint8/uint16 instance-id map.
  The size never changes and geometric operations move ids with
  nearest-neighbour sampling.

Pixel work uses OpenCV directly (albumentations' transforms draw their own
random numbers and add per-call overhead the speed budget has no room for).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from augment.validation import is_number, is_pair

Range = tuple[float, float]


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
            # numpy's numbers (np.float32(0.5), a range as an array) as Python's: checked as such
            # (they were 'expected a probability, got np.float32(0.5)') and JSON-ready in the rows.
            if isinstance(value, (np.ndarray, np.generic)):
                value = value.tolist()
            if isinstance(value, (list, tuple)):  # lists from YAML/JSON
                value = tuple(v.item() if isinstance(v, np.generic) else v for v in value)
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
