"""Training pairs and the streaming shard loader."""

from __future__ import annotations

import collections

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from augment.imageio import InputError, decode_image
from shard_factory import make_shards, rewrite_rows
from train.data import PairConfig, ShardPairs, cutout_split, make_loader

SIZE = 96


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), n_cutouts=10, n_composites=24, rows_per_group=3,
                       rows_per_shard=12, size=SIZE, corrupt_rows=(5,))


def _config(**overrides) -> PairConfig:
    values = dict(query_size=48, medium_size=SIZE, negative_fraction=0.0, eval_fraction=0.3, shuffle_buffer=8)
    values.update(overrides)
    return PairConfig(**values)


def _row(dataset: ShardPairs, unit: int, row: int) -> tuple[np.ndarray, list[dict]]:
    path, group = dataset.units[unit]
    table = pq.ParquetFile(path).read_row_group(group, columns=["mask", "objects"])
    ids = decode_image(table.column("mask")[row].as_py()["bytes"], cv2.IMREAD_UNCHANGED)
    return ids, table.column("objects")[row].as_py()


def test_target_is_union_of_all_instances_of_the_query(shards):
    dataset = ShardPairs(shards.folder, _config(categories=("shape0", "shape1")), split="all")
    objects_table = pq.read_table(shards.folder / "objects.parquet", columns=["cutout_id", "category"]).to_pylist()
    category = {row["cutout_id"]: row["category"] for row in objects_table}
    repeated = 0
    samples = list(dataset)
    assert samples and all(bool(s["positive"]) for s in samples)
    for sample in samples:
        ids, objects = _row(dataset, int(sample["unit"]), int(sample["row"]))
        target = sample["target"][0].numpy().astype(bool)
        unions = {cid: np.isin(ids, [o["instance_id"] for o in objects if o["cutout_id"] == cid])
                  for cid in {o["cutout_id"] for o in objects}}
        matches = [cid for cid, union in unions.items() if np.array_equal(union, target)]
        assert matches, "the target is not the union of one cutout's instances"
        repeated += sum(o["cutout_id"] == matches[0] for o in objects) > 1
        # The label head's target: the query's category among the configured ones, -1 when not listed.
        expected_label = {"shape0": 0, "shape1": 1}.get(category[matches[0]], -1)
        assert int(sample["label"]) == expected_label
        assert sample["query"].shape == (3, 48, 48) and sample["medium"].shape == (3, SIZE, SIZE)
        assert sample["query_mask"].max() == 255  # the object's alpha is placed on the query canvas
    assert repeated > 0  # some queries had two instances, and both were in the target


def test_negatives_have_all_zero_targets(shards):
    samples = list(ShardPairs(shards.folder, _config(negative_fraction=1.0), split="all"))
    assert samples
    assert not any(bool(s["positive"]) for s in samples)
    assert all(int(s["target"].sum()) == 0 for s in samples)


def test_holdout_split_is_disjoint_and_positives_respect_it(shards):
    ids = [f"cutout-{i}" for i in range(2000)]
    train = {c for c in ids if cutout_split(c, 0.2) == "train"}
    held_out = {c for c in ids if cutout_split(c, 0.2) == "eval"}
    assert not train & held_out and train | held_out == set(ids)
    assert 0.15 < len(held_out) / len(ids) < 0.25
    for split in ("train", "eval"):
        dataset = ShardPairs(shards.folder, _config(), split=split)
        for sample in dataset:
            ids_map, objects = _row(dataset, int(sample["unit"]), int(sample["row"]))
            target = sample["target"][0].numpy().astype(bool)
            owners = {o["cutout_id"] for o in objects if target[ids_map == o["instance_id"]].any()}
            assert owners and all(cutout_split(c, 0.3) == split for c in owners)


def test_every_row_once_across_two_workers_and_two_ranks(shards):
    seen = []
    for rank in range(2):
        dataset = ShardPairs(shards.folder, _config(), split="all", seed=3, rank=rank, world_size=2)
        dataset.set_epoch(1)
        for batch in make_loader(dataset, batch_size=1, num_workers=2):
            seen.append((int(batch["unit"]), int(batch["row"])))
    expected = [(u, r) for u, (path, group) in enumerate(dataset.units)
                for r in range(pq.ParquetFile(path).metadata.row_group(group).num_rows)]
    corrupt = 1
    assert len(seen) == len(set(seen)) == len(expected) - corrupt
    assert set(seen) <= set(expected)


def test_shuffle_is_seeded_by_seed_and_epoch(shards):
    def order(seed: int, epoch: int) -> list[tuple[int, int]]:
        dataset = ShardPairs(shards.folder, _config(), split="all", seed=seed)
        dataset.set_epoch(epoch)
        return [(int(s["unit"]), int(s["row"])) for s in dataset]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert sorted(order(0, 0)) == sorted(order(0, 1))


def test_resume_continues_the_stream(shards):
    dataset = ShardPairs(shards.folder, _config(negative_fraction=0.3), split="all", seed=1)
    full = list(dataset)
    for cut in (3, 7):  # one resume point on each side of the corrupt row
        dataset.resume(0, {0: int(full[cut - 1]["position"])})
        rest = list(dataset)
        assert len(rest) == len(full) - cut
        for a, b in zip(full[cut:], rest):  # ``corrupt`` counts only rows decoded since the resume
            assert all(torch.equal(a[k], b[k]) for k in a if k != "corrupt")
            assert int(b["corrupt"]) == int(a["corrupt"]) - int(full[cut - 1]["corrupt"])


