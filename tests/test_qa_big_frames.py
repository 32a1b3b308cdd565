"""Large frames (phone 4K video, 12-48 MP photos): the work per frame is bounded by what was
searched, not by the frame's size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.temporal_draw import draw_track, frame_heat
from pipelines.temporal_track import TRACKING, Track


def _track(angle: float, scale: float, shift: tuple[float, float], side: int = 48, seed: int = 0) -> Track:
    heat = np.random.default_rng(seed).random((side, side)).astype(np.float32) * 0.4
    turn = np.deg2rad(angle)
    linear = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    affine = np.hstack([linear, np.array(shift)[:, None]])  # frame -> window
    return Track(3, TRACKING, None, 0.3, heat, affine)


def test_a_4k_frames_highlight_warps_the_searched_window_not_the_whole_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    # The temporal mode's window (a few hundred pixels) drawn on a 3840 x 2160 frame: the heat was
    # warped into a full-frame float map (33 MB) and scanned, 39 ms where 15 do.
    frame = np.zeros((2160, 3840, 3), np.uint8)
    track = _track(10.0, 0.25, (-600.0, -300.0), side=96)  # the window ~440 px wide, at x 2572-3013, y 698-1138
    real = cv2.warpAffine
    sizes: list[tuple[int, int]] = []

    def recording(src, matrix, dsize, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(tuple(dsize))
        return real(src, matrix, dsize, *args, **kwargs)

    monkeypatch.setattr(cv2, "warpAffine", recording)
    drawn = draw_track(frame, track)
    assert sizes and all(w * h <= 600 * 600 for w, h in sizes), sizes
    monkeypatch.setattr(cv2, "warpAffine", real)
    # The overlay where the window is, and nothing far from it.
    assert drawn[700:1138, 2572:3013].any()
    assert not drawn[300:, :2500].any() and not drawn[1200:].any() and not drawn[300:, 3100:].any()


@pytest.mark.parametrize("angle, scale, shift", [(0.0, 1.0, (-50.0, -30.0)), (17.0, 0.6, (-120.0, 10.3)),
                                                 (-40.0, 1.7, (30.0, -200.0)), (73.0, 0.37, (-4.5, -61.25)),
                                                 (5.0, 2.9, (150.0, 80.0))])
def test_the_heat_warped_over_its_rectangle_is_the_whole_frame_warp_to_the_bit(angle: float, scale: float,
                                                                              shift: tuple[float, float]) -> None:
    # Windows inside the frame, across its edges and off it: the heat in frame pixels as the full-frame
    # warp gives it (OpenCV's own, not this module's), every pixel.
    track = _track(angle, scale, shift, seed=int(angle) % 7)
    expected = cv2.warpAffine(track.heat, track.heat_affine, (320, 180), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    assert np.array_equal(frame_heat(track, 320, 180), expected)
