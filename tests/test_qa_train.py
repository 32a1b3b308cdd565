"""QA of `synth train`, `eval`, `export-onnx` and `selftune` as a demanding user runs them: killed
runs and their logs, bad inputs and checkpoints. One test per defect found."""

from __future__ import annotations

import pytest

import train.loop as loop
from shard_factory import make_shards
from test_trainer import tiny_config
from train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from train.loop import train


class Killed(BaseException):
    """A SIGKILL as seen by the run: it ends where it is, with no stop checkpoint."""


def _killed_at(monkeypatch: pytest.MonkeyPatch, kill_step: int) -> None:
    original = loop.learning_rate

    def learning_rate(step, config):
        if step == kill_step:
            raise Killed
        return original(step, config)

    monkeypatch.setattr(loop, "learning_rate", learning_rate)


def _logged_steps(tb) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()
    return [event.step for event in events.Scalars("train/loss")]


@pytest.mark.parametrize("kill_step, resume", [(4, True), (2, False)])
def test_a_killed_runs_steps_past_its_checkpoint_are_not_logged_twice_in_tensorboard(tmp_path, monkeypatch,
                                                                                      kill_step, resume):
    """Killed after its checkpoint at step 3 (or before its first), a run had logged steps the rerun
    logged again: RUN/tb showed steps 4-5 (or 1-2) twice, a zig-zag where the rerun's values differ."""
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=12, size=64).folder
    config = tiny_config(steps=6, checkpoint_every=3, log_every=1)
    run = tmp_path / "run"
    _killed_at(monkeypatch, kill_step)
    with pytest.raises(Killed):
        train(config, shards, run, show_progress=False)
    monkeypatch.undo()
    assert (run / CHECKPOINT_FILE).exists() == resume
    train(config, shards, run, resume=resume, show_progress=False)
    assert load_checkpoint(run / CHECKPOINT_FILE)["step"] == 6
    assert _logged_steps(run / "tb") == [1, 2, 3, 4, 5, 6]
