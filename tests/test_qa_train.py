"""QA of `synth train`, `eval`, `export-onnx` and `selftune` as a demanding user runs them: killed
runs and their logs, bad inputs and checkpoints. One test per defect found."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import train.loop as loop
from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards
from test_trainer import tiny_config
from train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.loop import train, note_short_schedule
from train.tasks import build_task


class Killed(BaseException):
    """A SIGKILL as seen by the run: it ends where it is, with no stop checkpoint."""


def _killed_at(monkeypatch: pytest.MonkeyPatch, kill_step: int) -> None:
    original = loop.learning_rate

    def learning_rate(step, config):
        if step == kill_step:
            raise Killed
        return original(step, config)

    monkeypatch.setattr(loop, "learning_rate", learning_rate)


def save_untrained_search(path: Path, **overrides) -> Path:
    """A query search checkpoint of :func:`tiny_config` with untrained weights."""
    config = tiny_config(**overrides)
    save_checkpoint(path, model=build_task(config).build_model(), optimizer=None, step=0, config=config.to_dict(),
                    config_hash=config.hash())
    return path


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
    # An event file is named by the second, the process and a per-process counter: two runs in one
    # second of one process (never two real runs) can sort out of order when the counter gains a
    # digit (".9" after ".10"), and TensorBoard then purges the later run's steps as the earlier's.
    time.sleep(1.05)
    train(config, shards, run, resume=resume, show_progress=False)
    assert load_checkpoint(run / CHECKPOINT_FILE)["step"] == 6
    assert _logged_steps(run / "tb") == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_manifests_shard_without_a_composite_column_is_one_line_naming_it(tmp_path, command):
    """A shard of a folder's manifest with no ``objects`` column (an older or hand-edited schema) was a
    pyarrow KeyError traceback mid-run; a shard named by itself was already refused in one line."""
    folder = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    shard = folder / "train-00000.parquet"
    pq.write_table(pq.read_table(shard).drop(["objects"]), shard, row_group_size=4)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_config().to_dict()["values"]))
    checkpoint = save_untrained_search(tmp_path / "search.pt")
    args = {"train": ["train", "--shards", folder, "--out", tmp_path / "run", "--config", config],
            "eval": ["eval", "--shards", folder, "--checkpoint", checkpoint]}[command]
    assert_one_line_error(run_cli(*args), 2, f"{shard}: not a composite shard (no objects column)")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_of_another_architecture_names_the_first_mismatch(tmp_path):
    """An init_checkpoint (or --checkpoint) of another model width said only "checkpoint does not fit
    this model (Error(s) in loading state_dict for QuerySearchNet:)": torch's header, not what differs."""
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    wide = save_untrained_search(tmp_path / "wide.pt", model={**tiny_config().model, "conversion_width": 16})
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_config(init_checkpoint=str(wide)).to_dict()["values"]))
    line = assert_one_line_error(run_cli("train", "--shards", shards, "--out", tmp_path / "run", "--config", config),
                                 2, f"{wide}: checkpoint does not fit this model (size mismatch for conversion.")
    assert "Error(s) in loading" not in line and "more)" in line


@pytest.mark.parametrize("key, value, message", [
    ("seed", -3, "seed must be an integer from 0 to 2**63 - 1"),  # a traceback in round 1's extract (numpy)
    ("seed", 2**64, "seed must be an integer from 0 to 2**63 - 1"),
    ("max_rounds", True, "max_rounds must be an integer >= 1"),  # YAML's true was taken for 1 round
    ("finetune_steps", True, "finetune_steps must be an integer >= 0"),
    ("unlabeled_per_round", True, "unlabeled_per_round must be an integer >= 0"),
    ("min_gain", float("nan"), "min_gain must be a finite number"),  # a NaN never stopped a run on its gain
    ("min_gain", True, "min_gain must be a finite number"),
])
def test_selftune_config_values_of_the_wrong_type_or_range_are_one_line_naming_the_key(key, value, message):
    from augment.imageio import InputError
    from pipelines import selftune_config
    from segment_factory import tiny_selftune_config

    with pytest.raises(InputError, match=f"^selftune.yaml: {re.escape(message)}$"):
        selftune_config.resolve(tiny_selftune_config(**{key: value}), "selftune.yaml")


