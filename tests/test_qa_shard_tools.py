"""QA leftovers of stop 50: export's footer reads, a labelled photo's masks cut one at a time, a Ray
worker's own cutout cache limit, and show/export/photo-shards as a demanding user runs them."""

from __future__ import annotations

import collections

import pyarrow.parquet as pq
import pytest

from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards
from sources_factory import make_coco, make_label_map, make_mask_pairs


def test_export_reads_each_shards_footer_twice_not_three_times(tmp_path, monkeypatch):
    """synth export opened every shard three times (checked, its run, its rows), parsing its footer each
    time: 12.8 MB and 0.15 s a 100,000-row shard (held open, 62 MB, so not kept from the check)."""
    from augment.coco_export import export_coco

    made = make_shards(tmp_path / "s", n_composites=8, rows_per_shard=4, size=32)
    opened: collections.Counter[str] = collections.Counter()
    parquet_file = pq.ParquetFile

    class Counted(parquet_file):
        def __init__(self, source, *args, **kwargs):
            opened[str(source)] += 1
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", Counted)
    monkeypatch.setattr(pq.core, "ParquetFile", Counted)  # pq.read_metadata and read_schema open it from there
    counts = export_coco([made.folder], tmp_path / "out")
    assert counts["images"] == 8 and counts["skipped"] == 0
    assert sorted(opened.values()) == [2, 2], opened  # each checked, then its rows read (was 3 each)


