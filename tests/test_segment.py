"""Segmentation: class maps, labelled-photo shards, the dataset mix, training, `synth segment` and `synth extract`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from typer.testing import CliRunner

from augment.config import ExpandConfig, SourceConfig
from augment.expand import run_expand
from augment.imageio import InputError, decode_image, read_image
from augment.photo_shards import read_labelled_photos, write_photo_shards
from pipelines.cli import app
from pipelines.extract import ExtractConfig, run_extract
from pipelines.segmenter import Segmenter
from segment_factory import CLASSES, make_noise_backgrounds, make_scene_photos, make_unlabeled, tiny_train_values
from sources_factory import make_coco, make_label_map, make_rgba_source
from train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from train.config import TrainConfig
from train.loop import train
from train.segment_config import IGNORE_INDEX, ClassMap, parse_classes, read_classes, write_classes
from train.segment_data import SegmentShards, mix_repeats
from train.tasks.segment import confusion_metrics, mean_iou

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Labelled photos as shards, composites of their cutouts, unlabeled photos and a trained checkpoint."""
    root = tmp_path_factory.mktemp("segment")
    labeled = make_scene_photos(root / "labeled", count=8)
    photos = root / "photos"
    write_photo_shards([labeled], photos, SourceConfig(), short_side=64)
    composites = root / "composites"
    expand = ExpandConfig.from_dict({"num": 6, "composition": {"width": 64, "height": 64, "max_objects": 2},
                                     "sources": {"min_area": 20, "superpixel_max_side": 32}, "output": {"row_group_rows": 3}})
    run_expand([labeled], make_noise_backgrounds(root / "backgrounds"), composites, expand)
    run = root / "run"  # 20 steps from the pretrained backbone: enough to find some discs and boxes
    trained = tiny_train_values(steps=20, model={"pretrained": True, "decoder_channels": 8, "dropout": 0.0})
    train(TrainConfig(**trained), [photos, composites], run, show_progress=False)
    return {"root": root, "labeled": labeled, "photos": photos, "composites": composites,
            "checkpoint": run / CHECKPOINT_FILE, "unlabeled": make_unlabeled(root / "unlabeled", count=4)}


def test_class_map_names_source_labels_background_and_ignore():
    classes = parse_classes([{"name": "background", "source_labels": ["null"]}, {"name": "tops", "source_labels": ["shirt", "blouse"]},
                             "shoes"])
    class_map = ClassMap(classes)
    assert [class_map.index(c) for c in ("null", "shirt", "blouse", "tops", "shoes", "background", "__ignore__", "hat")] \
        == [0, 1, 1, 1, 2, 0, IGNORE_INDEX, IGNORE_INDEX]
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    objects = [{"instance_id": 1, "category": "shirt"}, {"instance_id": 2, "category": "hat"}]  # id 3: no object
    np.testing.assert_array_equal(class_map.target(ids, objects, background=IGNORE_INDEX),
                                  [[IGNORE_INDEX, 1], [IGNORE_INDEX, IGNORE_INDEX]])
    assert class_map.target(ids, objects, background=0)[0, 0] == 0
    for bad, message in (([{"name": "a"}], "at least 2"), (["a", "a"], "twice"),
                         ([{"name": "a", "source_labels": ["x"]}, {"name": "b", "source_labels": ["x"]}], "both"),
                         ([{"name": "a", "colour": 1}, "b"], "unknown key")):
        with pytest.raises(InputError, match=message):
            parse_classes(bad)


def test_classes_json_round_trip(tmp_path):
    classes = parse_classes(CLASSES)
    write_classes(tmp_path / "classes.json", classes)
    assert read_classes(tmp_path / "classes.json") == classes
    assert json.loads((tmp_path / "classes.json").read_text())[1] == {"name": "disc", "source_labels": ["disc"]}
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(InputError, match="bad.json: not valid JSON"):
        read_classes(tmp_path / "bad.json")


