"""`synth search` on videos as a user's footage comes: containers that declare odd frame rates, videos
with damaged frames that also break later (the QA round on the temporal mode)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.imageio import save_image
from cli_checks import run_cli
from pipelines.video import FrameReader
from pipelines.video_writer import VideoWriter
from tests.test_hardening_search import _random


def _write_avi(path: Path, frames: int = 6, width: int = 64, height: int = 48, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for k in range(frames):
        writer.write(_random(30 + k, height, width))
    writer.release()
    return path


def _declare_rate(path: Path, scale: int, rate: int) -> Path:
    """The AVI's stream header made to declare ``rate / scale`` frames/s (a damaged or odd container)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"strh") + 8 + 20  # the chunk's fccType, fccHandler, flags, priority, language, initial
    data[at:at + 8] = struct.pack("<II", scale, rate)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("suffix", "fps"), [(".mp4", 100000.0), (".mp4", 0.001), (".mp4", float("nan")),
                                             (".mp4", float("inf")), (".avi", 0.5)])
def test_the_highlighted_video_is_written_whatever_rate_the_medium_declares(tmp_path, suffix, fps):
    """OpenCV refused the writer at 100000 or 0.001 frames/s (MPEG-4's time base; MJPEG under 1/s), and
    an infinite rate hung it: the video was lost as 'OpenCV cannot write this video format'."""
    target = tmp_path / f"out{suffix}"
    writer = VideoWriter(target, fps, 32, 24)
    for k in range(3):
        writer.write(np.full((24, 32, 3), 40 * k, np.uint8))
    writer.close()
    capture = cv2.VideoCapture(str(target))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert math.isfinite(writer.fps) and writer.fps > 0
    capture.release()


def test_a_video_declaring_100000_frames_a_second_is_searched(tmp_path):
    video = _declare_rate(_write_avi(tmp_path / "clip.avi"), 1, 100000)
    assert FrameReader(video).info.fps == 100000.0  # what the container says, as OpenCV reads it
    query = tmp_path / "query.png"
    save_image(query, _random(1, 24, 24))
    result = run_cli("search", query, video, "--out", tmp_path / "found", "--device", "cpu", "--untrained",
                     "--no-verify", "--workers", 1)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    capture = cv2.VideoCapture(str(tmp_path / "found" / "clip.highlight.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and capture.get(cv2.CAP_PROP_FPS) == 65535
    capture.release()


def test_the_temporal_mode_names_a_videos_skipped_frames_also_when_it_breaks_later(tmp_path):
    """The temporal mode (the default) dropped the 'skipped frame:' lines of a video that then broke:
    they were added to the run's list only after a clean end (--every-instance listed them)."""
    from tests.test_qa_search_api import _damage_frames
    from tests.test_search import _query, _write_video

    video = tmp_path / "camera.avi"
    _write_video(video, frames=8)
    _damage_frames(video, (0,))
    video.write_bytes(video.read_bytes()[:int(video.stat().st_size * 0.7)])
    save_image(tmp_path / "query.png", _query())
    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "out",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", "1")
    assert result.exit_code == 1, result.output
    joined = " ".join(result.output.split())
    assert "skipped frame:" in joined and "(frame 0): could not be decoded" in joined, result.output
    assert "video breaks after" in joined
    summary = json.loads((tmp_path / "out" / "camera.summary.json").read_text())  # it said nothing of the break
    assert "video breaks after" in summary["error"] and summary["skipped"] == 1, summary


def test_a_start_box_overhanging_the_frame_holds_the_part_in_view():
    """--box 170,100,50,50 on 180x120 frames (accepted: 10x20 px of it inside) was held centred at
    x=195, outside the frame: frame 1 said 'tracking' with an empty box [180, 82, 180, 120]."""
    from pipelines.search import Searcher
    from pipelines.temporal import TemporalSearcher

    frame = _random(5, 120, 180)
    searcher = Searcher(device="cpu", untrained=True)
    tracker = TemporalSearcher(searcher, searcher.prepare(_random(6, 50, 17)), initial_box=(170, 100, 220, 150))
    track = tracker.step(frame)
    x0, y0, x1, y1 = track.best_box
    assert x1 > x0 and y1 > y0 and 165 <= (x0 + x1) / 2 <= 180, track.best_box
    assert x0 < 180 and y0 < 120, track.best_box


def test_a_sequence_folders_files_that_are_not_frames_are_counted_not_dropped(tmp_path, caplog):
    """--sequence left a video, notes or Thumbs.db among the frames out without a word (a MEDIA folder's
    are counted in a warning); an earlier search's outputs inside it are still left out silently."""
    import logging

    from pipelines.frames import FolderFrames

    frames = tmp_path / "frames"
    for k in (1, 2, 10):
        save_image(frames / f"{k}.png", _random(k, 24, 32))
    (frames / "notes.txt").write_text("shot on Tuesday\n")
    _write_avi(frames / "clip.avi", frames=2)
    with caplog.at_level(logging.INFO, logger="pipelines.search_jobs"):
        reader = FolderFrames(frames)
    assert [path.name for path in reader.files] == ["1.png", "2.png", "10.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 file(s) that are not images left out" in warnings[0], warnings
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "notes.txt" in logged and "clip.avi" in logged
