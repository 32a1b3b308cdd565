"""Commands whose output is one file (`calibrate`, `eval --out`, `show`, `export-onnx`) and
`export-head`'s folder: a second run on the same output stops at once with one line and exit code 3,
before it loads a model, and leaves the first run's file alone. The first run is played by a lock
held here (or by a process of its own), as tests/test_locking.py does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from augment.locking import BUSY_EXIT_CODE, BusyError, file_lock, file_lock_path
from cli_checks import assert_one_line_error, run_cli
from lock_checks import held_elsewhere, take_when_free, try_writing
from shard_factory import make_shards


def test_a_file_lock_is_refused_to_a_second_process_until_the_first_dies_and_leaves_nothing(tmp_path):
    out = tmp_path / "reports" / "threshold.json"
    with held_elsewhere("file_lock", out, "calibrate run") as holder:
        with pytest.raises(BusyError, match=f"another calibrate run is writing this file \\(pid {holder.pid}\\)"):
            with file_lock(out, "eval run"):
                pass
    lock = take_when_free(lambda: file_lock(out, "eval run"))
    assert lock == file_lock_path(out) == out.parent / ".threshold.json.synth.lock"
    assert list(out.parent.iterdir()) == []  # released: the lock file goes with it


def test_a_failed_run_leaves_no_folder_its_lock_made(tmp_path):
    with pytest.raises(RuntimeError):
        with file_lock(tmp_path / "new" / "deeper" / "metrics.json"):
            raise RuntimeError("failed")
    assert list(tmp_path.iterdir()) == []


def _earlier(path: Path, report: dict) -> str:
    path.write_text(json.dumps(report))
    return path.read_text()


def test_calibrate_into_a_file_another_calibrate_writes_is_one_line_exit_3_and_leaves_it(tmp_path):
    """Two `synth calibrate --out threshold.json` at once each wrote the report over the other's."""
    out = tmp_path / "threshold.json"
    earlier = _earlier(out, {"threshold": 0.4, "table": []})
    with file_lock(out, "calibrate run"):  # as another process's calibrate would
        result = run_cli("calibrate", "--shards", tmp_path / "shards", "--untrained", "--out", out, "--cases", 2)
    assert_one_line_error(result, BUSY_EXIT_CODE, str(out), "another calibrate run is writing this file")
    assert out.read_text() == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["threshold.json"]


def test_eval_into_a_file_another_run_writes_is_one_line_exit_3_and_leaves_it(tmp_path):
    out = tmp_path / "metrics.json"
    earlier = _earlier(out, {"metrics": {}, "checkpoint": "untrained"})
    with file_lock(out, "eval run"):
        result = run_cli("eval", "--shards", tmp_path / "shards", "--untrained", "--out", out, "--batches", 1)
    assert_one_line_error(result, BUSY_EXIT_CODE, "another eval run is writing this file")
    assert out.read_text() == earlier


def test_show_into_a_sheet_another_show_writes_is_one_line_exit_3_and_runs_once_it_is_free(tmp_path):
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    sheet = tmp_path / "sheets" / "sheet.png"
    with file_lock(sheet, "show run"):
        result = run_cli("show", tmp_path / "shards", "--out", sheet, "--tile", 32)
    assert_one_line_error(result, BUSY_EXIT_CODE, "another show run is writing this file")
    assert list(sheet.parent.iterdir()) == []  # nothing written, and the lock file gone with its holder
    result = run_cli("show", tmp_path / "shards", "--out", sheet, "--tile", 32)
    assert result.exit_code == 0, result.output
    assert [p.name for p in sheet.parent.iterdir()] == ["sheet.png"]  # no lock file left beside it


def test_export_onnx_into_a_file_another_export_writes_is_one_line_exit_3(tmp_path):
    out = tmp_path / "search.onnx"
    out.write_bytes(b"the first export's graph")
    with file_lock(out, "export-onnx run"):
        result = run_cli("export-onnx", "--out", out)
    assert_one_line_error(result, BUSY_EXIT_CODE, "another export-onnx run is writing this file")
    assert out.read_bytes() == b"the first export's graph"


