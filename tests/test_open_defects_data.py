"""Open defects of an audit, the data side: a resumed training run on other shards, an expansion
rewriting the shards a training run reads, a misspelt label name, an --out inside a source folder.
Small generated shards and photos; tiny networks on the CPU."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch

from augment.imageio import InputError
from augment.locking import LOCK_FILE
from augment.schema import MANIFEST_FILE, OBJECTS_FILE
from cli_checks import assert_one_line_error, files_under, run_cli
from lock_checks import try_writing
from shard_factory import make_shards
from sources_factory import make_coco, make_label_map, make_mask_pairs, make_rgba_source
from test_hardening_expand import expand, inputs  # noqa: F401  (the same tiny expansion inputs)
from test_trainer import REPO, tiny_config
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


# ----------------------------------------------------------------- 4: writers and a training run's shards
def test_expand_overwrite_into_shards_a_training_run_reads_is_refused_with_one_line(inputs, tmp_path):
    from augment.locking import BUSY_EXIT_CODE
    from train.shard_set import reading_shards

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    before = files_under(shards)
    with reading_shards([shards]):  # as a training run holds it
        result = expand(inputs, shards, "-n", 2, "--overwrite")
        assert_one_line_error(result, BUSY_EXIT_CODE, f"{shards}: a `synth train`, `eval`, `calibrate`, `show`, `export` or other reader is reading the shards here")
        with reading_shards([shards / "train-00000.parquet"]):  # readers share the folder
            pass
    assert files_under(shards, skip=shards / LOCK_FILE) == {k: v for k, v in before.items() if k != LOCK_FILE}
    assert expand(inputs, shards, "-n", 2, "--overwrite").exit_code == 0  # the run over, the folder is free


def test_a_training_run_holds_its_shards_for_the_whole_run_and_refuses_a_folder_being_written(tmp_path, monkeypatch):
    import train.loop as loop
    from augment.locking import BusyError, folder_lock

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    tried, real_save = [], loop.save_checkpoint

    def save_and_try_writing(*args, **kwargs):  # mid-run: a writer into the shards folder
        try_writing(shards, tried)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", save_and_try_writing)
    train(tiny_config(steps=1), shards, tmp_path / "run", show_progress=False)
    assert len(tried) == 1 and "a `synth train`, `eval`, `calibrate`, `show`, `export` or other reader is reading the shards here" in tried[0], tried
    with folder_lock(shards, "synth expand"):  # released with the run; a writer at work refuses a new run
        with pytest.raises(BusyError, match=f"^{shards}: synth expand \\(pid {os.getpid()}\\) is writing these shards"):
            train(tiny_config(steps=1), shards, tmp_path / "run2", show_progress=False)


def test_the_reading_lock_of_a_killed_training_run_does_not_block_a_writer(tmp_path):
    from augment.locking import folder_lock

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom train.shard_set import reading_shards\n"
                               "with reading_shards(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
                               str(shards)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()  # SIGKILL: no cleanup ran
        holder.wait(timeout=30)
        with folder_lock(shards, "synth expand"):
            pass
    finally:
        holder.kill()
        holder.stdout.close()


# ----------------------------------------------------------------- 5: label names that no source has
@pytest.mark.parametrize("make, real, known", [
    (make_label_map, "jacket", "hat, jacket, null, skirt"),
    (make_mask_pairs, "cup", "bag, cup, object"),
    (make_coco, "shirt", "shirt, shoe"),
    (make_rgba_source, "box", "box, disc"),
])
def test_a_misspelt_keep_labels_name_beside_a_real_one_is_one_line_naming_it_and_the_known(
        inputs, tmp_path, make, real, known):
    """keep_labels: [jacket, jaket] kept the jackets and silently nothing for the misspelt name."""
    _, backgrounds, _ = inputs
    source = make(tmp_path / "source")
    config = tmp_path / "keep.yaml"
    config.write_text(f"sources: {{min_area: 50, keep_labels: [{real}, jaket]}}\n"
                      "composition: {width: 64, height: 64}\n")
    out = tmp_path / "out"
    result = run_cli("expand", source, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, f"sources.keep_labels: 'jaket' not a label of the sources (known: {known})")
    assert not out.exists()


def test_a_drop_labels_name_no_source_has_is_warned_of_once(tmp_path, caplog):
    from augment.config import SourceConfig
    from augment.label_names import check_label_names

    source = make_label_map(tmp_path / "source")
    with caplog.at_level(logging.WARNING, logger="augment.label_names"):
        check_label_names([source], SourceConfig(keep_labels=["jacket", "skirt"], drop_labels=["hat", "scarf"]))
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["sources.drop_labels: 'scarf' not a label of the sources, so nothing is dropped for it "
                      "(known: hat, jacket, null, skirt)"], warned


# ----------------------------------------------------------------- 6: an --out inside an input folder
@pytest.mark.parametrize("inside", ["objects", "backgrounds"])
def test_an_out_inside_a_source_or_the_backgrounds_is_not_read_as_input_and_a_rerun_reuses_the_table(inputs, inside):
    """`synth expand objects -o objects/expanded`: the previous run's table, shards and manifest were
    listed with the source, so each rerun cut the objects out again, and its files were skips."""
    objects, backgrounds, _ = inputs
    out = (objects if inside == "objects" else backgrounds) / "expanded"
    runs = []
    for _ in range(2):
        result = expand(inputs, out, "-n", 2)
        assert result.exit_code == 0, result.output
        table = (out / OBJECTS_FILE).stat()
        runs.append(((table.st_ino, table.st_mtime_ns), json.loads((out / MANIFEST_FILE).read_text())["skipped"]))
    assert runs[1][0] == runs[0][0]  # the table of the first run, reused: not written again
    assert runs[0][1] == runs[1][1] == []