def _many_object_sources(root, objects: int = 30, side: int = 600):
    """A label map and a COCO file of one ``side``-px photo with ``objects`` overlapping objects each."""
    import json

    import cv2
    import numpy as np
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (side, side, 3), np.uint8)
    label_map = root / "label_map"
    (label_map / "labels").mkdir(parents=True)
    (label_map / "photos").mkdir()
    (label_map / "label_list.json").write_text(json.dumps(["null"] + [f"class{i}" for i in range(1, objects + 1)]))
    labels = (np.arange(side)[None, :] * objects // side + 1).repeat(side, 0).astype(np.uint8)
    labels[: side // 10] = 0
    cv2.imwrite(str(label_map / "labels" / "a.png"), labels)
    cv2.imwrite(str(label_map / "photos" / "a.jpg"), photo)
    coco = root / "coco"
    (coco / "images").mkdir(parents=True)
    cv2.imwrite(str(coco / "images" / "a.jpg"), photo)
    annotations = []
    for i in range(objects):
        mask = np.zeros((side, side), np.uint8)
        mask[side // 10: side - i, i * 7: i * 7 + side // 2] = 1  # overlapping, of several sizes
        rle = mask_utils.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        annotations.append({"id": i + 1, "image_id": 1, "category_id": 1 + i % 3, "segmentation": rle, "iscrowd": 0})
    (coco / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": side, "height": side}],
        "categories": [{"id": k, "name": f"kind{k}"} for k in (1, 2, 3)], "annotations": annotations}))
    return label_map, coco, labels


def test_a_labelled_photos_object_masks_are_made_one_at_a_time_and_the_same(tmp_path):
    """read_labelled_photos (calibrate --photos, search's photo pairs, photo training) held every object's
    photo-sized mask at once: 30 objects of a 600-px photo 10.8 MB (50 of a 12-MP photo 600 MB). The masks
    are made as taken (from the label map, or a cropped, bit-packed copy), the same, in the same order."""
    import tracemalloc

    import numpy as np

    from augment.config import SourceConfig
    from augment.photo_objects import LabelledPhoto, read_labelled_photos
    from augment.photo_pairs import PhotoIndex
    from augment.sources import PHOTO_OBJECTS

    label_map, coco, labels = _many_object_sources(tmp_path)
    config = SourceConfig(min_area=50)
    expected = {label_map: [(f"class{v}", labels == v) for v in range(1, 31)],
                coco: [o for o in next(PHOTO_OBJECTS["coco"](coco, config))[2]]}
    for source, wanted in expected.items():
        one_mask = wanted[0][1].nbytes
        tracemalloc.start()
        try:
            photos = [p for p in read_labelled_photos(source, config) if isinstance(p, LabelledPhoto)]
            held = tracemalloc.get_traced_memory()[0]
            assert len(photos) == 1 and len(photos[0].objects) == 30
            del photos
            tracemalloc.reset_peak()
            index = PhotoIndex.from_sources([source], config)
            index_peak = tracemalloc.get_traced_memory()[1]
            photos = [p for p in read_labelled_photos(source, config) if isinstance(p, LabelledPhoto)]
        finally:
            tracemalloc.stop()
        assert held < 8 * one_mask, (source.name, held, one_mask)  # the photo and its labels, not 30 masks
        assert index_peak < 12 * one_mask, (source.name, index_peak, one_mask)  # (was 36: the 30 masks)
        got = list(photos[0].objects)
        assert [c for c, _ in got] == [c for c, _ in wanted]
        assert all(m.dtype == bool and m.shape == w.shape and (m == w).all() for (_, m), (_, w) in zip(got, wanted))
        assert index.records[0].categories == [c for c, _ in wanted]
        assert index.records[0].area_fractions == [float(w.sum()) / w.size for _, w in wanted]


def test_a_shipped_cutout_banks_cache_limit_is_the_receiving_processs_own(tmp_path, monkeypatch):
    """A Ray job's cutouts carried the driver's CUTOUT_CACHE_BYTES (its memory and CPUs) to every worker:
    a 256-GB, 16-CPU driver let each process of an 8-GB, 2-CPU node keep 3.8 GB (its own: 683 MB), an 8-GB,
    4-CPU laptop held a 64-GB, 16-CPU node's to 512 MB (its own: 960 MB). The worker asks its own (augment.cutouts.CUTOUT_CACHE_BYTES, computed where it is
    imported); a cache_bytes the caller gave travels as it is."""
    import pickle

    import augment.cutouts as cutouts_module
    from test_cutout_bank import objects_table

    path = objects_table(tmp_path / "objects.parquet", 3)
    monkeypatch.setattr(cutouts_module, "CUTOUT_CACHE_BYTES", 777 << 20)  # the driver's machine
    default, given = cutouts_module.load_cutouts(path), cutouts_module.load_cutouts(path, cache_bytes=5 << 20)
    assert default[0].cache.limit == 777 << 20 and given[0].cache.limit == 5 << 20
    shipped_default, shipped_given = pickle.dumps(default), pickle.dumps(given)
    monkeypatch.setattr(cutouts_module, "CUTOUT_CACHE_BYTES", 3 << 30)  # the worker's machine
    assert pickle.loads(shipped_default)[0].cache.limit == 3 << 30
    assert pickle.loads(shipped_given)[0].cache.limit == 5 << 20


@pytest.mark.parametrize("names, said", [
    ("5", "expected a JSON list of label names, not 5"),  # a traceback: 'int' object is not iterable
    ("null", "expected a JSON list of label names, not null"),
    ('"null,jacket,skirt"', 'not "null,jacket,skirt"'),  # split into names 'n', 'u', 'l', ...
    ('["null", ["jacket"], "skirt"]', 'the name of value 1 is ["jacket"], not text'),  # "['jacket']"
    ('["null", null, "skirt"]', "the name of value 1 is null, not text"),  # 'None'
    ('{"0": "null", "one": "jacket"}', '"one" is no mask value'),
])
def test_a_label_list_that_names_no_labels_is_one_line_naming_it(tmp_path, names, said):
    source = make_label_map(tmp_path / "src")
    (source / "label_list.json").write_text(names)
    result = run_cli("photo-shards", source, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, f"{source / 'label_list.json'}: ", said)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("names, said", [
    ("[1, 2]", "expected a JSON object mapping mask values to category names, not [1, 2]"),  # a traceback
    ('{"1": "cup", "2": null}', "the name of value 2 is null, not text"),  # named 'None'
])
def test_a_categories_file_that_names_no_categories_is_one_line_naming_it(tmp_path, names, said):
    source = make_mask_pairs(tmp_path / "src")
    (source / "categories.json").write_text(names)
    result = run_cli("photo-shards", source, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, f"{source / 'categories.json'}: ", said)


@pytest.mark.parametrize("name", [None, ["shirt"], {"en": "shirt"}])
def test_a_coco_category_whose_name_is_not_text_is_a_counted_skip_not_a_category_named_after_it(tmp_path, name):
    """A COCO category named null (or a list) was the category 'None' (or "['shirt']"): in shards, an
    export, a trained segmenter's classes. Its entry is the counted skip a broken one is, and so are its
    annotations (their category is not in the file's categories)."""
    import json

    from augment.coco_source import load_coco_index
    from augment.config import SourceConfig
    from augment.sources import Skip, read_source

    source = make_coco(tmp_path / "coco")
    coco = json.loads((source / "instances.json").read_text())
    coco["categories"][0]["name"] = name
    (source / "instances.json").write_text(json.dumps(coco))
    index = load_coco_index(source)
    assert index.categories == {2: "shoe"}
    assert [p.reason for p in index.problems] == ["category entry #0 (id 1) has a name of "
                                                 f"{type(name).__name__ if name is not None else 'null'}, not text"]
    items = list(read_source(source, SourceConfig()))
    assert sorted({item.category for item in items if not isinstance(item, Skip)}) == ["shoe"]


def test_photo_shards_and_its_errors_count_one_skipped_input_in_the_singular(tmp_path):
    """'wrote 2 labelled photos to ... (1 shard, 1 inputs skipped)', 'no labelled photos found (1 inputs
    skipped, e.g. ...)': the summaries said one in the singular already, bar these."""
    source = make_mask_pairs(tmp_path / "src")
    (source / "masks" / "a.png").unlink()  # a.jpg: no mask, one skip
    result = run_cli("photo-shards", source, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "(1 shard, 1 input skipped)" in " ".join(result.output.split()), result.output
    (source / "masks" / "b.png").write_bytes(b"")  # b.png too: nothing left, two skips
    assert_one_line_error(run_cli("photo-shards", source, "-o", tmp_path / "out2"), 2, "(2 inputs skipped, e.g.")
    (source / "images" / "a.jpg").unlink()  # b.png's empty mask alone
    assert_one_line_error(run_cli("photo-shards", source, "-o", tmp_path / "out2"), 2, "(1 input skipped, e.g.")


@pytest.mark.parametrize("column, nulled, said", [
    ("image", lambda row: row.update(image=None), ":composite-00000: empty file (0 bytes), not an image"),
    ("image", lambda row: row["image"].update(bytes=None), ":composite-00000: empty file (0 bytes), not an image"),
    ("mask", lambda row: row.update(mask=None), ":composite-00000 mask: empty file (0 bytes), not an image"),
])
def test_show_of_a_row_whose_picture_is_null_is_one_line_naming_the_row(tmp_path, column, nulled, said):
    """A shard another tool wrote with a null image or mask: synth show was a TypeError traceback
    ('NoneType' object is not subscriptable), where export skips the row (augment.schema.stored_bytes)."""
    import pyarrow as pa

    made = make_shards(tmp_path / "s", n_composites=1, rows_per_shard=1, size=32)
    shard = next(made.folder.glob("*.parquet"))
    rows = pq.read_table(shard).to_pylist()
    nulled(rows[0])
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(shard)), tmp_path / "nulls.parquet")
    result = run_cli("show", tmp_path / "nulls.parquet", "-o", tmp_path / "sheet.png", "--rows", "1", "--columns", "1")
    assert_one_line_error(result, 2, f"{tmp_path / 'nulls.parquet'}{said}")
    assert not (tmp_path / "sheet.png").exists()
    exported = run_cli("export", tmp_path / "nulls.parquet", "-o", tmp_path / "coco")
    assert exported.exit_code == 0 and f"1 × {column} unreadable" in exported.output, exported.output