def test_a_train_seed_beyond_torchs_range_is_one_line_not_a_traceback(tmp_path):
    """seed: 99999999999999999999 passed the config's checks and failed in torch.manual_seed with a traceback."""
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**tiny_config().to_dict()["values"], "seed": 10**20}))
    assert_one_line_error(run_cli("train", "--shards", shards, "--out", tmp_path / "run", "--config", config), 2,
                          f"{config}: seed must be at most 2**63 - 1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["--shards", "--eval-shards"])
def test_train_into_its_own_shards_folder_is_a_user_error_not_busy_with_itself(tmp_path, option):
    """train --shards X --out X said "train run (pid <its own>) is writing these shards; wait for it to
    finish" (exit 3): its run-folder lock stopped its own reading lock."""
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_config().to_dict()["values"]))
    args = ["train", "--shards", shards, "--out", shards, "--config", config]
    if option == "--eval-shards":
        args[2] = make_shards(tmp_path / "other", n_cutouts=6, n_composites=8, size=64).folder
        args += ["--eval-shards", shards]
    before = sorted(p.name for p in shards.iterdir())
    line = assert_one_line_error(run_cli(*args), 2, f"{shards}: --out is also a {option} folder")
    assert "pid" not in line and sorted(p.name for p in shards.iterdir()) == before


def test_export_onnx_never_overwrites_a_file_that_is_not_an_onnx_model(tmp_path):
    """export-onnx --out replaced any file: the very checkpoint it exported (the run's weights lost), a
    shard folder's objects.parquet; eval --out already refused a file that was not its report."""
    pytest.importorskip("onnx")
    checkpoint = save_untrained_search(tmp_path / "run" / CHECKPOINT_FILE)
    kept = (tmp_path / "notes.txt")
    kept.write_text("my notes\n")
    for out in (checkpoint, kept):
        before = out.read_bytes()
        assert_one_line_error(run_cli("export-onnx", "--checkpoint", checkpoint, "--out", out, "--no-check"), 2,
                              f"{out}: --out exists and is not an ONNX model; not overwriting it")
        assert out.read_bytes() == before
    onnx_file = tmp_path / "search.onnx"
    for _ in range(2):  # an earlier export is replaced
        assert run_cli("export-onnx", "--checkpoint", checkpoint, "--out", onnx_file, "--no-check").exit_code == 0


def test_a_shard_folder_given_twice_is_one_line_not_trained_on_twice(tmp_path):
    """--task segment --shards X --shards X/ trained on X's rows twice an epoch, without a word."""
    from segment_factory import tiny_train_values

    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    config = tmp_path / "segment.yaml"
    config.write_text(yaml.safe_dump(tiny_train_values(steps=1)))
    result = run_cli("train", "--config", config, "--shards", shards, "--shards", f"{shards}/", "--out", tmp_path / "run")
    assert_one_line_error(result, 2, f"{shards}/: given twice as --shards (also as {shards})")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--task", "bogus", "--task must be query_search or segment, not 'bogus'"),
    ("--device", "tpu", "--device must be auto, cpu, cuda or cuda:N, not 'tpu'"),
])
def test_a_bad_train_option_is_named_as_the_option_not_as_the_config_file(tmp_path, option, value, message):
    """train --config c.yaml --device tpu said "c.yaml: device must be ...": the file holds no 'tpu'."""
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_config().to_dict()["values"]))
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8, size=64).folder
    line = assert_one_line_error(run_cli("train", "--shards", shards, "--out", tmp_path / "run", "--config", config,
                                         option, value), 2, message)
    assert str(config) not in line and not (tmp_path / "run").exists()


