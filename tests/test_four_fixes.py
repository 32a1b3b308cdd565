"""Four defects found by QA: an s3:// source's cutouts recorded their local cache mirror as their
source; `show`/`export` called a folder that an expand is writing "no manifest.json" (exit 2)
instead of busy (exit 3); `--checkpoint RUN_FOLDER` was "no such checkpoint"; `synth extract` gave
a/x.jpg and b/x.jpg one pseudo-label row id, so `export` skipped one. A real S3-compatible server
on loopback (moto's server mode, tests/object_store.py) for the object-store cases."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from augment.config import ExpandConfig
from augment.expand import run_expand
from augment.imageio import InputError, save_image
from cli_checks import assert_one_line_error, run_cli
from lock_checks import held_elsewhere
from object_store import cache, s3_server  # noqa: F401 (fixtures; cache: a private SYNTH_CACHE_DIR, autouse)
from shard_factory import make_shards
from sources_factory import make_backgrounds, make_rgba_source

BUSY_EXIT_CODE = 3
CONFIG = {"num": 4, "seed": 3, "sources": {"min_area": 50}, "composition": {"width": 64, "height": 64},
          "output": {"shard_rows": 4, "row_group_rows": 4}}


# ----------------------------------------------------------------- 1: provenance of s3:// sources
def _sources_column(out: Path) -> list[str]:
    return pq.read_table(out / "objects.parquet", columns=["source"]).column("source").to_pylist()


def test_cutouts_of_an_s3_source_name_its_objects_not_the_local_mirror(s3_server, tmp_path, cache):
    """The objects table recorded `<cache>/sources/<hash>/objects/...png` as each cutout's source."""
    pytest.importorskip("boto3")
    objects, backgrounds = make_rgba_source(tmp_path / "objects", 3), make_backgrounds(tmp_path / "backgrounds")
    source = s3_server.upload_folder(objects, "four/objects")
    config = ExpandConfig.from_dict(CONFIG)
    remote = run_expand([source], backgrounds, tmp_path / "remote", config, workers=1)
    named = _sources_column(tmp_path / "remote")
    assert named and all(name.startswith(f"{source}/") and name.endswith(".png") for name in named), named
    assert not any(str(cache) in name for name in named)
    keys = {f"s3://{s3_server.bucket}/{key}" for key in s3_server.keys("four/objects/")}
    assert set(named) <= keys
    # A local source still names its local files, and the composites are the same bytes either way.
    local = run_expand([objects], backgrounds, tmp_path / "local", config, workers=1)
    assert sorted(_sources_column(tmp_path / "local")) == sorted(
        str(objects) + name[len(source):] for name in named)
    for shard in local.manifest["shards"]:
        assert (tmp_path / "local" / shard["name"]).read_bytes() == (tmp_path / "remote" / shard["name"]).read_bytes()
    assert remote.manifest["sources"] == [source]


# ----------------------------------------------------------------- 2: show/export of shards being written
def test_show_and_export_of_a_local_folder_being_written_are_busy_not_missing_a_manifest(tmp_path):
    folder = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder
    (Path(folder) / "manifest.json").unlink()  # as while an expand writes: its manifest comes last
    with held_elsewhere("folder_lock", Path(folder), "synth expand") as holder:
        busy = f"{folder}: synth expand (pid {holder.pid}"
        shown = run_cli("show", folder, "-o", tmp_path / "sheet.png", "--rows", 1, "--columns", 1, "--tile", 32)
        assert_one_line_error(shown, BUSY_EXIT_CODE, busy, "is writing these shards")
        exported = run_cli("export", folder, "-o", tmp_path / "coco")
        assert_one_line_error(exported, BUSY_EXIT_CODE, busy, "is writing these shards")
    assert not (tmp_path / "sheet.png").exists()
    # With no writer, a folder without its manifest is still the user's error (exit 2).
    shown = run_cli("show", folder, "-o", tmp_path / "sheet.png", "--rows", 1, "--columns", 1, "--tile", 32)
    assert_one_line_error(shown, 2, "no manifest.json")


