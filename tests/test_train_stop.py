"""A training run stopped by a real signal, or failing: the TensorBoard log is on disk however a run ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train.loop as loop
from shard_factory import make_shards
from test_trainer import tiny_config
from train.loop import train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), n_cutouts=8, n_composites=12, rows_per_group=3,
                       rows_per_shard=6, size=64).folder


# ------------------------------------------------------------------------------------ TensorBoard
@pytest.mark.parametrize("ending", ["signal", "error"])
def test_the_tensorboard_writer_is_closed_however_a_run_ends(shards, tmp_path, monkeypatch, ending):
    """The TensorBoard writer was closed only at a normal end: a stopped or failed run left its last
    scalars to a daemon thread that the process's exit ends, and unflushed where the file is
    buffered (TensorFlow's gfile). Here TensorBoard's own file writes each record through, so the
    event file alone would not tell: the writer's being closed does."""
    import torch.utils.tensorboard

    writers = []

    class Writer(torch.utils.tensorboard.SummaryWriter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            writers.append(self)

    original = loop.learning_rate

    def learning_rate(step, config):
        if step == 2:
            if ending == "signal":
                os.kill(os.getpid(), signal.SIGTERM)  # held to this step's end (the 3rd)
            else:
                raise RuntimeError("a failure in the 3rd step")
        return original(step, config)

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", Writer)
    monkeypatch.setattr(loop, "learning_rate", learning_rate)
    with pytest.raises(KeyboardInterrupt if ending == "signal" else RuntimeError):
        train(tiny_config(steps=6, log_every=1), shards, tmp_path, show_progress=False)
    assert len(writers) == 1 and writers[0].all_writers is None  # closed, so flushed
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert max(event.step for event in events.Scalars("train/loss")) == (3 if ending == "signal" else 2)
