"""Exclusive locks on output folders, so two runs never write into one folder at once.

A run holds an ``fcntl.flock`` on a lock file inside the folder it writes for its whole
lifetime; the kernel drops the lock when the process dies (also on ``kill -9``), so a stale lock
never needs cleaning up. A second run asking for the same folder fails at once with
:class:`BusyError`, which the CLI turns into one line and exit code :data:`BUSY_EXIT_CODE`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from augment.imageio import InputError, remove_orphaned_temporaries
from augment.outputs import check_output_folder

LOCK_FILE = ".synth.lock"
# Exit code of a command that found its output folder locked by another run (documented in README):
# distinct from 1 (some inputs failed) and 2 (a user error), so schedulers can tell "try later".
BUSY_EXIT_CODE = 3


class BusyError(InputError):
    """Another process holds the lock on this folder."""


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) until the block ends.

    Raises :class:`BusyError` at once (no waiting) when another process holds it. The lock file
    records the holder's pid and ``what`` it is, for the error message only (the lock itself is the
    flock): one folder may be asked for by two commands (a search and a segment run). Once the
    lock is held, the temporary files that killed writes left in ``folder`` are removed (those of
    live writers are kept: :func:`augment.imageio.remove_orphaned_temporaries`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # "PID WHAT" (a lock file of an older version: the pid alone, its kind unknown).
            pid, _, kind = os.pread(handle, 256, 0).decode(errors="replace").strip().partition(" ")
            raise BusyError(f"{folder}: another {kind or what} is writing here (pid {pid or 'unknown'}); "
                            "wait for it to finish or choose another folder") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()} {what}".encode(), 0)
        remove_orphaned_temporaries(folder)
        yield path
    finally:
        os.close(handle)  # closing the descriptor releases the flock


@contextlib.contextmanager
def claim_output_folder(folder: Path | str, what: str = "run") -> Iterator[Path]:
    """Check ``folder`` is a usable output folder, create it and hold its lock until the block ends.

    Raises :class:`InputError` before anything is written when the folder cannot be used, and
    :class:`BusyError` when another run holds it. A run that fails (or is interrupted) before
    writing anything removes the folder again if it made it, so mistakes leave no empty ``--out``.
    """
    folder = check_output_folder(folder)
    created = not folder.exists()
    with folder_lock(folder, what) as lock_path:
        try:
            yield folder
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                lock_path.unlink()
                folder.rmdir()
            raise
