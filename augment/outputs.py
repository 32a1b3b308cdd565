"""Where commands may write: output paths checked before any work, names that cannot escape ``--out``.

Every command checks its output path first (an existing file where a folder is wanted, a folder
where a file is wanted, a read-only place), so a mistake costs one line, not the minutes of work
before the first write. Names that come from data (composite ids, split names) become file names
only when they match :data:`SAFE_NAME`, and every path built from them is checked to stay under
the output folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterable

from augment.atomic_files import NAME_MAX, remove_orphaned_temporaries
from augment.imageio import InputError
from augment.storage import Location
from augment.textfiles import loads_json

# A file-name component that cannot climb out of its folder, hide itself or need quoting:
# letters, digits, '_', '-', '.', starting with a letter or digit, at most 200 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and ".." not in name


def check_safe_name(name: object, what: str) -> str:
    """``name`` itself, or an :class:`InputError` naming ``what`` when it is not a safe file name."""
    if not is_safe_name(name):
        raise InputError(f"{what}: {name!r} is not a safe name (letters, digits, '_', '-', '.'; "
                         "starting with a letter or digit; no '..')")
    return name  # type: ignore[return-value]


class UnsafeFileError(InputError):
    """A file synth opens in place (a lock, a run's record) is a symbolic link, a FIFO or a file with other
    names (hard links)."""


def open_plain_file(path: Path | str, flags: int) -> int:
    """``path`` opened in place (a lock file, a record a run appends to): never through a symbolic link
    (a writer truncates its lock and writes its pid there: a link planted in a shared temporary folder,
    or shipped in a colleague's folder, had synth overwrite the file it pointed to), never blocking (a
    FIFO's read end waits for a writer forever), and only a plain file with no other name;
    :class:`UnsafeFileError` naming it otherwise."""
    try:
        # O_TRUNC only once it is known to be a plain file of its own: opened so, a hard link's other
        # file was emptied before the check refused it.
        handle = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            target = ""
            with contextlib.suppress(OSError):  # (a loop in a folder above it has no link to read here)
                target = f" (to {os.readlink(path)})"
            raise UnsafeFileError(f"{path}: is a symbolic link{target}; synth writes it only as a "
                                  "plain file, never through a link: remove it") from None
        if error.errno == errno.ENXIO:  # a FIFO opened to write with no reader
            raise UnsafeFileError(f"{path}: is not a plain file; synth writes it only as a plain file of its own: "
                                  "remove it") from None
        raise
    info = os.fstat(handle)
    # A link count of 0: its holder removed it as it was opened (the lock callers then take the new one).
    if stat.S_ISREG(info.st_mode) and info.st_nlink <= 1:
        if flags & os.O_TRUNC:
            os.ftruncate(handle, 0)
        return handle
    os.close(handle)
    kind = "a file with other names (hard links)" if stat.S_ISREG(info.st_mode) else "not a plain file"
    raise UnsafeFileError(f"{path}: is {kind}; synth writes it only as a plain file of its own: remove it")


def unlinked(path: Path) -> Path:
    """``path``, a name a run writes its own files under (a video's ``NAME.heat/`` frames), with a symbolic
    link there removed (the link only): a search wrote its frames through one, outside ``--out``."""
    if path.is_symlink():
        path.unlink()
    return path


def remove_output_folder(folder: Path) -> None:
    """Remove an output's subfolder (extract's ``previews/``, its parts), or a symbolic link under its name:
    the link itself (``shutil.rmtree`` refuses one, and with ``ignore_errors`` left it in place; the run then
    wrote its files through it, outside ``--out``)."""
    if folder.is_symlink():
        folder.unlink()
    else:
        shutil.rmtree(folder, ignore_errors=True)


def inside(root: Path | str | Location, path: Path | str | Location) -> Path | Location:
    """``path``, after checking that it resolves to a place under ``root`` (both local paths, or both
    object-store locations, whose keys hold no ``..``)."""
    if isinstance(path, Location) or isinstance(root, Location):
        if not (isinstance(path, Location) and isinstance(root, Location) and path.is_relative_to(root)):
            raise InputError(f"{path}: would be written outside the output folder {root}")
        return path
    root, path = Path(root).resolve(), Path(path)
    if not path.resolve().is_relative_to(root):
        raise InputError(f"{path}: would be written outside the output folder {root}")
    return path


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_place(path: Path, folder: Path, option: str) -> None:
    """``folder`` (or, while it does not exist, its nearest existing ancestor) must be a writable folder."""
    for place in (folder, *folder.parents):  # mkdir of a link to nowhere fails as 'File exists'
        if place.exists():
            break
        if place.is_symlink():
            raise InputError(f"{path}: cannot write {option} here: {place} is a symbolic link to "
                             f"{os.readlink(place)}, which does not exist")
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise InputError(f"{path}: cannot write {option} here: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write {option} here: {ancestor} is read-only")


# What Path makes of a URI ("s3://b/k" -> "s3:/b/k"): a local --out of that name was written in the working folder.
_FOLDED_URI = re.compile(r"([a-z][a-z0-9+.-]+):/(?!/)")


def _check_local(path: Path, option: str) -> None:
    """A local output path that was an object-store (or other) URI is one line: this output is local.
    So is '-', which the shell's habit reads as stdout: `eval --out -` wrote a file named '-'."""
    if str(path) == "-":
        raise InputError(f"-: {option} - is no stdout here (synth writes its outputs to files; it would be a "
                         "file or folder named '-'); give a name")
    folded = _FOLDED_URI.match(str(path))
    if folded:
        raise InputError(f"{folded.group(1)}://{str(path)[folded.end():]}: {option} here is a local path, not an "
                         "object-store URI (only synth expand writes to s3:// or gs://); write locally and copy it there")


def check_output_folder(path: Path | str, option: str = "--out") -> Path:
    """A folder a command will write into: absent (it will be made) or an existing writable folder."""
    path = Path(path)
    _check_local(path, option)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: {option} must be a folder, but a file of that name exists")
    _check_writable_place(path, path, option)
    return path


def check_not_an_input(out: Path | str, inputs: list[tuple[object, str]], why: str) -> None:
    """An InputError when the local folder ``out`` is one of ``inputs`` (place, its option), saying
    ``why`` that cannot be; object-store places and paths that are not folders are left out."""
    target = Path(out).resolve()
    for place, option in inputs:
        # (an object-store prefix as text, "s3://b/k", is no local folder: Path makes it "s3:/b/k")
        if not isinstance(place, Location) and Path(place).is_dir() and Path(place).resolve() == target:
            raise InputError(f"{out}: --out is also a {option} folder ({why}); choose another --out")


def check_output_file(path: Path | str, option: str = "--out") -> Path:
    """A file a command will write: not an existing folder, in a place that is (or can be made) writable.

    The temporaries that killed writes left beside it are removed (those of live writers are kept:
    :func:`augment.atomic_files.remove_orphaned_temporaries`): a command that writes one file holds no
    folder lock that would clear them (:func:`augment.locking.folder_lock`).
    """
    path = Path(path)
    _check_local(path, option)
    if path.is_dir():
        raise InputError(f"{path}: {option} must be a file name, but a folder of that name exists")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: {option} exists and is read-only")
    _check_writable_place(path, path.parent, option)  # atomic writes make a temporary file beside it
    remove_orphaned_temporaries(path.parent)
    return path


MAX_REPORT_BYTES = 50 * 2**20  # a file larger than this is no report of ours


def check_report_file(path: Path | str, command: str, keys: tuple[str, ...], option: str = "--out") -> Path:
    """A JSON report a command will write: as :func:`check_output_file`, and a file already there must be
    an earlier report of ``synth command`` (a JSON object holding ``keys``). An --out that names an
    input by mistake (a shard folder's manifest.json, a label_list.json) is refused, not overwritten."""
    path = check_output_file(path, option)
    if path.is_file():
        try:
            earlier = (loads_json(path.read_text(encoding="utf-8"))
                       if path.stat().st_size <= MAX_REPORT_BYTES else None)
        except (OSError, ValueError):  # a UnicodeDecodeError is a ValueError
            earlier = None
        if not (isinstance(earlier, dict) and all(key in earlier for key in keys)):
            raise InputError(f"{path}: {option} exists and is not a `synth {command}` report; not overwriting "
                             "it (remove it or choose another name)")
    return path


class OutputNames:
    """Unique output stems in one folder: a second ``photo`` becomes ``photo-2``. ``record`` is
    told each stem before anything is written under it (``pipelines.output_record.OutputRecord``).
    A stem is cut so that it with each of ``suffixes`` is a legal file name (NAME_MAX bytes): a
    medium's own name may be that long already. A stem is also taken where one of its files would be
    another stem's (`synth segment`'s ``a.confidence`` -> ``a.confidence.png`` is ``a``'s confidence
    map) or one of ``existing``, the names already in the folder that are no output of this run (a
    photo ``b.png`` segmented into its own folder): such a stem gets ``-2`` too, so no output
    overwrites another or a file of the user's."""

    def __init__(self, record: Callable[[str], None] | None = None, suffixes: tuple[str, ...] = (),
                 existing: Iterable[str] = ()) -> None:
        self.used: set[str] = set()
        # every output file name of the stems taken, and the names of files already there; lower case
        self.files: set[str] = {name.lower() for name in existing}
        self.suffixes = suffixes
        self.record = record
        self.room = NAME_MAX - max((len(os.fsencode(s)) for s in suffixes), default=0)
        self._next_suffix: dict[str, int] = {}  # stem -> the first -k that may be free (see peek)

    def _free(self, name: str) -> bool:
        return name.lower() not in self.used and not any(f"{name}{s}".lower() in self.files for s in self.suffixes)

    def peek(self, medium: Path) -> str:
        """The stem :meth:`take` would give ``medium`` now, not taken."""
        stem = medium.stem
        name = _cut_name(stem, self.room)
        if self._free(name):
            return name
        # Names are only ever taken: the suffixes below the last one found for this stem stay taken, so
        # the search starts there (it counted from 2 each time: 10,000 media named image.jpg in folders
        # of their own took ~50 million checks, 4,000 of them 4.6 s).
        k = self._next_suffix.get(stem, 2)
        while not self._free(name := f"{_cut_name(stem, self.room - len(f'-{k}'))}-{k}"):
            k += 1
        self._next_suffix[stem] = k
        return name

    def take(self, medium: Path) -> str:
        name = self.peek(medium)
        self.used.add(name.lower())
        self.files.update(f"{name}{s}".lower() for s in self.suffixes)
        if self.record is not None:
            self.record(name)
        return name


def _cut_name(name: str, limit: int) -> str:
    """``name`` less its last characters until it takes at most ``limit`` bytes on disk."""
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name
