"""Open defects of an audit, the data side: a resumed training run on other shards, an expansion
rewriting the shards a training run reads, a misspelt label name, an --out inside a source folder.
Small generated shards and photos; tiny networks on the CPU."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from augment.imageio import InputError
from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards
from test_trainer import tiny_config
from train.checkpoint import CHECKPOINT_FILE
from train.loop import train


# ----------------------------------------------------------------- 3: --resume on other shards
def test_resume_on_other_shards_is_one_line_naming_both_and_the_same_shards_moved_resume(tmp_path):
    first = make_shards(tmp_path / "first", n_composites=8, size=64, seed=0).folder
    other = make_shards(tmp_path / "other", n_composites=8, size=64, seed=1).folder  # as many rows, other data
    run = tmp_path / "run"
    train(tiny_config(steps=1), first, run, show_progress=False)
    result = run_cli("train", "--shards", other, "--out", run, "--resume", "--steps", 2)
    line = assert_one_line_error(result, 2, f"{run / CHECKPOINT_FILE}: the run was trained on --shards {first}",
                                 f"not on {other}")
    assert "start a new --out" in line
    assert torch.load(run / CHECKPOINT_FILE, weights_only=True)["step"] == 1  # nothing trained on the wrong data
    shutil.copytree(first, tmp_path / "moved")  # the same shards elsewhere are the same data
    assert train(tiny_config(steps=2), tmp_path / "moved", run, resume=True, show_progress=False).step == 2


def test_a_checkpoint_from_before_shard_sets_were_recorded_resumes_with_a_warning(tmp_path, caplog):
    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    run = tmp_path / "run"
    train(tiny_config(steps=1), shards, run, show_progress=False)
    state = torch.load(run / CHECKPOINT_FILE, weights_only=True)
    del state["shards"]  # as an older synth wrote it
    torch.save(state, run / CHECKPOINT_FILE)
    with caplog.at_level(logging.WARNING, logger="train.shard_set"):
        assert train(tiny_config(steps=2), shards, run, resume=True, show_progress=False).step == 2
    warned = [r.getMessage() for r in caplog.records if r.name == "train.shard_set"]
    assert len(warned) == 1 and "does not record which shards it was trained on" in warned[0], warned
    assert torch.load(run / CHECKPOINT_FILE, weights_only=True)["shards"]["paths"] == [str(shards)]
    with pytest.raises(InputError, match="the run was trained on --shards"):
        train(tiny_config(steps=3), make_shards(tmp_path / "b", n_composites=8, size=64, seed=2).folder, run,
              resume=True, show_progress=False)
