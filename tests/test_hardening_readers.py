"""Issue 7, the reading side: shards listed by the manifest, broken shards and rows, exports, output
paths, bad options and values of train/eval/calibrate/show/export/search. Each test names the
numbered case of the issue it covers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.imageio import decode_image, save_image
from augment.schema import MANIFEST_FILE
from cli_checks import assert_one_line_error, error_lines, files_under, run_cli
from shard_factory import damage_pages, make_shards, rewrite_rows
from train.data import PairConfig, ShardPairs


@pytest.fixture()
def shards(tmp_path) -> Path:
    return make_shards(tmp_path / "shards", n_cutouts=6, n_composites=12, rows_per_shard=6, rows_per_group=3).folder


def words(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------- 2: readers use the manifest
def test_2_readers_take_the_shard_list_from_the_manifest(shards, tmp_path):
    stale = shards / "train-00005.parquet"  # an older run's shard: same schema, not in the manifest
    shutil.copy(shards / "train-00000.parquet", stale)
    result = run_cli("export", shards, "--out", tmp_path / "coco")
    assert result.exit_code == 0 and "wrote" in result.output and "12 images" in words(result.output)
    assert ShardPairs(shards, PairConfig()).shards == [shards / "train-00000.parquet", shards / "train-00001.parquet"]
    result = run_cli("show", shards, "--out", tmp_path / "sheet.png", "--rows", 4, "--columns", 4, "--tile", 32)
    assert result.exit_code == 0 and "12 composites" in words(result.output)  # rich wraps long paths

    (shards / MANIFEST_FILE).unlink()
    assert_one_line_error(run_cli("export", shards, "--out", tmp_path / "coco2"), 2, "no manifest.json")
    result = run_cli("export", stale, shards / "train-00001.parquet", "--out", tmp_path / "coco3")
    assert result.exit_code == 0 and "12 images" in words(result.output)  # shard files named one by one


# ----------------------------------------------------------------- 4, 5: export
def test_4_export_skips_and_counts_bad_rows_and_writes_only_good_images(shards, tmp_path):
    rewrite_rows(shards / "train-00000.parquet", {2: {"image": {"bytes": b"\xff\xd8\xff not a jpeg", "path": None}},
                                                  4: {"mask": {"bytes": b"garbage", "path": None}}})
    out = tmp_path / "coco"
    result = run_cli("export", shards, "--out", out)
    assert result.exit_code == 0, result.output
    assert "10 images" in words(result.output) and "skipped 2 rows" in words(result.output)
    images = sorted((out / "images").iterdir())
    assert len(images) == 10 and not (out / "images" / "composite-00002.jpg").exists()
    for image in images:
        assert decode_image(image.read_bytes()).shape == (128, 128, 3)
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 10


def test_4_an_export_that_fails_midway_leaves_nothing(shards, tmp_path):
    damage_pages(shards / "train-00001.parquet")
    out = tmp_path / "coco"
    assert_one_line_error(run_cli("export", shards, "--out", out), 2, "train-00001.parquet")
    assert not out.exists() and not list(tmp_path.glob(".coco*"))

    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert_one_line_error(run_cli("export", shards / "train-00000.parquet", "--out", out), 2, "holds other files")
    assert (out / "mine.txt").read_text() == "keep me"


def test_5_ids_that_climb_out_of_out_are_skipped(shards, tmp_path):
    rewrite_rows(shards / "train-00000.parquet", {0: {"id": "../../x"}, 1: {"id": "../escape"}, 2: {"id": "/abs"}})
    out = tmp_path / "deep" / "coco"
    before = files_under(tmp_path)
    result = run_cli("export", shards, "--out", out)
    assert result.exit_code == 0, result.output
    assert "skipped 3 rows" in words(result.output)
    assert files_under(tmp_path, skip=out) == before  # nothing written outside --out
    assert len(list((out / "images").iterdir())) == 9


# ----------------------------------------------------------------- 6: broken shards in train/eval/calibrate
@pytest.mark.parametrize("damage, says", [("truncate", "truncated or corrupt Parquet file"),
                                          ("text", "a text file, not a Parquet shard")])
def test_6_a_broken_shard_is_one_line_in_train_eval_and_calibrate(shards, tmp_path, damage, says):
    broken = shards / "train-00001.parquet"
    if damage == "truncate":
        broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    else:
        broken.write_text("id,image\n1,2\n")
    for args in (["train", "--shards", shards, "--out", tmp_path / "run", "--steps", 1, "--device", "cpu"],
                 ["eval", "--shards", shards, "--untrained", "--device", "cpu"],
                 ["calibrate", "--shards", shards, "--out", tmp_path / "cal.json", "--device", "cpu"]):
        assert_one_line_error(run_cli(*args), 2, str(broken), says)
    assert not (tmp_path / "run").exists()


def test_6_damaged_pages_are_counted_as_corrupt_rows_not_a_crash(shards):
    damage_pages(shards / "train-00001.parquet")
    dataset = ShardPairs(shards, PairConfig(query_size=32, medium_size=64), split="all")
    samples = list(dataset)
    # The damaged headers are those of the first row group (3 rows); the other rows still make pairs.
    assert dataset.stats["corrupt"] == 3 and dataset.stats["rows"] == 12 and samples


# ----------------------------------------------------------------- 7: export-onnx without onnx
def test_7_export_onnx_without_the_onnx_package_is_one_line(tmp_path):
    hide_onnx = ("import sys; sys.modules['onnx'] = None; sys.argv[0] = 'synth'; "
                 "from pipelines.cli import app; app()")
    out = tmp_path / "net.onnx"
    result = subprocess.run([sys.executable, "-c", hide_onnx, "export-onnx", "--out", str(out)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "pip install 'synth[onnx]'" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------- 8: output paths
def test_8_outputs_of_the_wrong_kind_are_one_line_before_any_work(shards, tmp_path):
    a_file, a_folder = tmp_path / "file.txt", tmp_path / "folder"
    a_file.write_text("mine")
    a_folder.mkdir()
    query = tmp_path / "query.png"
    save_image(query, np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    cases = [
        (["train", "--shards", shards, "--out", a_file, "--steps", 1], "must be a folder"),
        (["search", query, query, "--out", a_file, "--device", "cpu"], "must be a folder"),
        (["eval", "--shards", shards, "--untrained", "--out", a_folder], "must be a file name"),
        (["calibrate", "--shards", shards, "--out", a_folder], "must be a file name"),
        (["show", shards, "--out", a_folder], "must be a file name"),
        (["export-onnx", "--out", a_folder], "must be a file name"),
        (["export", shards, "--out", a_file], "must be a folder"),
    ]
    for args, says in cases:
        assert_one_line_error(run_cli(*args), 2, says)
    assert a_file.read_text() == "mine" and list(a_folder.iterdir()) == []


# ----------------------------------------------------------------- 9: training values
@pytest.mark.parametrize("line, key", [("lr: -1", "lr"), ("batch_size: eight", "batch_size"),
                                       ("query_fill: [0.5, big]", "query_fill"), ("device: gpu", "device"),
                                       ("model: {backbone: resnet}", "model: unknown backbone 'resnet'"),
                                       ("loss: focal", "loss: unknown loss 'focal'"),
                                       ("loss_params: {margin: 1}", "loss: unexpected arguments for bce+dice"),
                                       ("{loss: double_margin, loss_params: {high: x}}", "loss_params: expected numbers"),
                                       ("{task: segment, model: {backbone: resnet}, segment: {classes: [{name: a}, "
                                        "{name: b}]}}", "model: unknown backbone 'resnet'")])
def test_9_bad_training_values_are_one_line_naming_the_key(shards, tmp_path, line, key):
    config = tmp_path / "train.yaml"
    config.write_text(line + "\n")
    result = run_cli("train", "--shards", shards, "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), key)
    assert "not supported" not in result.stderr


def test_9_feature_strides_the_backbone_lacks_are_one_line_naming_the_key(shards, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: {feature_strides: [8, 64]}\n")
    says = "model: feature strides [64] not offered by efficientnet_lite0"
    for args in (["train", "--shards", shards, "--out", tmp_path / "run", "--steps", 1, "--device", "cpu"],
                 ["eval", "--shards", shards, "--untrained", "--device", "cpu"],
                 ["export-onnx", "--out", tmp_path / "net.onnx", "--no-check"]):
        assert_one_line_error(run_cli(*args, "--config", config), 2, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "train.yaml"]


# ----------------------------------------------------------------- 11, 15: search inputs
def test_11_15_search_scales_pairs_and_tiny_queries_are_one_line(tmp_path):
    medium = tmp_path / "scene.jpg"
    save_image(medium, np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    query = tmp_path / "query.png"
    save_image(query, np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert_one_line_error(run_cli("search", query, medium, "--out", out, "--scales", "0.0001"), 2, "--scales")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b'{"query": "q\xff\xfe.png", "medium": "scene.jpg"}\n')
    assert_one_line_error(run_cli("search", "--pairs", pairs, "--out", out), 2, "pairs.jsonl", "UTF-8")
    tiny = tmp_path / "tiny.png"
    save_image(tiny, np.full((2, 2, 3), 200, np.uint8))
    assert_one_line_error(run_cli("search", tiny, medium, "--out", out, "--device", "cpu"), 2, "tiny.png", "2x2")
    assert not out.exists()


# ----------------------------------------------------------------- 12, 16: numeric options
def test_12_16_numeric_options_out_of_range_are_one_line(shards, tmp_path):
    cases = [
        (["show", shards, "--out", tmp_path / "s.png", "--rows", 0], "--rows"),
        (["show", shards, "--out", tmp_path / "s.png", "--tile", 0], "--tile"),
        (["export-onnx", "--out", tmp_path / "n.onnx", "--batch", 0], "--batch"),
        (["calibrate", "--shards", shards, "--out", tmp_path / "c.json", "--cases", 0], "--cases"),
        # --seed -1 reached numpy's SeedSequence with --photos: a traceback
        (["calibrate", "--shards", shards, "--out", tmp_path / "c.json", "--seed", -1], "--seed"),
        (["calibrate", "--shards", shards, "--out", tmp_path / "c.json", "--min-area", -1], "--min-area"),
        (["eval", "--shards", shards, "--untrained", "--batches", 0], "--batches"),
    ]
    for args, option in cases:
        assert_one_line_error(run_cli(*args), 2, option)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


# ----------------------------------------------------------------- 16: FFmpeg's own messages
def test_16_a_broken_video_gives_our_line_not_ffmpegs(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for index in range(20):
        writer.write(np.full((48, 64, 3), index * 10, np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[len(data) // 3:])  # no header: FFmpeg complains on its own stderr
    query = tmp_path / "query.png"
    save_image(query, np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "search", str(query), str(video), "--out",
                             str(tmp_path / "out"), "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode in (0, 1), result.stderr
    foreign = [line for line in error_lines(result.stderr) if line.lstrip().startswith("[")]
    assert not foreign, result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------- checkpoints, models and reports of the wrong kind
@pytest.fixture()
def segment_checkpoint(tmp_path) -> Path:
    """A segmenter's checkpoint (untrained weights): the wrong kind for the query search commands."""
    from segment_factory import save_untrained_segmenter

    return save_untrained_segmenter(tmp_path / "segment.pt")


