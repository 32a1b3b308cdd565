"""Locks on folders, so two runs never write into one folder at once, nor one writes a folder of
shards that a training or evaluation run is reading.

A run holds an ``fcntl.flock`` on a lock file inside the folder it writes for its whole
lifetime, exclusive (:func:`folder_lock`); a training or evaluation run holds a shared one on each
folder of shards it reads (:func:`reading_lock`), so readers share a folder and a writer waits for
none of them: it stops (object-store prefixes: :mod:`augment.reader_lease`). The kernel drops a
lock when its process dies (also on ``kill -9``), so a stale lock never needs cleaning up. A run
that finds its folder held fails at once with :class:`BusyError`, which the CLI turns into one
line and exit code :data:`BUSY_EXIT_CODE`.

A reader that makes no lock file in the folder it reads (`synth show`, `export`: the folder may not be
theirs, or read-only) shares a lock outside it with the writers instead (:func:`outside_lock`): one
in the machine's shared /tmp (whatever TMPDIR says), named after the folder's device and inode, which every writer
(:func:`folder_lock`) takes too.

A command whose output is one file (``calibrate``, ``eval``, ``show``, ``export-onnx``) locks a hidden
sibling, ``.<name>.synth.lock`` (:func:`file_lock`), not the file itself: the file is replaced by an
atomic rename, which would leave a lock on the old inode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from augment.atomic_files import NAME_MAX, naming_errors, remove_orphaned_temporaries
from augment.imageio import InputError
from augment.outputs import UnsafeFileError, check_output_folder, open_plain_file

logger = logging.getLogger(__name__)

LOCK_FILE = ".synth.lock"
# Exit code of a command that found its output folder locked by another run (documented in README):
# distinct from 1 (some inputs failed) and 2 (a user error), so schedulers can tell "try later".
BUSY_EXIT_CODE = 3


class BusyError(InputError):
    """Another process holds the lock on this folder (or output file)."""


def _flock(handle: int, operation: int, where: Path | str) -> None:
    """``fcntl.flock``; a file system that cannot lock (an NFS mount whose lock service is not running:
    ENOLCK "No locks available"; some FUSE or SMB mounts: EOPNOTSUPP, EINVAL) is one line naming
    ``where`` (:class:`InputError`), not a traceback. A lock held by another process still raises
    BlockingIOError."""
    try:
        fcntl.flock(handle, operation)
    except BlockingIOError:
        raise
    except OSError as error:
        if error.errno == errno.EBADF and operation & fcntl.LOCK_EX:  # NFS: POSIX locks, exclusive ones need writing
            raise InputError(f"{where}: its lock file is another user's and read-only to this one, and this file "
                             "system locks only files open for writing (NFS); ask its owner to make it "
                             "group-writable (chmod g+w) or remove it") from None
        raise InputError(f"{where}: its file system cannot lock files ({error.strerror or error}; an NFS mount "
                         "without its lock service?), so two runs could use it at once; choose a local "
                         "folder or fix the mount's locking") from None


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) until the block ends.

    Raises :class:`BusyError` at once (no waiting) when another process holds it. The lock file
    records the holder's pid and ``what`` it is, for the error message only (the lock itself is the
    flock): one folder may be asked for by two commands (a search and a segment run). Once the
    lock is held, the temporary files that killed writes left in ``folder`` are removed (those of
    live writers are kept: :func:`augment.atomic_files.remove_orphaned_temporaries`).
    """
    folder = Path(folder)
    made = _make_folders(folder)
    path = folder / LOCK_FILE
    try:
        handle, writable = _open_lock(path)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        try:
            _flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, folder)
        except BlockingIOError:
            raise BusyError(_busy(handle, folder, what)) from None
        except InputError:  # no locks here: a folder made just now goes again (no empty --out left)
            _remove_made(made, folder, path)
            raise
        try:
            if writable:
                with naming_errors(path):  # a full disk: the lock file named, not "file system"
                    os.ftruncate(handle, 0)
                    os.pwrite(handle, f"{os.getpid()} {what}".encode(), 0)
        except OSError:  # still held: a folder made just now goes again, its lock with it (no empty --out left)
            _remove_made(made, folder, path)
            raise
        with outside_lock(folder, what, shared=False):  # a `show` or `export` reading here without a lock file
            remove_orphaned_temporaries(folder)
            yield path
    finally:
        os.close(handle)  # closing the descriptor releases the flock


def _open_lock(path: Path) -> tuple[int, bool]:
    """``path`` opened to be locked (made where missing), and whether its holder's record can be written
    there. A lock file another user made under their umask (0644: in a group-writable team folder,
    one member's run left it so) is opened read-only, which locks as well: the next member's run,
    free to write every other file there, was refused as "<folder>/.synth.lock: Permission denied".
    Its record then stays the earlier holder's."""
    try:
        return open_plain_file(path, os.O_RDWR | os.O_CREAT), True
    except PermissionError as error:
        try:
            return open_plain_file(path, os.O_RDONLY), False
        except OSError:
            raise error from None


