"""Odd file and folder names in users' input folders: links to folders, link loops, hidden files."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

from augment.cutouts import sources_fingerprint
from augment.imageio import list_images
from augment.config import SourceConfig


def _png(path, side=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", np.full((side, side, 3), 200, np.uint8))[1].tobytes())


def test_a_link_to_a_folder_is_listed_and_a_loop_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "hats"
    _png(elsewhere / "hat é.png")
    source = tmp_path / "source"
    _png(source / "shoe" / "shoe.png")
    os.symlink(elsewhere, source / "hats")  # a category kept on another disk
    os.symlink("..", source / "shoe" / "loop")  # a link back up: listed once, not forever
    images, others = list_images(source)
    assert [p.relative_to(source).as_posix() for p in images] == ["hats/hat é.png", "shoe/shoe.png"]
    assert others == []


def test_a_link_loop_is_warned_of_once_however_often_its_folder_is_listed(tmp_path, caplog):
    """A command lists its input folder several times (format detection, fingerprint, reading):
    `synth expand` warned of one link loop three times."""
    source = tmp_path / "source"
    _png(source / "shoe" / "shoe.png")
    os.symlink("..", source / "shoe" / "loop")
    with caplog.at_level("WARNING"):
        for _ in range(3):
            list_images(source)
    assert sum("a folder above it; not followed" in r.getMessage() for r in caplog.records) == 1


def test_hidden_files_and_hidden_folders_are_left_out(tmp_path):
    source = tmp_path / "source"
    _png(source / "hat" / "hat.png")
    _png(source / "hat" / "._hat.png")  # macOS resource fork beside it
    _png(source / ".ipynb_checkpoints" / "hat.png")
    _png(source / "__MACOSX" / "hat" / "._hat.png")
    (source / ".DS_Store").write_bytes(b"\0")
    images, others = list_images(source)
    assert [p.relative_to(source).as_posix() for p in images] == ["hat/hat.png"]
    assert others == []


def test_fingerprint_sees_a_change_in_a_linked_folder_and_not_in_hidden_files(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _png(elsewhere / "hat.png")
    source = tmp_path / "source"
    source.mkdir()
    os.symlink(elsewhere, source / "hats")
    config = SourceConfig()
    before = sources_fingerprint([source], config)
    (source / ".DS_Store").write_bytes(b"\0")
    assert sources_fingerprint([source], config) == before
    _png(elsewhere / "hat2.png")
    assert sources_fingerprint([source], config) != before


def test_names_that_are_not_utf8_are_one_warning_not_a_traceback(tmp_path, caplog):
    source = tmp_path / "source"
    _png(source / "hat" / "hat.png")
    _png(source / os.fsdecode(b"caf\xe9") / "x.png")  # a Latin-1 folder name from an old archive
    _png(source / "hat" / os.fsdecode(b"h\xe9.png"))
    images, _ = list_images(source)
    assert [p.relative_to(source).as_posix() for p in images] == ["hat/hat.png"]
    assert "2 file(s) or folder(s) whose name is not UTF-8 left out" in caplog.text
    assert "\\xe9" in caplog.text
    sources_fingerprint([source], SourceConfig())  # hashed the names: UnicodeEncodeError


def test_segment_and_extract_count_the_files_they_leave_out_of_a_folder(tmp_path, caplog):
    import logging

    from pipelines.segment_commands import images_of

    folder = tmp_path / "photos"
    _png(folder / "photo.png")
    (folder / "Thumbs.db").write_bytes(b"\0")  # Windows' thumbnail cache, copied with the photos
    (folder / "notes.txt").write_text("where I took these")
    with caplog.at_level(logging.INFO, logger="pipelines.search_jobs"):
        assert images_of([folder]) == ([folder / "photo.png"], [])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{folder}: 2 file(s) that are not images left out (Thumbs.db, ...)"], warnings
    assert sum("notes.txt: not an image; left out" in r.getMessage() for r in caplog.records) == 1


def test_a_mask_saved_on_a_mac_pairs_with_its_photo_of_the_same_name(tmp_path):
    import unicodedata

    from augment.sources import mask_pair_files

    source = tmp_path / "source"
    _png(source / "images" / (unicodedata.normalize("NFC", "café") + ".png"))  # typed on Linux or Windows
    _png(source / "masks" / (unicodedata.normalize("NFD", "café") + ".png"))  # e + combining accent (macOS)
    _, pairs, skips = mask_pair_files(source)
    assert [(image.name, mask is not None and mask.name) for image, mask in pairs] == [
        (unicodedata.normalize("NFC", "café.png"), unicodedata.normalize("NFD", "café.png"))]
    assert skips == []


def test_a_coco_file_from_windows_or_a_mac_finds_its_images(tmp_path):
    import json
    import unicodedata

    from augment.coco_source import load_coco_index

    root = tmp_path / "coco"
    _png(root / "images" / "day 1" / "scene.png")
    _png(root / "images" / (unicodedata.normalize("NFD", "café") + ".png"))  # as a Mac saved it
    entries = [{"id": 1, "file_name": "day 1\\scene.png"},  # written on Windows
               {"id": 2, "file_name": unicodedata.normalize("NFC", "café.png")}]
    box = [[1, 1, 6, 1, 6, 6, 1, 6]]
    (root / "instances.json").write_text(json.dumps({
        "images": [dict(entry, width=8, height=8) for entry in entries],
        "categories": [{"id": 1, "name": "shirt"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "segmentation": box, "iscrowd": 0} for i in (1, 2)]}))
    index = load_coco_index(root)
    assert index.locate(1) == root / "images" / "day 1" / "scene.png"
    assert index.locate(2).name == unicodedata.normalize("NFD", "café.png")


def test_expand_names_a_file_given_as_backgrounds_as_a_file(tmp_path):
    from tests.cli_checks import assert_one_line_error, run_cli

    _png(tmp_path / "objects" / "hat" / "hat.png")
    _png(tmp_path / "brick.png")
    result = run_cli("expand", tmp_path / "objects", "-b", tmp_path / "brick.png", "-o", tmp_path / "out", "-n", 1)
    assert_one_line_error(result, 2, "brick.png: --backgrounds must be a folder of images, not a file")
    assert not (tmp_path / "out").exists()


def test_export_keeps_photos_whose_names_have_spaces_accents_or_a_leading_dash(tmp_path):
    import json

    from tests.cli_checks import run_cli

    source = tmp_path / "photos"
    names = ["IMG 0001", "café", "-front", "new\nline"]
    for name in names:
        image = np.zeros((16, 16, 3), np.uint8)
        image[4:12, 4:12] = 200
        label = np.zeros((16, 16), np.uint8)
        label[4:12, 4:12] = 1
        (source / "images").mkdir(parents=True, exist_ok=True)
        (source / "masks").mkdir(exist_ok=True)
        (source / "images" / f"{name}.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
        (source / "masks" / f"{name}.png").write_bytes(cv2.imencode(".png", label * 255)[1].tobytes())
    assert run_cli("photo-shards", source, "-o", tmp_path / "shards").exit_code == 0
    result = run_cli("export", tmp_path / "shards", "-o", tmp_path / "coco")
    assert result.exit_code == 0, result.output
    files = sorted(image["file_name"] for image in json.loads((tmp_path / "coco" / "annotations.json").read_text())["images"])
    assert files == ["IMG 0001.jpg", "_-front.jpg", "café.jpg", "new_line.jpg"]
    assert sorted(p.name for p in (tmp_path / "coco" / "images").iterdir()) == files


def test_a_video_whose_name_is_not_utf8_is_one_line_not_a_crash(tmp_path):
    from tests.cli_checks import error_lines, run_cli_process

    _png(tmp_path / "query.png", side=16)
    video = tmp_path / os.fsdecode(b"caf\xe9.mp4")  # OpenCV's binding crashed on it (segmentation fault)
    video.write_bytes(b"\0" * 64)
    # named in a --pairs file (a name typed on the command line is refused before any work: below)
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"query": "query.png", "medium": video.name}) + "\n")
    result = run_cli_process(["search", "--pairs", tmp_path / "pairs.jsonl", "-o", tmp_path / "out"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    # The pairs file's line names it, before any search (it was the video reader's line, later).
    assert error_lines(result.stderr)[-1].endswith("pairs.jsonl:1: caf\\xe9.mp4: a name that is not UTF-8; rename it")
    assert "Traceback" not in result.stderr


def test_a_path_argument_that_is_not_utf8_is_one_line_before_any_work(tmp_path):
    from tests.cli_checks import error_lines, run_cli_process

    _png(tmp_path / "objects" / "hat" / "hat.png")
    (tmp_path / "backgrounds").mkdir()
    _png(tmp_path / "backgrounds" / "wall.png", side=64)
    out = tmp_path / os.fsdecode(b"out\xe9")  # pyarrow's file system raised UnicodeEncodeError (a traceback)
    result = run_cli_process(["expand", tmp_path / "objects", "-b", tmp_path / "backgrounds", "-o", out, "-n", 1],
                             cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [f"error: {tmp_path}/out\\xe9: a name that is not UTF-8; rename it"]
    assert not out.exists()


def test_a_link_to_the_runs_own_output_folder_is_not_read_as_input(tmp_path):
    from augment.excluded_folders import excluding

    source = tmp_path / "source"
    _png(source / "hat" / "hat.png")
    out = tmp_path / "expanded"
    _png(out / "previews" / "sheet.png")
    (out / "manifest.json").write_text("{}")
    os.symlink(out, source / "latest")  # a shortcut to the last run's output, kept among the sources
    with excluding(out):
        images, others = list_images(source)
    assert [p.relative_to(source).as_posix() for p in images] == ["hat/hat.png"]
    assert others == []
