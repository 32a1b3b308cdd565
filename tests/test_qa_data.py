"""QA of the data and training side as a new user meets it: bad inputs (configs that are not text, broken
COCO entries), --out among the inputs, and re-runs that must not take an older run's output for the new
one's. One test per defect found. Unusual photos and masks (EXIF, palettes, subfolders, JPEG masks) are in
test_qa_masks.py."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from augment.imageio import save_image
from augment.mask_files import read_mask
from cli_checks import assert_one_line_error, files_under, run_cli
from segment_factory import (make_noise_backgrounds, make_scene_photos, make_unlabeled, save_untrained_segmenter,
                             tiny_selftune_config, tiny_train_values)
from shard_factory import make_shards
from sources_factory import make_coco, make_label_map
from test_hardening_expand import inputs  # noqa: F401  (the same tiny expansion inputs)


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize("content", [b"sources:\n  min_area: 50  # caf\xe9 (Latin-1)\n",
                                     b"\x7fELF\x02\x01\x01\x00\xd0\xff"])
def test_a_config_that_is_not_utf8_text_is_one_line_in_expand_and_train(inputs, tmp_path, content):
    objects, backgrounds, _ = inputs
    config = tmp_path / "latin1.yaml"
    config.write_bytes(content)
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, str(config), "not UTF-8")
    assert not (tmp_path / "out").exists()
    result = run_cli("train", "--shards", tmp_path / "none", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), "not UTF-8")


def test_a_config_that_is_a_folder_is_named_a_folder_and_a_pipe_is_read(inputs, tmp_path):
    objects, backgrounds, config = inputs
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", objects, "-n", 2)
    assert_one_line_error(result, 2, str(objects), "is a folder")
    fifo = tmp_path / "config.fifo"  # what `--config <(...)` hands over
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(config.read_text()), daemon=True)  # blocks until read
    writer.start()
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", fifo, "-n", 2, "-w", 1)
    writer.join(timeout=10)
    assert result.exit_code == 0, result.output


def test_distortions_given_as_a_list_is_one_line_naming_the_key(inputs, tmp_path):
    objects, backgrounds, _ = inputs
    config = tmp_path / "list.yaml"
    config.write_text("distortions: [affine]\n")
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-n", 2)
    assert_one_line_error(result, 2, str(config), "distortions: expected a mapping")


# ----------------------------------------------------------------- COCO
def _coco_with(source: Path, change) -> Path:
    make_coco(source)
    instances = source / "instances.json"
    coco = json.loads(instances.read_text())
    change(coco)
    instances.write_text(json.dumps(coco))
    return instances


def test_an_image_added_after_a_coco_run_skipped_it_is_cut_out_by_the_rerun(inputs, tmp_path):
    """The cutouts table was reused because only the .json's own size and time were fingerprinted."""
    def add_missing(coco):
        coco["images"].append({"id": 2, "file_name": "later.jpg", "width": 140, "height": 100})
        coco["annotations"].append({"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 0,
                                    "segmentation": [[5, 5, 90, 5, 90, 80, 5, 80]]})

    instances = _coco_with(tmp_path / "coco", add_missing)
    _, backgrounds, config = inputs
    out = tmp_path / "out"
    assert run_cli("expand", instances, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1).exit_code == 0
    assert len(pq.read_table(out / "objects.parquet")) == 2
    later = np.random.default_rng(3).integers(0, 255, (100, 140, 3), np.uint8)
    save_image(tmp_path / "coco" / "images" / "later.jpg", later)
    result = run_cli("expand", instances, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    assert len(pq.read_table(out / "objects.parquet")) == 3
    assert json.loads((out / "manifest.json").read_text())["skipped"] == []


@pytest.mark.parametrize("segmentation, says", [
    (None, "box-only annotation has no mask"),
    ([], "box-only annotation has no mask"),
    ([[10, 10, 60, 60]], "no polygon of 3 points or more"),  # pycocotools would read it as a box
    ([[10, 10, 60, 10, 60]], "odd count of coordinates (5)"),
    ([["a", "b", "c", "d", "e", "f"]], "polygons must be lists of numbers"),
    ("abc", "a list of polygons or an RLE object, not str"),
    ({"counts": [100, 50, 13850], "size": [50, 70]}, "RLE size [50, 70] differs from the image's [100, 140]"),
    ({"counts": [100, 50], "size": [100, 140]}, "covering the image's 14000 pixels"),
    ({"size": [100, 140]}, "needs counts and size"),
])
def test_broken_coco_segmentations_are_skips_that_say_what_is_wrong(inputs, tmp_path, segmentation, says):
    def change(coco):
        if segmentation is None:
            coco["annotations"][0].pop("segmentation")
            coco["annotations"][0]["bbox"] = [10, 10, 50, 50]
        else:
            coco["annotations"][0]["segmentation"] = segmentation

    instances = _coco_with(tmp_path / "coco", change)
    _, backgrounds, config = inputs
    out = tmp_path / "out"
    result = run_cli("expand", instances, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    (skip,) = json.loads((out / "manifest.json").read_text())["skipped"]
    assert skip["reason"].startswith("annotation 1: broken segmentation (") and says in skip["reason"], skip


def test_a_degenerate_polygon_beside_good_ones_is_left_out_not_the_whole_annotation(inputs, tmp_path):
    """A 2-point polygon first made pycocotools read the whole list as boxes, losing the annotation."""
    def change(coco):
        coco["annotations"][0]["segmentation"] = [[0, 0, 5, 5], [10, 10, 60, 10, 60, 60, 10, 60]]

    instances = _coco_with(tmp_path / "coco", change)
    _, backgrounds, config = inputs
    out = tmp_path / "out"
    assert run_cli("expand", instances, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1).exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["skipped"] == []
    assert sorted(pq.read_table(out / "objects.parquet").column("category").to_pylist()) == ["shirt", "shoe"]


# ----------------------------------------------------------------- --out among the inputs
def test_expand_out_that_is_a_source_or_the_backgrounds_folder_is_refused_before_writing(inputs, tmp_path):
    """`synth expand pairs/ -o pairs/`, rerun after a mask was fixed: the source was then read as its
    own objects.parquet (format objects) and the fixed mask never."""
    objects, backgrounds, config = inputs
    before = files_under(tmp_path)
    for out, option in ((objects, "source"), (backgrounds, "--backgrounds")):
        result = run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
        assert_one_line_error(result, 2, str(out), f"--out is also a {option} folder")
    assert files_under(tmp_path) == before


@pytest.fixture()
def segment_checkpoint(tmp_path) -> Path:
    """A segmenter's checkpoint, untrained: what it labels does not matter here."""
    return save_untrained_segmenter(tmp_path / "segment.pt")


def test_extract_rerun_into_a_folder_inside_its_photos_does_not_read_the_earlier_previews(tmp_path, segment_checkpoint):
    """`synth extract photos/ --out photos/auto`, run again: the earlier previews were listed as photos,
    then removed before being read: three bogus 'no such file' skips (or, kept, previews labelled)."""
    photos = make_unlabeled(tmp_path / "photos", count=3)
    out = photos / "auto"
    config = tmp_path / "extract.yaml"
    config.write_text("min_area: 0.001\nmin_confidence: 0.0\nmin_stability: 0.0\npreviews: 3\n")
    for _ in range(2):
        result = run_cli("extract", photos, "--checkpoint", segment_checkpoint, "--out", out, "--config", config,
                         "--device", "cpu")
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "extract.json").read_text())
        assert summary["images"] == 3 and summary["skipped"] == [], summary
        assert len(list((out / "previews").glob("*.jpg"))) == 3


