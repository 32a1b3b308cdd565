"""Videos where an image or a working encoder was expected.

The highlighted video's encoder failing mid-way: its thread used to die with the error, and the
search's next write() waited forever on the full queue (8 frames). Now write() and close() raise one
InputError naming the file, nothing is left under the final name, and the command says so in a line.
A video given as the query is told so, not called a corrupt image."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from augment.imageio import InputError, save_image
from cli_checks import run_cli
from pipelines.video_writer import VideoWriter
from tests.test_hardening_search import _random
from tests.test_pixel_limits import _write_video


def _failing_encoder(monkeypatch, after: int) -> None:
    """cv2.VideoWriter whose write() raises from its ``after``-th frame on."""
    real = cv2.VideoWriter

    class Failing:
        def __init__(self, *args) -> None:
            self.writer, self.frames = real(*args), 0

        def write(self, frame):
            self.frames += 1
            if self.frames > after:
                raise cv2.error("encoder broke")
            return self.writer.write(frame)

        def __getattr__(self, name):
            return getattr(self.writer, name)

    monkeypatch.setattr(cv2, "VideoWriter", Failing)


def test_a_failing_encoder_neither_hangs_the_writer_nor_leaves_a_video(tmp_path, monkeypatch):
    _failing_encoder(monkeypatch, after=2)
    target = tmp_path / "out.mp4"
    writer = VideoWriter(target, 10.0, 32, 24, prefetch=2)
    raised: list[BaseException] = []

    def feed() -> None:
        try:
            for _ in range(40):  # far more than the queue holds
                writer.write(np.zeros((24, 32, 3), np.uint8))
        except InputError as error:
            raised.append(error)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "write() blocked after the encoder failed"
    assert raised and "out.mp4: cannot encode frame 2" in str(raised[0])
    with pytest.raises(InputError, match="out.mp4: cannot encode frame 2"):
        writer.close()
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_search_whose_highlighted_video_cannot_be_encoded_is_one_error_line(tmp_path, monkeypatch):
    video = _write_video(tmp_path / "clip.mp4", 96, 72, frames=30)
    query = tmp_path / "query.png"
    save_image(query, _random(1, 24, 24))
    _failing_encoder(monkeypatch, after=3)
    result = run_cli("search", query, video, "--out", tmp_path / "found", "--device", "cpu", "--untrained",
                     "--no-verify", "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "cannot encode frame 3" in " ".join(result.output.split()), result.output
    assert not (tmp_path / "found" / "clip.highlight.mp4").exists()


def test_a_video_given_as_the_query_is_told_so_in_one_line(tmp_path):
    """It was "not a readable image (corrupt, truncated ...)" of a good video given first by mistake."""
    video = _write_video(tmp_path / "clip.mp4", 96, 72)
    scene = tmp_path / "scene.png"
    save_image(scene, _random(2, 72, 96))
    result = run_cli("search", video, scene, "--out", tmp_path / "found", "--device", "cpu", "--untrained")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    joined = " ".join(result.output.split())
    assert "clip.mp4: is a video; the query is an image of the object" in joined, result.output
    assert "corrupt" not in joined
