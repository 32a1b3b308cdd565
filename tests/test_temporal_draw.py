"""The temporal mode's highlighted frames (pipelines/temporal_draw.py): the searched heat must be
visible at real scores (~0.1-0.4), where the target is, and nowhere else."""

from __future__ import annotations

import numpy as np

from pipelines.temporal_draw import MIN_HEAT_SPAN, STATE_RGB, draw_track
from pipelines.temporal_track import LOST, TRACKING, Track


def test_the_searched_heat_shows_at_its_peak_and_not_over_the_rest_of_the_window() -> None:
    frame = np.full((120, 160, 3), 90, np.uint8)
    # A 40 x 40 window whose heat peaks at 0.25 (a typical score) in its middle over a 0.1 floor.
    yy, xx = np.mgrid[0:40, 0:40]
    heat = (0.1 + 0.15 * np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 20.0)).astype(np.float32)
    affine = np.array([[1.0, 0.0, -50.0], [0.0, 1.0, -30.0]])  # frame -> window: the window at (50, 30)
    track = Track(7, TRACKING, (60, 40, 80, 60), 0.25, heat, affine)
    drawn = draw_track(frame, track).astype(int)
    change = np.abs(drawn - frame.astype(int)).sum(axis=2)
    assert change[50, 70] > 100  # the peak (window 20, 20) is coloured, clearly
    assert change[32, 52] < 10 and change[67, 87] < 10  # the window's flat corners barely
    assert change[100, 10] == 0  # outside the window: the frame itself
    red, green, _ = drawn[40, 62]  # the box's top edge, in the state's colour (anti-aliased)
    assert STATE_RGB[TRACKING][1] > 200 and green > red + 80


def _whole_frame_blend(frame: np.ndarray, track: Track, heat_alpha: float = 0.6) -> np.ndarray:
    """The overlay as it was drawn before stop 39: coloured and blended over the whole frame."""
    import cv2

    from pipelines.temporal_draw import frame_heat

    heat = frame_heat(track, frame.shape[1], frame.shape[0])
    searched = heat[heat > 0]
    if searched.size:
        floor, peak = float(np.median(searched)), float(searched.max())
        heat = np.clip((heat - floor) / max(peak - floor, MIN_HEAT_SPAN), 0.0, 1.0)
    colour = cv2.applyColorMap(np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    weight = (heat_alpha * heat)[..., None]
    return (frame * (1 - weight) + colour * weight).astype(np.uint8)


def test_the_overlay_drawn_in_the_windows_rectangle_only_is_the_whole_frame_blend_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    for angle, scale, shift in ((0.0, 1.0, (-50.0, -30.0)), (17.0, 0.6, (-120.0, 10.0)), (-40.0, 1.7, (30.0, -200.0))):
        heat = rng.random((48, 48)).astype(np.float32) * 0.4
        turn = np.deg2rad(angle)
        linear = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        affine = np.hstack([linear, np.array(shift)[:, None]])  # frame -> window (partly off the frame)
        track = Track(3, TRACKING, None, 0.3, heat, affine)
        drawn = draw_track(frame, track)
        expected = _whole_frame_blend(frame, track)
        # The box and the state's text are drawn on top of either: compare below the text line.
        assert np.array_equal(drawn[24:], expected[24:])
    # No searched window: the frame itself (below the state's text).
    assert np.array_equal(draw_track(frame, Track(4, TRACKING, None, 0.0, None, None))[24:], frame[24:])


def test_a_grey_frames_heat_ripple_is_drawn_faint_not_as_vividly_as_a_target() -> None:
    """A fade to grey mid-video (VOT_bag, frames made grey): the searched window's heat spans 0.024 to
    0.042 there (its padding's ripple, nothing to find) and, stretched median-to-peak, its corner was
    drawn red-hot, as a held target's peak is."""
    frame = np.full((120, 160, 3), 20, np.uint8)
    yy, xx = np.mgrid[0:40, 0:40]
    affine = np.array([[1.0, 0.0, -50.0], [0.0, 1.0, -30.0]])
    ripple = (0.024 + 0.018 * (yy + xx) / 78.0).astype(np.float32)
    target = (0.1 + 0.15 * np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 20.0)).astype(np.float32)

    def change(heat: np.ndarray) -> np.ndarray:
        drawn = draw_track(frame, Track(5, LOST, None, 0.02, heat, affine)).astype(int)
        return np.abs(drawn - frame.astype(int)).sum(axis=2)[30:70, 50:90]

    assert change(ripple).max() < 0.5 * change(target).max()
    assert change(ripple).max() > 0  # faint, still where it was searched
