"""The training loop: exact resume, config checks, DDP on CPU and the CLI commands."""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import typer
from typer.testing import CliRunner

from augment.imageio import InputError
from pipelines.train_commands import register
from shard_factory import make_shards
from train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from train.config import TrainConfig
from train.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(pretrained=False, feature_strides=[8], scale_pairs=[[1.0, 1.0]], edge_path=False,
                  conversion_width=8, conversion_layers=1, skip_channels=8)


def tiny_config(**overrides) -> TrainConfig:
    values = dict(model=TINY_MODEL, query_size=32, medium_size=64, batch_size=2, steps=6, num_workers=0,
                  warmup_steps=2, log_every=2, eval_every=0, checkpoint_every=3, shuffle_buffer=8,
                  eval_fraction=0.3, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), n_cutouts=8, n_composites=12, rows_per_group=3,
                       rows_per_shard=6, size=64, corrupt_rows=(4,)).folder


@pytest.fixture(scope="module")
def full_run(shards, tmp_path_factory):
    """tiny_config()'s whole run (6 steps), which the tests below only read."""
    return train(tiny_config(), shards, tmp_path_factory.mktemp("full"), show_progress=False)


def test_training_losses_stay_finite_with_a_trainable_backbone(full_run):
    losses = full_run.losses
    assert all(math.isfinite(x) for x in losses), (
        f"losses {losses}: NaN gradients, e.g. from sqrt at 0 in train.correlation's window norm "
        "(a masked window that covers only zero padding)")


def test_resume_reproduces_the_uninterrupted_run(shards, full_run, tmp_path, caplog):
    # Twelve rows, batch 2: six steps span two epochs, so the resume also crosses an epoch boundary.
    full = full_run
    assert len(full.losses) == 6
    # Same schedule (decay over 6 steps), stopped after 3, then resumed to 6.
    first = train(tiny_config(steps=3, decay_steps=6), shards, tmp_path / "split", show_progress=False)
    with caplog.at_level(logging.WARNING, logger="train.loop"):
        second = train(tiny_config(steps=6, decay_steps=6), shards, tmp_path / "split", resume=True, show_progress=False)
    # The same world size and workers: the data stream goes on where it was, and is not said to restart.
    assert not [r for r in caplog.records if "afresh" in r.getMessage()]
    # Bit-identical; array_equal also counts NaN == NaN, so this test is about resuming only.
    np.testing.assert_array_equal(first.losses, full.losses[:3])
    np.testing.assert_array_equal(second.losses, full.losses[3:])
    assert full.corrupt_rows == second.corrupt_rows == 1
    state = load_checkpoint(tmp_path / "split" / CHECKPOINT_FILE)
    assert state["step"] == 6 and state["data"]["ranks"][0]["epoch"] >= 1


def test_a_run_can_continue_another_runs_schedule_and_optimizer(shards, tmp_path):
    """init_checkpoint + init_optimizer + schedule_offset: a second stage (e.g. other data) that goes on
    down the first stage's schedule with its Adam moments, not a restart with warm-up."""
    from train.loop import learning_rate

    whole = tiny_config(steps=6)
    first, second = tiny_config(steps=3, decay_steps=6), tiny_config(steps=3, decay_steps=6, schedule_offset=3)
    assert [learning_rate(s, first) for s in range(3)] + [learning_rate(s, second) for s in range(3)] == \
        [learning_rate(s, whole) for s in range(6)]
    train(first, shards, tmp_path / "a", show_progress=False)
    init = str(tmp_path / "a" / CHECKPOINT_FILE)
    train(tiny_config(steps=3, decay_steps=6, schedule_offset=3, init_checkpoint=init, init_optimizer=True),
          shards, tmp_path / "b", show_progress=False)
    moments = load_checkpoint(tmp_path / "b" / CHECKPOINT_FILE)["optimizer"]["state"]
    assert {int(v["step"]) for v in moments.values()} == {6}  # Adam's bias correction goes on from step 3
    with pytest.raises(InputError, match="init_optimizer needs an init_checkpoint"):
        tiny_config(init_optimizer=True)


def test_resume_with_loader_workers_keeps_the_batch_order(shards, tmp_path):
    # Batch 1 and two workers: steps alternate between the workers, and the resume point (step 3)
    # falls where worker 1's batch is due, which DataLoader worker 0 must then play.
    config = dict(batch_size=1, num_workers=2, decay_steps=6)
    full = train(tiny_config(**config), shards, tmp_path / "full", show_progress=False)
    train(tiny_config(steps=3, **config), shards, tmp_path / "split", show_progress=False)
    second = train(tiny_config(**config), shards, tmp_path / "split", resume=True, show_progress=False)
    np.testing.assert_array_equal(second.losses, full.losses[3:])


