"""`synth search` on the inputs a user really has, found by QA as a demanding user: phone photos with
an EXIF orientation, images past OpenCV's pixel limit, HEIC photos named .jpg, float TIFFs, media
names as long as a file name may be, an earlier --out kept among the photos, folders in --pairs,
videos too thin to search. Small generated images; the untrained network on the CPU."""

from __future__ import annotations

import io
import logging
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.atomic_files import NAME_MAX
from augment.imageio import InputError, read_image, save_image
from cli_checks import run_cli
from tests.test_hardening_search import _random

OBJECT_BOX = (80, 30, 112, 78)  # x0, y0, x1, y1 of the object in the upright scene (128x96)


def _scene_and_object() -> tuple[np.ndarray, np.ndarray]:
    """A blocky 128x96 scene holding a smooth 32x48 object at OBJECT_BOX, and the object alone."""
    rng = np.random.default_rng(0)
    scene = cv2.resize(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), (128, 96), interpolation=cv2.INTER_NEAREST)
    thing = cv2.resize(rng.integers(0, 255, (6, 4, 3), dtype=np.uint8), (32, 48), interpolation=cv2.INTER_CUBIC)
    x0, y0, x1, y1 = OBJECT_BOX
    scene[y0:y1, x0:x1] = thing
    return scene, thing


