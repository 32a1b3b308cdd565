"""`synth export --format coco`: images plus a COCO instances JSON with RLE masks.

The export is written whole or not at all: into a temporary folder beside ``--out``, renamed into
place when complete. Every row is checked before it is written (its JPEG complete and decodable,
its mask decodable and of the image's size, its id a safe file name not used before in its run); bad rows are
skipped and counted, never written as files holding bad bytes.

Rows of labelled photos (`synth photo-shards`, `synth extract`) name every pixel: their ``background``
(the source's value 0) is no annotation, and their ``__ignore__`` pixels (crowd regions, untrusted
automatic labels) are a crowd annotation (``iscrowd: 1``), as COCO marks regions left out of training
and evaluation; read back as a source, `synth expand` skips them and `synth photo-shards` gives them no loss.
"""

from __future__ import annotations

import collections
import errno
import glob
import logging
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from augment.atomic_files import atomic_path, naming_errors, orphaned_temporary, temporary_final_name, temporary_folder_beside
from augment.imageio import InputError, check_complete, decode_image, image_format
from augment.locking import LOCK_FILE, BusyError, folder_lock
from augment.outputs import OutputNames, check_output_folder, inside, is_safe_name
from augment.photo_shards import IGNORE_CATEGORY
from augment.schema import is_photo_background, object_problem, stored_bytes
from augment.shards import find_shard_runs, iter_rows, row_key
from augment.storage import Place
from augment.textfiles import loads_json

log = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"
DESCRIPTION_PREFIX = "exported by synth from "