def test_checkpoint_of_another_config_is_a_clear_error(shards, tmp_path):
    train(tiny_config(steps=2, decay_steps=6), shards, tmp_path, show_progress=False)
    other = tiny_config(steps=4, model={**TINY_MODEL, "conversion_width": 16})
    with pytest.raises(InputError, match="different config \\(the checkpoint's -> this run's: .*model.conversion_width 8 -> 16") as error:
        train(other, shards, tmp_path, resume=True, show_progress=False)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="already there"):
        train(tiny_config(), shards, tmp_path, show_progress=False)


def test_yaml_configs_load_and_unknown_keys_are_errors(tmp_path):
    for name in ("train_cpu.yaml", "train_gpu.yaml", "search_real_cpu.yaml"):
        TrainConfig.from_yaml(REPO / "configs" / name)
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 5\nlearning_rate: 0.1\n")
    with pytest.raises(InputError, match="unknown config key.*learning_rate"):
        TrainConfig.from_yaml(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, shards: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(tiny_config(steps=2, checkpoint_every=0), Path(shards), Path(out), show_progress=False)


def test_two_process_ddp_on_cpu_writes_one_checkpoint(shards, tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(shards), str(tmp_path)), nprocs=2, join=True)
    assert [p.name for p in tmp_path.glob("*.pt")] == [CHECKPOINT_FILE]
    state = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert state["step"] == 2 and len(state["data"]["ranks"]) == 2