def _jpeg_with_orientation(path: Path, upright: np.ndarray, orientation: int) -> Path:
    """``upright`` stored as a camera would for EXIF ``orientation`` (6: turned 90° counter-clockwise,
    shown turned back), the tag written."""
    from PIL import Image, ImageOps

    stored = {1: upright, 3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(path, "JPEG", quality=95, exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert shown.shape == upright.shape  # the file is what a phone writes
    return path


def _iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_every_exif_orientation_is_read_upright_as_a_viewer_shows_it():
    from PIL import Image, ImageOps

    from augment.imageio import exif_orientation, image_from_bytes

    blocks = np.kron(np.random.default_rng(1).integers(0, 255, (6, 9, 3)).astype(np.uint8), np.ones((8, 8, 1), np.uint8))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        Image.fromarray(blocks).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
        data = buffer.getvalue()
        shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
        assert exif_orientation(data) == orientation
        upright = image_from_bytes(data, "photo.jpg", "rgb")
        assert upright.shape == shown.shape and np.array_equal(upright, shown), orientation


def test_a_phone_photo_with_an_exif_orientation_is_searched_upright_with_boxes_in_its_displayed_frame(tmp_path):
    """A phone photo (EXIF orientation 6) was searched as stored, on its side: the upright query was not
    found (0 detections on a CCP photo that is found upright) and boxes were in the sideways frame."""
    scene, thing = _scene_and_object()
    save_image(tmp_path / "query.png", thing)
    _jpeg_with_orientation(tmp_path / "phone.jpg", scene, 6)
    _jpeg_with_orientation(tmp_path / "query_phone.jpg", thing, 8)  # the query shot on a phone too
    for query in ("query.png", "query_phone.jpg"):
        out = tmp_path / f"found_{query}"
        result = run_cli("search", tmp_path / query, tmp_path / "phone.jpg", "--out", out, "--device", "cpu",
                         "--untrained", "--no-verify", "--workers", 1)
        assert result.exit_code == 0, result.output
        line = json.loads((out / "detections.jsonl").read_text())
        assert (line["width"], line["height"]) == (128, 96), line
        assert _iou(line["best"]["box"], OBJECT_BOX) > 0.5, line["best"]
        assert read_image(out / "phone.highlight.jpg").shape == scene.shape


def test_a_sequence_of_phone_frames_and_a_query_mask_are_read_upright(tmp_path):
    from pipelines.frames import FolderFrames
    from pipelines.search import load_query

    scene, thing = _scene_and_object()
    (tmp_path / "frames").mkdir()
    for k in range(3):
        _jpeg_with_orientation(tmp_path / "frames" / f"{k:03d}.jpg", scene, 6)
    reader = FolderFrames(tmp_path / "frames")
    assert (reader.info.width, reader.info.height) == (128, 96)
    assert all(frame.shape == scene.shape for _, batch in reader for frame in batch) and not reader.skipped
    # A mask drawn on the query as a viewer shows it: it fits the query read upright (as stored, the
    # query was 48x32 against the mask's 32x48: a size mismatch).
    _jpeg_with_orientation(tmp_path / "query.jpg", thing, 6)
    mask = np.zeros((48, 32), np.uint8)
    mask[8:40, 4:28] = 255
    save_image(tmp_path / "mask.png", mask)
    rgb, kept = load_query(tmp_path / "query.jpg", tmp_path / "mask.png")
    assert rgb.shape[:2] == kept.shape == (32, 24)


def test_an_image_past_opencvs_pixel_limit_is_one_error_line_not_a_cv2_traceback(tmp_path):
    """A 40000x30000 PNG (1 MB of zeros) raised cv2.error (a traceback) past CV_IO_MAX_IMAGE_PIXELS;
    the limit is lowered here so that a small image passes it."""
    save_image(tmp_path / "query.png", _random(1, 24, 24))
    save_image(tmp_path / "huge.png", _random(2, 64, 64))
    save_image(tmp_path / "scene.png", _random(3, 30, 30))
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "1000", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "search", "query.png", "huge.png", "scene.png",
                             "--out", "found", "--device", "cpu", "--untrained", "--no-verify", "--workers", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "error: huge.png: image too large to decode (over OpenCV's limit of 1000 pixels" in result.stderr
    lines = [json.loads(line) for line in (tmp_path / "found" / "detections.jsonl").read_text().splitlines()]
    assert "error" in lines[0] and "detections" in lines[1]


def test_a_heic_photo_named_jpg_says_what_it_is():
    from augment.imageio import image_from_bytes

    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(range(256)) * 8
    with pytest.raises(InputError, match=r"^IMG_0001\.jpg: a HEIC/HEIF or AVIF image, .*convert it to JPEG or PNG$"):
        image_from_bytes(heic, "IMG_0001.jpg")


def test_a_float_tiff_in_0_1_is_read_as_its_picture_not_black(tmp_path):
    """A float32 TIFF in [0, 1] was cast to uint8: all black (0 or 1), searched without a word."""
    picture = _random(4, 20, 30)
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(tmp_path / "unit.tif"), bgr.astype(np.float32) / 255)
    assert cv2.imwrite(str(tmp_path / "full.tif"), bgr.astype(np.float32))
    for name in ("unit.tif", "full.tif"):
        assert np.abs(read_image(tmp_path / name).astype(int) - picture).max() <= 1, name


def test_a_medium_whose_name_is_as_long_as_a_file_name_may_be_is_searched_not_the_runs_end(tmp_path):
    """A 250-byte photo name (legal): its <name>.highlight.jpg was past NAME_MAX, so the whole run stopped
    with exit 2 on 'File name too long' naming a temporary, the other photos' outputs and detections.jsonl
    never written."""
    from pipelines.output_record import OutputRecord
    from pipelines.search_jobs import SEARCH_OUTPUTS

    media = tmp_path / "media"
    save_image(tmp_path / "query.png", _random(1, 24, 24))
    long_stem = "é" * 123  # 246 bytes; with a character more and .png, 251
    for stem in ("a", long_stem + "1", long_stem + "2", "z"):
        save_image(media / f"{stem}.png", _random(len(stem), 40, 40))
    save_image(media / "sub" / f"{long_stem}1.png", _random(7, 40, 40))  # the same long name again
    out = tmp_path / "found"
    result = run_cli("search", tmp_path / "query.png", media, "--out", out, "--device", "cpu", "--untrained",
                     "--no-verify", "--workers", 1)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert all(len(os.fsencode(name)) <= NAME_MAX for name in names)
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all("error" not in line for line in lines)
    highlights = [line["highlight"] for line in lines]
    assert len(set(highlights)) == 5 and all((out / h).is_file() for h in highlights)
    # A record naming a stem too long for its outputs (a run before the fix) does not break the next.
    (out / ".synth-search-outputs").write_text(json.dumps("x" * 250) + "\n")
    assert OutputRecord(out, SEARCH_OUTPUTS).earlier_outputs() == {out / "detections.jsonl"}


def _earlier_search_output(folder: Path) -> set[Path]:
    """What a search into ``folder`` writes for one photo, with its record."""
    save_image(folder / "photo.heat.png", np.zeros((40, 40), np.uint8))
    save_image(folder / "photo.highlight.jpg", _random(5, 40, 40))
    (folder / "detections.jsonl").write_text("{}\n")
    save_image(folder / "photo.heat" / "000000.png", np.zeros((40, 40), np.uint8))
    (folder / ".synth-search-outputs").write_text(json.dumps("photo") + "\n")
    return {folder / "photo.heat.png", folder / "photo.highlight.jpg", folder / "photo.heat" / "000000.png"}


def test_an_earlier_searchs_out_kept_inside_the_searched_folder_is_not_searched_as_photos_or_frames(tmp_path):
    """`search q photos --out photos/found` then `--out photos/found2`: the second searched found/'s heat
    maps and highlights as photos; with --sequence they became frames (16 frames for 8)."""
    from pipelines.frames import FolderFrames
    from pipelines.search_jobs import expand_media

    photos = tmp_path / "photos"
    for k in range(3):
        save_image(photos / f"{k:04d}.png", _random(k, 40, 40))
    save_image(photos / "found" / "mine.png", _random(9, 40, 40))  # the user's own file stays in
    _earlier_search_output(photos / "found")
    assert expand_media([photos], out=photos / "found2") == [photos / "0000.png", photos / "0001.png",
                                                              photos / "0002.png", photos / "found" / "mine.png"]
    reader = FolderFrames(photos)
    assert reader.files == [photos / "0000.png", photos / "0001.png", photos / "0002.png",
                            photos / "found" / "mine.png"]
    # A folder named as MEDIA that is itself an output folder means its files.
    assert photos / "found" / "photo.highlight.jpg" in expand_media([photos / "found"], out=tmp_path / "again")


def test_a_folder_in_pairs_is_its_images_as_a_media_folder_is_not_silently_a_sequence(tmp_path):
    """A pairs line naming a folder read its photos as the frames of one video (one highlight.mp4, the
    temporal mode), without --sequence; --sequence did nothing with --pairs."""
    from pipelines.search_jobs import expand_pair_media, read_pairs

    save_image(tmp_path / "query.png", _random(1, 24, 24))
    for name in ("a.png", "b.jpg"):
        save_image(tmp_path / "shop" / name, _random(2, 40, 40))
    (tmp_path / "empty").mkdir()
    lines = [{"query": "query.png", "medium": "shop"}, {"query": "query.png", "medium": "empty"},
             {"query": "query.png", "medium": "shop/a.png"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    jobs = expand_pair_media(read_pairs(tmp_path / "pairs.jsonl"), out=tmp_path / "found")
    assert [(job.medium.relative_to(tmp_path).as_posix(), job.error is not None) for job in jobs] == [
        ("shop/a.png", False), ("shop/b.jpg", False), ("empty", True), ("shop/a.png", False)]
    assert "no images or videos in this folder" in jobs[2].error
    sequences = expand_pair_media(read_pairs(tmp_path / "pairs.jsonl"), sequence=True)
    assert [job.medium.name for job in sequences] == ["shop", "empty", "a.png"]
    result = run_cli("search", "--pairs", tmp_path / "pairs.jsonl", "--out", tmp_path / "found", "--device", "cpu",
                     "--untrained", "--no-verify", "--workers", 1)
    assert result.exit_code == 1, result.output  # the empty folder's line
    written = [json.loads(line) for line in (tmp_path / "found" / "detections.jsonl").read_text().splitlines()]
    assert [line.get("highlight") for line in written] == ["a.highlight.jpg", "b.highlight.jpg", None,
                                                           "a-2.highlight.jpg"]


@pytest.mark.parametrize("mode", [(), ("--every-instance",)])
def test_a_video_too_thin_to_search_is_one_error_line_as_a_still_is(tmp_path, mode):
    """A 96x4 video was 'searched' (exit 0, best-guess boxes and the advice to pass --box); a still of
    that size is an error line."""
    save_image(tmp_path / "query.png", _random(1, 24, 24))
    writer = cv2.VideoWriter(str(tmp_path / "thin.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 4))
    for k in range(3):
        writer.write(_random(k, 4, 96))
    writer.release()
    result = run_cli("search", tmp_path / "query.png", tmp_path / "thin.avi", "--out", tmp_path / "found",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", 1, *mode)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "thin.avi: video frame is 96x4 px; at least 8 px per side" in " ".join(result.output.split())
    assert sorted(p.name for p in (tmp_path / "found").iterdir() if not p.name.startswith(".")) == ["detections.jsonl"]


def test_an_out_that_is_a_link_to_nowhere_says_so_not_file_exists(tmp_path):
    """--out naming a symbolic link whose target is gone (or a folder below one) was 'error: out: File
    exists' (mkdir's EEXIST); calibrate's --out file below one the same."""
    from cli_checks import assert_one_line_error

    save_image(tmp_path / "query.png", _random(1, 24, 24))
    save_image(tmp_path / "scene.png", _random(2, 40, 40))
    (tmp_path / "out").symlink_to(tmp_path / "gone" / "found")
    for out in (tmp_path / "out", tmp_path / "out" / "found"):
        result = run_cli("search", tmp_path / "query.png", tmp_path / "scene.png", "--out", out, "--device", "cpu",
                         "--untrained", "--no-verify")
        assert_one_line_error(result, 2, f"{tmp_path / 'out'} is a symbolic link to {tmp_path / 'gone' / 'found'}, "
                              "which does not exist")
    result = run_cli("calibrate", "--shards", tmp_path, "--out", tmp_path / "out" / "threshold.json")
    assert_one_line_error(result, 2, "is a symbolic link to", "which does not exist")
    assert not (tmp_path / "gone").exists()


def test_a_broken_symbolic_link_in_a_folder_is_counted_and_named_not_silently_dropped(tmp_path, caplog):
    from augment.imageio import list_images

    folder = tmp_path / "photos"
    folder.mkdir()
    save_image(folder / "a.png", np.zeros((16, 16, 3), np.uint8))
    (folder / "b.jpg").symlink_to(tmp_path / "moved_away.jpg")
    caplog.set_level(logging.INFO, logger="augment.imageio")
    images, others = list_images(folder)
    assert images == [folder / "a.png"] and others == []
    said = [r.getMessage() for r in caplog.records if r.name == "augment.imageio"]
    assert any("b.jpg: a symbolic link to" in m and "does not exist" in m for m in said), said
    assert any(m.endswith("1 broken symbolic link(s) left out (b.jpg)") for m in said), said
