"""Writing into a place (local path or object-store URI) so that readers never see half a file,
and local mirrors of remote inputs. Places and their file systems: :mod:`augment.storage`."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from augment.atomic_files import (atomic_write_bytes, atomic_write_text, remove_orphaned_temporaries,
                                  replace_into_place, temporary_final_name)
from augment.imageio import InputError
from augment.source_items import Skip
from augment.storage import Location, Place, StorageError

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"


def write_text_atomic(place: Place, text: str) -> None:
    if isinstance(place, Location):
        place.write_text(text)
    else:
        atomic_write_text(place, text)


def temporary_name(name: str) -> str:
    """A hidden, unique name beside ``name`` for an object being written (cleared by the next run)."""
    return f".{name}.{uuid.uuid4().hex[:12]}{TEMPORARY_SUFFIX}"


_OBJECT_TEMPORARY = re.compile(rf"\..+\.[0-9a-f]{{12}}{re.escape(TEMPORARY_SUFFIX)}")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a :func:`temporary_name` (an object-store upload's), not any hidden file."""
    return _OBJECT_TEMPORARY.fullmatch(name) is not None


def commit_file(local_file: Path, target: Place) -> None:
    """Put the finished ``local_file`` at ``target`` in one step that readers cannot see half done.

    Local: a rename (``local_file`` is made beside ``target``). Object store: an upload to a hidden
    temporary key, a size check, then a server-side copy to the final key (a copy is atomic: the key
    holds the old object or the whole new one), so an upload cut short never shows under the final
    name, whatever the SDK does with a failed multipart upload.
    """
    if not isinstance(target, Location):
        replace_into_place(local_file, target)
        return
    temporary = target.parent / temporary_name(target.name)
    fs = target.fs
    try:
        with open(local_file, "rb") as source:
            target._call("uploading it", _upload, fs, source, temporary.path)
        uploaded = temporary.info().size
        if uploaded != local_file.stat().st_size:
            raise StorageError(f"{target}: upload incomplete ({uploaded} of {local_file.stat().st_size} bytes)")
        target._call("moving it into place", fs.move, temporary.path, target.path)
    finally:
        try:
            fs.delete_file(temporary.path)
        except OSError:
            pass  # moved already (or never made); a leftover is cleared by the next run


def publish_file(local_file: Path, target: Place) -> None:
    """Put a file made in a local work folder at ``target`` in an object store (a local ``target`` is
    the file itself: nothing to do)."""
    if isinstance(target, Location):
        commit_file(local_file, target)


def remove_temporaries(folder: Place) -> None:
    """Remove the temporary files a killed writer left in ``folder`` (call only while holding its lock).

    A local folder: only those whose writer process is gone (:func:`augment.atomic_files.remove_orphaned_temporaries`;
    the lock keeps other runs of the same kind out, not a command writing one file there without a
    lock, such as ``synth eval --out``, whose temporary stays while it writes). An object store:
    the upload temporaries of :func:`commit_file` (:func:`temporary_name`), which only the holder of
    the store's lock writes; no pid tells a live uploader there, and any other hidden object stays.
    """
    if not isinstance(folder, Location):
        remove_orphaned_temporaries(folder)
        return
    if not folder.exists():
        return
    for child in folder.iterdir():
        if is_temporary_name(child.name) and child.is_file():
            child.unlink(missing_ok=True)


def _upload(fs: pafs.FileSystem, source, path: str, chunk: int = 8 << 20) -> None:
    with fs.open_output_stream(path) as stream:
        while block := source.read(chunk):
            stream.write(block)


