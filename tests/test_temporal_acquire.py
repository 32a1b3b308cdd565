"""The first acquisition without a box (``TemporalConfig.acquire_every``): the target is taken
only where the still-image search (verified, at its calibrated threshold) reports the query, so a
query absent from the video is not "tracked" on whatever resembles it most, and a target that
enters later is acquired when it does."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from augment.imageio import save_image
from pipelines.search import Searcher
from pipelines.temporal import LOST, REDETECTED, TRACKING, TemporalConfig, TemporalSearcher
from tests.cli_checks import run_cli
from tests.test_temporal import (SIDE, _centre, _paste, _scene, _target, _write_video, one_thread,  # noqa: F401
                                 searcher)


def _entering_video(enters: int, noise: float = 0.0) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """20 frames of the coffee scene; the target shown from frame ``enters`` on, moving right;
    with ``noise``, each frame's own Gaussian sensor noise (that standard deviation, seeded)."""
    background = _scene(data.coffee())
    rng = np.random.default_rng(0)
    frames, truth = [], []
    for t in range(20):
        frame = background.copy()
        centre = (80.0 + 3 * t, 120.0)
        if t >= enters:
            _paste(frame, _target(), *centre)
        if noise:
            frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
        truth.append(centre)
    return frames, truth


def _states(searcher: Searcher, query: np.ndarray, frames: list[np.ndarray], config: TemporalConfig) -> list:
    tracker = TemporalSearcher(searcher, searcher.prepare(query), config)
    return [tracker.step(frame) for frame in frames]


def test_a_query_absent_from_the_video_is_never_acquired(searcher: Searcher) -> None:
    # Never shown. With sensor noise, as every camera's frames have: on the same noise-free frame
    # repeated, the still search's best guess (on the same place at every try) has exactly
    # acquire_inliers (8) inliers, and the hypothesis is confirmed (see TemporalConfig.acquire_confirm).
    frames, _ = _entering_video(enters=99, noise=4.0)
    tracks = _states(searcher, _target(), frames, TemporalConfig(acquire_every=5))
    assert [t.state for t in tracks] == [LOST] * 20
    assert all(t.to_json()["detections"] == [] for t in tracks)
    # Before: the highest peak of the first frame was taken, and "tracked" from then on.
    before = _states(searcher, _target(), frames, TemporalConfig(acquire_every=0))
    assert before[0].state == REDETECTED and TRACKING in {t.state for t in before}


def test_a_target_entering_later_is_acquired_at_the_next_try_and_held(searcher: Searcher) -> None:
    frames, truth = _entering_video(enters=7, noise=4.0)  # noise: see the test above
    tracks = _states(searcher, _target(), frames, TemporalConfig(acquire_every=5))
    states = [t.state for t in tracks]
    # Tried at frames 0 and 5 (absent), 10 (present): lost until then, found there, held after.
    assert states[:10] == [LOST] * 10 and states[10] == REDETECTED, states
    assert set(states[11:]) == {TRACKING}, states
    errors = [float(np.linalg.norm(_centre(t.best_box) - np.array(c))) for t, c in zip(tracks[10:], truth[10:])]
    assert max(errors) <= 8, np.round(errors, 1)
    height = tracks[-1].best_box[3] - tracks[-1].best_box[1]
    assert 0.75 * SIDE <= height <= 1.3 * SIDE, height


