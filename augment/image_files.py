"""Image and video files in a user's folders, and names: which extensions are images and videos, a
folder's files as every command reads one (:func:`walk_files`, :func:`list_images`), names that are not
UTF-8 (:func:`is_utf8`, :func:`shown_name`). Part of :mod:`augment.imageio`, which re-exports them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from augment.excluded_folders import drop_excluded, excluded
from augment.input_error import InputError

# A GIF is an image (its first frame) wherever one is read; a search takes an animated one as a
# video (pipelines.video.is_animated_gif).
# .jfif and .jpe: JPEGs as Windows browsers save them ("Save image as" gives photo.jfif).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"})

# The log lines of this module are augment.imageio's, as before it was split out (users' filters, -v).
logger = logging.getLogger("augment.imageio")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


_LOOPS_TOLD: set[str] = set()  # links back to a folder above them, warned of in this process


def walk_files(folder: Path) -> list[Path]:
    """Everything but folders under ``folder`` (sorted, recursive), as a user's input folder is read.

    A symbolic link to a folder is followed (``hats -> /data/hats`` is a category like any other;
    ``Path.rglob`` left it out without a word), one back to a folder above it is not (a loop). Hidden
    names (``.DS_Store``, macOS's ``._photo.jpg``, ``.git/``, ``.ipynb_checkpoints/``) and everything
    in a hidden folder are left out, as the object-store listing leaves them out; so is a run's own
    output folder inside it (:mod:`augment.excluded_folders`), and names that are not UTF-8 (one
    warning naming them). Broken links are kept: callers say so.
    """
    folder = Path(folder)
    found: list[Path] = []
    undecodable: list[Path] = []

    # A stack, not recursion: a tree deeper than Python's recursion limit (1,200 folders) was a
    # RecursionError traceback; each folder's real path is its parent's and its name unless it is a
    # link (a realpath per folder walked every folder above it: 7 s for that tree).
    top = os.path.realpath(folder)
    stack: list[tuple[Path, str, frozenset[str]]] = [(folder, top, frozenset({top}))]
    while stack:
        directory, directory_real, above = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            if not (directory == folder and isinstance(error, FileNotFoundError)):  # a missing folder: the caller's line
                logger.warning("%s: cannot list this folder (%s); left out", directory, error.strerror or error)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = directory / entry.name
            if not is_utf8(entry.name):  # its cutouts' categories, rows and JSON lines could not hold it
                undecodable.append(path)
                continue
            if not entry.is_dir():  # files, broken links and link loops (is_dir is False for those)
                found.append(path)
                continue
            link = entry.is_symlink()
            real = os.path.realpath(path) if link else os.path.join(directory_real, entry.name)
            if link and excluded(real):  # a link to this run's own output folder
                continue
            if real in above:
                if str(path) not in _LOOPS_TOLD:  # a command lists a folder several times: told once
                    _LOOPS_TOLD.add(str(path))
                    logger.warning("%s: a symbolic link to %s, a folder above it; not followed", path, os.readlink(path))
                continue
            stack.append((path, real, above | {real}))
    undecodable = drop_excluded(undecodable, folder)
    if undecodable:
        logger.warning("%s: %d file(s) or folder(s) whose name is not UTF-8 left out (%s%s); %s", folder,
                       len(undecodable), shown_name(undecodable[0].name), ", ..." if len(undecodable) > 1 else "",
                       name_fix(undecodable[0].name, one=False))
    return sorted(drop_excluded(found, folder))


def is_utf8(name: str) -> bool:
    """Whether a file name read from the system is valid UTF-8 (Python keeps other bytes as lone
    surrogates, which Parquet strings, strict JSON and the console cannot hold)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_fix(name: str, one: bool = True) -> str:
    """What to do about a name :func:`is_utf8` refuses: rename it, or, when its bytes are UTF-8 and Python
    read them in a locale that is not (LC_ALL=C with PYTHONUTF8=0), run in a UTF-8 one (such a name was
    'not UTF-8; rename it', which it was not)."""
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return "rename it" if one else "rename them"
    return (f"its bytes are UTF-8, but Python reads names in its {sys.getfilesystemencoding()} locale: set "
            "LC_ALL=C.UTF-8 (or PYTHONUTF8=1) and rerun")


def opencv_path(path: Path) -> str:
    """``path`` as OpenCV's video reader and writer take it; a path that is not UTF-8 (``caf\\xe9.mp4``)
    crashed the process in OpenCV's binding (a segmentation fault), so it is an InputError."""
    text = str(path)
    if not is_utf8(text):
        raise InputError(f"{shown_name(text)}: a name that is not UTF-8, which OpenCV cannot open; {name_fix(text)}")
    return text


def shown_name(name: str) -> str:
    """A file name as it can be printed: bytes that are not UTF-8 as ``\\xe9``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files in ``folder`` (:func:`walk_files`: sorted, recursive, links to folders followed,
    hidden names and a run's own output folder left out) and the other files found there."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such file or directory")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    images, others, broken, special = [], [], [], []
    for path in walk_files(folder):
        if path.is_file():
            (images if is_image_path(path) else others).append(path)
        elif path.is_symlink() and not path.exists():  # a link to a moved or deleted file
            broken.append(path)
        elif path.exists() and not path.is_dir():  # a FIFO, socket or device: left out without a word
            special.append(path)
    for path in broken:
        logger.info("%s: a symbolic link to %s, which does not exist; left out", path, os.readlink(path))
    for found, what in ((broken, "broken symbolic link(s)"), (special, "FIFO(s), socket(s) or device(s), not files,")):
        if found:
            logger.warning("%s: %d %s left out (%s%s)", folder, len(found), what, found[0].name,
                           ", ..." if len(found) > 1 else "")
    return images, others
