"""benchmarks/occlusion.py's events, fast: a zoom rescales the frames and the true boxes alike
(a bright square drawn at the box stays at the transformed box), alternates out and in, holds
between zooms, and is the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmark_modules import load_benchmark


def _occlusion():
    return load_benchmark("occlusion", "occlusion_events")


def _video(count: int = 160, size: tuple[int, int] = (120, 160)) -> tuple[list[np.ndarray], np.ndarray]:
    """A dark square background with a bright 40 x 30 box moving right 0.25 px a frame."""
    h, w = size
    frames, boxes = [], []
    for t in range(count):
        frame = np.full((h, w, 3), 20, np.uint8)
        x0, y0 = 50 + t // 4, 40
        frame[y0:y0 + 30, x0:x0 + 40] = 230
        frames.append(frame)
        boxes.append([x0, y0, x0 + 40, y0 + 30])
    return frames, np.array(boxes, np.float64)


def _bright_extent(frame: np.ndarray, near: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 of the bright area within 4 px of ``near`` (the dark background around it,
    not the mean-filled border), from its mass (sub-pixel: a blurred edge counts in part)."""
    level = (frame[..., 0].astype(np.float64) - 20) / 210
    ys, xs = np.mgrid[:frame.shape[0], :frame.shape[1]]
    level[(xs < near[0] - 4) | (xs > near[2] + 4) | (ys < near[1] - 4) | (ys > near[3] + 4)] = 0
    mass = level.sum()
    cx, cy = (level * (xs + 0.5)).sum() / mass, (level * (ys + 0.5)).sum() / mass
    # Width and height from the mass and the (known) aspect: area = mass.
    aspect = 40 / 30
    bh = np.sqrt(mass / aspect)
    return np.array([cx - aspect * bh / 2, cy - bh / 2, cx + aspect * bh / 2, cy + bh / 2])


def test_zoom_moves_frames_and_boxes_alike() -> None:
    events_module = _occlusion()
    frames, boxes = _video()
    events = events_module.plan_events(len(frames), frames[0].shape[:2], "zoom", first=10, length=50, seed=3)
    # Zooms alternate out and in, ZOOM_GAP frames held between them; only whole zooms.
    assert [(e.start, e.zoom) for e in events] == [(10, (1.0, 0.4)), (80, (0.4, 1.0))]
    zoomed, moved = events_module.apply_events(frames, boxes, events, seed=3)
    scales = [events_module.zoom_scale(events, i) for i in range(len(frames))]
    assert scales[10] == 1.0 and scales[60] == pytest.approx(0.4) and scales[79] == pytest.approx(0.4)
    assert scales[130] == pytest.approx(1.0) and scales[35] == pytest.approx(0.4 ** 0.5)
    for index in (0, 9, 20, 35, 60, 70, 100, 130, 159):
        assert np.allclose(_bright_extent(zoomed[index], moved[index]), moved[index], atol=0.6), (index, moved[index])
        true_h = (moved[index][3] - moved[index][1]) / (boxes[index][3] - boxes[index][1])
        assert true_h == pytest.approx(scales[index])
    assert np.array_equal(zoomed[5], frames[5]) and np.array_equal(moved[5], boxes[5])
    # The area left by the shrunken frame is the frame's mean, not a reflected copy of the box.
    mean = frames[60].reshape(-1, 3).mean(axis=0)
    assert np.allclose(zoomed[60][0, 0], mean, atol=1)


def test_zoom_is_the_same_for_a_seed_and_its_pivot_moves_with_it() -> None:
    events_module = _occlusion()
    frames, boxes = _video(80)
    plan = [events_module.plan_events(80, (120, 160), "zoom", first=5, length=40, seed=s) for s in (0, 0, 1)]
    assert plan[0] == plan[1] and plan[0][0].pivot != plan[2][0].pivot
    one = events_module.apply_events(frames, boxes, plan[0], seed=0)
    two = events_module.apply_events(frames, boxes, plan[1], seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(one[0], two[0])) and np.array_equal(one[1], two[1])
    px, py = plan[2][0].pivot
    assert 40 <= px <= 120 and 30 <= py <= 90  # in the frame's central half


def test_a_bad_zoom_is_refused() -> None:
    with pytest.raises(ValueError, match="zoom_to"):
        _occlusion().plan_events(100, (120, 160), "zoom", zoom_to=0.0)


def test_zoom_occlude_covers_the_target_a_third_into_each_zoom() -> None:
    events_module = _occlusion()
    frames, boxes = _video()
    events = events_module.plan_events(len(frames), frames[0].shape[:2], "zoom-occlude", first=10, length=60,
                                       seed=0, cover=12)
    assert [(e.start, e.cover, e.returns) for e in events] == [(10, (20, 12), 42), (90, (20, 12), 122)]
    zoomed, moved = events_module.apply_events(frames, boxes, events, seed=0)
    zoom_only = events_module.apply_events(frames, boxes, [e.__class__("zoom", e.start, e.length, zoom=e.zoom,
                                                                       pivot=e.pivot) for e in events])
    assert np.array_equal(moved, zoom_only[1])  # the same boxes as the zoom alone
    for index in range(len(frames)):
        x0, y0, x1, y1 = (int(round(v)) for v in moved[index])
        inside = zoomed[index][y0 + 1:y1 - 1, x0 + 1:x1 - 1, 0]
        if index in range(30, 42) or index in range(110, 122):  # covered by the dark background
            assert inside.mean() < 60, index
        else:
            assert np.array_equal(zoomed[index], zoom_only[0][index]), index


