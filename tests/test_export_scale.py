"""`synth export --format coco` at scale: its annotations.json is written as the rows are read, with
memory bounded by a row group, not held whole; the file is the same as the one made whole in memory."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from augment.coco_export import export_coco
from augment.photo_shards import write_photo_shards
from augment.config import SourceConfig
from augment.schema import COMPOSITE_SCHEMA, MANIFEST_FILE, OBJECTS_FILE, shard_name
from shard_factory import make_shards
from sources_factory import make_coco


def _tiled_shards(folder: Path, rows: int, per_shard: int = 500, per_group: int = 32) -> Path:
    """``rows`` rows of distinct ids, made by repeating a few generated composites (fast to write)."""
    base = make_shards(folder / "base", n_composites=12, rows_per_shard=12, size=48)
    records = pq.read_table(sorted(base.folder.glob("train*"))[0]).to_pylist()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OBJECTS_FILE).write_bytes((base.folder / OBJECTS_FILE).read_bytes())
    listed = []
    for index, start in enumerate(range(0, rows, per_shard)):
        table = pa.Table.from_pylist([{**records[i % len(records)], "id": f"row-{i:06d}"}
                                      for i in range(start, min(rows, start + per_shard))], schema=COMPOSITE_SCHEMA)
        pq.write_table(table, folder / shard_name("train", index), row_group_size=per_group)
        listed.append({"name": shard_name("train", index), "rows": table.num_rows, "first_row": start})
    (folder / MANIFEST_FILE).write_text(json.dumps({"shards": listed, "num_rows": rows, "config_hash": "factory",
                                                    "objects": {"file": OBJECTS_FILE, "cutouts": 10}}))
    return folder


def _peak_bytes(shards: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        export_coco([shards], out)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_coco_export_memory_is_bounded_by_a_row_group_not_the_dataset(tmp_path):
    """Every image and annotation entry (RLE strings included) was kept in lists until one json.dumps
    of the whole file: 100,000 rows peaked at 677 MB (147 MB at 1,000 rows), ~6 GB at a million."""
    export_coco([_tiled_shards(tmp_path / "warm", 20)], tmp_path / "warm_out")  # lazy imports, caches
    small = _peak_bytes(_tiled_shards(tmp_path / "small", 150), tmp_path / "small_out")
    large = _peak_bytes(_tiled_shards(tmp_path / "large", 1500), tmp_path / "large_out")
    exported = json.loads((tmp_path / "large_out" / "annotations.json").read_text())
    assert len(exported["images"]) == 1500 and len(exported["annotations"]) > 1500
    # Held until the end, the entries grew the peak by ~3.9 kB a row (+5.3 MB here); streamed, only the
    # ids and file names written (kept to keep them unique: ~0.4 kB a row, +0.55 MB) grow with the rows.
    assert large - small < 2_000_000, (small, large)


def test_coco_export_file_is_unchanged_by_streaming(tmp_path):
    """The file is byte for byte what json.dumps of the whole document gave (same ids, same order):
    composites (one of them a corrupt row, skipped) and labelled photos (background left out, a crowd)."""
    shards = make_shards(tmp_path / "shards", n_composites=24, rows_per_shard=10, corrupt_rows=(5,)).folder
    coco = make_coco(tmp_path / "coco")
    data = json.loads((coco / "instances.json").read_text())
    data["annotations"][1]["iscrowd"] = 1
    (coco / "instances.json").write_text(json.dumps(data))
    write_photo_shards([coco], tmp_path / "photos", SourceConfig())

    counts = export_coco([shards, tmp_path / "photos"], tmp_path / "out")
    text = (tmp_path / "out" / "annotations.json").read_text()
    document = json.loads(text)
    assert text == json.dumps(document)
    assert document["info"]["description"].endswith(str(tmp_path / "photos" / "photos-00000.parquet"))
    del document["info"]
    digest = hashlib.sha256(json.dumps(document).encode()).hexdigest()
    assert (counts["images"], counts["annotations"], counts["skipped"]) == (24, 55, 1)  # 23 composites and a photo
    assert digest == "c916ded25bc6078fdc3bdcb45a9e296b0a4000888e918d4ca62670930aac8f2d"  # made whole in memory


def _rows_of_one_composite(folder: Path, rows: int) -> Path:
    """``rows`` copies (distinct ids) of one small composite, in one shard of 32-row groups."""
    base = make_shards(folder / "base", n_composites=1, rows_per_shard=1, size=48)
    record = pq.read_table(sorted(base.folder.glob("train*"))[0]).to_pylist()[0]
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{**record, "id": f"row-{i:06d}"} for i in range(rows)], schema=COMPOSITE_SCHEMA)
    pq.write_table(table, folder / shard_name("train", 0), row_group_size=32)
    return folder / shard_name("train", 0)


def test_show_memory_does_not_grow_with_the_rows_it_picks_from(tmp_path):
    """`synth show` listed a (shard, group, row) tuple for every row to pick a few: ~100 bytes a row,
    100 MB at a million rows; now an entry a row group, the same rows picked."""
    from augment.contact_sheet import contact_sheet

    shards = {rows: _rows_of_one_composite(tmp_path / str(rows), rows) for rows in (2_000, 20_000)}
    contact_sheet([shards[2_000]], tmp_path / "warm.png", rows=1, columns=2, tile=32)  # lazy imports, caches
    peaks = []
    for rows, shard in shards.items():
        tracemalloc.start()
        try:
            assert contact_sheet([shard], tmp_path / f"{rows}.png", rows=1, columns=2, tile=32, seed=3) == 2
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] - peaks[0] < 400_000, peaks  # a tuple a row: +1.7 MB


def test_coco_export_resolves_no_path_per_row(tmp_path, monkeypatch):
    """Each image's path was resolved on the disk (both it and the images folder: a realpath of every
    component, twice a row), ~17% of an export's time; the file name is one component by construction."""
    import os

    calls = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda *a, **k: calls.append(a[0]) or realpath(*a, **k))
    counts = []
    for rows in (10, 40):
        shards = make_shards(tmp_path / f"s{rows}", n_composites=rows, rows_per_shard=rows, size=48).folder
        calls.clear()
        export_coco([shards], tmp_path / f"out{rows}")
        counts.append(len(calls))
    assert counts[1] == counts[0], counts


