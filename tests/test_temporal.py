"""Temporal mode (pipelines/temporal.py) on generated video: the target held past a look-alike,
lost while hidden and re-detected, found again after a cut; the CLI's video and --sequence paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from augment.imageio import save_image
from pipelines.search import Searcher, box_iou
from pipelines.temporal import LOST, REDETECTED, TRACKING, TemporalConfig, TemporalSearcher, Track
from pipelines.template_heat import TemplateHeat
from pipelines.temporal_track import RecentLevels
from tests.cli_checks import run_cli

SIZE = (240, 320)  # frame height, width
SIDE = 48  # the target's side in pixels


def _target() -> np.ndarray:
    """A distinctive textured patch: the astronaut's helmet and face."""
    return cv2.resize(data.astronaut()[30:190, 150:310], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def _scene(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_AREA)


def _paste(frame: np.ndarray, patch: np.ndarray, cx: float, cy: float) -> None:
    """Paste centred on (cx, cy), clipped to the frame."""
    x0, y0 = round(cx - patch.shape[1] / 2), round(cy - patch.shape[0] / 2)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + patch.shape[1]), min(frame.shape[0], y0 + patch.shape[0])
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = patch[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]


def _centre(box: tuple[int, int, int, int] | None) -> np.ndarray:
    assert box is not None
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _covered_video(other: np.ndarray, other_from: int = 0, other_at: tuple[float, float] = (240.0, 170.0)
                   ) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """32 frames of a scene: the target moving right, covered by the scene's own pixels from
    elsewhere in frames 12-21; ``other`` stands at ``other_at`` from frame ``other_from`` on."""
    background, target = _scene(data.coffee()), _target()
    frames, truth = [], []
    for t in range(32):
        frame = background.copy()
        centre = (70 + 2 * t, 90.0)
        if t >= other_from:
            _paste(frame, other, *other_at)
        _paste(frame, target, *centre)
        if 12 <= t < 22:
            x0, y0 = round(centre[0] - SIDE / 2) - 4, round(centre[1] - SIDE / 2) - 4
            frame[y0:y0 + SIDE + 8, x0:x0 + SIDE + 8] = background[150:150 + SIDE + 8, 20:20 + SIDE + 8]
        frames.append(frame)
        truth.append(centre)
    return frames, truth


def _track(searcher: Searcher, frames: list[np.ndarray]) -> list[Track]:
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()))
    return [tracker.step(frame) for frame in frames]


def _counted_run(searcher: Searcher, frames: list[np.ndarray], centre: tuple[float, float], config: TemporalConfig,
                 monkeypatch: pytest.MonkeyPatch, windows: bool) -> tuple[list[Track], int]:
    """The tracks started from the true box with ``config``, and the pixels of the media encoded
    that were windows (``windows``) or that were not (the whole frame's)."""
    real = TemplateHeat.heat_and_features_many
    pixels = [0]
    side: list[int] = []

    def counting(self: TemplateHeat, media: list[np.ndarray], sizes: list) -> tuple:
        if side and (media[0].shape[:2] == (side[0], side[0])) == windows:
            pixels[0] += sum(m.shape[0] * m.shape[1] for m in media)
        return real(self, media, sizes)

    monkeypatch.setattr(TemplateHeat, "heat_and_features_many", counting)
    x, y = centre
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), config,
                               initial_box=(x - SIDE / 2, y - SIDE / 2, x + SIDE / 2, y + SIDE / 2))
    side.append(tracker.window_side)
    tracks = [tracker.step(frame) for frame in frames]
    monkeypatch.setattr(TemplateHeat, "heat_and_features_many", real)
    return tracks, pixels[0]