def test_a_loader_worker_killed_under_a_run_is_one_line_saying_how_to_resume(tmp_path, monkeypatch):
    """The OOM killer (or a kill -9) taking a DataLoader worker ended train with torch's traceback."""
    import multiprocessing
    import os
    import signal
    import time

    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=12, size=64).folder
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_config(steps=8, checkpoint_every=2, num_workers=1).to_dict()["values"]))
    original = loop.learning_rate

    def learning_rate(step, config):
        if step == 3:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
            time.sleep(0.5)
        return original(step, config)

    monkeypatch.setattr(loop, "learning_rate", learning_rate)
    run = tmp_path / "run"
    line = assert_one_line_error(run_cli("train", "--shards", shards, "--out", run, "--config", config), 1,
                                 "DataLoader worker (pid", "killed by signal", "--resume")
    assert "Traceback" not in line and load_checkpoint(run / CHECKPOINT_FILE)["step"] == 2


@pytest.fixture(scope="module")
def finished_selftune(tmp_path_factory):
    """A finished one-round self-tuning state, its inputs and config file."""
    from pipelines import selftune_config
    from pipelines.selftune import Inputs, SelfTune
    from segment_factory import make_noise_backgrounds, make_scene_photos, make_unlabeled, tiny_selftune_config

    root = tmp_path_factory.mktemp("selftune")
    inputs = Inputs(make_scene_photos(root / "labeled"), make_unlabeled(root / "unlabeled"),
                    make_noise_backgrounds(root / "backgrounds"))
    values = tiny_selftune_config(max_rounds=1, finetune_steps=0)
    (root / "selftune.yaml").write_text(yaml.safe_dump(values))
    assert SelfTune(root / "state", inputs, selftune_config.resolve(values)).run()["finished"]
    return root, inputs


@pytest.mark.parametrize("file, text, named", [
    ("selftune.json", "[1, 2]", "selftune.json"),  # AttributeError: 'list' object has no attribute 'get'
    ("selftune.json", {"round": "x"}, "selftune.json"),  # taken as it was
    ("selftune.json", {"round": -3}, "selftune.json"),  # 'seed must be at least 0, got -3', no file named
    ("selftune.json", {"round": 7, "step": "labeled"}, "selftune.json"),  # ValueError: tuple.index(x) traceback
    ("selftune.json", {"round": 0, "step": "score"}, "selftune.json"),  # 'base/train/checkpoint.pt: no such checkpoint'
    ("selftune.json", {"inputs": {}}, "selftune.json"),  # KeyError: 'labeled'
    ("selftune.json", {"times": None}, "selftune.json"),  # KeyError: 'times' (the key removed)
    ("config.next.json", "{bad", "config.next.json"),  # JSONDecodeError traceback
    ("config.next.json", "[1]", "config.next.json"),  # TypeError: 'list' object is not a mapping
    ("metrics.jsonl", '{"round": 1, "miou": 0.', "metrics.jsonl"),  # JSONDecodeError traceback
])
def test_a_damaged_selftune_state_file_is_one_line_naming_it(finished_selftune, tmp_path, file, text, named):
    import json
    import shutil

    root, inputs = finished_selftune
    state = tmp_path / "state"
    shutil.copytree(root / "state", state)
    if isinstance(text, dict):  # the state's keys changed; one of None removed
        saved = {**json.loads((state / file).read_text()), **text}
        text = json.dumps({k: v for k, v in saved.items() if v is not None or k not in text})
    (state / file).write_text(text)
    result = run_cli("selftune", "--state", state, "--labeled", inputs.labeled, "--unlabeled", inputs.unlabeled,
                     "--backgrounds", inputs.backgrounds, "--config", root / "selftune.yaml")
    line = assert_one_line_error(result, 2, str(state / named))
    assert "Traceback" not in line