def test_a_target_the_still_search_never_reports_is_acquired_when_its_best_lands_on_it_twice(
        searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> None:
    # As on real footage, where the still search's fused score stays far under its threshold.
    monkeypatch.setattr(searcher, "threshold", 0.999)
    frames, truth = _entering_video(enters=0)
    tracks = _states(searcher, _target(), frames, TemporalConfig(acquire_every=5))
    states = [t.state for t in tracks]
    # Tries at frames 0 (the hypothesis started at the best guess) and 5 (its best on it again).
    assert states[:5] == [LOST] * 5 and states[5] == REDETECTED, states
    assert set(states[6:]) == {TRACKING}, states
    # While lost, the box follows the hypothesis (the object), not the first guess left behind.
    errors = [float(np.linalg.norm(_centre(t.best_box) - np.array(c))) for t, c in zip(tracks, truth)]
    assert max(errors) <= 8, np.round(errors, 1)
    # Without the confirmation (the code before it): lost in every frame, the box left behind.
    before = _states(searcher, _target(), frames, TemporalConfig(acquire_every=5, acquire_confirm=0))
    assert [t.state for t in before] == [LOST] * 20
    assert float(np.linalg.norm(_centre(before[4].best_box) - np.array(truth[4]))) >= 10


def _tries(searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frames (by call order) on which the still search is tried: a list the calls append to."""
    tried: list[int] = []
    find_many = searcher.find_many

    def counted(*args, **kwargs):
        tried.append(len(tried))
        return find_many(*args, **kwargs)

    monkeypatch.setattr(searcher, "find_many", counted)
    return tried


def test_tries_back_off_while_the_query_is_absent_and_a_cut_tries_at_once(
        searcher: Searcher, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # 46 noisy frames of one scene without the target, then 4 of another (a scene cut at frame 46).
    rng = np.random.default_rng(1)
    scenes = [_scene(data.coffee())] * 46 + [_scene(data.chelsea())] * 4
    frames = [np.clip(scene + rng.normal(0.0, 4.0, scene.shape), 0, 255).astype(np.uint8) for scene in scenes]
    config = TemporalConfig(acquire_every=5, acquire_patience=3)
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), config)
    tried_at = []
    calls = _tries(searcher, monkeypatch)
    caplog.set_level(logging.DEBUG, logger="pipelines.temporal_acquire")
    for index, frame in enumerate(frames):
        before = len(calls)
        assert tracker.step(frame).state == LOST
        if len(calls) > before:
            tried_at.append(index)
    # Every 5th frame for acquire_patience (here 3) blank tries, then gaps of 10, 20, 40 (at most 8 x 5);
    # the cut tries at once and starts afresh (its next try 5 frames on, past the end).
    assert tried_at == [0, 5, 10, 20, 40, 46], tried_at
    # -v says why: each widened gap is logged with the count of blank tries behind it.
    widened = [r.getMessage() for r in caplog.records if r.name == "pipelines.temporal_acquire"]
    assert widened == [f"acquisition: {n} blank tries in a row; the next in {gap} frames"
                       for n, gap in ((3, 10), (4, 20), (5, 40))], widened
    # Off (acquire_backoff 1): every 5th frame, as before it (15 too, where the back-off waited for 20), plus
    # the cut's own try: the first 21 frames, then the cut at 21 (no longer 25 frames of further blank tries).
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()),
                               TemporalConfig(acquire_every=5, acquire_patience=3, acquire_backoff=1))
    calls.clear()
    tried_at = []
    for index, frame in enumerate(frames[:21] + frames[46:]):
        before = len(calls)
        tracker.step(frame)
        if len(calls) > before:
            tried_at.append(index)
    assert tried_at == [0, 5, 10, 15, 20, 21], tried_at


def test_a_target_entering_after_the_back_off_is_acquired_at_the_next_try(searcher: Searcher) -> None:
    frames, truth = _entering_video(enters=99, noise=4.0)
    shown, _ = _entering_video(enters=0, noise=4.0)
    # Absent for 25 frames (tries at 0, 5, 10, 20: the next at 40), then in view.
    video = frames + frames[:5] + shown
    tracks = _states(searcher, _target(), video, TemporalConfig(acquire_every=5, acquire_patience=3))
    states = [t.state for t in tracks]
    assert states[:40] == [LOST] * 40 and states[40] == REDETECTED, states
    assert set(states[41:]) == {TRACKING}, states


def test_the_cli_says_when_a_video_never_showed_the_query(tmp_path: Path) -> None:
    frames, _ = _entering_video(enters=99, noise=4.0)
    _write_video(tmp_path / "clip.avi", frames[:12])
    save_image(tmp_path / "query.png", _target())
    result = run_cli("search", tmp_path / "query.png", tmp_path / "clip.avi", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "lost in 12 of 12 frames" in result.output, result.output
    assert "not found with confidence" in result.output and "--box X,Y,W,H" in result.output, result.output


def test_a_bad_acquire_every_is_one_line() -> None:
    with pytest.raises(ValueError, match="acquire_every"):
        TemporalConfig(acquire_every=-1)
    with pytest.raises(ValueError, match="acquire_confirm"):
        TemporalConfig(acquire_confirm=-1)
    with pytest.raises(ValueError, match="acquire_backoff"):
        TemporalConfig(acquire_backoff=0)