@pytest.mark.parametrize("maker, expected", [
    (make_label_map, {"background", "jacket", "skirt", "hat"}),
    (make_coco, {"background", "shirt", "shoe"}),
])
def test_photo_shards_name_every_pixel(tmp_path, maker, expected):
    source = maker(tmp_path / "source")
    out = tmp_path / "shards"
    manifest = write_photo_shards([source], out, SourceConfig(), short_side=1000)
    row = pq.read_table(out / manifest["shards"][0]["name"]).to_pylist()[0]
    ids = decode_image(row["mask"]["bytes"], cv2.IMREAD_UNCHANGED)
    assert {o["category"] for o in row["objects"]} == expected
    assert ids.min() >= 1  # no pixel keeps id 0: a photo's background is an object too
    if maker is make_label_map:  # label value v is id v + 1, named by label_list.json
        labels = cv2.imread(str(source / "labels" / "0001.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, labels + 1)
    # Reused when nothing changed; rgba cutouts are not photos.
    assert write_photo_shards([source], out, SourceConfig(), short_side=1000) == manifest
    with pytest.raises(InputError, match="cutouts, not labelled photos"):
        list(read_labelled_photos(make_rgba_source(tmp_path / "rgba"), SourceConfig()))


def test_labelled_source_without_masks_is_a_one_line_error(tmp_path):
    make_unlabeled(tmp_path / "src" / "images", count=2)
    (tmp_path / "src" / "masks").mkdir()
    result = CliRunner().invoke(app, ["photo-shards", str(tmp_path / "src"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no labelled photos found" in result.output and "Traceback" not in result.output


def test_mix_repeats_kinds_to_their_shares():
    assert mix_repeats({"photos": 100, "composites": 1000}, {"photos": 0.5, "composites": 0.5}) == {"photos": 10, "composites": 1}
    assert mix_repeats({"photos": 100, "composites": 1000, "pseudo": 500},
                       {"photos": 1, "composites": 1, "pseudo": 1}) == {"photos": 10, "composites": 1, "pseudo": 2}
    assert mix_repeats({"photos": 100, "composites": 1000}, {"photos": 1.0}) == {"photos": 1, "composites": 0}
    with pytest.raises(InputError, match="no share"):
        mix_repeats({"composites": 10}, {"photos": 1.0})


def test_dataset_mixes_kinds_and_augments_only_training_samples(data):
    config = TrainConfig(**tiny_train_values()).segment_config()
    train_set = SegmentShards([data["photos"], data["composites"]], config, split="train", shuffle_buffer=4)
    assert train_set.rows_by_kind == {"photos": 8, "composites": 6}
    samples = list(train_set)
    assert len(samples) == 8 + 6 * 1 and all(s["image"].shape == (3, 48, 48) for s in samples)
    targets = torch.stack([s["target"] for s in samples])
    assert set(targets.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX} and (targets == 1).any() and (targets == 2).any()
    eval_set = SegmentShards([data["photos"]], config, split="eval")
    first = next(iter(eval_set))
    assert first["image"].shape == (3, 48, 48) and (first["target"] != IGNORE_INDEX).all()  # photos: every pixel named


def test_confusion_metrics_and_mean_iou():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, :] = 5  # predicts class 1 on the top row, class 0 below
    target = torch.tensor([[[1, 0], [0, IGNORE_INDEX]]], dtype=torch.uint8)
    metrics = confusion_metrics(logits, target, ["bg", "a", "b"])
    means = {k: float(s / c) if c else float("nan") for k, (s, c) in metrics.items()}
    assert means["iou/a"] == pytest.approx(0.5) and means["iou/bg"] == pytest.approx(0.5)
    assert np.isnan(means["iou/b"]) and mean_iou(means) == pytest.approx(0.5)
    assert means["pixel_accuracy"] == pytest.approx(2 / 3)


def test_segment_training_resumes_exactly(data, tmp_path):
    shards = [data["photos"], data["composites"]]
    full = train(TrainConfig(**tiny_train_values(steps=4, decay_steps=4)), shards, tmp_path / "full", show_progress=False)
    train(TrainConfig(**tiny_train_values(steps=2, decay_steps=4)), shards, tmp_path / "split", show_progress=False)
    second = train(TrainConfig(**tiny_train_values(steps=4, decay_steps=4)), shards, tmp_path / "split", resume=True,
                   show_progress=False)
    assert np.isfinite(full.losses).all()
    np.testing.assert_array_equal(second.losses, full.losses[2:])
    assert "miou" in second.metrics and "iou/disc" in second.metrics


def test_init_checkpoint_starts_from_its_weights_and_refuses_another_task(data, tmp_path):
    """init_checkpoint (fine-tuning): the run starts from the trained weights (its first loss is the
    trained model's, far under a fresh decoder's), with a fresh optimizer and step; a checkpoint of
    another task or a missing file is one line naming it."""
    shards = [data["photos"]]
    values = tiny_train_values(steps=2, model={"pretrained": True, "decoder_channels": 8, "dropout": 0.0})
    fresh = train(TrainConfig(**values), shards, tmp_path / "fresh", show_progress=False)
    tuned = train(TrainConfig(**values, init_checkpoint=str(data["checkpoint"])), shards, tmp_path / "tuned",
                  show_progress=False)
    assert tuned.losses[0] < 0.7 * fresh.losses[0], (tuned.losses, fresh.losses)
    assert load_checkpoint(tmp_path / "tuned" / CHECKPOINT_FILE)["step"] == 2
    source = load_checkpoint(data["checkpoint"])
    other = {**source, "config": {**source["config"], "values": {**source["config"]["values"], "task": "query_search"}}}
    torch.save(other, tmp_path / "search.pt")
    for path, message in ((tmp_path / "search.pt", "is a 'query_search' checkpoint"), (tmp_path / "none.pt", "no such checkpoint")):
        with pytest.raises(InputError, match=message) as error:
            train(TrainConfig(**values, init_checkpoint=str(path)), shards, tmp_path / path.stem, show_progress=False)
        assert str(path) in str(error.value)


def test_segment_config_errors_name_the_key():
    with pytest.raises(InputError, match="segment.classes"):
        TrainConfig(task="segment")
    with pytest.raises(InputError, match="segment: .*composite_background"):
        TrainConfig(**tiny_train_values(segment={"classes": CLASSES, "composite_background": "sky"}))
    with pytest.raises(InputError, match="model: .*decoder_channels"):
        TrainConfig(**tiny_train_values(model={"decoder_channels": 2}))


def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.jpg"
    cv2.imwrite(str(good), np.full((40, 50, 3), 120, np.uint8))
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really" + bytes(40))
    notes = folder / "notes.txt"
    notes.write_text("not an image")
    return [good, truncated, corrupt, notes, folder / "missing.jpg"]


def test_segment_writes_labels_confidence_overlay_and_skips_bad_files(data, tmp_path):
    files = _bad_files(tmp_path / "in")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", *map(str, files), str(data["unlabeled"]), "--checkpoint",
                                      str(data["checkpoint"]), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "5 images" in result.output and "(4 skipped)" in result.output
    for name in ("truncated.jpg", "corrupt.png", "notes.txt", "missing.jpg"):
        assert name in result.output
    assert read_classes(out / "classes.json") == parse_classes(CLASSES)
    labels = read_image(out / "good.png", "unchanged")
    confidence = read_image(out / "good.confidence.png", "unchanged")
    assert labels.shape == confidence.shape == (40, 50) and labels.max() < len(CLASSES)
    assert confidence.min() >= 255 // len(CLASSES) - 1  # the winner's probability is at least 1 / classes
    assert read_image(out / "unlabeled000.overlay.jpg").shape == (64, 64, 3)
    wrong = CliRunner().invoke(app, ["segment", str(files[0]), "--checkpoint", str(files[0]), "--out", str(out)])
    assert wrong.exit_code == 2 and "not a readable checkpoint" in wrong.output


def test_extract_skips_bad_photos_and_records_provenance(data, tmp_path):
    files = _bad_files(tmp_path / "in")[:3] + sorted(data["unlabeled"].iterdir())
    out = tmp_path / "objects"
    segmenter = Segmenter(data["checkpoint"], "cpu")
    lenient = ExtractConfig(min_area=0.01, min_confidence=0.0, min_stability=0.0, superpixel_max_side=32, previews=2)
    summary = run_extract(segmenter, files, out, lenient, round_index=3)
    assert summary.images == 5 and sorted(Path(s["path"]).name for s in summary.skipped) == ["corrupt.png", "truncated.jpg"]
    assert summary.masks == summary.accepted + sum(summary.rejected.values()) and summary.accepted > 0
    saved = json.loads((out / "extract.json").read_text())
    assert saved["accepted"] == summary.accepted and len(saved["skipped"]) == 2
    table = pq.read_table(out / "objects.parquet").to_pylist()
    assert len(table) == summary.cutouts > 0
    assert all(r["provenance"]["source"] == "auto" and r["provenance"]["model_id"] == segmenter.model_id
               and r["provenance"]["round"] == 3 for r in table)
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["good.jpg", "unlabeled000.jpg"]
    pseudo = pq.read_table(out / "pseudo-00000.parquet")
    assert pseudo.num_rows == 5

    # Strict filters reject everything, and say why.
    strict = run_extract(segmenter, files[3:], tmp_path / "strict", ExtractConfig(min_confidence=1.0, min_stability=1.0))
    assert strict.accepted == 0 and strict.rejected["low_confidence"] + strict.rejected["small"] == strict.masks

    # The CLI: every photo unreadable is one line, exit 2.
    result = CliRunner().invoke(app, ["extract", *map(str, files[1:3]), "--checkpoint", str(data["checkpoint"]),
                                      "--out", str(tmp_path / "none"), "--device", "cpu"])
    assert result.exit_code == 2 and "no readable photo" in result.output and "Traceback" not in result.output


def test_provenance_of_auto_cutouts_is_carried_into_the_shards(data, tmp_path):
    auto = tmp_path / "auto"
    lenient = ExtractConfig(min_area=0.01, min_confidence=0.0, min_stability=0.0, superpixel_max_side=32)
    run_extract(Segmenter(data["checkpoint"], "cpu"), sorted(data["unlabeled"].iterdir()), auto, lenient, round_index=2)
    auto_ids = {r["cutout_id"]: r["provenance"] for r in pq.read_table(auto / "objects.parquet").to_pylist()}
    out = tmp_path / "composites"
    config = ExpandConfig.from_dict({"num": 12, "composition": {"width": 64, "height": 64, "max_objects": 3},
                                     "sources": {"min_area": 20}})
    run_expand([data["labeled"], auto], data["root"] / "backgrounds", out, config)  # hand-made beside automatic
    objects = [o for row in pq.read_table(out / "train-00000.parquet", columns=["objects"]).to_pylist() for o in row["objects"]]
    carried = [o for o in objects if o["cutout_id"] in auto_ids]
    hand = [o for o in objects if o["cutout_id"] not in auto_ids]
    assert carried and hand, "both kinds of cutout should appear in 12 composites"
    for obj in carried:
        assert obj["provenance"]["source"] == "auto" and obj["provenance"]["round"] == 2
        assert obj["provenance"]["confidence"] == pytest.approx(auto_ids[obj["cutout_id"]]["confidence"])
    assert all(o["provenance"] is None for o in hand)
    table = pq.read_table(out / "objects.parquet").to_pylist()
    assert {r["cutout_id"] for r in table if r["provenance"]} == set(auto_ids) & {r["cutout_id"] for r in table}
    state = load_checkpoint(data["checkpoint"])
    assert state["config"]["values"]["task"] == "segment"


def _ddp_worker(rank: int, port: int, shards: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(TrainConfig(**tiny_train_values(steps=2, checkpoint_every=0)), [Path(s) for s in shards], Path(out),
          show_progress=False)


def test_two_process_ddp_segmentation_on_cpu(data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, [str(data["photos"]), str(data["composites"])], str(tmp_path)), nprocs=2, join=True)
    state = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert state["step"] == 2 and len(state["data"]["ranks"]) == 2


def test_cli_train_task_segment_and_eval(data, tmp_path):
    config = tmp_path / "segment.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in tiny_train_values(steps=2).items() if k != "task"}))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--task", "segment", "--config", str(config), "--shards", str(data["photos"]),
                                      "--shards", str(data["composites"]), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "miou" in result.output
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(run / CHECKPOINT_FILE), "--shards", str(data["photos"]),
                                      "--out", str(tmp_path / "eval.json"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert 0.0 <= metrics["miou"] <= 1.0 and set(k for k in metrics if k.startswith("iou/")) == {"iou/background", "iou/disc", "iou/box"}
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--shards", str(data["photos"]), "--out",
                                      str(tmp_path / "other")])  # query_search (the default task) reads one folder only
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_shipped_segmentation_configs_load():
    from pipelines import selftune_config

    for name in ("segment_cpu.yaml", "ccp_segment.yaml"):
        assert TrainConfig.from_yaml(REPO / "configs" / name).task == "segment"
    for path in sorted((REPO / "configs").glob("ccp_selftune*.yaml")):  # the shipped one and the earlier versions
        resolved = selftune_config.load(path)
        assert resolved["train"]["segment"]["classes"][0]["name"] == "background"
        assert len(resolved["train"]["segment"]["classes"]) == 12


def test_evaluation_scores_every_held_out_photo_whatever_the_batch_size(data):
    """The 8 photos scored in one batch, in batches of 3 (a partial last batch) and in a batch larger
    than the set give the same figures: evaluation drops no row (it dropped the partial batch, and a
    set smaller than a batch was 'nothing to evaluate')."""
    from train.evaluate import evaluate_shards, load_trained

    model, config = load_trained(data["checkpoint"])

    def scored(batch_size: int) -> dict:
        return evaluate_shards(model, config, data["photos"], split="all", batch_size=batch_size, num_workers=0,
                               device="cpu")["metrics"]

    whole = scored(8)
    for batch_size in (3, 16):
        metrics = scored(batch_size)
        for name in ("miou", "pixel_accuracy", "iou/disc", "iou/box"):
            assert metrics[name] == pytest.approx(whole[name], abs=1e-5), (batch_size, name)
