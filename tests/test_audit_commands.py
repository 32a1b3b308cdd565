"""`synth eval`, `synth show`, `synth export` and friends as a demanding user meets them: option
values out of range, wrong file types, two runs at once. Small generated shards, CPU only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x"])
def test_eval_with_an_unknown_device_is_one_line_not_a_torch_traceback(tmp_path, device):
    """--device tpu was torch's RuntimeError ("Expected one of cpu, cuda, ...") as a traceback."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    result = run_cli("eval", "--shards", tmp_path / "shards", "--untrained", "--device", device, "--batches", 1)
    assert_one_line_error(result, 2, "--device", device)


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(tmp_path):
    """A SIGKILLed export left .<out>.XXXXXXXX.tmp beside --out (a copy of every image) for good."""
    from augment.coco_export import export_coco
    from augment.atomic_files import temporary_folder_beside
    from augment.locking import folder_lock

    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    out = tmp_path / "exports" / "coco"
    out.parent.mkdir()
    killed = temporary_folder_beside(out)  # as a killed run leaves it: half its images written
    (killed / "images").mkdir()
    (killed / "images" / "train-00000000.jpg").write_bytes(b"\xff\xd8 half")
    alive = temporary_folder_beside(out)
    starting = temporary_folder_beside(out, ".new")  # another export's, made but not yet locked
    with folder_lock(alive, "export run"):  # another export, still running, is left alone
        counts = export_coco([tmp_path / "shards"], out)
        assert sorted(p.name for p in out.parent.iterdir()) == sorted(["coco", alive.name, starting.name])
    assert counts["images"] == 4


