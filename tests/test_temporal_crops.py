"""lost_crops on generated video (pipelines/temporal_lost.py): while the target is lost, the windows
the filter chooses among are cut from the whole frame's own maps; they agree with sampled windows,
the covered target is still re-acquired where it comes back, and lost frames encode fewer pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.search import Searcher
from pipelines.temporal import LOST, REDETECTED, TRACKING, TemporalConfig, TemporalSearcher
from pipelines.template_heat import TemplateHeat

from tests.test_temporal import SIDE, _centre, _covered_video, _target, one_thread, searcher  # noqa: F401


def _tracker(searcher: Searcher, centre: tuple[float, float], crops: bool) -> TemporalSearcher:
    x, y = centre
    return TemporalSearcher(searcher, searcher.prepare(_target()), TemporalConfig(lost_crops=crops),
                            initial_box=(x - SIDE / 2, y - SIDE / 2, x + SIDE / 2, y + SIDE / 2))


def test_a_window_cut_from_the_whole_frame_agrees_with_a_sampled_one(searcher: Searcher) -> None:
    """Held 10 frames, then the window at the target searched both ways: the same peak within a
    few pixels and the heat there within 10%."""
    frames, truth = _covered_video(_target())
    tracker = _tracker(searcher, truth[0], crops=True)
    for frame in frames[:10]:
        tracker.step(frame)
    frame = frames[10]
    heat, sizes, affine, features = tracker._whole_heat(frame, tracker.config.redetect_scales)
    assert tracker._can_crop(affine, sizes, [tracker.height])
    sampled = tracker._look(frame, [truth[10]])[0]
    cut = tracker._crop_look(heat, features, affine, truth[10])
    assert cut.features.shape == sampled.features.shape and cut.heat.shape == sampled.heat.shape
    point, expected = np.array(tracker._frame_point(cut)), np.array(tracker._frame_point(sampled))
    assert np.linalg.norm(point - expected) <= 4, (point, expected)
    assert np.linalg.norm(point - np.array(truth[10])) <= 6, (point, truth[10])
    assert cut.peak == pytest.approx(sampled.peak, rel=0.1)
    # Not cut where the whole frame was capped below the windows' zoom (redetect_max_side).
    assert not tracker._can_crop(affine * 0.5, sizes, [tracker.height])


def test_the_covered_target_is_reacquired_with_fewer_pixels_encoded(
        searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target covered in frames 12-21: held before, lost while covered, re-detected on its
    return and held after, with and without crops; with them a lost frame encodes one batch (the
    whole frame, or the last place's window), never windows besides the whole frame."""
    frames, truth = _covered_video(_target())
    batches: list[int] = []  # pixels of each batch encoded
    real = TemplateHeat.heat_and_features_many

    def counting(self: TemplateHeat, media: list[np.ndarray], sizes: list) -> tuple:
        batches.append(sum(m.shape[0] * m.shape[1] for m in media))
        return real(self, media, sizes)

    monkeypatch.setattr(TemplateHeat, "heat_and_features_many", counting)
    pixels, most_batches = {}, {}
    for crops in (False, True):
        tracker = _tracker(searcher, truth[0], crops)
        tracks, per_frame = [], []
        for frame in frames:
            batches.clear()
            tracks.append(tracker.step(frame))
            per_frame.append(list(batches))
        lost = per_frame[13:22]  # frame 12 searched its own window before the loss was seen
        pixels[crops] = sum(map(sum, lost))
        most_batches[crops] = max(map(len, lost))
        states = [t.state for t in tracks]
        assert states[:12] == [TRACKING] * 12, (crops, states)
        assert states[13:22] == [LOST] * 9, (crops, states)
        assert REDETECTED in states[22:24], (crops, states)
        for track, centre in zip(tracks[24:], truth[24:]):
            assert track.state != LOST and np.linalg.norm(_centre(track.best_box) - np.array(centre)) <= 8
    assert most_batches == {False: 2, True: 1}, most_batches
    assert pixels[True] < pixels[False], pixels
