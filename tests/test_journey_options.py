"""Options a step of the train -> export journey would ignore without a word are one line."""

from __future__ import annotations

import numpy as np
import pytest

from augment.imageio import decode_image
from cli_checks import assert_one_line_error, run_cli


def test_export_onnx_refuses_a_config_beside_a_checkpoint(tmp_path):
    """The checkpoint is exported with its own config (query and medium sizes included): a --config
    given with it was silently ignored, as `synth eval` refuses it."""
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu", query_size=64)
    save_checkpoint(tmp_path / "checkpoint.pt", model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    (tmp_path / "other.yaml").write_text("query_size: 96\n")
    result = run_cli("export-onnx", "--checkpoint", tmp_path / "checkpoint.pt", "--config", tmp_path / "other.yaml",
                     "--out", tmp_path / "net.onnx", "--no-check")
    assert_one_line_error(result, 2, "--config applies without --checkpoint", "exported with its own config")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "other.yaml"]


def test_resume_on_its_own_shards_folder_rewritten_since_says_so(tmp_path):
    """`trained on --shards X (fingerprint a), not on X (b)` named no difference: the folder was rewritten."""
    import shutil

    from shard_factory import make_shards
    from test_trainer import tiny_config
    from train.loop import train

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64, seed=0).folder
    run = tmp_path / "run"
    train(tiny_config(steps=1), shards, run, show_progress=False)
    shutil.rmtree(shards)
    make_shards(shards, n_composites=8, size=64, seed=1)  # an expand rerun with other inputs
    result = run_cli("train", "--shards", shards, "--out", run, "--resume", "--steps", 2)
    assert_one_line_error(result, 2, f"the shards in {shards} changed since the run was trained on them",
                          "resume with the shards it started with")


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png"])
def test_show_never_overwrites_an_image_that_is_no_contact_sheet(tmp_path, name):
    """`synth show --out` replaced any .png/.jpg: a photo or a background named by mistake was lost;
    eval, calibrate and export-onnx refuse a file that is not their own output."""
    from augment.imageio import save_image
    from shard_factory import make_shards

    shards = make_shards(tmp_path / "shards", n_composites=4, size=64).folder
    photo = tmp_path / name
    save_image(photo, np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    before = photo.read_bytes()
    result = run_cli("show", shards, "--out", photo, "--rows", 1, "--columns", 2, "--tile", 32)
    assert_one_line_error(result, 2, str(photo), "is not a contact sheet of `synth show`; not overwriting it")
    assert photo.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["shards", name])
    sheet = tmp_path / ("sheet" + photo.suffix)  # a sheet it wrote is replaced by the next run
    for seed in (0, 1):
        result = run_cli("show", shards, "--out", sheet, "--rows", 1, "--columns", 2, "--tile", 32, "--seed", seed)
        assert result.exit_code == 0, result.output
        assert decode_image(sheet.read_bytes()).shape == (32, 64, 3)


def test_resume_with_steps_already_done_says_which_steps_would_train(tmp_path, caplog):
    """`--resume --steps 1` on a run at step 2 said "pass --steps to train longer" to a user who had."""
    import logging

    import torch

    from shard_factory import make_shards
    from test_trainer import tiny_config
    from train.checkpoint import CHECKPOINT_FILE
    from train.loop import train

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    run = tmp_path / "run"
    train(tiny_config(steps=2), shards, run, show_progress=False)
    before = (run / CHECKPOINT_FILE).read_bytes()
    with caplog.at_level(logging.WARNING, logger="train.loop"):
        train(tiny_config(steps=1), shards, run, resume=True, show_progress=False)
    warned = [r.getMessage() for r in caplog.records if "already at step" in r.getMessage()]
    assert len(warned) == 1 and "already at step 2 of 1: nothing to train; pass --steps above 2" in warned[0], warned
    assert (run / CHECKPOINT_FILE).read_bytes() == before
    assert torch.load(run / CHECKPOINT_FILE, weights_only=True)["step"] == 2


def test_resume_with_another_number_of_loader_workers_starts_the_next_epoch(tmp_path, caplog):
    """A stream position belongs to one loader worker: resumed with another num_workers (a key that may
    change on resume), the positions were applied to other workers' rows, skipping rows never trained
    on and replaying others, without a word. It starts the next epoch, as another world size does."""
    import logging

    import torch

    from shard_factory import make_shards
    from test_trainer import tiny_config
    from train.checkpoint import CHECKPOINT_FILE
    from train.loop import train

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    run = tmp_path / "run"
    train(tiny_config(steps=2, checkpoint_every=2), shards, run, show_progress=False)
    saved = torch.load(run / CHECKPOINT_FILE, weights_only=True)["data"]
    assert saved["workers"] == 1 and saved["ranks"][0]["epoch"] == 0
    with caplog.at_level(logging.WARNING, logger="train.loop"):
        train(tiny_config(steps=3, checkpoint_every=3, num_workers=2), shards, run, resume=True, show_progress=False)
    warned = [r.getMessage() for r in caplog.records if "starting the next epoch afresh" in r.getMessage()]
    assert warned == ["checkpoint has data positions for 1 ranks of 1 loader workers, not 1 of 2: "
                      "starting the next epoch afresh"], warned
    resumed = torch.load(run / CHECKPOINT_FILE, weights_only=True)["data"]
    assert resumed["workers"] == 2 and resumed["ranks"][0]["epoch"] >= 1