@pytest.mark.parametrize("inside", ["unlabeled", "backgrounds"])
def test_a_selftune_state_inside_its_unlabeled_or_backgrounds_folder_is_refused(tmp_path, inside):
    """Its previews and report.png were sampled as unlabeled photos (or pasted on as backgrounds) in
    the next round: 6 unlabeled photos became 9 after one round."""
    labeled = make_scene_photos(tmp_path / "labeled")
    unlabeled = make_unlabeled(tmp_path / "unlabeled")
    backgrounds = make_noise_backgrounds(tmp_path / "backgrounds")
    config = tmp_path / "selftune.yaml"
    config.write_text(yaml.safe_dump(tiny_selftune_config()))
    state = {"unlabeled": unlabeled, "backgrounds": backgrounds}[inside] / "state"
    before = files_under(tmp_path)
    result = run_cli("selftune", "--state", state, "--labeled", labeled, "--unlabeled", unlabeled,
                     "--backgrounds", backgrounds, "--config", config)
    assert_one_line_error(result, 2, str(state), f"--state lies inside --{inside}")
    assert files_under(tmp_path) == before and not state.exists()


# ----------------------------------------------------------------- nothing usable: say why
def test_a_source_with_nothing_usable_says_why_not_only_how_many_were_skipped(inputs, tmp_path):
    """A label map of another size than its photo: 'no usable objects found (1 inputs skipped)' and no reason."""
    source = make_label_map(tmp_path / "labelled")
    labels = source / "labels" / "0001.png"
    save_image(labels, read_mask(labels)[:60, :50])
    _, backgrounds, config = inputs
    result = run_cli("expand", source, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, "no usable objects found (1 input skipped, e.g.", f"{labels}: mask is 50x60 but "
                          "its image is 100x120")
    result = run_cli("photo-shards", source, "--out", tmp_path / "photos")
    assert_one_line_error(result, 2, "no labelled photos found (1 input skipped, e.g.", "mask is 50x60")
    tiny = tmp_path / "tiny-backgrounds"
    save_image(tiny / "small.png", np.zeros((10, 10, 3), np.uint8))
    result = run_cli("expand", inputs[0], "-b", tiny, "-o", tmp_path / "out", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, "no usable background images (1 file skipped, e.g.", "too small")
    typo = tmp_path / "typo.yaml"  # a pattern no photo matches: nothing skipped, nothing kept (a label name
    # that no source has is refused by name: tests/test_open_defects_data.py)
    typo.write_text("sources: {min_area: 50, include: [jackt]}\ncomposition: {width: 64, height: 64}\n")
    whole = make_label_map(tmp_path / "whole")
    result = run_cli("expand", whole, "-b", backgrounds, "-o", tmp_path / "out", "-c", typo, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, "no usable objects found (0 inputs skipped: sources.include/exclude/limit, "
                          "keep_labels/drop_labels or min_area left none)")


