"""Open defects of an audit, the reading side: an image too large to search ran out of memory without
a word; a GIF was a query but not a medium. Small generated images; the untrained network on the CPU."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.imageio import InputError, image_from_bytes, save_image
from augment.schema import MANIFEST_FILE
from cli_checks import assert_one_line_error, run_cli
from test_hardening_expand import expand, inputs  # noqa: F401  (the same tiny expansion inputs)
from tests.test_audit_search import _error_lines
from tests.test_hardening_search import _random


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds a few bytes of them: what
    the header says, without the gigabytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------- 1: images too large to search
def test_an_image_near_opencvs_limit_is_refused_from_its_header_by_the_default_limit():
    """A 30000x30000 PNG (under OpenCV's 2**30 pixels) was decoded and searched: ~25 GB, the process
    killed without a message. Refused from the header, naming its size and how to go on."""
    with pytest.raises(InputError) as refused:
        image_from_bytes(_png_header(30000, 30000), "huge.png")
    message = str(refused.value)
    assert message.startswith("huge.png: 30000x30000 px (900.0 megapixels) is over the limit of 120 megapixels")
    assert "SYNTH_MAX_MEGAPIXELS=900" in message and "\n" not in message


def test_a_medium_over_the_pixel_limit_is_one_error_line_and_never_decoded(tmp_path, monkeypatch):
    import augment.imageio as imageio

    save_image(tmp_path / "query.png", _random(1, 24, 24))
    save_image(tmp_path / "large.png", _random(2, 200, 300))  # 0.06 megapixels
    save_image(tmp_path / "scene.png", _random(3, 72, 96))
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "0.01")
    decoded, real = [], imageio.cv2.imdecode  # what OpenCV is asked to decode, by the bytes' size
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda buffer, flags: decoded.append(buffer.size)
                        or real(buffer, flags))
    result = run_cli("search", tmp_path / "query.png", tmp_path / "large.png", tmp_path / "scene.png",
                     "--out", tmp_path / "found", "--device", "cpu", "--untrained", "--no-verify", "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = _error_lines(" ".join(result.output.split()).replace(" error:", "\nerror:"))  # as Rich wrapped them
    assert len(errors) == 1, result.output
    assert "large.png: 300x200 px (0.1 megapixels) is over the limit of 0.01 megapixels" in errors[0]
    assert "SYNTH_MAX_MEGAPIXELS=1 " in errors[0]
    assert (tmp_path / "large.png").stat().st_size not in decoded and decoded  # the others were decoded
    lines = [json.loads(line) for line in (tmp_path / "found" / "detections.jsonl").read_text().splitlines()]
    assert "error" in lines[0] and "detections" in lines[1]


def test_a_limit_that_is_not_a_number_of_megapixels_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "lots")
    result = run_cli("search", tmp_path / "query.png", tmp_path / "scene.png", "--out", tmp_path / "found")
    assert_one_line_error(result, 2, "SYNTH_MAX_MEGAPIXELS must be a number of megapixels above 0, not 'lots'")


def test_expand_counts_a_background_over_the_pixel_limit_as_a_skip_with_its_reason(inputs, tmp_path, monkeypatch):
    _, backgrounds, _ = inputs
    save_image(backgrounds / "panorama.jpg", _random(4, 300, 400))  # 0.12 megapixels; the others 0.032
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "0.05")
    out = tmp_path / "out"
    result = expand(inputs, out, "-n", 2)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert list(reasons) == ["panorama.jpg"], reasons
    assert "400x300 px (0.1 megapixels) is over the limit of 0.05 megapixels" in reasons["panorama.jpg"]
    assert manifest["backgrounds"]["count"] == 3


# ----------------------------------------------------------------- 2: GIFs as media
def _gifs(folder: Path, frames: int = 3) -> tuple[Path, Path, Path]:
    """A query cut from the first frame, that frame as a still GIF, and an animated GIF of ``frames``."""
    pictures = [_random(20 + k, 72, 96) for k in range(frames)]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pictures[0][10:50, 20:60]).save(folder / "query.gif")
    Image.fromarray(pictures[0]).save(folder / "still.gif")
    animated = [Image.fromarray(p) for p in pictures]
    animated[0].save(folder / "animated.gif", save_all=True, append_images=animated[1:], duration=100, loop=0)
    return folder / "query.gif", folder / "still.gif", folder / "animated.gif"


def test_a_still_gif_is_searched_as_an_image_and_an_animated_one_as_a_video(tmp_path):
    """A GIF was read as a query but refused as a medium ("unknown suffix '.gif'", left out of folders)."""
    query, still, animated = _gifs(tmp_path / "gifs")
    result = run_cli("search", query, still, animated, "--out", tmp_path / "found", "--device", "cpu",
                         "--untrained", "--no-verify", "--workers", 1)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "found" / "detections.jsonl").read_text().splitlines()]
    assert [(line["source"], line["frame"], line["highlight"]) for line in lines] == [
        (str(still), None, "still.highlight.jpg"),
        *((str(animated), k, "animated.highlight.mp4") for k in range(3))]
    assert lines[0]["detections"] and (tmp_path / "found" / "animated.highlight.mp4").is_file()


def test_a_folder_of_media_holds_its_gifs_and_an_animated_one_is_said_to_be_a_video(tmp_path, caplog):
    from pipelines.search_jobs import expand_media, is_video

    _, still, animated = _gifs(tmp_path / "gifs")
    with caplog.at_level(logging.INFO, logger="pipelines.video"):
        assert expand_media([tmp_path / "gifs"]) == [animated, tmp_path / "gifs" / "query.gif", still]
        assert is_video(animated) and is_video(animated) and not is_video(still)
    said = [r.getMessage() for r in caplog.records if "animated.gif" in r.getMessage()]
    assert len(said) == 1 and "an animated GIF of 3 frames; searched as a video" in said[0], said
    shown = np.asarray(Image.open(still).convert("RGB"))  # its palette's colours, as a viewer shows them
    assert np.array_equal(image_from_bytes(still.read_bytes(), "still.gif"), shown)
