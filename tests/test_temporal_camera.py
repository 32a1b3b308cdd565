"""Camera motion in the temporal mode (pipelines/camera_motion.py, ``TemporalConfig.camera_motion``)
on generated video: the picture's shift between frames is measured; a shaking camera over a still
target next to a look-alike does not send the window to the look-alike; a camera panning to follow
its target does not move the window off it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.camera_motion import CameraMotion, FollowsCamera
from pipelines.search import Searcher
from pipelines.temporal import TemporalConfig, TemporalSearcher, Track

# The generated video's pieces and the module fixtures are test_temporal's.
from tests.test_temporal import SIZE, _centre, _paste, _target, one_thread, searcher  # noqa: F401

MARGIN = 100  # the world is the frame plus this on every side


def _world(target_at: tuple[float, float], lookalike_at: tuple[float, float] | None) -> np.ndarray:
    h, w = SIZE
    world = cv2.resize(data.coffee(), (w + 2 * MARGIN, h + 2 * MARGIN), interpolation=cv2.INTER_AREA)
    if lookalike_at is not None:
        _paste(world, _target(), *lookalike_at)
    _paste(world, _target(), *target_at)
    return world


def _view(world: np.ndarray, x: float, y: float) -> np.ndarray:
    """The frame a camera sees with its top-left corner at world (x, y) (sub-pixel)."""
    h, w = SIZE
    return cv2.warpAffine(world, np.float32([[1, 0, -x], [0, 1, -y]]), (w, h), flags=cv2.INTER_LINEAR)


def _shaking_camera(frames: int = 40) -> list[tuple[float, float]]:
    """The camera's corner: a handheld wobble (5 px a frame) for 25 frames, then a violent shake
    (45 px left and right every frame)."""
    rng = np.random.default_rng(0)
    corners = [(float(MARGIN), float(MARGIN))]
    for t in range(1, frames):
        step = rng.normal(0, 5, 2) if t < 25 else np.array([(-1) ** t * 45.0, 0.0])
        x, y = np.clip(np.array(corners[-1]) + step, 10, 2 * MARGIN - 10)
        corners.append((float(x), float(y)))
    return corners


def _errors(searcher: Searcher, frames: list[np.ndarray], truth: list[tuple[float, float]],
            config: TemporalConfig) -> tuple[list[float], TemporalSearcher]:
    x, y = truth[0]
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), config,
                               initial_box=(x - 24, y - 24, x + 24, y + 24))
    tracks: list[Track] = [tracker.step(frame) for frame in frames]
    return [float(np.linalg.norm(_centre(t.best_box) - np.array(c))) for t, c in zip(tracks, truth)], tracker


def test_the_pictures_shift_is_measured() -> None:
    world = _world((260.0, 220.0), None)
    camera = CameraMotion()
    assert camera.shift(_view(world, 100, 100)) == (0.0, 0.0)  # nothing to compare with yet
    dx, dy = camera.shift(_view(world, 87.0, 109.5))  # the camera moved left and down
    assert abs(dx - 13.0) <= 1.0 and abs(dy + 9.5) <= 1.0, (dx, dy)
    assert camera.response > 0.5


def test_how_much_the_target_shares_the_cameras_shift() -> None:
    shaken, followed, still = FollowsCamera(), FollowsCamera(), FollowsCamera(min_motion=20.0)
    rng = np.random.default_rng(1)
    for _ in range(30):
        camera = tuple(rng.normal(0, 5, 2))
        shaken.observe(camera, (camera[0] + rng.normal(0, 1), camera[1] + rng.normal(0, 1)))
        followed.observe(camera, tuple(rng.normal(0, 1, 2)))
    assert shaken.beta > 0.9 and followed.beta < 0.15, (shaken.beta, followed.beta)
    still.observe((2.0, 1.0), (2.0, 1.0))  # 3 px of camera motion: too little to say
    assert still.beta == 0.0
    # A camera that barely moves (1 px a frame) with the target's own moves alike by chance: the
    # prior keeps the fit low; a shaking one (5 px) is still followed.
    small, shaking = FollowsCamera(prior=200.0), FollowsCamera(prior=200.0)
    for _ in range(30):
        camera = tuple(rng.normal(0, 1, 2))
        small.observe(camera, camera)
        camera = tuple(rng.normal(0, 5, 2))
        shaking.observe(camera, camera)
    assert small.beta < 0.4 and shaking.beta > 0.8, (small.beta, shaking.beta)


def test_a_shaking_camera_does_not_send_the_window_to_a_lookalike(searcher: Searcher) -> None:
    """A still target, its look-alike 56 px to its left; the camera wobbles, then shakes 45 px a
    frame: without camera motion the window, expecting the target where it was in the picture,
    takes the look-alike on every other frame (57 px off); with it, within 4 px throughout."""
    target_at = (160.0 + MARGIN, 120.0 + MARGIN)
    world = _world(target_at, (target_at[0] - 56, target_at[1] + 10))
    corners = _shaking_camera()
    frames = [_view(world, x, y) for x, y in corners]
    truth = [(target_at[0] - x, target_at[1] - y) for x, y in corners]
    followed, tracker = _errors(searcher, frames, truth, TemporalConfig(camera_motion=True))
    assert max(followed) <= 4, np.round(followed)
    assert tracker.motion is not None and tracker.motion.follows.beta > 0.8
    fixed, _ = _errors(searcher, frames, truth, TemporalConfig(camera_motion=False))
    assert max(fixed) > 40, np.round(fixed)  # the case is a real one: without it, the look-alike


def test_a_camera_following_its_target_keeps_the_window_on_it(searcher: Searcher) -> None:
    """The camera pans 7 px a frame with the target (the target stays put in the picture, the
    background, a look-alike in it, slides past): the target shares none of the pan, and the
    box stays on it."""
    frames, truth = [], []
    for t in range(36):
        corner = (20.0 + 7 * t, float(MARGIN))
        world = _world((corner[0] + 150, corner[1] + 110), (260.0, 150.0 + MARGIN))
        frames.append(_view(world, *corner))
        truth.append((150.0, 110.0))
    errors, tracker = _errors(searcher, frames, truth, TemporalConfig(camera_motion=True))
    assert max(errors) <= 4, np.round(errors)
    assert tracker.motion is not None and tracker.motion.follows.beta < 0.2


@pytest.mark.parametrize("settings", [{"camera_frames": 0}, {"camera_prior": -1.0}])
def test_bad_camera_settings_are_refused(settings: dict) -> None:
    with pytest.raises(ValueError, match="camera_frames"):
        TemporalConfig(**settings)