@pytest.mark.parametrize("file, change, says", [
    ("config.next.json", None, "train: segment.classes: task segment needs a class map"),  # {}
    ("config.next.json", {"max_rounds": "lots"}, "max_rounds must be an integer >= 1"),
    ("config.next.json", {"colour": "blue"}, "unknown key(s) colour"),
    ("config.json", {"max_rounds": 0}, "max_rounds must be an integer >= 1"),
])
@pytest.mark.parametrize("with_config", [False, True])
def test_a_selftune_config_file_synth_did_not_write_is_one_line_naming_it(finished_selftune, tmp_path, file, change,
                                                                        says, with_config):
    """A valid JSON object that is no config (config.next.json of {} or {"max_rounds": "lots"}) was read as
    a changed config ('made with another config (expand.composition.height 512 -> 64; ...)' with --config)
    or, without --config, taken as it was: config.next.json replaced config.json at the next round."""
    import json
    import shutil

    root, inputs = finished_selftune
    state = tmp_path / "state"
    shutil.copytree(root / "state", state)
    config = {**json.loads((state / "config.json").read_text()), **change} if change else {}
    (state / file).write_text(json.dumps(config))
    result = run_cli("selftune", "--state", state, "--labeled", inputs.labeled, "--unlabeled", inputs.unlabeled,
                     "--backgrounds", inputs.backgrounds, *(["--config", root / "selftune.yaml"] if with_config else []))
    assert_one_line_error(result, 2, f"{state / file}: {says}", "not a self-tuning config synth wrote"
                          + ("; remove it" if file == "config.next.json" else ""))


def test_a_pending_selftune_config_synth_wrote_is_still_taken(finished_selftune, tmp_path):
    import json
    import shutil

    root, inputs = finished_selftune
    state = tmp_path / "state"
    shutil.copytree(root / "state", state)
    from pipelines.selftune import state_config

    stored = json.loads((state / "config.json").read_text())
    assert stored["min_gain"] != 0.25
    (state / "config.next.json").write_text(json.dumps({**stored, "min_gain": 0.25}))
    # The pending config is the one in force (it differs from config.json where it can be seen)...
    assert state_config(state)["min_gain"] == 0.25
    result = run_cli("selftune", "--state", state, "--labeled", inputs.labeled, "--unlabeled", inputs.unlabeled,
                     "--backgrounds", inputs.backgrounds)
    # ...and the command takes it, not refuses it.
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("text", ["{bad", "[1]"])
def test_selftune_search_on_a_state_whose_config_is_damaged_is_one_line_naming_it(finished_selftune, tmp_path, text):
    """`--search` without --config reads the state's config itself: a damaged config.json was a
    JSONDecodeError or TypeError traceback there."""
    import shutil

    root, inputs = finished_selftune
    state = tmp_path / "state"
    shutil.copytree(root / "state", state)
    (state / "config.json").write_text(text)
    result = run_cli("selftune", "--state", state, "--labeled", inputs.labeled, "--unlabeled", inputs.unlabeled,
                     "--backgrounds", inputs.backgrounds, "--search")
    assert_one_line_error(result, 2, f"{state / 'config.json'}: unreadable self-tuning state")


def test_selftune_search_is_adopted_with_force_config_and_no_config_file(finished_selftune, tmp_path, monkeypatch):
    """`--search` on a state made without it said 'pass --force-config to adopt the new one', and
    `--search --force-config` then said '--force-config adopts a changed --config; pass the --config FILE':
    no command switched the search on but one naming the config file again."""
    import json
    import shutil

    from pipelines.selftune import NEXT_CONFIG_FILE, SelfTune

    root, inputs = finished_selftune
    state = tmp_path / "state"
    shutil.copytree(root / "state", state)
    args = ["selftune", "--state", state, "--labeled", inputs.labeled, "--unlabeled", inputs.unlabeled,
            "--backgrounds", inputs.backgrounds, "--search"]
    assert_one_line_error(run_cli(*args), 2, "(search False -> True); pass --force-config")
    monkeypatch.setattr(SelfTune, "run", lambda self, rounds=None: self.state)  # what it adopts, not the rounds
    result = run_cli(*args, "--force-config")
    assert result.exit_code == 0, result.output
    adopted = state / NEXT_CONFIG_FILE if (state / NEXT_CONFIG_FILE).exists() else state / "config.json"
    assert json.loads(adopted.read_text())["search"] is True
    assert "nothing to adopt" not in result.output
    # Again, on the state now searching: nothing changes, and it says so (it was a silent no-op).
    result = run_cli(*args, "--force-config")
    assert result.exit_code == 0, result.output
    assert "--force-config has nothing to adopt" in " ".join(result.output.split())