def test_a_writer_stopped_by_an_export_reading_its_folder_is_not_told_a_train_run_reads_it(tmp_path):
    """photo-shards into the folder `synth export` was reading said 'a `synth train`, `eval` or
    `calibrate` run is reading the shards here': the user looked for a training run that was not there."""
    from augment.locking import BUSY_EXIT_CODE
    from train.shard_set import reading_shards

    source = make_label_map(tmp_path / "src")
    assert run_cli("photo-shards", source, "-o", tmp_path / "out").exit_code == 0
    with reading_shards([tmp_path / "out"], what="synth export", create_locks=False):
        result = run_cli("photo-shards", source, "-o", tmp_path / "out", "--short-side", "64")
    said = assert_one_line_error(result, BUSY_EXIT_CODE, f"{tmp_path / 'out'}: ", "`export`", "is reading the shards here")
    assert "`synth train`, `eval` or `calibrate` run" not in said


def test_a_fifo_named_as_an_image_in_a_source_is_said_to_be_left_out(tmp_path, caplog):
    """A FIFO (or socket, device) among a source's files was left out without a word, even under -v, where
    a broken link is a warning: 'labels/0002.png' made by mkfifo gave no row and no line saying why."""
    import logging
    import os

    from augment.imageio import list_images

    source = make_label_map(tmp_path / "src")
    os.mkfifo(source / "labels" / "0002.png")
    with caplog.at_level(logging.WARNING, logger="augment.imageio"):
        images, others = list_images(source / "labels")
    assert [p.name for p in images] == ["0001.png"] and others == []
    assert any("1 FIFO(s), socket(s) or device(s), not files, left out (0002.png)" in r.getMessage() for r in caplog.records)


def test_export_into_the_working_folder_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """`synth export shards -o .` staged the export inside '.', then could not rename '.' aside: an OSError
    traceback (Device or resource busy). An export replaces its folder whole, so the working folder (or
    one holding it) is refused; a folder named inside it is written as ever."""
    made = make_shards(tmp_path / "s", n_composites=2, rows_per_shard=2, size=32)
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here / "sub")
    for out in (".", "x/.."):
        assert_one_line_error(run_cli("export", made.folder, "-o", out), 2, "--out is the working folder or holds it")
    (tmp_path / "link").symlink_to(here)  # the working folder named through a link (-o "$PWD" where /tmp is one)
    assert_one_line_error(run_cli("export", made.folder, "-o", tmp_path / "link" / "sub"), 2,
                          "--out is the working folder or holds it")
    (tmp_path / "link").unlink()
    assert_one_line_error(run_cli("export", made.folder, "-o", ".."), 2, "exists and holds other files")
    assert sorted(p.name for p in here.rglob("*")) == ["sub"]  # nothing staged, nothing left
    assert run_cli("export", made.folder, "-o", "coco").exit_code == 0 and (here / "sub" / "coco" / "annotations.json").is_file()