def test_an_export_replaces_an_earlier_export_of_its_own(tmp_path):
    from augment.coco_export import export_coco

    make_shards(tmp_path / "many", n_composites=8, rows_per_shard=4)
    make_shards(tmp_path / "few", n_composites=4, rows_per_shard=4, seed=1)
    export_coco([tmp_path / "many"], tmp_path / "coco")
    export_coco([tmp_path / "few"], tmp_path / "coco")
    assert len(list((tmp_path / "coco" / "images").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "few", "many"]


@pytest.mark.parametrize("name", ["sheet.txt", "sheet", "sheet.webp"])
def test_show_refuses_a_sheet_name_whose_suffix_would_not_match_its_png_bytes(tmp_path, name):
    """show --out sheet.txt wrote PNG bytes under that name and said 'wrote sheet.txt'."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    result = run_cli("show", tmp_path / "shards", "--out", tmp_path / name, "--tile", 32)
    assert_one_line_error(result, 2, name, ".png or .jpg")
    assert not (tmp_path / name).exists()


def test_a_failed_photo_shards_run_leaves_no_manifest_naming_the_older_runs_deleted_shards(tmp_path):
    """A rerun that found no photos (--include typo) deleted the older run's shards but kept its
    manifest.json: the folder read as a finished output whose shards were missing. (It then removed
    both; now it stops before either is touched: the older output stays whole, test_readme_claims.py.)"""
    from augment.config import SourceConfig
    from augment.imageio import InputError
    from augment.photo_shards import write_photo_shards
    from segment_factory import make_scene_photos

    labeled = make_scene_photos(tmp_path / "labeled", count=2)
    out = tmp_path / "photos"
    write_photo_shards([labeled], out, SourceConfig(), short_side=32)
    assert (out / "manifest.json").is_file() and list(out.glob("photos-*.parquet"))
    with pytest.raises(InputError, match="no labelled photos"):
        write_photo_shards([labeled], out, SourceConfig(include=["no-such-photo"]), short_side=32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(s["name"] for s in manifest["shards"]) == sorted(p.name for p in out.glob("photos-*.parquet"))


def test_an_unknown_source_format_is_named_as_unknown_not_as_cutouts(tmp_path):
    """photo-shards --source-format foo said 'foo sources hold cutouts, not labelled photos'."""
    from segment_factory import make_scene_photos

    labeled = make_scene_photos(tmp_path / "labeled", count=1)
    result = run_cli("photo-shards", labeled, "--out", tmp_path / "photos", "--source-format", "lable_map")
    line = assert_one_line_error(result, 2, "unknown source format 'lable_map'")
    assert "cutouts" not in line


def _checkpoint(tmp_path):
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu")
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(checkpoint, model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    report = tmp_path / "calibration.json"
    report.write_text('{"threshold": 0.4}')
    return checkpoint, report


def test_export_head_into_a_folder_another_export_holds_is_one_line_exit_3(tmp_path):
    """Two export-heads into one --out could pair one's search_head.pt with the other's manifest."""
    from augment.locking import BUSY_EXIT_CODE, folder_lock

    checkpoint, report = _checkpoint(tmp_path)
    with folder_lock(tmp_path / "head", "export-head run"):
        result = run_cli("export-head", "--checkpoint", checkpoint, "--calibration", report,
                         "--out", tmp_path / "head", "--made-by", "test")
    assert_one_line_error(result, BUSY_EXIT_CODE, "another export-head run is writing here")
    assert not (tmp_path / "head" / "search_head.json").exists()


def test_a_head_write_stopped_before_its_manifest_leaves_no_head_not_a_mismatched_pair(tmp_path, monkeypatch):
    import pipelines.shipped as shipped
    from train.model import QuerySearchNet, SearchNetConfig

    model = QuerySearchNet(SearchNetConfig(pretrained=False))
    shipped.write_head(model, 0.3, tmp_path, {"made_by": "older"})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shipped, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        shipped.write_head(QuerySearchNet(SearchNetConfig(pretrained=False, residual_projection=True)), 0.6,
                           tmp_path, {"made_by": "newer"})
    assert not shipped.head_ships(tmp_path)  # not the older manifest beside the newer head file


def test_a_huge_workers_count_forks_no_more_processes_than_there_is_work(tmp_path, monkeypatch):
    """selftune/expand --workers 100000 forked 100000 processes for a handful of row groups."""
    import augment.cutouts as cutouts
    import augment.engines.local_engine as local_engine
    from augment.config import ExpandConfig
    from augment.expand import run_expand
    from segment_factory import make_noise_backgrounds, make_scene_photos

    asked: list[int] = []
    real_pool, real_executor = local_engine.fork_pool, cutouts.ProcessPoolExecutor
    monkeypatch.setattr(local_engine, "fork_pool", lambda n: asked.append(n) or real_pool(n))
    monkeypatch.setattr(cutouts, "ProcessPoolExecutor", lambda n, **kw: asked.append(n) or real_executor(n, **kw))
    config = ExpandConfig.from_dict({"num": 4, "composition": {"width": 48, "height": 48, "max_objects": 1},
                                     "sources": {"min_area": 20, "superpixel_max_side": 32},
                                     "output": {"row_group_rows": 2}})
    run_expand([make_scene_photos(tmp_path / "labeled", count=2)], make_noise_backgrounds(tmp_path / "bg"),
               tmp_path / "out", config, workers=500)
    assert asked and max(asked) <= 2, asked  # two row groups; a few cutouts in one superpixel chunk


def test_an_unreadable_photo_or_mask_is_skipped_under_its_own_name_said_once(tmp_path):
    """calibrate printed '/x/photos/0002.jpg: /x/photos/0002.jpg: truncated JPEG'; a zero-byte mask
    was skipped under its photo's name."""
    import cv2
    import numpy as np

    from augment.sources import load_pair

    image, mask = tmp_path / "photo.jpg", tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((16, 16, 3), 90, np.uint8))
    mask.write_bytes(b"")
    skip = load_pair(image, mask, "empty mask")
    assert skip.path == str(mask) and str(mask) not in skip.reason and "empty file" in skip.reason
    image.write_bytes(image.read_bytes()[:40])
    skip = load_pair(image, mask, "empty mask")
    assert skip.path == str(image) and str(image) not in skip.reason and "truncated" in skip.reason


def test_an_interrupted_selftune_says_how_to_resume(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) in selftune said only 'interrupted', though rerunning resumes it."""
    import pipelines.selftune as selftune

    def stopped(self, rounds=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(selftune.SelfTune, "run", stopped)
    monkeypatch.setattr(selftune.SelfTune, "__init__", lambda self, *args, **kwargs: None)
    result = run_cli("selftune", "--state", tmp_path / "state", "--labeled", tmp_path, "--unlabeled", tmp_path,
                     "--backgrounds", tmp_path)
    assert_one_line_error(result, 130, "interrupted; rerun the same `synth selftune` command to resume")


def test_gcs_requests_are_retried_for_seconds_not_the_clients_15_minutes(monkeypatch):
    """eval --shards gs://... with no network sat silent (the GCS client's default retry: 15 minutes)."""
    import datetime

    import augment.storage as storage

    made: list[dict] = []
    monkeypatch.setattr(storage.pafs, "GcsFileSystem", lambda **kwargs: made.append(kwargs))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    storage._make_filesystem("gs")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:4443")
    storage._make_filesystem("gs")
    assert [kwargs["retry_time_limit"] <= datetime.timedelta(minutes=1) for kwargs in made] == [True, True]
    said = storage.describe_failure(OSError("google::cloud::Status(UNAVAILABLE: Retry policy exhausted ... "
                                            "CURL error [6]=Could not resolve hostname)"))
    assert said.startswith("cannot reach the object store")


