"""Runs stopped (SIGTERM, Ctrl-C, SIGKILL) at awkward moments and rerun as their own message says, found
by a kill-and-rerun sweep of every long command. One test per defect found; each plays the stop by
raising where the signal handler would."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import train.loop as loop
from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards
from test_trainer import tiny_config


@pytest.fixture
def train_run(tmp_path) -> tuple[list[object], Path]:
    """The arguments of a two-step `synth train` with a checkpoint after every step, and its run folder."""
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_config(steps=2, checkpoint_every=1).to_dict()["values"]))
    run = tmp_path / "run"
    return ["train", "--shards", shards, "--out", run, "--config", config], run


def _stop_at(monkeypatch: pytest.MonkeyPatch, stop_step: int) -> None:
    """A SIGTERM (the CLI raises KeyboardInterrupt for it) as step ``stop_step`` begins."""
    def learning_rate(step, config):
        if step == stop_step:
            raise KeyboardInterrupt
        return original(step, config)

    original = loop.learning_rate
    monkeypatch.setattr(loop, "learning_rate", learning_rate)


def test_a_train_run_stopped_before_its_first_checkpoint_is_told_to_start_again_not_to_resume(train_run, monkeypatch):
    """Stopped before its first checkpoint, train said "rerun ... with --resume", and that rerun was
    refused with only "no such checkpoint" (exit 2): a scheduler following the message never got going."""
    args, run = train_run
    _stop_at(monkeypatch, 0)
    line = assert_one_line_error(run_cli(*args), 130, "interrupted", "without --resume")
    assert not (run / "checkpoint.pt").exists() and (run / "config.yaml").exists()  # the killed run's folder
    monkeypatch.undo()
    # --resume there (a scheduler that always passes it) says what to do instead.
    assert_one_line_error(run_cli(*args, "--resume"), 2, "no checkpoint to resume from", "without --resume")
    assert "--resume to continue" not in line and run_cli(*args).exit_code == 0  # the message's command works


def test_a_train_run_stopped_after_a_checkpoint_is_told_to_resume_and_resumes(train_run, monkeypatch):
    args, run = train_run
    _stop_at(monkeypatch, 1)  # step 1's checkpoint is written
    assert_one_line_error(run_cli(*args), 130, "with --resume to continue from the last checkpoint")
    monkeypatch.undo()
    assert run_cli(*args, "--resume").exit_code == 0