def test_corrupt_row_is_skipped_and_counted(shards, caplog):
    dataset = ShardPairs(shards.folder, _config(), split="all")
    samples = list(dataset)
    assert len(samples) == 23 and dataset.stats["corrupt"] == 1
    assert any("corrupt" in r.message and shards.corrupt_ids[0] in r.message for r in caplog.records)
    # With workers, each sample carries its worker's running count.
    last = collections.defaultdict(int)
    for batch in make_loader(ShardPairs(shards.folder, _config(), split="all"), batch_size=1, num_workers=2):
        last[int(batch["worker"])] = max(last[int(batch["worker"])], int(batch["corrupt"]))
    assert sum(last.values()) == 1


def test_missing_or_empty_shard_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such shard folder") as error:
        ShardPairs(tmp_path / "nowhere", _config())
    assert str(tmp_path / "nowhere") in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(InputError, match="no manifest.json"):
        ShardPairs(tmp_path, _config())


def test_rows_with_null_pictures_objects_or_boxes_are_skipped_and_counted_not_a_type_error(tmp_path, caplog):
    # A shard another tool wrote (or edited by hand): the schema's columns are nullable. The loader raised
    # TypeError ('NoneType' object is not subscriptable), a traceback out of `synth train` and `synth eval`.
    folder = make_shards(tmp_path, n_cutouts=6, n_composites=7, rows_per_group=3, rows_per_shard=7, size=64).folder
    shard = folder / "train-00000.parquet"
    rows = pq.read_table(shard).to_pylist()
    first = rows[2]["objects"][0]
    rewrite_rows(shard, {0: {"image": None}, 1: {"mask": {"bytes": None, "path": None}},
                         2: {"objects": [{**first, "box": None}]}, 3: {"objects": None},
                         4: {"objects": [{**rows[4]["objects"][0], "box": [0, 0, 10**9, 10**9]}]}})
    dataset = ShardPairs(folder, _config(medium_size=64, query_size=32), split="all")
    samples = list(dataset)
    assert dataset.stats["corrupt"] == 4 and dataset.stats["no_query"] == 1 and len(samples) == 2
    skipped = [r.message for r in caplog.records if "skipping corrupt row" in r.message]
    assert sorted(message.split()[3] for message in skipped) == [rows[i]["id"] for i in (0, 1, 2, 4)]
    assert any("box is not 4 integers" in message for message in skipped)
    assert any("box [0, 0, 1000000000, 1000000000] is inside out or not within the 64x64 image" in m for m in skipped)


def test_segmentation_rows_with_damaged_objects_are_counted_skips_not_a_type_error(tmp_path, caplog):
    # The segmentation dataset reads the same rows: an instance_id of null was ClassMap.target's int(None),
    # a TypeError traceback out of `synth train --task segment`, and -1 was written into lookup[-1].
    from train.segment_config import SegmentConfig, parse_classes
    from train.segment_data import SegmentShards

    folder = make_shards(tmp_path, n_cutouts=4, n_composites=6, size=32).folder
    shard = folder / "train-00000.parquet"
    rows = pq.read_table(shard).to_pylist()
    first = rows[0]["objects"][0]
    rewrite_rows(shard, {0: {"objects": [{**first, "instance_id": None}]}, 1: {"objects": [{**first, "instance_id": -1}]},
                         2: {"objects": [{**first, "box": None}]}})
    classes = parse_classes([{"name": "background", "source_labels": ["null"]}, "shape"])
    config = SegmentConfig(classes=classes, eval_size=(32, 32), short_side=32, crop_size=32, eval_fraction=0.0)
    dataset = SegmentShards(folder, config, split="train", shuffle_buffer=1)
    assert len(list(dataset)) == 3 and dataset.stats["corrupt"] == 3
    skipped = " ".join(r.message for r in caplog.records if "skipping corrupt row" in r.message)
    assert skipped.count("instance_id is not an integer of 0 or more") == 2 and "an object's box is not 4 integers" in skipped


@pytest.mark.parametrize("column", ["image", "mask"])
def test_a_shard_whose_pictures_are_plain_bytes_is_one_line_naming_it(tmp_path, column):
    # Another tool's shard with the picture as a binary column, not the schema's struct of bytes and path:
    # train, eval, show and export raised AttributeError ('bytes' object has no attribute 'get').
    from augment.coco_export import export_coco

    folder = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=3, size=32).folder
    shard = folder / "train-00000.parquet"
    table = pq.read_table(shard)
    plain = table.set_column(table.schema.get_field_index(column), column, table.column(column).combine_chunks().field("bytes"))
    pq.write_table(plain, shard)
    says = f"{shard}: not a composite shard \\(its {column} column is binary, not a struct of bytes and path\\)"
    with pytest.raises(InputError, match=says):
        ShardPairs(folder, _config(medium_size=32, query_size=32), split="all")
    with pytest.raises(InputError, match=says):
        export_coco([folder], tmp_path / "coco")
    assert not (tmp_path / "coco").exists()