def _lookalike_video() -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """The target crosses left to right; an identical copy enters from the top (after the target
    was found) and crosses its path behind it, partly covered by it, at t = 12."""
    background, target = _scene(data.coffee()), _target()
    frames, truth = [], []
    for t in range(24):
        frame = background.copy()
        tx, ty = 50 + 9 * t, 110.0
        lx, ly = 180.0, -40.0 + 12.5 * t  # at t = 12 (target at x 158, y 110): 22 px to its right
        _paste(frame, target, lx, ly)
        _paste(frame, target, tx, ty)  # the target in front
        frames.append(frame)
        truth.append((tx, ty))
    return frames, truth


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: frames of a few hundred pixels gain nothing from two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return Searcher(device="cpu")


def test_holds_the_target_while_a_lookalike_crosses_its_path(searcher: Searcher) -> None:
    frames, truth = _lookalike_video()
    tracks = _track(searcher, frames)
    errors = [float(np.linalg.norm(_centre(t.best_box) - np.array(c))) for t, c in zip(tracks, truth)]
    assert max(errors) <= 12, errors
    assert tracks[0].state == REDETECTED and {t.state for t in tracks[1:]} == {TRACKING}


def test_results_identical_run_to_run(searcher: Searcher) -> None:
    frames, _ = _lookalike_video()
    first = [t.to_json() for t in _track(searcher, frames[:8])]
    again = [t.to_json() for t in _track(searcher, frames[:8])]
    assert first == again


def test_hidden_for_ten_frames_then_back_elsewhere_is_lost_then_redetected(searcher: Searcher) -> None:
    background, target = _scene(data.coffee()), _target()
    frames, truth = [], []
    for t in range(30):
        frame = background.copy()
        if t < 10:
            centre = (60 + 6 * t, 80.0)
        elif t < 20:
            centre = None  # hidden
        else:
            centre = (250.0, 180 - 3 * (t - 20))  # back on the other side of the frame
        if centre is not None:
            _paste(frame, target, *centre)
        frames.append(frame)
        truth.append(centre)
    tracks = _track(searcher, frames)
    states = [t.state for t in tracks]
    assert states[1:10] == [TRACKING] * 9, states
    assert states[10:20] == [LOST] * 10, states
    back = next(i for i in range(20, 30) if states[i] == REDETECTED)
    assert back - 20 < 5, states
    for track, centre in zip(tracks[back:], truth[back:]):
        assert track.state != LOST
        assert np.linalg.norm(_centre(track.best_box) - np.array(centre)) <= 12


def test_covered_by_the_scene_while_a_lookalike_waits_is_not_swapped(searcher: Searcher) -> None:
    """The target is covered by a patch of the scene for 10 frames while a look-alike (mirrored,
    hue-shifted) stands elsewhere: lost while covered, the look-alike never taken for it, the
    target re-acquired within 5 frames of coming back where it was hidden."""
    hsv = cv2.cvtColor(_target()[:, ::-1], cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 12) % 180
    frames, truth = _covered_video(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    x, y = truth[0]
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()),
                               initial_box=(x - SIDE / 2, y - SIDE / 2, x + SIDE / 2, y + SIDE / 2))
    tracks = [tracker.step(frame) for frame in frames]
    states = [t.state for t in tracks]
    assert states[:12] == [TRACKING] * 12, states
    assert states.count(LOST) >= 5 and all(s == LOST for s in states[14:22]), states
    far = [float(np.linalg.norm(_centre(t.best_box) - np.array((240.0, 170.0)))) for t in tracks]
    assert min(far) > 60, far  # never on the look-alike
    back = next(i for i in range(22, 32) if states[i] != LOST)
    assert back - 22 < 5, states
    for track, centre in zip(tracks[back:], truth[back:]):
        assert track.state != LOST and np.linalg.norm(_centre(track.best_box) - np.array(centre)) <= 8


def test_cut_to_a_new_scene_holding_the_target(searcher: Searcher) -> None:
    scenes = [_scene(data.coffee()), _scene(data.chelsea())]
    target = _target()
    frames, truth = [], []
    for t in range(24):
        frame = scenes[t >= 12].copy()
        centre = (70 + 4 * t, 70.0) if t < 12 else (230.0, 170 - 2 * (t - 12))
        _paste(frame, target, *centre)
        frames.append(frame)
        truth.append(centre)
    tracks = _track(searcher, frames)
    found = [np.linalg.norm(_centre(t.best_box) - np.array(c)) <= 12 and t.state != LOST
             for t, c in zip(tracks, truth)]
    assert all(found[:12]), found
    assert found.index(True, 12) < 12 + 5 and all(found[17:]), [t.state for t in tracks]