def test_cli_train_eval_and_user_errors(shards, tmp_path):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    config = tmp_path / "tiny.yaml"
    config.write_text("\n".join([
        "model: {pretrained: false, feature_strides: [8], scale_pairs: [[1.0, 1.0]], edge_path: false,"
        " conversion_width: 8, conversion_layers: 1, skip_channels: 8}",
        "query_size: 32", "medium_size: 64", "batch_size: 2", "steps: 2", "num_workers: 0", "warmup_steps: 1",
        "log_every: 1", "eval_every: 2", "eval_batches: 1", "eval_fraction: 0.3", "shuffle_buffer: 4",
        "device: cpu"]) + "\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--shards", str(shards), "--out", str(run), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (run / CHECKPOINT_FILE).is_file() and any((run / "tb").iterdir())
    report = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", "--checkpoint", str(run / CHECKPOINT_FILE), "--shards", str(shards),
                                 "--split", "all", "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert "hit_rate" in report.read_text()
    # User errors: one line, exit code 2, no traceback.
    for args in (["train", "--shards", str(tmp_path / "missing"), "--out", str(tmp_path / "r2"), "--config", str(config)],
                 ["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--shards", str(shards)],
                 ["train", "--shards", str(shards), "--out", str(run), "--config", str(config)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "error:" in result.output


def test_a_train_that_finds_no_usable_pairs_leaves_no_run_folder(tmp_path):
    # Every row unusable (a shard another tool wrote with null pictures): exit 2 once training reads them,
    # and the new --out it had made held config.yaml and tb/ (a half-made run) rather than nothing.
    import pyarrow.parquet as pq
    from shard_factory import rewrite_rows

    folder = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, size=32).folder
    for shard in sorted(folder.glob("train-*.parquet")):
        rewrite_rows(shard, {i: {"image": None} for i in range(pq.ParquetFile(shard).metadata.num_rows)})
    app = typer.Typer()
    register(app)
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {pretrained: false, feature_strides: [8], scale_pairs: [[1.0, 1.0]], edge_path: false,"
                      " conversion_width: 8, conversion_layers: 1, skip_channels: 8}\nquery_size: 32\nmedium_size: 32\n"
                      "batch_size: 2\nsteps: 2\nnum_workers: 0\neval_every: 0\ndevice: cpu\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--shards", str(folder), "--out", str(run), "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "pairs for a batch of 2" in result.output and "Traceback" not in result.output
    assert not run.exists()
    kept = tmp_path / "kept"  # a folder the user made (or an earlier run's) is left as it was
    (kept / "tb").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["train", "--shards", str(folder), "--out", str(kept), "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert (kept / "notes.txt").read_text() == "mine" and (kept / "tb").is_dir()


def test_label_head_trains_on_query_categories(shards, tmp_path):
    config = tiny_config(model={**TINY_MODEL, "num_label_classes": 2}, label_categories=["shape0", "shape1"], steps=4)
    result = train(config, shards, tmp_path, show_progress=False)
    assert all(math.isfinite(x) for x in result.losses)
    assert 0.0 <= result.metrics["label_accuracy"] <= 1.0
    with pytest.raises(InputError, match="label_categories"):
        tiny_config(model={**TINY_MODEL, "num_label_classes": 3}, label_categories=["shape0"])


def test_real_media_mixed_with_composites_train_and_export_a_head(shards, tmp_path):
    from pipelines.shipped import load_shipped
    from sources_factory import make_street_photos

    photos = make_street_photos(tmp_path / "photos")
    config = tiny_config(model={**TINY_MODEL, "residual_projection": True}, real_fraction=0.5,
                         photo_sources=[str(photos)], photo_min_area=50, photo_medium=[64, 128],
                         photo_per_scene=[2, 2], photo_epoch_size=8, hard_negative_fraction=0.5, steps=4)
    result = train(config, shards, tmp_path / "run", show_progress=False)
    assert len(result.losses) == 4 and all(math.isfinite(x) for x in result.losses)
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert len(state["data"]["ranks"][0]["streams"]) == 2  # composites and real media, each resumable
    with pytest.raises(InputError, match="photo_sources"):
        tiny_config(real_fraction=0.5)

    app = typer.Typer()
    register(app)
    calibration = tmp_path / "calibration.json"
    calibration.write_text('{"threshold": 0.42, "f1": 0.5, "cases": 4, "verify": false}')  # a heat-map calibration
    result = CliRunner().invoke(app, ["export-head", "--checkpoint", str(tmp_path / "run" / CHECKPOINT_FILE),
                                      "--calibration", str(calibration), "--out", str(tmp_path / "head"),
                                      "--made-by", "test"])
    assert result.exit_code == 0, result.output
    model, threshold, manifest = load_shipped(tmp_path / "head")
    assert threshold == 0.42 and manifest["training_steps"] == 4 and manifest["made_by"] == "test"
    trained = state["model"]
    for key, tensor in model.state_dict().items():
        if key.startswith("projections."):
            assert torch.equal(tensor, trained[key])


def test_a_checkpoint_written_before_an_option_existed_still_resumes_with_it_off():
    from augment.imageio import InputError
    from train.checkpoint import check_compatible

    saved = {"model": {"residual_projection": True}, "lr": 0.002}
    state = {"config_hash": "old", "config": {"identity": saved}}
    # An option added since, at its off value: the same run.
    check_compatible(state, "new", {"model": {"residual_projection": True, "residual_hidden": 0}, "lr": 0.002}, "c.pt")
    for changed in ({"model": {"residual_projection": True, "residual_hidden": 16}, "lr": 0.002},
                    {"model": {"residual_projection": True, "residual_hidden": 0}, "lr": 0.01}):
        with pytest.raises(InputError, match="different config"):
            check_compatible(state, "new", changed, "c.pt")


def test_an_rng_state_torch_cannot_restore_is_one_line_naming_the_key():
    from train.checkpoint import resuming

    # A wrong-sized torch RNG state is torch's RuntimeError, not one of the types the other keys raise.
    with pytest.raises(InputError, match="^c.pt: its 'rng' cannot be resumed \\(RuntimeError"):
        with resuming("c.pt", "rng"):
            torch.set_rng_state(torch.zeros(3, dtype=torch.uint8))


@pytest.mark.parametrize("key, value, says", [
    ("optimizer", {}, "its 'optimizer' cannot be resumed \\(KeyError"),
    ("rng", None, "its 'rng' cannot be resumed \\(TypeError"),
    ("data", {"ranks": "x"}, "its 'data' cannot be resumed \\(AttributeError"),
    ("data", {"ranks": [{"epoch": "x", "positions": {0: 1}}], "workers": 1}, "its 'data' cannot be resumed .*holds 'x'"),
    ("step", -5, "not a synth training checkpoint \\('step' missing, of the wrong type or out of range\\)"),
])
def test_resuming_a_checkpoint_whose_optimizer_rng_data_or_step_is_damaged_is_one_line_naming_it(
        shards, tmp_path, key, value, says):
    # A hand-made or damaged checkpoint: `--resume` was a KeyError, TypeError or AttributeError traceback
    # (an epoch 'x' was NumPy's in the loader), and a step of -5 trained from step -5.
    train(tiny_config(steps=1, checkpoint_every=1), shards, tmp_path, show_progress=False)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    torch.save({**state, key: value}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(InputError, match=f"^{tmp_path / CHECKPOINT_FILE}: {says}") as error:
        train(tiny_config(steps=2), shards, tmp_path, resume=True, show_progress=False)
    assert "\n" not in str(error.value)