def test_show_and_export_of_an_s3_prefix_being_written_are_busy(s3_server, tmp_path):
    pytest.importorskip("boto3")
    from augment.object_lock import ObjectStoreLock
    from augment.storage import Location

    folder = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder
    (Path(folder) / "manifest.json").unlink()
    prefix = s3_server.upload_folder(Path(folder), "four/writing")
    writer = ObjectStoreLock(Location(prefix), "synth expand")
    writer.acquire()
    try:
        busy = f"{prefix}: synth expand (pid {os.getpid()} on {socket.gethostname()}) is writing these shards"
        shown = run_cli("show", prefix, "-o", tmp_path / "sheet.png", "--rows", 1, "--columns", 1, "--tile", 32)
        assert_one_line_error(shown, BUSY_EXIT_CODE, busy)
        exported = run_cli("export", prefix, "-o", tmp_path / "coco")
        assert_one_line_error(exported, BUSY_EXIT_CODE, busy)
        assert not [key for key in s3_server.keys("four/writing/") if "readers" in key]  # leases removed
    finally:
        writer.release()


# ----------------------------------------------------------------- 3: --checkpoint RUN_FOLDER
def test_a_run_folder_is_taken_as_its_checkpoint_and_one_without_is_one_line(tmp_path):
    from segment_factory import save_untrained_segmenter
    from train.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from pipelines.fusion import fusion_path

    run = tmp_path / "runs" / "seg"
    run.mkdir(parents=True)
    save_untrained_segmenter(run / CHECKPOINT_FILE)
    assert load_checkpoint(run)["step"] == 0
    assert fusion_path(run) == run / f"{CHECKPOINT_FILE}.fusion.json"
    image = tmp_path / "photos" / "photo.png"
    image.parent.mkdir()
    save_image(image, np.random.default_rng(6).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    segmented = run_cli("segment", image, "--checkpoint", run, "--out", tmp_path / "seg", "--device", "cpu")
    assert segmented.exit_code == 0, segmented.output
    assert (tmp_path / "seg" / "photo.png").is_file()

    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="is a folder with no checkpoint.pt; give the checkpoint file"):
        load_checkpoint(empty)
    refused = run_cli("segment", image, "--checkpoint", empty, "--out", tmp_path / "seg2", "--device", "cpu")
    assert_one_line_error(refused, 2, f"{empty}: is a folder with no checkpoint.pt; give the checkpoint file")
    assert not (tmp_path / "seg2").exists()
    missing = run_cli("segment", image, "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "seg3",
                      "--device", "cpu")
    assert_one_line_error(missing, 2, "no such checkpoint")


# ----------------------------------------------------------------- 4: extract's pseudo-label row ids
def _pseudo_ids(out: Path) -> list[str]:
    return [row for shard in sorted(out.glob("pseudo-*.parquet"))
            for row in pq.read_table(shard, columns=["id"]).column("id").to_pylist()]


def test_extract_gives_photos_of_one_name_in_two_folders_distinct_row_ids(tmp_path):
    from pipelines.extract import ExtractConfig, run_extract
    from pipelines.segmenter import Segmenter
    from segment_factory import save_untrained_segmenter

    rng = np.random.default_rng(9)
    photos = []
    for folder in ("a", "b"):
        path = tmp_path / "photos" / folder / "x.png"
        path.parent.mkdir(parents=True)
        save_image(path, rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        photos.append(path)
    segmenter = Segmenter(save_untrained_segmenter(tmp_path / "segment.pt"), "cpu")
    config = ExtractConfig(min_confidence=0.0, min_stability=0.0)
    for out in (tmp_path / "auto", tmp_path / "again"):
        run_extract(segmenter, photos, out, config)
        assert _pseudo_ids(out) == ["x", "x-2"]  # unique, and the same run to run
    exported = run_cli("export", tmp_path / "auto", "-o", tmp_path / "coco")
    assert exported.exit_code == 0, exported.output
    assert "skipped" not in exported.output
    images = json.loads((tmp_path / "coco" / "annotations.json").read_text())["images"]
    assert len(images) == 2