# ----------------------------------------------------------------- local copies of remote inputs
def cache_root() -> Path:
    """Where remote sources are mirrored: ``$SYNTH_CACHE_DIR``, else ``synth`` in the user's cache folder
    (``$XDG_CACHE_HOME``, else ``~/.cache``); an :class:`InputError` (one line) where there is no home
    folder (a container's uid with no password entry and no HOME: ``Path.home()``'s RuntimeError was a
    traceback)."""
    if os.environ.get("SYNTH_CACHE_DIR"):
        return Path(os.environ["SYNTH_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "synth"
    try:
        return Path.home() / ".cache" / "synth"
    except RuntimeError:
        raise InputError("no home folder to mirror object-store sources under (HOME is not set and this user has "
                         "no home in the password database); set SYNTH_CACHE_DIR to a folder for them") from None


def stage(place: Place, purpose: str = "sources", skipped: list[Skip] | None = None) -> Path:
    """A local path holding ``place``: itself when local, else a mirror of the object or prefix.

    The mirror lives under :func:`cache_root` at a folder named after the URI and keeps the
    remote files' names, sizes and modification times, so a second run fetches only what changed.
    An object whose key no local file can be named after (:func:`_unmirrorable`: a part over the
    file system's name limit, an empty, ``.`` or ``..`` part, a key that is also another's folder)
    is left out, logged and appended to ``skipped`` naming its URI; it stopped the whole run.
    """
    if not isinstance(place, Location):
        return Path(place)
    root = cache_root() / purpose / hashlib.sha256(place.uri.encode()).hexdigest()[:16] / place.name
    info = place.info()
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{place}: no such file or folder")
    if info.type == pafs.FileType.File:
        wanted = {"": info}
    else:
        files = {entry.path[len(place.path) + 1:]: entry
                 for entry in place.listing(recursive=True) if entry.type == pafs.FileType.File}
        wanted = {}
        limit = _name_max(root)  # one file system for every object
        for relative, entry in files.items():
            problem = _unmirrorable(relative, files, limit)
            if problem is None:
                wanted[relative] = entry
                continue
            skip = Skip(f"{place.scheme}://{entry.path}", f"cannot be mirrored to a local file: {problem}")
            log.warning("skipped %s: %s", skip.path, skip.reason)
            if skipped is not None:
                skipped.append(skip)
        _prune_mirror(root, set(wanted))
    for relative, entry in wanted.items():
        local = root / relative if relative else root
        mtime = entry.mtime_ns or 0
        if local.is_file() and local.stat().st_size == entry.size and local.stat().st_mtime_ns == mtime:
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        source = Location(f"{place.scheme}://{entry.path}")
        atomic_write_bytes(local, source.read_bytes())
        os.utime(local, ns=(mtime, mtime))
    return root


def _unmirrorable(relative: str, keys: dict, limit: int) -> str | None:
    """Why the object at ``relative`` (its key below the mirrored prefix; ``keys``: all of them)
    cannot be a file under a local folder whose file names are at most ``limit`` bytes, or None."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "its key has an empty, '.' or '..' part"
    longest = max(len(part.encode()) for part in parts)
    if longest > limit:
        return f"a part of its key is {longest} bytes long, over the local file system's {limit}"
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in keys:
            return f"{'/'.join(parts[:depth])} is an object too, so it cannot also be a folder"
    return None


def _name_max(root: Path) -> int:
    """The longest file name (in bytes) the file system of ``root`` (or of its nearest existing folder) takes."""
    for folder in (root, *root.parents):
        if folder.is_dir():
            try:
                return os.pathconf(folder, "PC_NAME_MAX")
            except (OSError, ValueError):
                break
    return 255


def _prune_mirror(root: Path, remote: set[str]) -> None:
    """Remove from the mirror ``root`` the files (and then empty folders) that are no longer in the
    prefix it mirrors (``remote``: their paths relative to it): an object deleted from a source
    (a bad photo, a held-out one) must not go on being cut out of the stale copy."""
    if not root.is_dir():
        if root.exists():  # the URI named one object before, a prefix now
            root.unlink()
        return
    folders = {parent.as_posix() for name in remote for parent in Path(name).parents}
    for local in sorted(root.rglob("*"), reverse=True):  # files before the folders holding them
        relative = local.relative_to(root).as_posix()
        if local.is_dir() and not local.is_symlink():
            if relative not in folders and not any(local.iterdir()):  # e.g. an emptied masks/ would still tell the format
                local.rmdir()
        elif relative not in remote and temporary_final_name(local.name) is None:  # another run's write: its own
            log.info("%s: no longer in the source prefix; removed from its local mirror", local)
            local.unlink(missing_ok=True)