def test_two_commands_on_one_file_are_told_which_holds_it(tmp_path):
    """The lock is the file's, whichever command writes it: a `show` into a calibrate's report is told so."""
    out = tmp_path / "out.png"
    with file_lock(out, "calibrate run"):
        result = run_cli("show", tmp_path / "shards", "--out", out)
    assert_one_line_error(result, BUSY_EXIT_CODE, "another calibrate run is writing this file")


def test_export_head_is_refused_a_busy_folder_before_it_loads_its_checkpoint(tmp_path):
    """export-head took its lock only to write, after loading the checkpoint and the report: a second
    export found the folder busy only then (here: it said the checkpoint was missing instead)."""
    from augment.locking import folder_lock

    out = tmp_path / "head"
    with folder_lock(out, "export-head run"):
        result = run_cli("export-head", "--checkpoint", tmp_path / "missing.pt", "--calibration",
                         tmp_path / "missing.json", "--out", out, "--made-by", "test")
    assert_one_line_error(result, BUSY_EXIT_CODE, "another export-head run is writing here")
    result = run_cli("export-head", "--checkpoint", tmp_path / "missing.pt", "--calibration",
                     tmp_path / "missing.json", "--out", tmp_path / "new-head", "--made-by", "test")
    assert_one_line_error(result, 2, "missing.pt")
    assert not (tmp_path / "new-head").exists()  # a failed export leaves no empty --out


def test_calibrate_on_shards_being_written_is_one_line_exit_3_and_holds_them_while_it_reads(tmp_path, monkeypatch):
    """`calibrate --shards` read shards that an `expand --overwrite` could replace under it."""
    import pipelines.calibration as calibration
    from augment.locking import folder_lock

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    out = tmp_path / "threshold.json"
    with folder_lock(shards, "synth expand"):  # a writer at work: calibrate does not start on its folder
        result = run_cli("calibrate", "--shards", shards, "--untrained", "--out", out, "--cases", 2)
    assert_one_line_error(result, BUSY_EXIT_CODE, f"{shards}: synth expand", "is writing these shards")
    assert not out.exists()

    tried, real_cases = [], calibration.shard_cases

    def cases_while_a_writer_tries(*args, **kwargs):  # mid-read: a writer into the shards folder
        try_writing(shards, tried)
        return real_cases(*args, **kwargs)

    monkeypatch.setattr(calibration, "shard_cases", cases_while_a_writer_tries)
    result = run_cli("calibrate", "--shards", shards, "--untrained", "--out", out, "--cases", 2, "--no-verify")
    assert result.exit_code == 0, result.output
    assert len(tried) == 1 and "`calibrate`, `show`, `export` or other reader is reading the shards here" in tried[0], tried


@pytest.mark.parametrize("command", ["eval", "calibrate", "train"])
def test_a_reader_on_shards_an_expand_is_rewriting_is_told_they_are_being_written(tmp_path, command):
    """`synth expand` removes manifest.json as it starts changing a folder (an --overwrite too) and
    writes it last. The readers checked the folder before they took its reading lock, so while an
    expand was at work they stopped with exit code 2 and "no manifest.json ... rerun the expand
    command to finish it", not exit code 3 (try later) naming the writer, as README's exit codes say."""
    from augment.locking import folder_lock

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64).folder
    (shards / "manifest.json").unlink()  # an expand --overwrite under way
    args = {"eval": ["eval", "--shards", shards, "--untrained", "--batches", 1],
            "calibrate": ["calibrate", "--shards", shards, "--untrained", "--out", tmp_path / "t.json", "--cases", 2],
            "train": ["train", "--shards", shards, "--out", tmp_path / "run", "--steps", 1]}[command]
    with folder_lock(shards, "synth expand"):
        result = run_cli(*args)
    assert_one_line_error(result, BUSY_EXIT_CODE, f"{shards}: synth expand", "is writing these shards")
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "run").exists()


def test_a_lock_whose_record_cannot_be_written_fails_and_leaks_no_descriptor(tmp_path, monkeypatch):
    """A full disk fails the holder's record: the error comes out, the descriptor is closed."""
    import errno
    import os

    import augment.locking as locking

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(locking.os, "pwrite", full_disk)
    with pytest.raises(OSError, match="No space left"):
        with file_lock(tmp_path / "new" / "threshold.json", "calibrate run"):
            pass
    assert len(os.listdir("/proc/self/fd")) == before
