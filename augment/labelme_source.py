"""The ``labelme`` source format: LabelMe's annotation files, one ``.json`` per image.

Each file names its image (``imagePath``, relative to the file's folder; else the ``imageData`` it
embeds, base64) and its ``shapes``: ``label``, ``shape_type`` (``polygon``, ``rectangle``, ``circle``
or ``mask``; lines and points have no area and are counted skips), ``points`` in pixels and an
optional ``group_id`` that joins the shapes of one label and group into one object, as LabelMe's own
exports do. Polygons are rasterised as COCO's are (:func:`augment.coco_source.coco_annotation_mask`:
a pixel is in where its area is, either orientation, points outside the image clipped). A file
whose image is missing or of another size than ``imageHeight`` x ``imageWidth``, and a shape that
cannot be drawn (fewer than 3 points, no area, a point that is not a number), are counted skips
naming the file.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from augment.coco_source import coco_annotation_mask
from augment.config import SourceConfig
from augment.imageio import InputError, decode_image, image_from_bytes, is_image_path, walk_files
from augment.source_items import Skip, category_allowed, limited, read_photo, turned_hint
from augment.textfiles import file_head, loads_json, read_user_text
from augment.validation import is_number

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
CIRCLE_POINTS = 72  # a circle is drawn as a polygon of this many corners


def looks_like_labelme(path: Path) -> bool:
    """Whether ``path`` is a LabelMe file: its first 64 kB name ``shapes`` and ``imagePath``, or a shape's
    ``shape_type`` (LabelMe writes ``imagePath`` after the shapes, past 64 kB in a file of many)."""
    head = file_head(path)
    return '"shapes"' in head and ('"imagePath"' in head or '"shape_type"' in head)


def labelme_files(source: Path) -> list[Path]:
    """The ``.json`` files of a LabelMe source: the file itself, or every one under the folder."""
    if source.is_file():
        return [source]
    return [p for p in walk_files(source) if p.suffix.lower() == ".json" and p.is_file()]


def read_labelme_file(path: Path) -> dict | Skip:
    """A LabelMe file's data, or a Skip saying why it is not one."""
    try:
        data = loads_json(read_user_text(path, "a LabelMe .json file"))
    except InputError as error:  # not UTF-8
        return Skip.of(error, path)
    except (ValueError, OSError) as error:
        return Skip(str(path), f"not a LabelMe file (not readable JSON: {error})")
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return Skip(str(path), "not a LabelMe file (no 'shapes' list)")
    return data


