"""What the temporal mode decides per frame (:class:`Track`), what one searched window shows
(:class:`Look`), the run's counts (:class:`TrackSummary`), the levels' running medians
(:class:`RecentLevels`) and the states (pipelines/temporal.py)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from pipelines.detections import json_score

TRACKING, LOST, REDETECTED = "tracking", "lost", "re-detected"
STATES = (TRACKING, LOST, REDETECTED)
GRID = 8  # the stride of the features the online filter learns on


class RecentLevels:
    """The last ``size`` values of a level (peak heats, filter responses) and their median,
    computed once per change: the median is read about 7 times a frame (VOT_bag profiled: 0.38 ms
    a frame of 14.6 when recomputed at each read)."""

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._median: float | None = None

    def append(self, value: float) -> None:
        self._values.append(value)
        self._median = None

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[float]:
        return iter(self._values)

    @property
    def median(self) -> float | None:
        """The values' median (None while there are none)."""
        if self._median is None and self._values:
            self._median = float(np.median(self._values))
        return self._median


@dataclass
class Track:
    """What the temporal search decided in one frame (boxes are [x0, y0, x1, y1] frame pixels)."""

    frame: int
    state: str
    best_box: tuple[int, int, int, int] | None
    best_score: float
    # The heat that was searched, and the affine (2 x 3) mapping frame pixels to its pixels.
    heat: np.ndarray | None = field(default=None, repr=False)
    heat_affine: np.ndarray | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self.state != LOST

    def to_json(self) -> dict[str, Any]:
        best = None if self.best_box is None else {
            "box": [int(v) for v in self.best_box], "score": json_score(float(self.best_score))}
        return {"frame": self.frame, "state": self.state, "best": best,
                "detections": [best] if self.held and best is not None else []}


@dataclass
class Look:
    """One window searched: where its score peaks (scale s, window pixel y, x), the siamese heat
    there and the online filter's raw response there (None before the filter exists)."""

    center: tuple[float, float]  # the frame point the window was centred on
    affine: np.ndarray = field(repr=False)
    heat: np.ndarray = field(repr=False)  # S x side x side, shifted onto the object
    features: np.ndarray = field(repr=False)
    s: int
    y: int
    x: int
    peak: float
    confidence: float | None
    height: float = 0.0  # the target height (frame pixels) the window was sampled for
    # The centre's window pixel (y, x) refined between pixels (TemporalConfig.refine_radius): where
    # the search goes on from (with refine_feedback; None: (y, x) itself), and where the box shown
    # is centred (None: at the search's centre).
    fine: tuple[float, float] | None = None
    shown: tuple[float, float] | None = None
    angle: float = 0.0  # the target's turn (degrees) the window was sampled to undo

    @property
    def point(self) -> tuple[float, float]:
        """The window pixel (y, x) taken as the target's centre."""
        return (float(self.y), float(self.x)) if self.fine is None else self.fine


@dataclass
class TrackSummary:
    frames: int = 0
    tracked: int = 0
    lost: int = 0
    reacquired: int = 0  # re-detected frames (each ends a loss, or is the first acquisition)

    def add(self, track: Track) -> None:
        self.frames += 1
        self.tracked += track.state == TRACKING
        self.lost += track.state == LOST
        self.reacquired += track.state == REDETECTED

    def to_json(self) -> dict[str, int]:
        return {"frames": self.frames, "tracked": self.tracked, "lost": self.lost,
                "re_detected": self.reacquired}
