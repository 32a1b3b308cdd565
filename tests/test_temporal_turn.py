"""The temporal mode and a target that turns in the image plane (a rolling camera, a turning
object): windows turned back by the target's angle see it as upright as the query
(pipelines/window_geometry.py), and a rescue at the moment the target would be lost looks at the
last place turned (``TemporalConfig.rescue_turns``), judged by the siamese heat against the
upright query."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.search import Searcher
from pipelines.temporal import TemporalConfig, TemporalSearcher, Track
from pipelines.window_geometry import crop_affine, sample_window, turn_matrix, turned_size

# The generated video's pieces and the module fixtures (one torch thread, one Searcher) are
# test_temporal's.
from tests.test_temporal import _centre, _scene, one_thread, searcher  # noqa: F401

WIDTH, HEIGHT = 30, 80  # the target, upright: tall, so that turning it changes its outline


def _turning_video(angles: np.ndarray) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """A tall target (the astronaut, whole) turned by ``angles[t]`` degrees about its centre in
    frame t, drifting right on the coffee scene."""
    background = _scene(data.coffee())
    patch = cv2.resize(data.astronaut()[20:480, 120:330], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    frames, centres = [], []
    for t, angle in enumerate(angles):
        cx, cy = 130 + t, 120
        layer, mask = np.zeros_like(background), np.zeros(background.shape[:2], np.uint8)
        x0, y0 = cx - WIDTH // 2, cy - HEIGHT // 2
        layer[y0:y0 + HEIGHT, x0:x0 + WIDTH], mask[y0:y0 + HEIGHT, x0:x0 + WIDTH] = patch, 255
        turn = cv2.getRotationMatrix2D((cx - 0.5, cy - 0.5), float(angle), 1.0)
        layer = cv2.warpAffine(layer, turn, layer.shape[1::-1])
        mask = cv2.warpAffine(mask, turn, mask.shape[1::-1])
        frame = background.copy()
        frame[mask > 127] = layer[mask > 127]
        frames.append(frame)
        centres.append((float(cx), float(cy)))
    return frames, centres


def _run(searcher: Searcher, frames: list[np.ndarray], centre: tuple[float, float],
         config: TemporalConfig) -> tuple[TemporalSearcher, list[Track]]:
    x, y = centre
    box = (x - WIDTH / 2, y - HEIGHT / 2, x + WIDTH / 2, y + HEIGHT / 2)
    query = np.ascontiguousarray(frames[0][int(box[1]):int(box[3]), int(box[0]):int(box[2])])
    tracker = TemporalSearcher(searcher, searcher.prepare(query), config, initial_box=box)
    return tracker, [tracker.step(frame) for frame in frames]


def _errors(tracks: list[Track], centres: list[tuple[float, float]]) -> list[float]:
    return [float(np.linalg.norm(_centre(t.best_box) - np.array(c))) for t, c in zip(tracks, centres)]


ANGLES = np.concatenate([np.zeros(5), np.linspace(0, 60, 41), np.full(10, 60.0)])  # 1.5 degrees a frame


def test_a_turned_window_shows_the_turned_target_upright() -> None:
    """A frame turned by 30 degrees about the target, sampled by a window turned back by 30, is the
    unturned frame's window (up to resampling), at any zoom; and the window's point v px from
    its centre is the frame's point turn_matrix(angle) v / zoom from the window's centre."""
    frame = _scene(data.coffee())
    centre = (160.0, 120.0)
    turn = cv2.getRotationMatrix2D((centre[0] - 0.5, centre[1] - 0.5), 30.0, 1.0)
    turned = cv2.warpAffine(frame, turn, frame.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    for zoom in (0.6, 1.0, 1.7):
        upright = sample_window(frame, crop_affine(centre, zoom, 64, 64), 64, 64).astype(np.float64)
        undone = sample_window(turned, crop_affine(centre, zoom, 64, 64, 30.0), 64, 64).astype(np.float64)
        other = sample_window(turned, crop_affine(centre, zoom, 64, 64), 64, 64).astype(np.float64)
        assert np.abs(undone - upright).mean() < 0.4 * np.abs(other - upright).mean(), zoom
        affine = crop_affine(centre, zoom, 64, 64, 30.0)
        offset = np.array([7.0, -11.0])
        point = np.array(centre) + turn_matrix(30.0) @ offset / zoom  # continuous frame point
        window = affine[:, :2] @ (point - 0.5) + affine[:, 2] + 0.5  # continuous window point
        assert np.allclose(window, np.array([32.0, 32.0]) + offset, atol=1e-9)
    assert turned_size(40, 30, 0.0) == (40, 30)
    assert turned_size(40, 30, 90.0) == pytest.approx((30, 40))


def test_a_target_turning_60_degrees_is_held_with_turned_rescues(searcher: Searcher) -> None:
    frames, centres = _turning_video(ANGLES)
    tracker, tracks = _run(searcher, frames, centres[0], TemporalConfig())
    assert {t.state for t in tracks[1:]} == {"tracking"}
    assert max(_errors(tracks, centres)) <= 16
    assert tracker.angle >= 15.0  # turned with the target (which ends at 60)
    # The box shown is the upright box around the turned box.
    x0, y0, x1, y1 = tracks[-1].best_box
    width, height = turned_size(tracker.height * tracker.aspect, tracker.height, tracker.angle)
    assert (x1 - x0, y1 - y0) == (pytest.approx(width, abs=1.5), pytest.approx(height, abs=1.5))


def test_without_turned_rescues_the_upright_query_loses_it(searcher: Searcher) -> None:
    """The same video with ``rescue_turns`` off: the windows stay upright, and the target, turned
    past ~35 degrees, is lost and the box left behind (what the rescue above prevents)."""
    frames, centres = _turning_video(ANGLES)
    tracker, tracks = _run(searcher, frames, centres[0], TemporalConfig(rescue_turns=()))
    assert tracker.angle == 0.0
    assert [t.state for t in tracks[-10:]] == ["lost"] * 10
    assert max(_errors(tracks, centres)) > 25


def test_a_turn_the_online_filter_refuses_is_not_taken(searcher: Searcher) -> None:
    """``turn_filter``: a turned look needs the online filter's response too. At a bar no look
    reaches, the same turning video is lost, as with the rescue off."""
    frames, centres = _turning_video(ANGLES)
    tracker, tracks = _run(searcher, frames, centres[0], TemporalConfig(turn_filter=1.0))
    assert tracker.angle == 0.0
    assert tracks[-1].state == "lost"


def test_a_bad_turn_is_one_line() -> None:
    with pytest.raises(ValueError, match="rescue_turns"):
        TemporalConfig(rescue_turns=(0.0,))
    with pytest.raises(ValueError, match="rescue_turns"):
        TemporalConfig(rescue_turns=(math.inf,))
    with pytest.raises(ValueError, match="turn_filter"):
        TemporalConfig(turn_filter=1.5)