@pytest.mark.parametrize("command", ["calibrate", "eval"])
def test_a_report_out_naming_an_input_file_is_refused_not_overwritten(tmp_path, command):
    """calibrate --shards S --out S/manifest.json replaced the shard set's manifest with its report."""
    shards = make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    manifest = tmp_path / "shards" / "manifest.json"
    before = manifest.read_bytes()
    options = ["--cases", 2] if command == "calibrate" else ["--batches", 1]
    result = run_cli(command, "--shards", tmp_path / "shards", "--untrained", "--out", manifest, *options)
    assert_one_line_error(result, 2, "manifest.json", f"not a `synth {command}` report")
    assert manifest.read_bytes() == before and shards


def test_photo_shards_and_selftune_that_fail_leave_no_new_output_folder(tmp_path):
    """A missing source (photo-shards) or a first selftune run without --config left an empty
    --out / --state folder holding only .synth.lock."""
    result = run_cli("photo-shards", tmp_path / "no-such-source", "--out", tmp_path / "photos")
    assert_one_line_error(result, 2, "no-such-source")
    result = run_cli("selftune", "--state", tmp_path / "state", "--labeled", tmp_path, "--unlabeled", tmp_path,
                     "--backgrounds", tmp_path)
    assert_one_line_error(result, 2, "pass --config")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_shard_file_given_as_shards_is_named_a_file_not_missing(tmp_path):
    """eval --shards S/train-00000.parquet said 'no such shard folder' of a file that exists."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    shard = next((tmp_path / "shards").glob("*-00000.parquet"))
    result = run_cli("eval", "--shards", shard, "--untrained")
    line = assert_one_line_error(result, 2, str(shard), "a file; --shards takes the folder")
    assert "no such" not in line


def test_eval_config_with_a_checkpoint_is_refused_not_silently_ignored(tmp_path):
    checkpoint, _ = _checkpoint(tmp_path)
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    config = tmp_path / "sizes.yaml"
    config.write_text("medium_size: 96\n")
    result = run_cli("eval", "--shards", tmp_path / "shards", "--checkpoint", checkpoint, "--config", config)
    assert_one_line_error(result, 2, "--config applies with --untrained")


def test_selftune_force_config_without_a_config_is_one_line(tmp_path):
    result = run_cli("selftune", "--state", tmp_path / "state", "--labeled", tmp_path, "--unlabeled", tmp_path,
                     "--backgrounds", tmp_path, "--force-config")
    assert_one_line_error(result, 2, "--force-config", "--config FILE")


def test_photo_shards_of_one_source_given_twice_is_one_line_not_every_photo_twice(tmp_path):
    """photo-shards SRC SRC wrote each photo twice under one id (an export then skipped half)."""
    from segment_factory import make_scene_photos

    labeled = make_scene_photos(tmp_path / "labeled", count=2)
    result = run_cli("photo-shards", labeled, f"{labeled}/", "--out", tmp_path / "photos")
    assert_one_line_error(result, 2, "source given twice")
    assert not (tmp_path / "photos").exists()


def test_an_export_finishing_just_after_another_replaces_it_instead_of_failing(tmp_path, monkeypatch):
    """Two exports into one fresh --out: the second's rename met the first's folder, just put in
    place (ENOTEMPTY), and stopped with an OSError traceback."""
    import os

    import augment.coco_export as coco_export

    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    out = tmp_path / "coco"
    real_rename, raced = os.rename, []

    def rename(source, target):
        if Path(target) == out and not raced:  # the other export gets there first
            raced.append(1)
            (out / "images").mkdir(parents=True)
            (out / "annotations.json").write_text("{}")
        return real_rename(source, target)

    monkeypatch.setattr(coco_export.os, "rename", rename)
    counts = coco_export.export_coco([tmp_path / "shards"], out)
    assert raced and counts["images"] == 4 and len(list((out / "images").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "shards"]


def test_an_export_starting_beside_another_never_clears_its_not_yet_locked_staging(tmp_path, monkeypatch):
    """Two exports started at once: one took the other's staging folder, made but not yet locked,
    for a killed run's and removed it ('.coco.XXXX.tmp/images: No such file or directory')."""
    import contextlib

    import augment.coco_export as coco_export

    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    out = tmp_path / "coco"
    real_lock, other = coco_export.folder_lock, contextlib.ExitStack()

    def other_export_clears_meanwhile(folder, what):
        # The other export, clearing killed runs just before this one locks its staging folder: it
        # holds the lock of each staging folder it finds while removing it.
        for leftover in out.parent.glob(".coco.*.tmp"):
            other.enter_context(real_lock(leftover, "export run"))
        return real_lock(folder, what)

    monkeypatch.setattr(coco_export, "folder_lock", other_export_clears_meanwhile)
    with other:
        assert coco_export.export_coco([tmp_path / "shards"], out)["images"] == 4