def test_extract_of_unreadable_photos_only_names_one_and_why(tmp_path, segment_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"")
    (photos / "b.png").write_text("notes\n")
    result = run_cli("extract", photos, "--checkpoint", segment_checkpoint, "--out", tmp_path / "auto",
                     "--device", "cpu")
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"2 photos skipped, e.g. {photos / 'a.jpg'}: empty file (0 bytes)" in error


# ----------------------------------------------------------------- readers and the manifest's run
def test_a_shard_of_another_run_copied_over_a_listed_one_is_refused_by_the_readers(inputs, tmp_path):
    """Same name, same row count: show, export and train read it as the folder's own."""
    objects, backgrounds, config = inputs
    first, second = tmp_path / "first", tmp_path / "second"
    for out, seed in ((first, 0), (second, 1)):
        result = run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 4, "-w", 1,
                         "--seed", seed)
        assert result.exit_code == 0, result.output
    shutil.copyfile(second / "train-00000.parquet", first / "train-00000.parquet")
    for args in (["show", first, "--out", tmp_path / "sheet.png"], ["export", first, "--out", tmp_path / "coco"],
                 ["train", "--shards", first, "--out", tmp_path / "run", "--steps", 1]):
        assert_one_line_error(run_cli(*args), 2, f"{first / 'train-00000.parquet'}: written by run",
                              "not the run manifest.json lists")
    assert run_cli("show", second, "--out", tmp_path / "sheet.png").exit_code == 0


