"""Files written whole or not at all: a temporary beside the final name, renamed into place on success.

A write killed by SIGKILL, the OOM killer or a power loss leaves only its hidden temporary, never a
part-written file under the final name; the temporary names its writer, so the next run that writes
into the folder removes the ones whose writer is gone (:func:`remove_orphaned_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import logging
import math
import os
import re
import secrets
import socket
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask alone must set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Temporaries (:func:`temporary_beside`, :func:`temporary_folder_beside`) are named
# ".<final name>.<writer>.<8 random characters><suffix>", the writer "<machine>-<pid>": a write killed
# by SIGKILL, the OOM killer or a power loss leaves its temporary behind, and the next run that
# writes into the folder removes those whose writer is gone (:func:`remove_orphaned_temporaries`).
# Temporaries named before the writer was recorded (".<final name>.<8 random characters><suffix>")
# still parse, without a writer.
TEMPORARY_NAME = re.compile(r"\.(?P<final>.+?)(?:\.(?P<machine>[0-9a-f]{8})-(?P<pid>[0-9]{1,10}))?"
                            r"\.[a-z0-9_]{8}\.[A-Za-z0-9]+")
NAME_MAX = 255  # bytes of a file name (Linux file systems): a long final name is cut in its temporary's


@functools.lru_cache(maxsize=1)
def machine_token() -> str:
    """8 hex characters naming where this process's pids mean something: the host, its boot and the
    pid namespace. Only a temporary carrying this token is judged by its pid; another machine's (a
    shared NFS folder), another boot's or another container's with pids of its own (a shared volume)
    is never removed, since its writer cannot be looked up from here."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def _temporary_prefix(final_name: str, suffix: str) -> str:
    """``.<final name>.<writer>.``, the final name cut (in bytes) so that the whole temporary's name,
    with mkstemp's 8 random characters and ``suffix``, stays a legal file name."""
    writer = f".{machine_token()}-{os.getpid()}."
    room = NAME_MAX - 1 - len(writer) - 8 - len(os.fsencode(suffix))
    encoded = os.fsencode(final_name)
    if len(encoded) > room:
        final_name = os.fsdecode(encoded[:max(1, room)])
    return f".{final_name}{writer}"


def temporary_final_name(name: str) -> str | None:
    """The final name whose temporary ``name`` is (as written in it: a long one is cut), or None."""
    match = TEMPORARY_NAME.fullmatch(name)
    return match["final"] if match else None


def orphaned_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary of ours whose writer process is gone: it carries this machine's
    token (:func:`machine_token`) and a pid that no process of this machine has. A temporary of a live
    process (this one, or another still writing), of another machine or container, of the format before
    writers were recorded, or any other name is not."""
    match = TEMPORARY_NAME.fullmatch(name)
    if match is None or match["pid"] is None or match["machine"] != machine_token():
        return False
    pid = int(match["pid"])
    if pid < 1 or pid == os.getpid():  # pid 0 would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: alive, another user's; a pid out of range: not ours
        return False
    return False


def remove_orphaned_temporaries(folder: Path | str) -> int:
    """Remove the temporary files in ``folder`` whose writers were killed mid-write (see
    :func:`orphaned_temporary`); the number removed, logged at INFO.

    Called by a run as it starts writing into a folder (:func:`augment.locking.folder_lock`,
    :func:`augment.outputs.check_output_file`). One listing of ``folder``, not of its subfolders;
    only regular files are removed, never a folder or a link; a file that cannot be removed is left.
    """
    removed = 0
    try:
        entries = os.scandir(folder)
    except OSError:  # absent (made later), or not listable: nothing to clear
        return 0
    with entries:
        for entry in entries:
            if not entry.name.startswith(".") or not orphaned_temporary(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                os.unlink(entry.path)
                removed += 1
            except OSError:
                continue  # gone meanwhile, or not ours to remove (a read-only folder)
    if removed:
        logger.info("%s: removed %d temporary file(s) left by writes that were killed", folder, removed)
    return removed


_NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # (mkstemp's: the names TEMPORARY_NAME reads)
_NAMES_ISSUED = itertools.count()  # this process's temporaries, in order (next() is atomic in CPython)


def _temporary_names() -> Iterator[str]:
    """8 characters of [a-z0-9_], as mkstemp's names: 4 counted (no two names this process hands out
    within 37**4 of each other are the same, so another thread's live temporary is never a name tried
    here; every other process's carry another pid), 4 random (a dead process's leftover under the same
    pid is passed over)."""
    base = len(_NAME_CHARACTERS)
    while True:
        number = next(_NAMES_ISSUED) % base ** 4
        counted = "".join(_NAME_CHARACTERS[number // base ** place % base] for place in range(4))
        yield counted + "".join(secrets.choice(_NAME_CHARACTERS) for _ in range(4))


def remove_made(made: list[Path]) -> None:
    """Remove the temporaries in ``made`` (:func:`temporary_beside`'s names) in a writer's ``finally``:
    one that is not there, or cannot be removed (a read-only file system says EROFS even for a name
    never made), is passed over, so the writer's own error is raised, not this one chained over it."""
    for name in made:
        with contextlib.suppress(OSError):
            os.unlink(name)


def temporary_beside(final_path: Path | str, suffix: str = ".tmp", made: list[Path] | None = None) -> Path:
    """A new, uniquely named hidden file beside ``final_path`` (made now, empty), named after its
    writer (see :data:`TEMPORARY_NAME`) so that the next run can tell a killed write's from a live one.

    Its mode is what a plain ``open()`` gives (0666 less the umask): ``mkstemp`` makes 0600, which
    would leave every output unreadable to other users and containers after the rename. A file it will
    replace keeps its own mode, as a plain ``open()`` of it would: a report or checkpoint the user made
    private (0600) was readable by every user of a shared folder once written again, and while written.

    A stop (Ctrl-C, SIGTERM) is raised wherever the interpreter next looks, also just after the file is
    made and before its name reaches the caller (inside ``mkstemp``, or before the caller's ``try``): the
    empty temporary stayed in --out of a run that said ``interrupted``. Its name is appended to ``made``
    before the file is made, so a caller that removes ``made``'s names in its ``finally`` leaves none;
    without ``made``, a stop before this returns removes it here.
    """
    final_path = Path(final_path)
    try:
        earlier = os.lstat(final_path)
        mode = stat.S_IMODE(earlier.st_mode) if stat.S_ISREG(earlier.st_mode) else 0o666 & ~current_umask()
    except OSError:
        mode = 0o666 & ~current_umask()
    names = _temporary_names()
    prefix = _temporary_prefix(final_path.name, suffix)
    own = [] if made is None else made
    try:
        for _ in range(tempfile.TMP_MAX):
            temporary = final_path.parent / f"{prefix}{next(names)}{suffix}"
            own.append(temporary)  # before it exists: a stop from here on finds it to remove
            try:
                handle = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError as error:
                own.remove(temporary)  # (not made: a dead writer's name, or none could be made)
                if isinstance(error, FileExistsError):
                    continue
                raise
            try:
                os.fchmod(handle, mode & 0o777 | stat.S_IRUSR | stat.S_IWUSR)  # (never one its writer cannot write)
            finally:
                os.close(handle)
            return temporary
        raise FileExistsError(errno.EEXIST, "no unused temporary name", str(final_path))
    except BaseException:
        if made is None:
            remove_made(own)
        raise


def temporary_folder_beside(final_path: Path | str, suffix: str = ".tmp") -> Path:
    """A new, uniquely named hidden folder beside ``final_path``, with the mode ``mkdir`` would give,
    named after its writer as :func:`temporary_beside`'s files are."""
    final_path = Path(final_path)
    folder = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final_path.name, suffix), suffix=suffix,
                                   dir=final_path.parent))
    try:
        os.chmod(folder, 0o777 & ~current_umask())
    except BaseException:  # a stop (or an error) before the caller holds its name: leave no folder behind
        with contextlib.suppress(OSError):
            folder.rmdir()
        raise
    return folder