# ----------------------------------------------------------------- option maxima that bound memory
def test_eval_batch_size_past_its_maximum_is_one_line_not_the_whole_split_in_one_batch(tmp_path):
    """--batch-size 1000000 had no bound: a batch past the split's size collated all of it at once."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    result = run_cli("eval", "--shards", tmp_path / "shards", "--untrained", "--batch-size", 1000000)
    assert_one_line_error(result, 2, "--batch-size must be at most 256", "1000000")


@pytest.mark.parametrize("option, value, maximum", [("--batch", 100000, 64), ("--medium-size", 100000, 4096),
                                                    ("--query-size", 100000, 1024)])
def test_export_onnx_batch_or_size_past_its_maximum_is_one_line_before_the_model_loads(tmp_path, option, value,
                                                                                      maximum):
    """export-onnx --batch and --medium-size had no bound: the export traced that many items of that
    size in memory at once (and --check ran them again in onnxruntime)."""
    result = run_cli("export-onnx", "--out", tmp_path / "net.onnx", option, value)
    assert_one_line_error(result, 2, f"{option} must be at most {maximum}", str(value))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_config_batch_size_past_its_maximum_is_one_line_naming_key_and_file(tmp_path, command):
    """A config's batch_size had no bound (batch_size: 100000 went on to fill the memory at the first
    step); it has eval --batch-size's maximum, and the error names the key and the config file."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    config = tmp_path / "huge.yaml"
    config.write_text("batch_size: 100000\n")
    args = (["train", "--out", tmp_path / "run"] if command == "train" else ["eval", "--untrained"])
    result = run_cli(*args, "--shards", tmp_path / "shards", "--config", config)
    assert_one_line_error(result, 2, str(config), "batch_size must be at most 256", "100000")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_trained_with_a_batch_past_the_maximum_still_loads():
    """The maximum guards new runs: a config saved in a checkpoint before it loads, its hash unchanged."""
    from pipelines.train_commands import MAX_EVAL_BATCH_SIZE
    from train.config import MAX_BATCH_SIZE, TrainConfig

    assert MAX_BATCH_SIZE == MAX_EVAL_BATCH_SIZE
    from augment.imageio import InputError

    values = {**TrainConfig().to_dict()["values"], "batch_size": 512}
    with pytest.raises(InputError, match="batch_size must be at most 256"):
        TrainConfig(**values)
    loaded = TrainConfig.from_checkpoint({"config": {"values": values}})
    assert loaded.batch_size == 512 and loaded.to_dict()["values"] == values
    assert loaded.identity()["batch_size"] == 512


def test_an_export_into_a_symbolic_link_to_a_folder_writes_into_that_folder_and_keeps_the_link(tmp_path):
    """`synth export ... --out coco` where coco links to a folder on a larger disk: 'coco: Not a directory'
    (exit 2) into an empty folder; the export goes into the folder, staged beside it, the link kept."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    (tmp_path / "disk" / "coco").mkdir(parents=True)
    (tmp_path / "coco").symlink_to(tmp_path / "disk" / "coco")
    for _ in range(2):  # into the empty folder, then over its own earlier export
        result = run_cli("export", tmp_path / "shards", "--out", tmp_path / "coco")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "coco").is_symlink() and len(list((tmp_path / "disk" / "coco" / "images").iterdir())) == 4
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["coco"]  # no staging folder left