# ----------------------------------------------------------------- training runs
def test_a_failed_write_of_a_resumed_runs_config_yaml_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    """config.yaml was written in place: a full disk (or a kill) mid-write left it cut short."""
    shards = tmp_path / "shards"
    make_shards(shards, n_composites=8, size=64)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"pretrained": False, "feature_strides": [8, 16], "scale_pairs": [[1.0, 1.0]], "conversion_width": 4,
                  "conversion_layers": 1}, "query_size": 32, "medium_size": 64, "batch_size": 2, "steps": 1,
        "num_workers": 0, "warmup_steps": 1, "log_every": 1, "eval_every": 0, "shuffle_buffer": 2, "device": "cpu"}))
    run = tmp_path / "run"
    assert run_cli("train", "--shards", shards, "--out", run, "--config", config).exit_code == 0
    written = (run / "config.yaml").read_text()

    def disk_full(self, data, *args, **kwargs):
        with open(self, "wb") as handle:
            handle.write((data.encode() if isinstance(data, str) else data)[:20])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    monkeypatch.setattr(Path, "write_bytes", disk_full)
    result = run_cli("train", "--shards", shards, "--out", run, "--config", config, "--resume", "--steps", 2)
    assert result.exit_code == 2 and "No space left on device" in result.output, result.output
    monkeypatch.undo()
    assert (run / "config.yaml").read_text() == written
    assert sorted(p.name for p in run.iterdir() if p.name != "tb") == [".synth.lock", "checkpoint.pt", "config.yaml"]


def test_a_category_no_class_takes_is_warned_of_by_name_not_silently_left_without_loss(tmp_path):
    """A misspelt source label in segment.classes: the category's pixels carried no loss, unsaid."""
    photos = tmp_path / "photos"
    assert run_cli("photo-shards", make_scene_photos(tmp_path / "labelled"), "--out", photos).exit_code == 0
    values = copy.deepcopy(tiny_train_values(steps=2, checkpoint_every=2))  # its class map is the factory's own
    values["segment"]["classes"][1] = {"name": "round", "source_labels": ["dsic"]}  # "disc" misspelt
    config = tmp_path / "segment.yaml"
    config.write_text(yaml.safe_dump(values))
    result = run_cli("train", "--shards", photos, "--out", tmp_path / "run", "--config", config)
    assert result.exit_code == 0, result.output
    warned = " ".join(result.stderr.split())
    assert "category 'disc' (first in row" in warned and "in no class of segment.classes" in warned, result.stderr
    assert "'box'" not in warned and "'background'" not in warned