def labelme_label_names(source: Path) -> set[str]:
    """Every label the LabelMe files of ``source`` give a shape."""
    names: set[str] = set()
    for path in labelme_files(source):
        data = read_labelme_file(path)
        if not isinstance(data, Skip):
            names |= {s["label"] for s in data["shapes"] if isinstance(s, dict) and isinstance(s.get("label"), str)}
    return names


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` names a file under ``root`` by its name (``..`` climbing out of it is not); a
    link there to a photo elsewhere is, as links are in every source folder."""
    named, top = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return named == top or named.startswith(top.rstrip(os.sep) + os.sep)


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a name the system refuses (too long: ENAMETOOLONG) is none."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _image_file(path: Path, data: dict, root: Path) -> Path | Skip | None:
    """The image file a LabelMe file's ``imagePath`` names (``\\`` as Windows saves it read as ``/``),
    a Skip where it lies outside ``root``, None where it names none that is there."""
    name = data.get("imagePath")
    if not isinstance(name, str) or not name.strip():
        return None
    relative = PurePosixPath(name.replace("\\", "/"))  # saved on Windows: ..\\images\\x.jpg
    # Where it says, else beside the file: an absolute path of the machine it was drawn on (C:/data/x.jpg)
    # or a folder since moved
    absolute = relative.is_absolute() or relative.as_posix()[1:3] == ":/"
    candidates = ([] if absolute else [path.parent / relative]) + [path.parent / relative.name]
    # annotations/../photos/a.png read as photos/a.png
    candidate = next((Path(os.path.normpath(c)) for c in candidates if is_image_path(c) and _is_file(c)), None)
    if candidate is None:
        return None
    if not _inside(candidate, root):
        return Skip(str(path), f"imagePath {name!r} lies outside the source folder {root}")
    return candidate


def file_root(source: Path) -> Path:
    """Where a LabelMe source's images may lie: under its folder; for a file named alone, under the
    folder above its own (``annotations/x.json`` naming ``../images/x.jpg``)."""
    return source.parent.parent if source.is_file() else source


def labelme_source_files(path: Path) -> list[Path]:
    """A LabelMe file named as a source and the image it reads (what its run's fingerprint covers)."""
    data = read_labelme_file(path)
    image = None if isinstance(data, Skip) else _image_file(path, data, file_root(path))
    return [path, image] if isinstance(image, Path) else [path]


def labelme_image(path: Path, data: dict, root: Path) -> tuple[Path, np.ndarray] | Skip:
    """The RGB image a LabelMe file annotates and the file it is read from: the one ``imagePath``
    names (under the source's folder ``root``), else its embedded ``imageData`` (read from the LabelMe
    file itself); a Skip naming the file when neither is there."""
    image_path = _image_file(path, data, root)
    if isinstance(image_path, Skip):
        return image_path
    if image_path is not None:
        image = read_photo(image_path)
        return image if isinstance(image, Skip) else (image_path, image)
    name = data.get("imagePath")
    embedded = data.get("imageData")
    if isinstance(embedded, str) and embedded:
        try:
            return path, image_from_bytes(base64.b64decode(embedded, validate=True), f"{path}: imageData", "rgb")
        except (binascii.Error, ValueError) as error:
            return Skip(str(path), f"imageData is not base64 ({error})")
        except InputError as error:
            return Skip.of(error, path)
    if not isinstance(name, str) or not name.strip():
        return Skip(str(path), "no imagePath (nor imageData): which image it annotates cannot be told")
    return Skip(str(path), f"image file {name!r} (its imagePath) not found beside it, and no imageData")


def _points(shape: dict) -> list[tuple[float, float]]:
    points = shape.get("points")
    if not isinstance(points, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(is_number(v) and math.isfinite(v) for v in p)
            for p in points):
        raise ValueError("points must be a list of [x, y] numbers")
    return [(float(x), float(y)) for x, y in points]


def shape_mask(shape: dict, height: int, width: int) -> np.ndarray:
    """A LabelMe shape's bool mask on a ``height`` x ``width`` image; ValueError saying what is wrong."""
    kind = shape.get("shape_type") or "polygon"
    points = _points(shape)
    if kind == "polygon":
        if len(points) < 3:
            raise ValueError(f"a polygon of {len(points)} point(s) has no area")
        polygon = points
    elif kind == "rectangle":
        if len(points) != 2:
            raise ValueError(f"a rectangle needs 2 corners, not {len(points)} points")
        (x0, y0), (x1, y1) = points
        polygon = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif kind == "circle":
        if len(points) != 2:
            raise ValueError(f"a circle needs its centre and a point on it, not {len(points)} points")
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        polygon = [(cx + radius * math.cos(2 * math.pi * k / CIRCLE_POINTS),
                    cy + radius * math.sin(2 * math.pi * k / CIRCLE_POINTS)) for k in range(CIRCLE_POINTS)]
    elif kind == "mask":
        return _mask_shape(shape, points, height, width)
    else:
        raise ValueError(f"a {kind} has no area (only {', '.join(AREA_SHAPES)} shapes are objects)")
    flat = [v for point in polygon for v in point]
    mask = coco_annotation_mask({"segmentation": [flat]}, height, width) > 0
    if not mask.any():
        raise ValueError(f"the {kind} covers no pixel of the image (zero area, or outside it)")
    return mask


def _mask_shape(shape: dict, points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """LabelMe 5's ``mask`` shape: a PNG (base64, ``mask``) of its box, placed at its first point."""
    if len(points) != 2 or not isinstance(shape.get("mask"), str):
        raise ValueError("a mask shape needs its box's 2 corners and its 'mask' PNG (base64)")
    try:
        drawn = decode_image(base64.b64decode(shape["mask"], validate=True), name="its mask")
    except (binascii.Error, ValueError, InputError) as error:
        raise ValueError(f"its mask is not a base64 PNG ({error})") from None
    if drawn.ndim == 3:  # its alpha where it has one, else any colour that is not black
        drawn = drawn[:, :, 3] if drawn.shape[2] == 4 else drawn.max(axis=2)
    x0, y0 = int(math.floor(min(p[0] for p in points))), int(math.floor(min(p[1] for p in points)))
    mask = np.zeros((height, width), bool)
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + drawn.shape[0], height), min(x0 + drawn.shape[1], width)
    if bottom > top and right > left:
        mask[top:bottom, left:right] = drawn[top - y0:bottom - y0, left - x0:right - x0] > 0
    if not mask.any():
        raise ValueError("the mask covers no pixel of the image")
    return mask


def labelme_objects(path: Path, data: dict, height: int, width: int,
                    config: SourceConfig) -> Iterator[tuple[str, np.ndarray] | Skip]:
    """(label, bool mask) of each object of one LabelMe file: its shapes of one label and ``group_id``
    joined, a shape without a group alone; a shape that cannot be drawn is a Skip naming the file.
    Drawn one object at a time, as it is taken: a photo-sized mask for each of a file's hundreds of
    shapes, held together, took gigabytes."""
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for index, shape in enumerate(data["shapes"]):
        label = shape.get("label") if isinstance(shape, dict) else None
        if not isinstance(label, str) or not label:
            yield Skip(str(path), f"shape {index}: no label")
            continue
        if category_allowed(label, config):
            group = shape.get("group_id")
            key = (label, group) if isinstance(group, (int, str)) and not isinstance(group, bool) else (index,)
            groups.setdefault(key, []).append((index, shape))
    for members in groups.values():
        mask = None
        for index, shape in members:
            try:
                drawn = shape_mask(shape, height, width)
            except ValueError as error:
                yield Skip(str(path), f"shape {index} ({shape['label']!r}): {error}")
                continue
            mask = drawn if mask is None else np.logical_or(mask, drawn, out=mask)
        if mask is not None:
            yield members[0][1]["label"], mask


def _size_mismatch(data: dict, width: int, height: int) -> str | None:
    given = data.get("imageWidth"), data.get("imageHeight")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in given) or given == (width, height):
        return None
    return f"image is {width}x{height} but its shapes are for {given[0]}x{given[1]}{turned_hint(given, (width, height))}"


def labelme_photos(source: Path, config: SourceConfig) -> Iterator[tuple[Path, np.ndarray, list] | Skip]:
    """(image file, RGB image, its (label, mask) objects and Skips) per LabelMe file ``config`` picks, or a Skip."""
    files = labelme_files(source)
    if not files:
        raise InputError(f"{source}: no LabelMe .json files found")
    root = file_root(source)
    for path in limited(files, config):
        data = read_labelme_file(path)
        if isinstance(data, Skip):
            yield data
            continue
        read = labelme_image(path, data, root)
        if isinstance(read, Skip):
            yield read
            continue
        image_path, image = read
        mismatch = _size_mismatch(data, image.shape[1], image.shape[0])
        if mismatch:
            yield Skip(str(path), mismatch)
            continue
        found = labelme_objects(path, data, *image.shape[:2], config)
        yield image_path, image, found if data["shapes"] else iter([Skip(str(path), "no shapes")])