@contextlib.contextmanager
def naming_errors(path: Path | str) -> Iterator[None]:
    """An OSError raised inside that names no file (a write to an open file, pyarrow's writers: a full
    disk's "Error writing bytes to file. Detail: [errno 28] ...") names ``path``, the output the user
    knows (not its hidden temporary), with the system's own words for its errno."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno:  # (a decoder's OSError, "image file is truncated", has none)
            error.filename, error.strerror = str(path), os.strerror(error.errno)
        raise


def replace_into_place(temporary: Path | str, final_path: Path | str) -> None:
    """``os.replace`` whose error names ``final_path`` alone (os.replace's names the hidden temporary
    first: "found/.a.heat.png.<writer>.x1y2z3w4.tmp: Is a directory" for a folder under the name)."""
    try:
        os.replace(temporary, final_path)
    except OSError as error:  # (the errno picks the subclass: IsADirectoryError, PermissionError ...)
        raise OSError(error.errno, error.strerror, str(final_path)) from None


@contextlib.contextmanager
def record_file(path: Path | str, mode: str) -> Iterator[IO[str]]:
    """A text file a run appends its record lines to (each written under :func:`naming_errors`): its
    close names ``path`` too, and a close that fails once the block has failed (a full disk: it
    flushes what the failed write left buffered) leaves the block's error, naming the file, raised."""
    from augment.outputs import open_plain_file  # (it imports this module)

    # "a+": the last byte is read back (below); written only at the end, as "a" does.
    file = open(path, "a+" if mode == "a" else mode, encoding="utf-8", opener=open_plain_file)  # never through a planted link
    try:
        if mode == "a":
            # A line a kill cut short (its reader skips it) is ended first: the next line appended
            # was glued to it and lost with it (a resumed search's redone photo, recorded again as undone).
            size = os.fstat(file.fileno()).st_size
            if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
                with naming_errors(path):
                    file.write("\n")
        yield file
    except BaseException:
        with contextlib.suppress(OSError):
            file.close()
        raise
    with naming_errors(path):
        file.close()


@contextlib.contextmanager
def atomic_path(final_path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place only on success (an error
    that names no file names ``final_path``: :func:`naming_errors`)."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []  # the temporary's name, known before the file is made (temporary_beside)
    try:
        temporary_path = temporary_beside(final_path, made=made)
        with naming_errors(final_path):
            yield temporary_path
        replace_into_place(temporary_path, final_path)
    finally:
        remove_made(made)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: a metric with nothing to measure (the IoU of a
    class absent from the held-out rows, the false-alarm rate without negatives) is null in the file,
    which strict JSON readers take; ``NaN`` is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
