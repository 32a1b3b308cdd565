"""The camera's motion between consecutive frames, for the temporal mode's window
(``TemporalConfig.camera_motion``): a handheld or panning camera moves the whole picture, the
target with it, while the window and its motion prior expect the target where it last was in
image coordinates.

The shift is the phase correlation of consecutive frames' small grey copies (the picture's
dominant translation; a target much smaller than the frame barely weighs in). Its peak's strength
says how much one translation explains the change: below ``min_response`` (a scene cut, a
zoom, a picture dominated by moving things) no motion is reported.
"""

from __future__ import annotations

import cv2
import numpy as np


class CameraMotion:
    """Per frame, the picture's translation since the previous frame (frame pixels, x, y)."""

    def __init__(self, side: int = 160, min_response: float = 0.1) -> None:
        self.side = side
        self.min_response = min_response
        self._previous: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self._scale = 1.0
        self.response = 0.0  # the last estimate's phase-correlation peak (0 where none was made)

    def _small(self, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
        self._scale = min(1.0, self.side / max(grey.shape[:2]))
        size = (max(8, round(grey.shape[1] * self._scale)), max(8, round(grey.shape[0] * self._scale)))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)

    def shift(self, frame: np.ndarray) -> tuple[float, float]:
        """How far the picture moved from the previous frame given to the one given now; (0, 0)
        on the first frame, on a frame of another size, or where the estimate is unsure."""
        small = self._small(frame)
        previous, self._previous = self._previous, small
        self.response = 0.0
        if previous is None or previous.shape != small.shape:
            return 0.0, 0.0
        if self._window is None or self._window.shape != small.shape:
            self._window = cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F)
        (dx, dy), self.response = cv2.phaseCorrelate(previous, small, self._window)
        if self.response < self.min_response:
            return 0.0, 0.0
        return dx / self._scale, dy / self._scale


class FollowsCamera:
    """How much of the camera's shift the target shares (``beta``): a least-squares fit of the
    target's observed moves on the camera's shifts over the last ``frames`` frames held, in
    [0, 1]. A handheld camera over a still target gives about 1 (the picture, target included,
    shakes); a camera panning to follow its target about 0 (the target stays put in the picture
    while the background slides: Skating1's camera follows the skater, and compensating for its
    pan would move the window off her). Until the camera has moved ``min_motion`` px in all, 0;
    ``prior`` (px^2) is added to the camera's power, shrinking the fit toward 0 where the camera
    barely moved (Skating1's small pans fitted 0-1 without it)."""

    def __init__(self, frames: int = 30, min_motion: float = 20.0, prior: float = 0.0) -> None:
        self.frames = frames
        self.min_motion = min_motion
        self.prior = prior
        self._pairs: list[tuple[float, float, float, float]] = []  # camera (x, y), target (x, y)

    @property
    def beta(self) -> float:
        if not self._pairs:
            return 0.0
        pairs = np.asarray(self._pairs)
        camera, target = pairs[:, :2], pairs[:, 2:]
        power = float((camera ** 2).sum())
        if float(np.abs(camera).sum()) < self.min_motion or power <= 0:
            return 0.0
        return float(np.clip((camera * target).sum() / (power + self.prior), 0.0, 1.0))

    def observe(self, camera: tuple[float, float], target: tuple[float, float]) -> None:
        """One frame held: the camera's shift and the target's move in the picture."""
        self._pairs.append((camera[0], camera[1], target[0], target[1]))
        del self._pairs[:-self.frames]


class CameraPrior:
    """The temporal mode's use of the two: before a frame is searched, the expected centre moves
    by ``beta`` times the camera's shift (nothing on a scene cut); after a frame held, the
    target's move in the picture is observed against the shift."""

    def __init__(self, frames: int = 30, min_motion: float = 20.0, prior: float = 0.0) -> None:
        self.camera = CameraMotion()
        self.follows = FollowsCamera(frames, min_motion, prior)
        self.move = (0.0, 0.0)  # this frame's expected move of the target (frame px)
        self._shift = (0.0, 0.0)
        self._before: tuple[float, float] | None = None

    def predict(self, frame: np.ndarray, center: tuple[float, float] | None, cut: bool) -> tuple[float, float] | None:
        """``center`` moved by this frame's expected move (see the class docstring); ``frame``
        RGB or grey."""
        shift = self.camera.shift(frame)  # also keeps this frame for the next one
        self._shift = (0.0, 0.0) if cut else shift
        beta = self.follows.beta
        self.move = (beta * self._shift[0], beta * self._shift[1])
        self._before = center
        if center is None:
            return None
        return center[0] + self.move[0], center[1] + self.move[1]

    def observe(self, center: tuple[float, float]) -> None:
        """The target held at ``center`` on the frame last predicted."""
        if self._before is not None:
            self.follows.observe(self._shift, (center[0] - self._before[0], center[1] - self._before[1]))
        self._before = None