def test_box_follows_the_target_growing_and_shrinking(searcher: Searcher) -> None:
    """The size comes from the scale filter: the target grows from 40 to 64 px while it moves, then
    shrinks back to 48; started from its first box, the box's height follows within 15%."""
    background = _scene(data.coffee())
    sides = [40 + t for t in range(25)] + [64 - 2 * t for t in range(1, 9)]
    frames, truth = [], []
    for t, side in enumerate(sides):
        frame = background.copy()
        centre = (90 + 3 * t, 110.0 + t)
        _paste(frame, cv2.resize(_target(), (side, side), interpolation=cv2.INTER_AREA), *centre)
        frames.append(frame)
        truth.append((centre, side))
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), initial_box=(70, 90, 110, 130))
    tracks = [tracker.step(frame) for frame in frames]
    for track, (centre, side) in list(zip(tracks, truth))[5:]:
        x0, y0, x1, y1 = track.best_box
        assert abs((y1 - y0) / side - 1) <= 0.15, [(t.best_box, s) for t, (_, s) in zip(tracks, truth)]
        assert np.linalg.norm(_centre(track.best_box) - np.array(centre)) <= 6


# -- the CLI ---------------------------------------------------------------------------------


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]


def test_cli_video_is_temporal_by_default_and_every_instance_on_request(tmp_path: Path) -> None:
    frames, truth = _lookalike_video()
    video = tmp_path / "clip.avi"
    _write_video(video, frames[:6])
    save_image(tmp_path / "query.png", _target())
    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = _lines(tmp_path / "out")
    assert [line["frame"] for line in lines] == list(range(6))
    assert [line["state"] for line in lines] == [REDETECTED] + [TRACKING] * 5
    # One scale on every line: the acquisition's heat, not the still search's fused score (~1.0).
    assert all(line["score_kind"] == "heat" for line in lines)
    assert abs(lines[0]["best"]["score"] - lines[1]["best"]["score"]) < 0.25, [line["best"]["score"] for line in lines]
    for line, centre in zip(lines, truth):
        assert np.linalg.norm(_centre(line["best"]["box"]) - np.array(centre)) <= 12
        assert line["detections"] == [line["best"]]
    summary = json.loads((tmp_path / "out" / "clip.summary.json").read_text())
    assert (summary["frames"], summary["tracked"], summary["re_detected"], summary["lost"]) == (6, 5, 1, 0)
    assert (tmp_path / "out" / "clip.highlight.mp4").stat().st_size > 0
    assert "target tracked in 5, re-detected in 1, lost in 0 of 6 frames" in result.output

    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "every",
                     "--every-instance")
    assert result.exit_code == 0, result.output
    lines = _lines(tmp_path / "every")
    assert len(lines) == 6 and all("state" not in line for line in lines)
    assert all(line["detections"] for line in lines)  # every instance, no held target


