"""candidate_screen on generated video (pipelines/temporal_lost.py): while the target is lost, the
whole frame's peaks whose window, cut from the whole frame's own maps, scores far under the filter's
reference are not sampled and encoded again. The decisions are the sampled windows' as without it:
the same track frame by frame, a hidden target re-detected as soon as the whole frame is searched
after its return, fewer pixels encoded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from pipelines.search import Searcher
from pipelines.temporal import LOST, REDETECTED, TRACKING, TemporalConfig

from tests.test_temporal import (SIDE, _counted_run, _centre, _covered_video, _paste, _scene, _target,  # noqa: F401
                                 one_thread, searcher)


def _lookalike() -> np.ndarray:
    """The astronaut's image 60 px below the target's crop (her face's lower half, the suit): its
    heat passes the whole frame's bar, its window's filter response is about half the target's."""
    return cv2.resize(data.astronaut()[90:250, 150:310], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def _hidden_video() -> tuple[list[np.ndarray], list[tuple[float, float] | None]]:
    """The target moving right, hidden in frames 10-19, back on the other side of the frame from
    frame 20; the look-alike stands elsewhere throughout."""
    background, target = _scene(data.coffee()), _target()
    frames, truth = [], []
    for t in range(30):
        frame = background.copy()
        _paste(frame, _lookalike(), 160.0, 60.0)
        centre = (60 + 6 * t, 170.0) if t < 10 else None if t < 20 else (250.0, 180 - 3 * (t - 20))
        if centre is not None:
            _paste(frame, target, *centre)
        frames.append(frame)
        truth.append(centre)
    return frames, truth


SCREEN = 0.6  # above the look-alike's cut window (0.52 of the reference), below the target's


def _run(searcher: Searcher, frames: list[np.ndarray], centre: tuple[float, float], screen: float,
         monkeypatch: pytest.MonkeyPatch) -> tuple[list, int]:
    """The tracks started from the true box, and the pixels of the windows encoded on the frames
    the whole frame was searched (those the screen can spare)."""
    return _counted_run(searcher, frames, centre, TemporalConfig(candidate_screen=screen),
                        monkeypatch, windows=True)


def test_the_same_track_with_fewer_windows_encoded(searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target covered in frames 12-21 while the look-alike stands elsewhere: frame by frame
    the same states and boxes with and without the screen, fewer window pixels with it."""
    frames, truth = _covered_video(_lookalike())
    without, pixels_without = _run(searcher, frames, truth[0], 0.0, monkeypatch)
    screened, pixels_screened = _run(searcher, frames, truth[0], SCREEN, monkeypatch)
    assert [t.to_json() for t in screened] == [t.to_json() for t in without]
    states = [t.state for t in screened]
    assert states[:12] == [TRACKING] * 12 and LOST in states[12:22] and states[-1] != LOST, states
    assert pixels_screened < pixels_without, (pixels_screened, pixels_without)


def test_a_hidden_target_back_elsewhere_is_redetected_when_the_frame_is_next_searched_whole(
        searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hidden 10 frames, back on the other side of the frame: with the screen it is re-detected
    within redetect_every frames of its return (the first whole-frame search after it), as without,
    and held after; the look-alike is never taken."""
    frames, truth = _hidden_video()
    every = TemporalConfig().redetect_every
    results = {}
    for screen in (0.0, SCREEN):
        tracks, _ = _run(searcher, frames, truth[0], screen, monkeypatch)
        states = [t.state for t in tracks]
        assert states[1:10] == [TRACKING] * 9 and states[11:20] == [LOST] * 9, (screen, states)
        back = next(i for i in range(20, 30) if states[i] == REDETECTED)
        assert back - 20 < every, (screen, states)
        for track, centre in zip(tracks[back:], truth[back:]):
            assert track.state != LOST and np.linalg.norm(_centre(track.best_box) - np.array(centre)) <= 12
        lookalike = [float(np.linalg.norm(_centre(t.best_box) - np.array((160.0, 60.0)))) for t in tracks]
        assert min(lookalike) > 30, (screen, lookalike)
        results[screen] = [t.to_json() for t in tracks]
    assert results[SCREEN] == results[0.0]


def test_candidate_screen_must_lie_in_0_1() -> None:
    with pytest.raises(ValueError, match="candidate_screen"):
        TemporalConfig(candidate_screen=1.5)