def test_a_decay_horizon_inside_the_warm_up_is_one_line_naming_both_keys(tmp_path):
    """decay_steps 10 under warmup_steps 20: the rate rose to lr over 20 steps, then fell straight to min_lr
    (no cosine decay), without a word."""
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**tiny_config().to_dict()["values"], "warmup_steps": 20, "decay_steps": 10,
                                      "steps": 30}))
    assert_one_line_error(run_cli("train", "--shards", tmp_path, "--out", tmp_path / "run", "--config", config), 2,
                          f"{config}: decay_steps (10) must exceed warmup_steps (20)")
    assert not (tmp_path / "run").exists()
    with pytest.raises(Exception, match="decay_steps .20. must exceed warmup_steps .20."):
        TrainConfig(**{**tiny_config().to_dict()["values"], "warmup_steps": 20, "decay_steps": 20})
    TrainConfig(**{**tiny_config().to_dict()["values"], "warmup_steps": 0, "decay_steps": 1})  # no warm-up: fine


def test_a_run_that_ends_inside_its_warm_up_says_so_with_verbose(caplog):
    """steps 10, warmup_steps 20 (a smoke run's --steps): runs, saying with -v that lr is never reached."""
    with caplog.at_level(logging.INFO, logger="train.loop"):
        note_short_schedule(TrainConfig(**{**tiny_config().to_dict()["values"], "warmup_steps": 20, "steps": 10}))
        note_short_schedule(TrainConfig(**{**tiny_config().to_dict()["values"], "warmup_steps": 20, "steps": 21}))
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("steps (10) do not exceed warmup_steps (20): this run ends")


def test_a_checkpoint_saved_before_the_decay_check_still_loads_with_its_schedule():
    """A run with decay_steps 50 under the default warmup_steps 100 trained before the check came: its
    checkpoint is still searched, evaluated and resumed with that schedule (and its hash), not refused."""
    values = {**tiny_config().to_dict()["values"], "warmup_steps": 100, "decay_steps": 50, "batch_size": 300}
    config = TrainConfig.from_checkpoint({"config": {"values": values}}, "old/checkpoint.pt")
    assert (config.decay_steps, config.warmup_steps, config.batch_size) == (50, 100, 300)
    with pytest.raises(Exception, match="decay_steps .50. must exceed warmup_steps .100."):
        TrainConfig(**{**values, "batch_size": 8})  # a new run with it is still refused


def test_a_run_saved_before_the_decay_check_resumes_with_its_schedule(monkeypatch):
    """synth train --resume copied the checkpoint's config into a new TrainConfig, whose checks refused the
    decay_steps (and a batch_size past the maximum) that from_checkpoint had let load."""
    import train.checkpoint
    from pipelines import train_commands

    values = {**tiny_config().to_dict()["values"], "warmup_steps": 100, "decay_steps": 50, "batch_size": 300}
    monkeypatch.setattr(train.checkpoint, "load_checkpoint", lambda path: {"config": {"values": values}})
    config = train_commands._config(None, "run/checkpoint.pt", steps=None)
    assert (config.decay_steps, config.batch_size) == (50, 300)
    assert train_commands._config(None, "run/checkpoint.pt", steps=400).steps == 400  # an override applies