def test_rotate_turns_frames_about_the_pivot_and_boxes_enclose_the_turned_target() -> None:
    events_module = _occlusion()
    frames, boxes = _video()
    events = events_module.plan_events(len(frames), frames[0].shape[:2], "rotate", first=10, length=40,
                                       seed=2, rotate_to=30.0)
    # Turns alternate to the angle and back, held ZOOM_GAP frames between them, as zooms.
    assert [(e.start, e.angle, e.returns) for e in events] == [(10, (0.0, 30.0), 50), (70, (30.0, 0.0), 110)]
    turned, moved = events_module.apply_events(frames, boxes, events, seed=2)
    angles = [events_module.rotation_angle(events, i) for i in range(len(frames))]
    assert angles[10] == 0.0 and angles[30] == pytest.approx(15.0) and angles[60] == pytest.approx(30.0)
    assert angles[90] == pytest.approx(15.0) and angles[159] == 0.0
    for index in (0, 20, 30, 60, 90, 120):
        level = (turned[index][..., 0].astype(np.float64) - 20) / 210
        x0, y0, x1, y1 = moved[index]
        ys, xs = np.mgrid[:level.shape[0], :level.shape[1]]
        near = (xs >= x0 - 2) & (xs <= x1 + 2) & (ys >= y0 - 2) & (ys <= y1 + 2)
        # The bright target's centre of mass is the box's centre, and all of it lies in the box.
        weight = np.where(near, level, 0)
        centre = ((weight * (xs + 0.5)).sum() / weight.sum(), (weight * (ys + 0.5)).sum() / weight.sum())
        assert np.allclose(centre, ((x0 + x1) / 2, (y0 + y1) / 2), atol=0.5), index
        assert level[~near].max() < 0.1, index
        # The enclosing box of a 40 x 30 box turned by a: 40 cos a + 30 sin a wide.
        radians = np.radians(angles[index])
        assert x1 - x0 == pytest.approx(40 * np.cos(radians) + 30 * np.sin(radians))
    assert np.array_equal(turned[5], frames[5]) and np.array_equal(moved[5], boxes[5])
    with pytest.raises(ValueError, match="rotat"):
        events_module.plan_events(100, (120, 160), "rotate", rotate_to=200.0)


def test_resample_keeps_every_kth_frame_and_scales_boxes_with_the_frames():
    tracking = load_benchmark("tracking", "tracking_resample")
    frames, boxes = _video(count=10)
    kept, kept_boxes = tracking.resample(frames, boxes, step=3, shrink=0.5)
    assert len(kept) == len(kept_boxes) == 4  # frames 0, 3, 6, 9
    assert kept[0].shape == (60, 80, 3)
    for frame, box in zip(kept, kept_boxes):
        # The bright square, shrunk, lies where its box says (area-averaged edges in part).
        extent = _bright_extent(frame, box)
        assert np.allclose(extent, box, atol=1.0)
    assert np.allclose(kept_boxes[1], boxes[3] * 0.5)
    unchanged, same_boxes = tracking.resample(frames, boxes)
    assert unchanged == frames and np.array_equal(same_boxes, boxes)
    with pytest.raises(ValueError):
        tracking.resample(frames, boxes, step=0)
    with pytest.raises(ValueError):
        tracking.resample(frames, boxes, shrink=1.5)


def test_relight_casts_a_lasting_colour_from_each_event_and_moves_no_box() -> None:
    events_module = _occlusion()
    frames, boxes = _video(count=100)
    events = events_module.plan_events(len(frames), frames[0].shape[:2], "relight", every=30, first=20, seed=4)
    assert [(e.start, e.returns) for e in events] == [(20, 20), (50, 50), (80, 80)]
    assert events == events_module.plan_events(len(frames), frames[0].shape[:2], "relight", every=30, first=20,
                                               seed=4)  # the same draws for a seed
    lit, moved = events_module.apply_events(frames, boxes, events, seed=4)
    assert np.array_equal(moved, boxes)
    assert all(np.array_equal(lit[i], frames[i]) for i in range(20))
    for start, end, event in zip((20, 50, 80), (50, 80, 100), events):
        *gains, gamma = event.light
        assert all(0.45 <= g <= 1.3 for g in gains) and 0.7 <= gamma <= 1.4
        for index in (start, end - 1):  # the cast holds until the next event replaces it
            x0, y0 = (int(v) for v in boxes[index][:2])
            expected = np.clip((230 / 255) ** gamma * np.array(gains) * 255 + 0.5, 0, 255).astype(np.uint8)
            assert np.array_equal(lit[index][y0 + 5, x0 + 5], expected), index


def test_blur_smears_the_frames_of_each_event_only() -> None:
    events_module = _occlusion()
    frames, boxes = _video(count=100)
    events = events_module.plan_events(len(frames), frames[0].shape[:2], "blur", every=40, first=10, length=15,
                                       seed=2)
    assert [(e.start, e.returns) for e in events] == [(10, 25), (50, 65)]
    blurred, moved = events_module.apply_events(frames, boxes, events, seed=2)
    assert np.array_equal(moved, boxes)
    for index in range(len(frames)):
        changed = not np.array_equal(blurred[index], frames[index])
        assert changed == (10 <= index < 25 or 50 <= index < 65), index
    # A blur spreads the bright box's edge but keeps its light: the mean is unchanged, the edge softened.
    assert abs(float(blurred[12].mean()) - float(frames[12].mean())) < 1.0
    length = events[0].blur[0]
    assert 9 <= length <= 25
    row = blurred[12][55].astype(int)
    assert len(np.unique(row)) > 2  # intermediate values where the sharp frame has two
