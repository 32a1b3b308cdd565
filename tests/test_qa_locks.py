"""Locks on file systems a scheduler's job meets: an NFS mount that cannot lock, a lock file read-only
to this user, and a reader and a writer each with their own TMPDIR (Slurm). Small generated inputs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_backgrounds, make_rgba_source


# ----------------------------------------------------------------- a file system that cannot lock
def _no_locks(monkeypatch):
    import errno
    import fcntl

    def flock(handle, operation):  # an NFS mount whose lock service is not running
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", flock)


def test_an_out_folder_whose_file_system_cannot_lock_is_one_line_and_left_as_it_was(tmp_path, monkeypatch):
    # was OSError's traceback ('[Errno 37] No locks available'), --out left made with its .synth.lock
    sources, backgrounds = make_rgba_source(tmp_path / "rgba", 2), make_backgrounds(tmp_path / "bg", 1)
    _no_locks(monkeypatch)
    out = tmp_path / "nfs" / "out"
    result = run_cli("expand", sources, "-b", backgrounds, "--out", out, "--num", 2, "-w", 1)
    assert_one_line_error(result, 2, str(out), "cannot lock files", "No locks available")
    assert not (tmp_path / "nfs").exists()


def test_an_out_file_whose_file_system_cannot_lock_leaves_no_hidden_lock_beside_it(tmp_path, monkeypatch):
    from augment.locking import file_lock, file_lock_path
    from augment.imageio import InputError

    _no_locks(monkeypatch)
    report = tmp_path / "nfs" / "report.json"
    with pytest.raises(InputError, match="cannot lock files"):
        with file_lock(report, "eval run"):
            pass
    assert not file_lock_path(report).exists() and not (tmp_path / "nfs").exists()


def test_a_reader_and_a_writer_with_two_tmpdirs_share_the_lock_outside_the_folder(tmp_path):
    # Slurm gives each job its own TMPDIR: `synth show` of a folder without a lock file (shards copied
    # there) held its lock in one, a writer starting there took another's and wrote under the reader
    from augment.locking import LOCK_FILE
    from lock_checks import try_writing
    from shard_factory import make_shards

    folder = Path(make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder)
    (folder / LOCK_FILE).unlink(missing_ok=True)
    job_tmp = tmp_path / "job-tmp"
    job_tmp.mkdir()
    reader = subprocess.Popen([sys.executable, "-c", READ_WITHOUT_LOCK_FILE, str(folder)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "TMPDIR": str(job_tmp)})
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "locked"
        tried: list[str] = []
        try_writing(folder, tried)  # this process's TMPDIR is not the reader's
        assert tried and "is reading the shards here" in tried[0], tried
    finally:
        reader.kill()
        reader.wait()
        from augment.locking import outside_lock_path

        with contextlib.suppress(OSError, TypeError):  # killed: its lock file stays in the shared /tmp
            outside_lock_path(folder).unlink()


READ_WITHOUT_LOCK_FILE = """
import sys, time
from train.shard_set import reading_shards
with reading_shards(sys.argv[1], what="synth export", create_locks=False):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_an_exclusive_lock_refused_on_a_read_only_descriptor_names_the_lock_files_owner(tmp_path, monkeypatch):
    # NFS emulates flock with POSIX locks: an exclusive one on another user's read-only lock file fails with
    # EBADF, which read "its file system cannot lock files (... an NFS mount without its lock service?)"
    import errno as errnos
    import fcntl

    import augment.locking as locking
    from augment.imageio import InputError

    def refuse(handle, operation):
        raise OSError(errnos.EBADF, "Bad file descriptor")

    monkeypatch.setattr(locking.fcntl, "flock", refuse)
    with pytest.raises(InputError, match="read-only to this one.*chmod g\\+w"):
        locking._flock(0, fcntl.LOCK_EX | fcntl.LOCK_NB, tmp_path)