def test_cli_sequence_skips_and_counts_unreadable_and_missized_frames(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # the progress bar (its total checked below) is drawn on a terminal only
    frames, _ = _lookalike_video()
    folder = tmp_path / "frames"
    for i, frame in enumerate(frames[:6]):
        save_image(folder / f"{i:04d}.jpg", frame)
    (folder / "0002.jpg").write_bytes(b"not a jpeg")
    save_image(folder / "0004.jpg", frames[4][:100, :100])
    save_image(tmp_path / "query.png", _target())
    # What is searched in a frame is not the point here (the test above searches every instance by default):
    # the every-instance pass searches one size, unmirrored, unverified (2.9 -> 0.6 s of CPU).
    for mode in ([], ["--every-instance", "--scales", "1", "--no-mirror", "--no-verify"]):
        out = tmp_path / f"out{min(len(mode), 1)}"
        result = run_cli("search", tmp_path / "query.png", folder, "--sequence", "--out", out, *mode)
        assert result.exit_code == 0, result.output
        assert [line["frame"] for line in _lines(out)] == [0, 1, 3, 5]
        assert result.output.count("skipped frame:") == 2, result.output  # one line each
        assert "0002.jpg" in result.output and "0004.jpg" in result.output
        assert "6/6" in result.output, result.output  # the progress total counts the skipped files, and is reached
    summary = json.loads((tmp_path / "out0" / "frames.summary.json").read_text())
    assert summary["skipped"] == 2 and summary["frames"] == 4 and summary["lost"] == 0


def test_cli_bad_video_and_oversized_query_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 2048)
    save_image(tmp_path / "query.png", _target())
    result = run_cli("search", tmp_path / "query.png", tmp_path / "broken.mp4", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0], result.output
    assert _lines(tmp_path / "out")[0]["error"] == errors[0].removeprefix("error: ")

    # A query larger than the frames: searched shrunk to fit, no traceback.
    big = cv2.resize(_target(), (400, 400), interpolation=cv2.INTER_LINEAR)
    save_image(tmp_path / "big.png", big)
    frames, _ = _lookalike_video()
    _write_video(tmp_path / "clip.avi", frames[:3])
    result = run_cli("search", tmp_path / "big.png", tmp_path / "clip.avi", "--out", tmp_path / "big")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert len(_lines(tmp_path / "big")) == 3


def test_cli_box_starts_the_track_from_the_given_box(tmp_path: Path) -> None:
    """--box X,Y,W,H: the first frame is not searched; the track starts from the box (its size
    too: here the target is drawn 0.75x the query, which a whole-frame start would not know)."""
    background, frames, truth = _scene(data.coffee()), [], []
    small = cv2.resize(_target(), (36, 36), interpolation=cv2.INTER_AREA)
    for t in range(8):
        frame = background.copy()
        _paste(frame, small, 60 + 8 * t, 100.0)
        frames.append(frame)
        truth.append((60 + 8 * t - 18, 100 - 18, 60 + 8 * t + 18, 100 + 18))
    _write_video(tmp_path / "clip.avi", frames)
    save_image(tmp_path / "query.png", _target())
    result = run_cli("search", tmp_path / "query.png", tmp_path / "clip.avi", "--out", tmp_path / "out",
                     "--box", "42,82,36,36")
    assert result.exit_code == 0, result.output
    lines = _lines(tmp_path / "out")
    assert [line["state"] for line in lines] == [TRACKING] * 8
    ious = [box_iou(line["best"]["box"], box) for line, box in zip(lines, truth)]
    assert min(ious) >= 0.6, ious


@pytest.mark.parametrize("box, message", [("1,2,3", "--box must be X,Y,W,H"), ("1,2,0,5", "--box must be X,Y,W,H"),
                                          ("a,b,c,d", "--box must be X,Y,W,H"), ("900,900,20,20", "lies outside")])
def test_cli_bad_box_is_one_line(tmp_path: Path, box: str, message: str) -> None:
    frames, _ = _lookalike_video()
    _write_video(tmp_path / "clip.avi", frames[:2])
    save_image(tmp_path / "query.png", _target())
    result = run_cli("search", tmp_path / "query.png", tmp_path / "clip.avi", "--out", tmp_path / "out",
                     "--box", box)
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_recent_levels_median_follows_the_last_values() -> None:
    """The levels' cached median (read several times a frame) is the median of the last ``size``
    values after every append, None before the first."""
    levels = RecentLevels(4)
    assert levels.median is None and len(levels) == 0
    values = [0.9, 0.2, 0.5, 0.7, 0.1, 0.8, 0.3]
    for i, value in enumerate(values):
        levels.append(value)
        assert levels.median == float(np.median(values[max(0, i - 3):i + 1])), i
    assert list(levels) == values[-4:]
