"""`synth show` / `synth export` of a folder where no writer ever ran (no `.synth.lock`), or one where no
lock file can be made (read-only), hold a writer that starts meanwhile off, without writing into the
folder: they share a lock outside it (augment.locking.outside_lock) that every writer takes too."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from augment.locking import LOCK_FILE, BusyError, folder_lock, outside_lock_path, reading_lock
from cli_checks import assert_one_line_error, run_cli
from lock_checks import held_elsewhere, take_when_free, try_writing
from shard_factory import make_shards

READ = """
import sys, time
from train.shard_set import reading_shards
with reading_shards(sys.argv[1], what="synth export", create_locks=False):
    print("locked", flush=True)
    time.sleep(60)
"""


def _shards(tmp_path: Path) -> Path:
    folder = Path(make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder)
    (folder / LOCK_FILE).unlink(missing_ok=True)  # shards copied here: no writer ever ran in this folder
    return folder


def test_a_writer_starting_during_show_or_export_of_a_folder_without_a_lock_file_is_refused(tmp_path):
    folder = _shards(tmp_path)
    before = sorted(os.listdir(folder))
    reader = subprocess.Popen([sys.executable, "-c", READ, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "locked"
        assert sorted(os.listdir(folder)) == before  # the reader wrote nothing into the folder
        tried: list[str] = []
        try_writing(folder, tried)
        assert tried and "is reading the shards here" in tried[0], tried
    finally:
        reader.kill()
        reader.wait()
    take_when_free(lambda: folder_lock(folder, "synth expand"))  # free once the reader is gone
    assert not outside_lock_path(folder).exists()  # the last holder removed the lock file outside


def test_show_of_a_folder_without_a_lock_file_waits_for_no_one_but_a_writer_holds_it_off(tmp_path):
    folder = _shards(tmp_path)
    shown = run_cli("show", folder, "-o", tmp_path / "sheet.png", "--rows", 1, "--columns", 1, "--tile", 32)
    assert shown.exit_code == 0, shown.output
    assert not (folder / LOCK_FILE).exists()
    # A writer that holds the lock outside alone (it made the folder's lock file a moment later) stops a reader.
    with held_elsewhere("folder_lock", folder, "synth expand") as holder:
        (folder / LOCK_FILE).unlink()  # as if the reader looked before the writer's lock file was there
        with pytest.raises(BusyError, match=rf"synth expand \(pid {holder.pid}\) is writing these shards"):
            with reading_lock(folder, create=False):
                pass


def test_a_read_only_folder_is_read_and_still_holds_a_writer_off(tmp_path, monkeypatch):
    folder = _shards(tmp_path)
    lock = str(folder / LOCK_FILE)
    real_open = os.open

    def read_only(path, flags, *args):  # root writes through chmod 0o555: a read-only mount, as the kernel says it
        if str(path) == lock and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", lock)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with reading_lock(folder):  # as `synth train` reads it: no lock file can be made
        monkeypatch.setattr(os, "open", real_open)
        tried: list[str] = []
        try_writing(folder, tried)
        assert tried and "is reading the shards here" in tried[0], tried
    exported = run_cli("export", folder, "-o", tmp_path / "coco")
    assert exported.exit_code == 0, exported.output


def test_a_writer_holding_the_folder_makes_export_busy_even_without_its_lock_file(tmp_path):
    folder = _shards(tmp_path)
    with held_elsewhere("folder_lock", folder, "synth expand"):
        (folder / LOCK_FILE).unlink()
        exported = run_cli("export", folder, "-o", tmp_path / "coco")
        assert_one_line_error(exported, 3, "is writing these shards")