def test_a_segmentation_checkpoint_in_search_calibrate_export_head_and_export_onnx_is_one_line(
        shards, tmp_path, segment_checkpoint):
    query = tmp_path / "query.png"
    save_image(query, np.random.default_rng(4).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    report = tmp_path / "calibration.json"
    report.write_text('{"threshold": 0.5}')
    says = f"{segment_checkpoint}: a segment checkpoint"
    cases = [["search", query, query, "--out", tmp_path / "found", "--device", "cpu"],
             ["calibrate", "--shards", shards, "--out", tmp_path / "cal.json", "--device", "cpu"],
             ["export-head", "--calibration", report, "--out", tmp_path / "head", "--made-by", "test"],
             ["export-onnx", "--out", tmp_path / "net.onnx", "--no-check"]]
    for args in cases:
        assert_one_line_error(run_cli(*args, "--checkpoint", segment_checkpoint), 2, says, "query search")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json", "query.png", "segment.pt", "shards"]


def test_a_fusion_file_that_is_not_a_json_object_is_one_line(tmp_path):
    image = tmp_path / "scene.png"
    save_image(image, np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    fusion = tmp_path / "fusion.json"
    fusion.write_text("[1, 2]\n")
    result = run_cli("search", image, image, "--out", tmp_path / "out", "--untrained", "--fusion", fusion,
                     "--device", "cpu")
    assert_one_line_error(result, 2, str(fusion), "not a fusion model (expected a JSON object, got list)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("threshold", ["7", "0", "NaN"])
def test_export_head_refuses_a_calibrated_threshold_outside_0_1(tmp_path, threshold):
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu")
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(checkpoint, model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    report = tmp_path / "calibration.json"
    report.write_text(f'{{"threshold": {threshold}}}')
    out = tmp_path / "head"
    result = run_cli("export-head", "--checkpoint", checkpoint, "--calibration", report, "--out", out,
                     "--made-by", "test")
    assert_one_line_error(result, 2, str(report), "threshold must be between 0 and 1")
    assert not out.exists()


@pytest.mark.parametrize("size", [40, 100])
def test_export_onnx_of_a_query_size_the_exporter_cannot_trace_is_one_line(tmp_path, size):
    out = tmp_path / "net.onnx"
    result = run_cli("export-onnx", "--out", out, "--query-size", size, "--no-check")
    assert_one_line_error(result, 2, f"query size {size} cannot be exported to ONNX", "use a multiple of 16")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- extract and selftune values
@pytest.mark.parametrize("line, says", [("min_confidence: high", "min_confidence: expected a number, got 'high'"),
                                        ("max_cutout_side: 100.5", "max_cutout_side: expected a whole number"),
                                        ("cut_classes: shoe", "cut_classes: expected a list of class names"),
                                        ("pseudo_labels: 3", "pseudo_labels: expected true or false")])
def test_extract_config_values_of_the_wrong_type_are_one_line_naming_the_key(tmp_path, segment_checkpoint, line, says):
    image = tmp_path / "photo.png"
    save_image(image, np.random.default_rng(6).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    config = tmp_path / "extract.yaml"
    config.write_text(line + "\n")
    out = tmp_path / "objects"
    result = run_cli("extract", image, "--checkpoint", segment_checkpoint, "--out", out, "--config", config,
                     "--device", "cpu")
    assert_one_line_error(result, 2, str(config), says)
    assert not out.exists()


def test_extract_and_selftune_counts_below_their_minimum_are_one_line(tmp_path, segment_checkpoint):
    image = tmp_path / "photo.png"
    save_image(image, np.random.default_rng(7).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    extract = ["extract", image, "--checkpoint", segment_checkpoint, "--out", tmp_path / "objects"]
    selftune = ["selftune", "--state", tmp_path / "state", "--labeled", tmp_path, "--unlabeled", tmp_path,
                "--backgrounds", tmp_path]
    for args, option, value, minimum in [(extract, "--workers", 0, 1), (extract, "--workers", -2, 1),
                                         (extract, "--round", -1, 0), (selftune, "--workers", 0, 1)]:
        assert_one_line_error(run_cli(*args, option, value), 2, f"{option} must be at least {minimum}, got {value}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "segment.pt"]


@pytest.mark.parametrize("calibrated", ["untrained", "other"])
def test_export_head_refuses_a_calibration_of_another_network(tmp_path, calibrated):
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    for name, seed in (("checkpoint.pt", 0), ("other.pt", 1)):
        config = TrainConfig(model={"pretrained": False}, device="cpu", seed=seed)
        save_checkpoint(tmp_path / name, model=build_task(config).build_model(), optimizer=None, step=seed,
                        config=config.to_dict(), config_hash=config.hash())
    model = "untrained" if calibrated == "untrained" else str(tmp_path / "other.pt")
    report = tmp_path / "calibration.json"
    report.write_text(json.dumps({"threshold": 0.4, "model": model}))
    out = tmp_path / "head"
    result = run_cli("export-head", "--checkpoint", tmp_path / "checkpoint.pt", "--calibration", report,
                     "--out", out, "--made-by", "test")
    assert_one_line_error(result, 2, str(report), f"calibrates {model}, not")
    assert not out.exists()
    # (a heat-map calibration: a verified one must also record its fusion model)
    report.write_text(json.dumps({"threshold": 0.4, "model": str(tmp_path / "checkpoint.pt"), "verify": False}))
    assert run_cli("export-head", "--checkpoint", tmp_path / "checkpoint.pt", "--calibration", report,
                   "--out", out, "--made-by", "test").exit_code == 0


def test_a_train_run_into_a_folder_another_run_holds_is_one_line_exit_3(shards, tmp_path):
    """Two `synth train` runs into one --out would overwrite each other's checkpoints."""
    from augment.locking import BUSY_EXIT_CODE, folder_lock

    run = tmp_path / "run"
    with folder_lock(run, "train run"):  # as another process's run would
        result = run_cli("train", "--shards", shards, "--out", run, "--steps", 1, "--device", "cpu")
        assert_one_line_error(result, BUSY_EXIT_CODE, "another train run is writing here")
        assert not (run / "checkpoint.pt").exists()
    # Released: the next run gets past the lock (here to these tiny shards' own complaint).
    after = run_cli("train", "--shards", shards, "--out", run, "--steps", 1, "--device", "cpu")
    assert after.exit_code != BUSY_EXIT_CODE and "another train run" not in after.output, after.output
