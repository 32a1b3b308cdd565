"""The temporal mode's highlighted frames (pipelines/temporal_draw.py): the searched heat must be
visible at real scores (~0.1-0.4), where the target is, and nowhere else."""

from __future__ import annotations

import numpy as np

from pipelines.temporal_draw import STATE_RGB, draw_track
from pipelines.temporal_track import TRACKING, Track


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