def _remove_made(made: list[Path], folder: Path, lock: Path) -> None:
    """Remove the lock file and the folders made for it, where nothing else was put there."""
    if made and [child.name for child in folder.iterdir()] == [LOCK_FILE]:
        lock.unlink()
        _remove_empty(made)


def _holder(handle: int, what: str) -> tuple[str, str]:
    """The pid and the kind of run a lock file records ("PID WHAT"; a lock file of an older version
    holds the pid alone, its kind then taken as ``what``)."""
    pid, _, kind = os.pread(handle, 256, 0).decode(errors="replace").strip().partition(" ")
    return pid or "unknown", kind or what


def _busy(handle: int, folder: Path, what: str) -> str:
    """Why ``folder``'s lock is not to be had: a writer holds it (its pid and kind recorded), or only
    readers do (a shared lock is then granted: it is given back at once)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, kind = _holder(handle, what)
        return f"{folder}: another {kind} is writing here (pid {pid}); wait for it to finish or choose another folder"
    fcntl.flock(handle, fcntl.LOCK_UN)
    return _reading(folder)


def _reading(folder: Path) -> str:
    """Why a writer stops where readers hold ``folder``'s lock (shared: none records who it is; `synth
    export` reading was said to be 'a `synth train`, `eval` or `calibrate` run')."""
    return (f"{folder}: a `synth train`, `eval`, `calibrate`, `show`, `export` or other reader is reading the shards "
            "here; wait for it to finish before writing here, or choose another folder")


def file_lock_path(path: Path | str) -> Path:
    """The lock file of the single output file ``path``: ``.<name>.synth.lock`` beside it (the name
    cut, in bytes, so that the lock's name stays a legal file name)."""
    path = Path(path)
    room = NAME_MAX - len(os.fsencode(LOCK_FILE)) - 1
    name = os.fsencode(path.name)[:room].decode(errors="ignore")  # a cut multi-byte character is dropped
    return path.with_name(f".{name}{LOCK_FILE}")


@contextlib.contextmanager
def file_lock(path: Path | str, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on the single output file ``path`` until the block ends.

    The lock is :func:`file_lock_path`'s sibling file, held with ``flock`` as :func:`folder_lock`'s is
    (released by the kernel when the holder dies) and raising :class:`BusyError` at once when another
    process holds it. Unlike a folder's, it is removed on release, so no hidden file is left beside a
    report; a process that opened it just before that finds, once it holds the lock, that the name
    now points elsewhere and takes it afresh (two processes never hold one name's lock). Folders
    missing above ``path`` are made, and removed again when the block fails leaving them empty.
    """
    path = Path(path)
    made = _make_folders(path.parent)
    try:
        lock_path = file_lock_path(path)
        handle = _take_file_lock(lock_path, path, what)
    except BaseException:
        _remove_empty(made)
        raise
    done = False
    try:
        yield lock_path
        done = True
    finally:
        with contextlib.suppress(OSError):  # still held: no one else may hold it until the close
            os.unlink(lock_path)
        os.close(handle)
        if not done:
            _remove_empty(made)


def _take_file_lock(lock_path: Path, path: Path, what: str) -> int:
    """The descriptor of ``lock_path``, locked exclusively and still the file under that name."""
    while True:
        handle, writable = _open_lock(lock_path)
        try:
            try:
                _flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
            except BlockingIOError:
                pid, kind = _holder(handle, what)
                raise BusyError(f"{path}: another {kind} is writing this file (pid {pid}); wait for it to "
                                "finish or choose another name") from None
            except InputError:  # no locks on this file system: no hidden file left beside --out
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
                raise
            try:
                current = os.path.samestat(os.fstat(handle), os.stat(lock_path))
            except FileNotFoundError:
                current = False
            if current and not writable:  # another user's, left by a killed run: locked all the same
                return handle
            if current:  # the holder's record, for a second run's message (a full disk fails here too)
                try:
                    with naming_errors(lock_path):
                        os.ftruncate(handle, 0)
                        os.pwrite(handle, f"{os.getpid()} {what}".encode(), 0)
                except OSError:  # still held: ours to remove, as on release (no hidden file left beside --out)
                    with contextlib.suppress(OSError):
                        os.unlink(lock_path)
                    raise
                return handle
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)  # its holder removed it as we opened it: take the one under the name now


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the ones made, deepest first."""
    missing = [place for place in (folder, *folder.parents) if not place.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are empty: a failed run leaves no folder it made."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


OUTSIDE_LOCKS = "synth-locks"  # in the machine's shared /tmp (else the temporary folder: tempfile.gettempdir())
SHARED_TEMPORARY = Path("/tmp")


def _outside_locks_folder() -> Path:
    """Where the locks outside folders live: the machine's shared ``/tmp``, not ``$TMPDIR``, which a
    scheduler sets per job (Slurm, PBS, CI runners) or a user per shell: a reader and a writer with
    two TMPDIRs took two lock files and never saw each other. ``$TMPDIR`` only where /tmp cannot be
    used."""
    if SHARED_TEMPORARY.is_dir() and os.access(SHARED_TEMPORARY, os.W_OK | os.X_OK):
        return SHARED_TEMPORARY / OUTSIDE_LOCKS
    return Path(tempfile.gettempdir()) / OUTSIDE_LOCKS


def outside_lock_path(folder: Path | str) -> Path | None:
    """The lock outside ``folder`` (see the module's doc): ``/tmp/synth-locks/DEVICE-INODE.lock``; None
    where the folder or the locks' folder is not to be had."""
    try:
        info = os.stat(folder)
        base = _outside_locks_folder()
        if base.is_symlink():  # planted: lock files made wherever it points
            logger.warning("%s: no lock outside it (%s is a symbolic link)", folder, base)
            return None
        if not base.is_dir():
            base.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # every user's runs share it, as /tmp itself (sticky)
                os.chmod(base, 0o777 | stat.S_ISVTX)
    except OSError:
        return None
    return base / f"{info.st_dev}-{info.st_ino}.lock"


@contextlib.contextmanager
def outside_lock(folder: Path | str, what: str, shared: bool) -> Iterator[None]:
    """Hold the lock outside ``folder``, shared (a reader) or exclusive (a writer, recording its pid and
    ``what``) until the block ends; :class:`BusyError` at once when the other kind holds it. Where it
    cannot be had (no temporary folder to write) the block runs without it. The last holder removes the
    file; one who opened it just before that takes the one under the name afresh (as :func:`file_lock`)."""
    path = outside_lock_path(folder)
    handle = None
    while path is not None:
        try:
            handle, _ = _open_lock(path)  # another user's lock file (0644): read-only, which locks as well
        except UnsafeFileError as error:  # planted in the shared folder: no lock there, and nothing written
            logger.warning("%s: no lock outside it (%s)", folder, error)
            break
        except OSError as error:
            logger.info("%s: no lock outside it (%s)", folder, error)
            break
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as error:
            if not isinstance(error, BlockingIOError):  # a temporary folder that cannot lock: none, as above
                logger.info("%s: no lock outside it (%s)", folder, error)
                os.close(handle)
                handle = None
                break
            message = _writing(handle, folder) if shared else _reading(folder)
            os.close(handle)
            raise BusyError(message) from None
        try:
            current = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(handle)  # its last holder removed it as we opened it: take the one under the name now
        handle = None
    try:
        if handle is not None and not shared:
            with contextlib.suppress(OSError):  # the record, for a reader's message only
                os.ftruncate(handle, 0)
                os.pwrite(handle, f"{os.getpid()} {what}".encode(), 0)
        yield
    finally:
        if handle is not None:
            try:  # the last holder (no other reader now) removes the file, still holding it
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
            except OSError:
                pass
            os.close(handle)


def _writing(handle: int, folder: Path | str) -> str:
    """A reader's line when a writer holds ``folder``'s lock (``handle``)."""
    pid, kind = _holder(handle, "another run")
    return (f"{folder}: {kind} (pid {pid}) is writing these shards; wait for it to finish "
            "(its manifest.json marks it done) and start again")


@contextlib.contextmanager
def reading_lock(folder: Path | str, create: bool = True) -> Iterator[None]:
    """Hold a shared lock on the shard folder ``folder`` while a run reads it: writers
    (:func:`folder_lock`: ``synth expand``, ``extract``, ``photo-shards``) stop with :class:`BusyError`
    meanwhile, and this raises it at once when one is writing there now. Nothing else is written: the
    lock file is made only where it is missing; ``create=False`` (a short read, `synth show` or
    `export`, that writes nothing beside the shards) makes none. A folder without one (no writer ever
    ran there: a writer leaves its lock file) where none is made or can be made (read-only) is read
    holding the lock outside it (:func:`outside_lock`), which every writer takes as well."""
    path = Path(folder) / LOCK_FILE
    handle = None
    try:
        handle = open_plain_file(path, os.O_RDONLY | (os.O_CREAT if create else 0))
    except OSError:
        with contextlib.suppress(OSError, UnsafeFileError):
            handle = open_plain_file(path, os.O_RDONLY)
    except UnsafeFileError as error:  # a link or a hard-linked copy (cp -al, DVC): read, never written
        logger.info("%s: %s", folder, error)
    if handle is not None:
        try:
            _flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB, folder)
        except BlockingIOError:
            message = _writing(handle, folder)
            os.close(handle)
            raise BusyError(message) from None
        except InputError as error:  # a file system that cannot lock: as where no lock file can be had
            os.close(handle)
            handle = None
            logger.info("%s", error)
    if handle is None:
        logger.info("%s: read holding the lock outside it (%s cannot be had here)", folder, LOCK_FILE)
        with outside_lock(folder, "reader", shared=True):
            yield
        return
    try:
        yield
    finally:
        os.close(handle)


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
            _remove_made([folder] if created else [], folder, lock_path)
            raise
