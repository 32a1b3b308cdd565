"""The pixel limit (SYNTH_MAX_MEGAPIXELS) beyond image files: arrays and PIL images given to the Python
API, video frames (from the header, and the first frame where the header says nothing), animated
GIFs and frame folders. Before, a huge array or video was searched until the memory ran out. Small
generated media under a tiny limit; the untrained network on the CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from augment.imageio import save_image
from augment.pixel_limit import PixelLimitError
from cli_checks import run_cli
from tests.test_hardening_search import _random

TINY = "0.01"  # megapixels: a 160x120 frame (0.019) is over it, a 96x72 one (0.0069) under
OVER = "160x120 px (0.019 megapixels) is over the limit of 0.01 megapixels"
OVER_RE = re.escape(OVER)  # for pytest.raises(match=)


@pytest.fixture(scope="module")
def searcher():
    from pipelines.search import Searcher

    return Searcher(device="cpu", untrained=True, verify=False)


# ----------------------------------------------------------------- arrays given to the Python API
def test_searcher_refuses_arrays_over_the_limit_naming_the_argument_and_its_size(searcher, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    small, large = _random(1, 24, 24), _random(2, 120, 160)
    with pytest.raises(ValueError, match=f"^medium: {OVER_RE} on an image") as refused:
        searcher.find(small, large)
    assert isinstance(refused.value, PixelLimitError) and "SYNTH_MAX_MEGAPIXELS=1 " in str(refused.value)
    with pytest.raises(ValueError, match=f"^query: {OVER_RE}"):
        searcher.find(large, small)
    with pytest.raises(ValueError, match=f"^query_mask: {OVER_RE}"):  # checked before its size is compared
        searcher.find(small, small, query_mask=np.ones((120, 160), np.uint8))
    with pytest.raises(ValueError, match=f"^media\\[1\\]: {OVER_RE}"):
        searcher.find_many(small, [_random(3, 72, 96), large])
    with pytest.raises(ValueError, match=f"^media\\[0\\]: {OVER_RE}"):
        searcher.heatmaps(small, [large])
    with pytest.raises(ValueError, match=f"^query: {OVER_RE}"):  # a PIL image, by its size
        searcher.prepare(Image.fromarray(large))
    assert searcher.find(small, _random(3, 72, 96)).heatmap.shape == (72, 96)  # under it: searched


def test_a_huge_array_is_refused_by_the_default_limit_before_any_copy_of_it():
    """A 30000x30000 view of one pixel (no memory of its own): refused from its shape, never copied."""
    from pipelines.search import load_query, load_rgb

    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (30000, 30000, 3))
    with pytest.raises(ValueError, match=r"^medium: 30000x30000 px \(900.0 megapixels\) is over the limit of 120"):
        load_rgb(huge, "medium")
    with pytest.raises(ValueError, match="^query: 30000x30000 px"):
        load_query(huge)


def test_the_segmenter_and_the_temporal_search_refuse_frames_over_the_limit(searcher, tmp_path, monkeypatch):
    from pipelines.segmenter import Segmenter
    from pipelines.temporal import TemporalSearcher
    from segment_factory import save_untrained_segmenter

    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    segmenter = Segmenter(save_untrained_segmenter(tmp_path / "segmenter.pt"), device="cpu")
    for label in (segmenter.predict, segmenter.views):
        with pytest.raises(ValueError, match=f"^image: {OVER_RE}"):
            label(_random(2, 120, 160))
    tracker = TemporalSearcher(searcher, searcher.prepare(_random(1, 24, 24)))
    with pytest.raises(ValueError, match=f"^frame: {OVER_RE}"):
        tracker.step(_random(2, 120, 160))


def test_the_segmentation_paths_refusal_quotes_a_segmentations_memory_not_a_searchs(searcher, tmp_path, monkeypatch):
    """`synth segment`, `synth extract` and the Segmenter told an image over the limit what a search
    would take of it (~27 bytes a pixel); a segmentation takes ~62 (class probabilities at the photo's size)."""
    from augment.pixel_limit import SEARCH_BYTES_PER_PIXEL, SEGMENT_BYTES_PER_PIXEL
    from pipelines.segmenter import Segmenter
    from segment_factory import save_untrained_segmenter

    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    checkpoint = save_untrained_segmenter(tmp_path / "segmenter.pt")
    photo = tmp_path / "photos" / "large.png"
    photo.parent.mkdir()
    save_image(photo, _random(2, 120, 160))
    segmentation = f"(a segmentation takes ~{SEGMENT_BYTES_PER_PIXEL} bytes of memory per pixel, 0.0012 GB for this one)"
    segmenter = Segmenter(checkpoint, device="cpu")
    for label in (segmenter.predict, segmenter.views):
        with pytest.raises(ValueError, match=re.escape(segmentation)):
            label(photo)
    segmented = run_cli("segment", photo, "--checkpoint", checkpoint, "--out", tmp_path / "segmented")
    assert segmented.exit_code == 1 and segmentation in segmented.output
    extracted = run_cli("extract", photo.parent, "--checkpoint", checkpoint, "--out", tmp_path / "auto")
    assert segmentation in extracted.output
    with pytest.raises(ValueError, match=re.escape(f"(a search takes ~{SEARCH_BYTES_PER_PIXEL} bytes")):
        searcher.find(photo, _random(3, 24, 24))  # the search's own figure, also after a segmentation


def test_expand_and_photo_shards_quote_their_own_memory_not_a_searchs(tmp_path, monkeypatch):
    """`synth expand` and `synth photo-shards` told a photo or background over the limit what a search
    would take of it (~27 bytes a pixel); they take ~7 (measured 5-7: the photo, its mask, a crop)."""
    from augment.pixel_limit import EXPAND_BYTES_PER_PIXEL

    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    source = tmp_path / "source"
    for folder in ("images", "masks"):
        (source / folder).mkdir(parents=True)
    save_image(source / "images" / "a.png", _random(2, 120, 160))
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 255
    save_image(source / "masks" / "a.png", mask)
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    save_image(backgrounds / "b.png", _random(3, 120, 160))
    memory = f"takes ~{EXPAND_BYTES_PER_PIXEL} bytes of memory per pixel, 0.00013 GB for this one)"
    expanded = run_cli("expand", source, "--backgrounds", backgrounds, "--out", tmp_path / "out", "--num", 2)
    assert expanded.exit_code == 2 and f"(an expansion {memory}" in " ".join(expanded.output.split())
    shards = run_cli("photo-shards", source, "--out", tmp_path / "photos")
    assert shards.exit_code == 2 and f"(a photo shard {memory}" in " ".join(shards.output.split())


# ----------------------------------------------------------------- videos, GIFs and frame folders
def _write_video(path: Path, width: int = 160, height: int = 120, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    for k in range(frames):
        writer.write(_random(10 + k, height, width))
    writer.release()
    return path


def _counting_reads(monkeypatch, declared: tuple[int, int] | None = None) -> list[int]:
    """Frames decoded by any capture opened from now on; with ``declared``, the size its header gives
    (0, 0: a container that declares none)."""
    reads: list[int] = []
    real = cv2.VideoCapture

    class Capture:  # a wrapper: a subclass of OpenCV's type crashed the garbage collector
        def __init__(self, *args) -> None:
            self.capture = real(*args)

        def read(self, *args):
            reads.append(1)
            return self.capture.read(*args)

        def get(self, prop):
            if declared is not None and prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
                return float(declared[0] if prop == cv2.CAP_PROP_FRAME_WIDTH else declared[1])
            return self.capture.get(prop)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    return reads


def _frames_from_the_third_at(monkeypatch, size: tuple[int, int]) -> None:
    """Captures opened from now on decode their 3rd frame and later at ``size`` (width, height): a
    stream that changes resolution mid-way."""
    real = cv2.VideoCapture

    class Resizing:  # a wrapper: a subclass of OpenCV's type crashed the garbage collector
        def __init__(self, *args) -> None:
            self.capture, self.reads = real(*args), 0

        def read(self, *args):
            ok, frame = self.capture.read(*args)
            self.reads += 1
            if ok and self.reads > 2:
                frame = cv2.resize(frame, size)
            return ok, frame

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", Resizing)


def _search(tmp_path: Path, *media: Path, options: tuple[str, ...] = ()):
    query = tmp_path / "query.png"
    save_image(query, _random(1, 24, 24))
    return run_cli("search", query, *media, "--out", tmp_path / "found", "--device", "cpu", "--untrained",
                   "--no-verify", "--workers", 1, *options)


def _errors(output: str) -> list[str]:
    joined = " ".join(output.split()).replace(" error:", "\nerror:")  # as Rich may wrap them
    return [line for line in joined.splitlines() if line.startswith("error:")]


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", [(), ("--every-instance",)], ids=["temporal", "every-instance"])
def test_a_video_over_the_limit_is_one_error_line_from_its_header_and_the_other_media_are_searched(
        tmp_path, monkeypatch, mode):
    """A 4K video was decoded and searched frame after frame whatever the limit said."""
    video, scene = _write_video(tmp_path / "clip.mp4"), tmp_path / "scene.png"
    save_image(scene, _random(3, 72, 96))
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    reads = _counting_reads(monkeypatch)
    result = _search(tmp_path, video, scene, options=mode)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and f"clip.mp4: {OVER} on a video frame" in errors[0], result.output
    assert not reads  # refused from the header: no frame decoded
    lines = _lines(tmp_path / "found")
    assert [line["source"] for line in lines] == [str(video), str(scene)]
    assert "error" in lines[0] and "detections" in lines[1]
    assert not (tmp_path / "found" / "clip.highlight.mp4").exists()


def test_a_video_whose_header_gives_no_size_is_held_to_the_limit_by_its_first_frame(tmp_path, monkeypatch):
    video = _write_video(tmp_path / "clip.mp4")
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    reads = _counting_reads(monkeypatch, declared=(0, 0))
    result = _search(tmp_path, video)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and f"clip.mp4: {OVER} on a video frame" in errors[0], result.output
    assert len(reads) == 1  # the first frame only


def test_a_video_whose_header_gives_no_size_is_searched_at_its_frames_size(tmp_path, monkeypatch):
    """Under the limit, the first frame's size is the one the highlighted video is written at."""
    video = _write_video(tmp_path / "clip.mp4", 96, 72)
    _counting_reads(monkeypatch, declared=(0, 0))
    result = _search(tmp_path, video)
    assert result.exit_code == 0, result.output
    assert [line["frame"] for line in _lines(tmp_path / "found")] == [0, 1, 2]
    monkeypatch.undo()
    written = cv2.VideoCapture(str(tmp_path / "found" / "clip.highlight.mp4"))
    assert (written.get(cv2.CAP_PROP_FRAME_WIDTH), written.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 72)


@pytest.mark.parametrize("mode", [(), ("--every-instance",)], ids=["temporal", "every-instance"])
def test_a_video_whose_frames_grow_over_the_limit_mid_way_ends_there_with_one_error_line(
        tmp_path, monkeypatch, mode):
    """Only the header and the first frame were checked: a stream that changed resolution after
    them (a decoder hands over whatever each frame is) was searched at any size."""
    video = _write_video(tmp_path / "clip.mp4", 96, 72, frames=4)
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    _frames_from_the_third_at(monkeypatch, (160, 120))  # over the limit
    result = _search(tmp_path, video, options=mode)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and f"clip.mp4 (frame 2): {OVER} on a video frame" in errors[0], result.output
    assert "the video ends there" in errors[0]
    lines = _lines(tmp_path / "found")
    assert [line["frame"] for line in lines if "error" not in line] == [0, 1]


def test_a_video_whose_frames_change_size_under_the_limit_is_searched_at_the_first_frames_size(
        tmp_path, monkeypatch):
    """A frame of another size reached the tracker, which holds one video of same-size frames."""
    video = _write_video(tmp_path / "clip.mp4", 96, 72, frames=4)
    _frames_from_the_third_at(monkeypatch, (80, 60))
    result = _search(tmp_path, video)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "such frames are resized to the first's" in " ".join(result.output.split())
    lines = _lines(tmp_path / "found")
    assert [(line["frame"], line["width"], line["height"]) for line in lines] == [(k, 96, 72) for k in range(4)]


def test_an_animated_gif_over_the_limit_is_one_error_line(tmp_path, monkeypatch):
    frames = [Image.fromarray(_random(20 + k, 120, 160)) for k in range(3)]
    gif = tmp_path / "animated.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    result = _search(tmp_path, gif)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and f"animated.gif: {OVER} on a video frame" in errors[0], result.output
    assert "error" in _lines(tmp_path / "found")[0]


def test_a_frame_folder_over_the_limit_is_one_error_line_saying_why(tmp_path, monkeypatch):
    """It said only "none of its 3 image files could be read", as of broken files."""
    folder = tmp_path / "frames"
    for k in range(3):
        save_image(folder / f"{k:04d}.png", _random(30 + k, 120, 160))
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    result = _search(tmp_path, folder, options=("--sequence",))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and "frames: none of its 3 image files could be read" in errors[0], result.output
    assert f"0000.png: {OVER} on an image" in errors[0]


def test_a_frame_over_the_limit_in_a_frame_folder_is_a_counted_skip(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    for k in range(3):
        save_image(folder / f"{k:04d}.png", _random(30 + k, 72, 96))
    save_image(folder / "0003.png", _random(40, 120, 160))
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", TINY)
    result = _search(tmp_path, folder, options=("--sequence",))
    assert result.exit_code == 0, result.output
    joined = " ".join(result.output.split())
    assert joined.count("skipped frame:") == 1 and f"0003.png: {OVER}" in joined, result.output
    assert [line["frame"] for line in _lines(tmp_path / "found")] == [0, 1, 2]