def test_a_run_killed_between_the_cutouts_table_and_its_skips_does_not_reuse_an_older_runs_skips(inputs, tmp_path,
                                                                                                  monkeypatch):
    """Run 1 skips a text file; run 2 (the file gone) is killed after writing objects.parquet: run 3 reused the
    new table with run 1's skip list, listing a file that is no longer there."""
    import augment.cutouts as cutouts

    objects, backgrounds, config = inputs
    notes = objects / "notes.txt"
    notes.write_text("not an image\n")
    out = tmp_path / "out"
    args = ("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert run_cli(*args).exit_code == 0
    notes.unlink()
    written = cutouts.write_objects_table

    def killed_after(*a, **k):
        written(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(cutouts, "write_objects_table", killed_after)
    assert run_cli(*args).exit_code == 130
    monkeypatch.undo()
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["skipped"] == []


_OBJECTS_MEMORY = """
import json
import sys
from pathlib import Path
import numpy as np
import pyarrow as pa
from augment.config import SourceConfig
from augment.cutouts import load_cutouts, write_objects_table
from augment.sources import read_source

path, peaks = sys.argv[1], {}
rng = np.random.default_rng(0)
rows = [{"cutout_id": f"{i:016x}", "category": "shape", "source": f"s{i}.png", "box": [0, 0, 100, 100],
         "image": {"bytes": rng.bytes(30000), "path": None}, "superpixels": {"bytes": rng.bytes(2000), "path": None},
         "width": 100, "height": 100, "area": 5000, "provenance": None, "source_size": [640, 480]} for i in range(2000)]
write_objects_table(rows, path, "fp")
del rows
peaks["write"] = pa.default_memory_pool().max_memory()  # Arrow's peak in this process (the rows' bytes are Python's)
cutouts = load_cutouts(path)
assert [c.cutout_id for c in cutouts] == [f"{i:016x}" for i in range(2000)] and len(cutouts[-1].image_png) == 30000
del cutouts
peaks["load"] = pa.default_memory_pool().max_memory()
# expand reading the table as a source (sources.format objects): bytes no PNG, all skips
items = list(read_source(Path(path).parent, SourceConfig(format="objects", exclude=["s1999"])))
assert len(items) == 1999 and items[-1].path.endswith(":00000000000007ce"), (len(items), items[-1])
peaks["source"] = pa.default_memory_pool().max_memory()
print(json.dumps(peaks))
"""


def test_the_objects_table_is_written_and_loaded_a_row_group_at_a_time(tmp_path):
    """write_objects_table made every row one Arrow table (each cutout's PNGs held twice while it was
    written: peak RSS 229 MB above the rows for 3,000 cutouts of 32 kB, now 106 MB); load_cutouts read the
    whole table and made it rows (peak 409 MB above its start for the same 96 MB of PNGs, now 181 MB), as did
    expand reading a table as a source (441 -> 226 MB for 2,000 cutouts of 35 kB). All go a row group at a
    time (Arrow's peak: 140 -> 31 MB, 240 -> 40 MB, whatever the rows; what is read checked); the file's
    bytes are those pq.write_table of the whole table gave."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from augment.cutouts import INPUTS_HASH_KEY, write_objects_table
    from augment.schema import OBJECTS_SCHEMA

    path, payload = tmp_path / "objects.parquet", 2000 * 32_000
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # One process writes, loads and reads the table as a source in turn (a process each cost two more
    # interpreter starts): Arrow's peak so far after each, so the largest is the largest of the three.
    peaks = json.loads(subprocess.run([sys.executable, "-c", _OBJECTS_MEMORY, str(path)], check=True,
                                      capture_output=True, text=True, env=env).stdout)
    assert max(peaks.values()) < 0.8 * payload, peaks  # were 1.5, 2.5 and 1.0 times it
    assert pq.ParquetFile(path).num_row_groups == 8
    rng = np.random.default_rng(0)
    for count in (0, 256, 600):  # the bytes of the whole table written at once, empty, one group, a part group
        rows = [{"cutout_id": f"{i:016x}", "category": "shape", "source": f"s{i}.png", "box": [0, 0, 9, 9],
                 "image": {"bytes": rng.bytes(300), "path": f"{i}.png"}, "superpixels": {"bytes": rng.bytes(9), "path": None},
                 "width": 9, "height": 9, "area": 50, "provenance": {"model_id": "m"} if i % 2 else None,
                 "source_size": [640, 480] if i % 3 else None} for i in range(count)]
        write_objects_table(rows, tmp_path / "groups.parquet", "fp")
        pq.write_table(pa.Table.from_pylist(rows, schema=OBJECTS_SCHEMA.with_metadata(
            {**OBJECTS_SCHEMA.metadata, INPUTS_HASH_KEY: b"fp"})), tmp_path / "whole.parquet", compression="zstd",
            row_group_size=256)
        assert (tmp_path / "groups.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