def export_coco(shard_paths: list[Place | str], out_dir: Path) -> dict[str, Any]:
    """Write ``out_dir/images/<id>.jpg`` (:func:`file_stem`) (the stored JPEG bytes, not re-encoded) and ``annotations.json``.

    Returns the counts of images, annotations, categories and skipped rows, and ``skip_reasons``.
    """
    shards = find_shard_runs(shard_paths)  # each shard's footer read here to check it, and once more for its rows
    out_dir = Path(out_dir)
    if out_dir.is_symlink() and out_dir.is_dir():
        # A link to a folder (on a larger disk): the export is staged beside that folder and replaces it,
        # the link kept. Staged beside the link, it was 'Not a directory' (rmdir of the link), or the
        # link itself replaced by a folder on the link's disk.
        out_dir = out_dir.resolve()
    _check_target(out_dir)
    out_dir = Path(os.path.abspath(out_dir))  # '.' or 'a/..': a folder with a name, staged beside it, not inside
    here, target = Path.cwd().resolve(), out_dir.resolve()  # (through links: cwd is a real path, -o "$PWD" may
    if here == target or target in here.parents:            # name it by a link, as /tmp on macOS does)
        # Replaced whole, it would leave this shell in a removed folder; '-o .' was an OSError traceback
        # (the staging folder made inside '.', which cannot be renamed).
        raise InputError(f"{out_dir}: --out is the working folder or holds it, and an export replaces its folder "
                         "whole; name a folder for the export (e.g. -o coco)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clear_killed_exports(out_dir)
    fresh = temporary_folder_beside(out_dir, ".new")
    staging = fresh.with_suffix(".tmp")
    try:
        # Held while the export is written (and renamed into place with it): the lock tells a later
        # export that this staging folder is alive, not left by a killed run. The folder takes the
        # name such an export looks for only once locked, so it never finds one not yet locked.
        with folder_lock(fresh, "export run"):
            os.rename(fresh, staging)
            with naming_errors(out_dir):  # a full disk under a write to an open image file names no file
                counts = _write_coco(shards, staging, out_dir)
            _replace_folder(staging, out_dir)
    finally:
        for leftover in (fresh, staging):
            if leftover.exists():
                shutil.rmtree(leftover)
    return counts


def _clear_killed_exports(out_dir: Path) -> None:
    """Remove the staging folders beside ``out_dir`` of exports that were killed (SIGKILL, power
    loss): a whole export's images each, which no later run would otherwise find. A live export
    holds the lock in its own staging folder and is left alone. A folder still named ``.new`` (an
    export killed before it locked it) goes only once the process that made it is gone, as does an
    ``.old`` one (the export it replaced, moved aside by an export killed before it removed it)."""
    for suffix, what in ((".new", "the folder of an export killed as it started"),
                         (".old", "an earlier export left by an export killed as it replaced it")):
        for folder in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*{suffix}"):
            if (temporary_final_name(folder.name) == out_dir.name and orphaned_temporary(folder.name)
                    and folder.is_dir() and not folder.is_symlink()):
                shutil.rmtree(folder, ignore_errors=True)
                log.info("%s: removed %s", folder, what)
    for leftover in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*.tmp"):
        if leftover.is_symlink() or not leftover.is_dir():
            continue
        try:
            with folder_lock(leftover, "export run"):
                shutil.rmtree(leftover)
                log.info("%s: removed the staging folder of a killed export", leftover)
        except BusyError:
            continue


def _check_target(out_dir: Path) -> None:
    """``out_dir`` must be absent, empty, or an earlier export (which is replaced)."""
    check_output_folder(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    entries = {p.name for p in out_dir.iterdir()}
    try:
        earlier = entries <= {"images", ANNOTATIONS_FILE, LOCK_FILE} and loads_json(
            (out_dir / ANNOTATIONS_FILE).read_text(encoding="utf-8"))["info"]["description"].startswith(DESCRIPTION_PREFIX)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        earlier = False
    if not earlier:
        raise InputError(f"{out_dir}: exists and holds other files; choose a new or empty folder "
                         "(an earlier `synth export` there is replaced)")


def _replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` into ``target``'s place; an earlier export there is moved aside, then removed.
    Another export finishing at the same moment can put its folder there (or move it) in between: the
    check is made again, so the later export replaces it instead of failing on a non-empty folder."""
    for _ in range(10):
        try:
            if target.is_dir() and any(target.iterdir()):
                # Named after this process: an export killed before it removed it (a whole export's
                # images) is told from a live one's by the next export, which removes it.
                old = temporary_folder_beside(target, ".old")
                try:
                    os.rename(target, old)  # onto the empty folder just made
                except OSError:
                    old.rmdir()
                    raise
                try:
                    os.rename(new, target)
                finally:
                    shutil.rmtree(old, ignore_errors=True)
                return
            if target.is_dir():
                target.rmdir()
            os.rename(new, target)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
    os.rename(new, target)  # still contended: fail as the file system says


def file_stem(row_id: str) -> str:
    """The image file name (less ``.jpg``) of a row: its id where that is a plain name, else the id with
    what a file name should not hold (control characters such as a newline, characters Windows refuses)
    as ``_`` and a ``_`` before a leading ``-`` or ``.`` (an option, a hidden file). A photo-shards row
    is named after its photo, and ``IMG 0001``, ``café`` or ``-front`` were skipped as unsafe."""
    if is_safe_name(row_id):
        return row_id
    stem = "".join(c if c.isprintable() and c not in '<>:"|?*' else "_" for c in row_id)
    return f"_{stem}" if stem[0] in "-." else stem


def _row_problem(row: dict[str, Any], used: set[tuple[str, str]], run: str) -> tuple[str | None, np.ndarray | None]:
    """Why a row of run ``run`` (:func:`augment.shards.shard_run`) cannot be exported (a short reason, None
    if it can), and its instance-id mask. ``used``: the rows exported so far (:func:`augment.shards.row_key`)."""
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id.strip(". ") or any(c in row_id for c in "/\\\0"):
        return "id is not a safe file name", None  # empty, or a path: '../x', '/abs' (a hand-edited shard)
    if row_key(run, row_id) in used:  # another run's row of this id is kept (its file named -2)
        return "id seen before", None
    image_bytes, mask_bytes = stored_bytes(row, "image"), stored_bytes(row, "mask")
    try:
        if image_format(image_bytes) != "JPEG":
            raise InputError(f"{row_id}: image is not a JPEG")
        check_complete(image_bytes, row_id)
        image = decode_image(image_bytes, cv2.IMREAD_COLOR, row_id)
    except InputError as error:
        log.info("skipping row: %s", error)
        return "image unreadable or not a complete JPEG", None
    try:
        instances = decode_image(mask_bytes, cv2.IMREAD_UNCHANGED, f"{row_id} mask")
    except InputError as error:
        log.info("skipping row: %s", error)
        return "mask unreadable", None
    if instances.ndim != 2 or instances.shape != image.shape[:2]:
        return "mask size differs from the image's", None
    if (row.get("height"), row.get("width")) != image.shape[:2]:
        return "stored width/height differ from the image's", None
    problem = next(filter(None, (object_problem(obj, image.shape[:2]) for obj in row.get("objects") or [])), None)
    if problem is not None:
        log.info("skipping row %s: an object's %s", row_id, problem)
        return "malformed object entry", None
    return None, instances


def _image_path(images_folder: Path, file_name: str) -> Path:
    """``images_folder / file_name``, after checking that the name is one plain path component (which
    :func:`_row_problem` and :func:`file_stem` make it): a file of the fresh, locked images folder, not
    resolved on the disk per image (``inside`` resolved both paths of every image: ~17% of the time)."""
    if os.path.basename(file_name) != file_name or file_name in ("", ".", ".."):
        raise InputError(f"{images_folder / file_name}: would be written outside the output folder {images_folder}")
    return images_folder / file_name


class _EntryWriter:
    """A JSON array written an entry at a time to ``file``, exactly as ``json.dumps`` lays out a list."""

    def __init__(self, file: IO[str]) -> None:
        self.file, self.count = file, 0

    def add(self, entry: dict[str, Any]) -> None:
        self.file.write(", " if self.count else "")
        self.file.write(json.dumps(entry))
        self.count += 1


def _write_coco(shards: list[tuple[Place, str]], folder: Path, shown: Path) -> dict[str, Any]:
    """Write the images and ``annotations.json`` as the rows are read: an entry is written when it is
    made, so memory holds a row group, not the dataset (the lists of every entry were ~4 kB a row:
    677 MB at 100,000 rows). The file is what ``json.dumps`` of the whole document gives. Annotations
    follow the images in it: they wait in a scratch file (unnamed, gone with the process) until the
    last row, then are copied after them. The file is written atomically (a killed export leaves no
    half file), inside the staging folder that is itself renamed into place whole. A write that fails
    naming no file (a full disk) names ``shown`` (``--out``) or its annotations.json, not the staging folder."""
    (folder / "images").mkdir()
    categories: dict[str, int] = {}
    skipped: collections.Counter[str] = collections.Counter()
    used: set[tuple[str, str]] = set()
    runs = dict(shards)  # each shard's run (augment.shards.shard_run)
    names = OutputNames(suffixes=(".jpg",))
    images_folder = inside(folder, folder / "images")
    with atomic_path(folder / ANNOTATIONS_FILE) as temporary, naming_errors(shown / ANNOTATIONS_FILE), \
            open(temporary, "w", encoding="utf-8") as out, tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as pending:
        out.write('{"info": %s, "images": [' % json.dumps({"description": DESCRIPTION_PREFIX + ", ".join(map(str, runs))}))
        images, annotations = _EntryWriter(out), _EntryWriter(pending)
        for shard, row in iter_rows(list(runs)):
            problem, instances = _row_problem(row, used, runs[shard])
            if problem is not None:
                skipped[problem] += 1
                continue
            used.add(row_key(runs[shard], row["id"]))
            image_id = images.count + 1
            file_name = f"{names.take(Path(file_stem(row['id']) + '.jpg'))}.jpg"
            with naming_errors(shown):
                _image_path(images_folder, file_name).write_bytes(row["image"]["bytes"])
            images.add({"id": image_id, "file_name": file_name, "width": row["width"], "height": row["height"]})
            for obj in row["objects"] or []:
                if is_photo_background(obj):
                    continue  # its source's value 0: what is not an object
                photo_label = not obj["cutout_id"]  # a labelled photo's row (photo-shards, extract), not a pasted cutout
                binary = np.asfortranarray((instances == obj["instance_id"]).astype(np.uint8))
                rle = mask_utils.encode(binary)
                area = float(mask_utils.area(rle))
                if area == 0:
                    continue
                rle["counts"] = rle["counts"].decode("ascii")
                category_id = categories.setdefault(obj["category"], len(categories) + 1)
                x0, y0, x1, y1 = obj["box"]
                annotations.add(
                    {
                        "id": annotations.count + 1,
                        "image_id": image_id,
                        "category_id": category_id,
                        "segmentation": rle,
                        "area": area,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "iscrowd": int(photo_label and obj["category"] == IGNORE_CATEGORY),  # pixels with no loss
                        "attributes": {"cutout_id": obj["cutout_id"], "visible_fraction": obj["visible_fraction"]},
                    }
                )
        out.write('], "annotations": [')
        pending.seek(0)
        shutil.copyfileobj(pending, out)
        out.write('], "categories": %s}' % json.dumps(
            [{"id": i, "name": name, "supercategory": "object"} for name, i in categories.items()]))
    return {"images": images.count, "annotations": annotations.count, "categories": len(categories),
            "skipped": sum(skipped.values()), "skip_reasons": dict(skipped)}
