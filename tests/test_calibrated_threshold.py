"""`synth calibrate`'s report is the threshold `synth search --threshold` takes (its help said "pass the
result to synth search --threshold", which took only a number), checked to calibrate the same network
and the same search; `synth export-head` tells a run's folder and its checkpoint.pt apart no more."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from augment.imageio import save_image
from cli_checks import assert_one_line_error, run_cli


@pytest.fixture
def images(tmp_path) -> tuple[Path, Path]:
    scene = cv2.resize(data.coffee(), (160, 120), interpolation=cv2.INTER_AREA)
    save_image(tmp_path / "scene.jpg", scene, quality=95)
    save_image(tmp_path / "query.png", cv2.resize(data.astronaut()[30:190, 150:310], (48, 48)))
    return tmp_path / "query.png", tmp_path / "scene.jpg"


def report(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"threshold": 0.97, "f1": 0.5, "model": "untrained", "verify": False,
                                "table": [], **fields}))
    return path


def test_search_takes_calibrates_report_as_its_threshold(tmp_path, images):
    calibration = report(tmp_path / "threshold.json", mirror=True, query_scales="default")
    out = tmp_path / "found"
    result = run_cli("search", *images, "--out", out, "--untrained", "--no-verify", "--device", "cpu",
                     "--threshold", calibration)
    assert result.exit_code == 0, result.output
    line = json.loads((out / "detections.jsonl").read_text().splitlines()[0])
    assert line["heat_threshold"] == 0.97 and line["threshold"] == 0.97


@pytest.mark.parametrize("fields, flags, says", [
    ({"verify": True}, ["--no-verify"], "calibrates the verified search; search without --no-verify"),
    ({"verify": False}, [], "calibrates the heat map alone (--no-verify); search with --no-verify"),
    ({"model": "runs/other/checkpoint.pt"}, ["--no-verify"], "calibrates runs/other/checkpoint.pt, not untrained"),
    ({"threshold": 1.5}, ["--no-verify"], "threshold must be between 0 and 1"),
    # The sizes searched and the mirrored query move the heat a threshold cuts: a report of another
    # search's was taken without a word.
    ({"mirror": True}, ["--no-verify", "--no-mirror"], "calibrates the search with mirror True, not False; "
                                                       "search with the --no-mirror it was calibrated with"),
    ({"query_scales": "default"}, ["--no-verify", "--scales", "1"],
     "calibrates the search with query_scales 'default', not [1.0]; search with the --scales it was"),
])
def test_a_report_of_another_search_is_one_line(tmp_path, images, fields, flags, says):
    calibration = report(tmp_path / "threshold.json", **fields)
    out = tmp_path / "found"
    result = run_cli("search", *images, "--out", out, "--untrained", "--device", "cpu", "--threshold",
                     calibration, *flags)
    assert_one_line_error(result, 2, str(calibration), says)
    assert not out.exists()


def test_a_threshold_that_is_neither_number_nor_file_is_one_line(tmp_path, images):
    result = run_cli("search", *images, "--out", tmp_path / "found", "--untrained", "--threshold", "high")
    assert_one_line_error(result, 2, "--threshold must be a number between 0 and 1 or a JSON file", "'high'")
    assert not (tmp_path / "found").exists()


def test_export_head_takes_a_calibration_of_the_runs_folder_or_its_checkpoint(tmp_path):
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(model={"pretrained": False}, device="cpu")
    save_checkpoint(run / "checkpoint.pt", model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    for n, (calibrated, given) in enumerate([(run / "checkpoint.pt", run), (run, run / "checkpoint.pt")]):
        calibration = report(tmp_path / f"threshold{n}.json", model=str(calibrated))
        result = run_cli("export-head", "--checkpoint", given, "--calibration", calibration,
                         "--out", tmp_path / f"head{n}", "--made-by", "test")
        assert result.exit_code == 0, result.output


def test_a_checkpoint_searched_without_a_threshold_says_it_has_none(tmp_path, images):
    """A checkpoint holds no threshold (nothing writes one): searching it at the untrained network's
    heat level happened without a word, where README measured alarms on 90% of negatives."""
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu")
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(checkpoint, model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    result = run_cli("search", *images, "--out", tmp_path / "found", "--checkpoint", checkpoint, "--no-verify",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    # (rich wraps the warning anywhere, even inside the path)
    assert "".join(f"{checkpoint} has no calibrated threshold".split()) in "".join(result.output.split())
    calibration = report(tmp_path / "threshold.json", model=str(checkpoint))
    result = run_cli("search", *images, "--out", tmp_path / "found2", "--checkpoint", checkpoint, "--no-verify",
                     "--device", "cpu", "--threshold", calibration)
    assert result.exit_code == 0, result.output
    assert "no calibrated threshold" not in result.output


def test_calibrate_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """calibrate --shards read the checkpoint for its held-out share, then again for the network: twice the
    read's time, and two copies of its tensors at once."""
    import torch

    from shard_factory import make_shards
    from test_qa_train import save_untrained_search

    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    checkpoint = save_untrained_search(tmp_path / "checkpoint.pt", eval_fraction=0.5)
    reads = []
    original = torch.load

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    result = run_cli("calibrate", "--shards", shards, "--checkpoint", checkpoint, "--out", tmp_path / "cal.json",
                     "--cases", 2, "--no-verify", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert reads.count(str(checkpoint)) == 1, reads
    assert (tmp_path / "cal.json").is_file()


def test_a_calibration_of_a_relative_checkpoint_is_refused_for_another_checkpoint_from_another_folder(
        tmp_path, images, monkeypatch):
    """The report recorded --checkpoint as typed ('run/checkpoint.pt'): searched from another folder,
    that name was no file there, which counts as the same network, so another checkpoint's search
    took this one's threshold without a word (synth export-head likewise)."""
    from shard_factory import make_shards
    from test_qa_train import save_untrained_search

    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    (tmp_path / "run").mkdir()
    save_untrained_search(tmp_path / "run" / "checkpoint.pt", eval_fraction=0.5)
    other = save_untrained_search(tmp_path / "other.pt", eval_fraction=0.5, seed=1)
    monkeypatch.chdir(tmp_path)
    result = run_cli("calibrate", "--shards", shards, "--checkpoint", "run/checkpoint.pt", "--out", "cal.json",
                     "--cases", 2, "--no-verify", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cal.json").read_text())["model"] == str(tmp_path / "run" / "checkpoint.pt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = run_cli("search", *images, "--out", "found", "--checkpoint", other, "--no-verify", "--device", "cpu",
                     "--threshold", tmp_path / "cal.json")
    assert_one_line_error(result, 2, str(tmp_path / "cal.json"), "calibrates", f"not {other}")
    assert not (tmp_path / "elsewhere" / "found").exists()
    result = run_cli("search", *images, "--out", "found", "--checkpoint", tmp_path / "run", "--no-verify",
                     "--device", "cpu", "--threshold", tmp_path / "cal.json")
    assert result.exit_code == 0, result.output


def test_calibrate_on_photos_whose_query_category_is_always_small_names_the_photos_and_option(tmp_path):
    """'error: no object covers 4% of its photo among categories skirt' named neither the photos nor
    --categories."""
    from sources_factory import make_street_photos

    photos = make_street_photos(tmp_path / "photos", count=4)
    for label in sorted((photos / "labels").iterdir()):
        labels = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        labels[labels == 2] = 0
        labels[100:106, 20:26] = 2  # a 36-pixel skirt: over --min-area, under 4% of the photo
        cv2.imwrite(str(label), labels)
    out = tmp_path / "cal.json"
    result = run_cli("calibrate", "--photos", photos, "--categories", "skirt", "--min-area", 10, "--cases", 2,
                     "--untrained", "--no-verify", "--device", "cpu", "--out", out)
    assert_one_line_error(result, 2, f"{photos}: no object covers 4% of its photo among categories skirt "
                          "(--categories)")
    assert not out.exists()


def test_a_calibration_records_its_fusion_model_and_search_refuses_another(tmp_path, images):
    """The verified search's threshold is carried through its fusion model, but the report did not
    say which one (and calibrate took no --fusion): `synth search --fusion OTHER.json --threshold
    cal.json` cut OTHER's fused scores at the network's own model's threshold without a word."""
    from pipelines.fusion import DEFAULT_FUSION
    from sources_factory import make_street_photos

    other = json.loads(DEFAULT_FUSION.read_text())
    other["weights"][1] += 1.0  # verification counts more: another model
    (tmp_path / "other.fusion.json").write_text(json.dumps(other))
    photos = make_street_photos(tmp_path / "photos", count=4)
    out = tmp_path / "cal.json"
    result = run_cli("calibrate", "--photos", photos, "--categories", "skirt", "--min-area", 50, "--cases", 2,
                     "--untrained", "--scales", "1", "--no-mirror", "--device", "cpu", "--out", out,
                     "--fusion", tmp_path / "other.fusion.json")
    assert result.exit_code == 0, result.output
    recorded = json.loads(out.read_text())["fusion"]
    assert recorded["file"] == str(tmp_path / "other.fusion.json") and recorded["weights"] == other["weights"]
    flags = ["--untrained", "--scales", "1", "--no-mirror", "--device", "cpu", "--threshold", out]
    result = run_cli("search", *images, "--out", tmp_path / "found", *flags)  # the network's own model
    assert_one_line_error(result, 2, f"{out}: calibrates the search with fusion '{tmp_path / 'other.fusion.json'}', "
                          f"not '{DEFAULT_FUSION}'", "search with the --fusion it was calibrated with")
    assert not (tmp_path / "found").exists()
    (tmp_path / "copy.json").write_text(json.dumps(other))  # the same model under another name is the same
    result = run_cli("search", *images, "--out", tmp_path / "found", *flags, "--fusion", tmp_path / "copy.json")
    assert result.exit_code == 0, result.output
    result = run_cli("calibrate", "--photos", photos, "--out", tmp_path / "heat.json", "--no-verify",
                     "--fusion", tmp_path / "other.fusion.json")
    assert_one_line_error(result, 2, "--fusion fuses the verified search's scores; it does not apply with --no-verify")