def _encoded_images() -> dict[str, bytes]:
    """JPEGs and PNGs as cameras, Pillow and OpenCV write them: baseline, progressive, with EXIF,
    grey, CMYK, optimised tables; 8- and 16-bit, palette and RGBA PNGs."""
    import io

    import numpy as np
    from PIL import Image

    from augment.imageio import encode_jpeg, encode_png

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    encoded = {"cv2 jpeg": encode_jpeg(rgb, 90), "cv2 png": encode_png(rgb),
               "png 16-bit": encode_png(rng.integers(0, 65535, (29, 31), dtype=np.uint16))}
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; the stored size is still the frame's
    for name, mode, options in [("progressive", "RGB", {"progressive": True}), ("exif", "RGB", {"exif": exif}),
                                ("grey", "L", {}), ("cmyk", "CMYK", {}), ("optimised", "RGB", {"optimize": True})]:
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, "JPEG", **options)
        encoded[f"jpeg {name}"] = buffer.getvalue()
    for name, mode in [("palette", "P"), ("rgba", "RGBA")]:
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, "PNG")
        encoded[f"png {name}"] = buffer.getvalue()
    return encoded


def test_image_dimensions_read_from_the_header_match_pillows_without_opening_it(monkeypatch):
    """Every decode (an export reads a row's JPEG and PNG mask) opened the header with Pillow for the
    pixel limit, which parses every table and EXIF block: ~80 us a JPEG, 40 us a PNG, a fifth of an
    export's time. The size is read from the PNG's IHDR and the JPEG's frame header, as Pillow finds it."""
    from augment import pixel_limit

    encoded = _encoded_images()
    expected = {name: pixel_limit.open_header(data).size for name, data in encoded.items()}
    opened = []
    monkeypatch.setattr(pixel_limit, "open_header", lambda data: opened.append(data) or 1 / 0)
    assert {name: pixel_limit.image_dimensions(data) for name, data in encoded.items()} == expected
    assert opened == []
    truncated = encoded["jpeg exif"][:40]  # the frame header not reached: Pillow has the last word, as before
    assert pixel_limit.image_dimensions(truncated) is None and opened == [truncated]


def test_a_full_disk_while_annotations_json_is_written_names_it_under_out(tmp_path, monkeypatch):
    """A write to the open annotations.json that fails with no file named (a full disk) named the
    hidden temporary inside the staging folder, a path gone once the export has cleaned up."""
    import errno

    from augment import coco_export
    from cli_checks import assert_one_line_error, run_cli

    shards = make_shards(tmp_path / "shards", n_composites=6, rows_per_shard=6, size=48).folder
    written = coco_export._EntryWriter.add

    def add(self, entry):
        if self.count == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written(self, entry)

    monkeypatch.setattr(coco_export._EntryWriter, "add", add)
    line = assert_one_line_error(run_cli("export", shards, "--out", tmp_path / "out"), 2,
                                 str(tmp_path / "out" / "annotations.json"), "No space left on device")
    assert ".tmp" not in line and sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_a_jpeg_hiding_a_small_frame_header_behind_ff00_is_held_to_its_real_size(monkeypatch):
    """FF 00 read as a segment's marker made the header walk jump into a comment holding a 16x16 frame
    header: a 200x200 JPEG passed a 0.01-MP limit that Pillow's size (and OpenCV's decode) exceeds."""
    import struct

    import cv2

    from augment.imageio import InputError, decode_image
    from augment.pixel_limit import image_dimensions

    ok, encoded = cv2.imencode(".jpg", np.full((200, 200, 3), 128, np.uint8))
    plain = encoded.tobytes()
    fake_frame = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    comment = b"\xff\xfe" + struct.pack(">H", 2 + len(fake_frame)) + fake_frame
    crafted = plain[:2] + b"\xff\x00\x00\x06" + comment + plain[2:]
    assert image_dimensions(crafted) == (200, 200)
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "0.01")
    with pytest.raises(InputError):
        decode_image(crafted, name="crafted.jpg")
