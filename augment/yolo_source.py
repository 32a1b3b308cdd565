"""The ``yolo`` source format: YOLO segmentation labels, as Ultralytics and Roboflow export them.

Each image under an ``images`` folder (``images/``, ``images/train/``, or ``train/images/``) has its
label file at the same place under ``labels`` with ``.txt`` (``labels/train/x.txt`` for
``images/train/x.jpg``; else ``x.txt`` beside ``x.jpg``, as Darknet keeps it); each line is ``CLASS x1 y1 x2 y2 ...``, a polygon in coordinates
normalised to [0, 1] of the image's width and height, one object a line. Class names come from
``data.yaml`` (``names:`` a list, or a mapping of ids to names) or ``classes.txt`` (a name a line;
beside ``images/``, or among the labels as LabelImg saves it).
Polygons are rasterised as COCO's are (:func:`augment.coco_source.coco_annotation_mask`). A line with
an odd count of coordinates, fewer than 3 points (a detection box ``CLASS cx cy w h`` included),
values outside [0, 1] or an unknown class is a counted skip naming the file and the line; an image
without a label file, or a label file without its image, is a counted skip too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml

from augment.coco_source import coco_annotation_mask
from augment.config import SourceConfig
from augment.imageio import InputError, is_image_path, walk_files
from augment.source_items import Skip, category_allowed, limited, read_photo
from augment.textfiles import read_user_text

NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")


def yolo_name_file(source: Path) -> Path | None:
    """The class names file: beside ``images/``, else in ``labels/`` or ``labels/SPLIT/`` (or ``images/``
    where the labels are kept beside the images), where LabelImg saves ``classes.txt`` among the labels."""
    folders = [source]
    for kept in (source / "labels", source / "images"):  # LabelImg: among the labels, beside images or not
        folders += [kept, *sorted(p for p in kept.iterdir() if p.is_dir())] if kept.is_dir() else []
    return next((folder / name for folder in folders for name in NAME_FILES if (folder / name).is_file()), None)


def looks_like_yolo(source: Path) -> bool:
    """A folder with a class names file beside an ``images`` folder (or ``SPLIT/images``)."""
    return yolo_name_file(source) is not None and any(
        (folder / "images").is_dir() for folder in [source, *(p for p in source.iterdir() if p.is_dir())])


def yolo_names(source: Path) -> dict[int, str]:
    """Class id -> name, from ``data.yaml``'s ``names`` or ``classes.txt``; an InputError naming the
    file when it has none or they are not names."""
    path = yolo_name_file(source)
    if path is None:
        raise InputError(f"{source}: a yolo source needs data.yaml (names: [...]) or classes.txt naming its classes")
    if path.suffix in (".yaml", ".yml"):
        try:  # not read_yaml_mapping: a synth config's keys are names, data.yaml's 'names' are often ids (0: person)
            data = yaml.safe_load(read_user_text(path, "a YOLO data.yaml"))
        except (yaml.YAMLError, RecursionError) as error:
            raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0] if str(error) else 'nested too deep'})") from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, list):
            names = dict(enumerate(names))
        if not isinstance(names, dict) or not names:
            raise InputError(f"{path}: expected 'names:' as a list of class names or a mapping of class ids to names")
        bad = next(((k, v) for k, v in names.items() if not (isinstance(k, int) and not isinstance(k, bool)
                                                             and isinstance(v, (str, int)) and not isinstance(v, bool))), None)
        if bad is not None:  # YAML reads null, yes, no, on, off as no name or true/false: quote those
            raise InputError(f"{path}: names: class {bad[0]!r} is named {bad[1]!r}, not a name "
                             "(quote names YAML reads otherwise: 'null', 'yes', 'no', 'on', 'off')")
        return {k: str(v) for k, v in names.items()}
    names = [line.strip() for line in read_user_text(path, "class names, one a line").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise InputError(f"{path}: no class names (expected one a line)")
    return dict(enumerate(names))


def label_path(image: Path, source: Path) -> Path:
    """Where YOLO keeps an image's labels: its last ``images`` folder read as ``labels``, suffix ``.txt``."""
    parts = list(image.relative_to(source).parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return source.joinpath(*parts).with_suffix(".txt")


def yolo_pairs(source: Path) -> tuple[list[tuple[Path, Path]], list[Skip]]:
    """(image, label file) of each image under an ``images`` folder, and the label files no image has."""
    files = walk_files(source)
    images = [p for p in files if is_image_path(p) and "images" in p.relative_to(source).parts[:-1]]
    if not images:
        raise InputError(f"{source}: no images found under an images/ folder")
    present = set(files)
    # labels/ as Ultralytics keeps them, else x.txt beside x.jpg as Darknet and some exporters keep it
    pairs = [(image, next((p for p in (label_path(image, source), image.with_suffix(".txt")) if p in present),
                          label_path(image, source))) for image in images]
    paired = {label for _, label in pairs}
    orphans = [p for p in files if p.suffix == ".txt" and "labels" in p.relative_to(source).parts[:-1]
               and p not in paired and p.name not in NAME_FILES]
    return pairs, [Skip(str(p), "no image with this name (a label file without its image)") for p in orphans]


def _line_polygon(line: str, names: dict[int, str]) -> tuple[str, list[float]]:
    """A label line's class name and normalised polygon; ValueError saying what is wrong."""
    fields = line.split()
    try:
        values = [float(v) for v in fields[1:]]
        number = float(fields[0])  # 0.0 as some converters write it, read as Ultralytics reads it
    except ValueError:
        raise ValueError(f"not numbers ({line.strip()[:40]!r})") from None
    if not number.is_integer():
        raise ValueError(f"class {fields[0]} is not a whole number")
    klass = int(number)
    if klass not in names:
        raise ValueError(f"class {klass} is not named in the class names ({len(names)} of them)")
    if len(values) % 2:
        raise ValueError(f"an odd count of coordinates ({len(values)})")
    if len(values) == 4:
        raise ValueError("a detection box (class cx cy w h), not a segmentation polygon")
    if len(values) < 6:
        raise ValueError(f"a polygon of {len(values) // 2} point(s) has no area")
    outside = next((v for v in values if not (math.isfinite(v) and 0.0 <= v <= 1.0)), None)
    if outside is not None:
        raise ValueError(f"coordinate {outside} outside [0, 1] (YOLO's are normalised to the image's size)")
    return names[klass], values


def yolo_objects(label: Path, names: dict[int, str], height: int, width: int,
                 config: SourceConfig) -> Iterator[tuple[str, np.ndarray] | Skip]:
    """(class name, bool mask) of each line of one label file, or a Skip naming the file and the line."""
    try:
        lines = read_user_text(label, "YOLO label lines").splitlines()
    except (InputError, OSError) as error:
        yield Skip.of(error, label)
        return
    if not any(line.strip() for line in lines):
        yield Skip(str(label), "no objects (an empty label file)")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            name, values = _line_polygon(line, names)
        except ValueError as error:
            yield Skip(str(label), f"line {number}: {error}")
            continue
        if not category_allowed(name, config):
            continue
        flat = [v * (width if k % 2 == 0 else height) for k, v in enumerate(values)]
        mask = coco_annotation_mask({"segmentation": [flat]}, height, width) > 0
        yield (name, mask) if mask.any() else Skip(str(label), f"line {number}: the polygon covers no pixel (zero area)")


def yolo_photos(source: Path, config: SourceConfig) -> Iterator[tuple[Path, np.ndarray, list] | Skip]:
    """(image file, RGB image, its (class, mask) objects and Skips) per image ``config`` picks, or a Skip."""
    names = yolo_names(source)
    pairs, orphans = yolo_pairs(source)
    yield from orphans
    for image_path, label in limited(pairs, config):
        if not label.is_file():
            yield Skip(str(image_path), f"no label file ({label.relative_to(source)})")
            continue
        image = read_photo(image_path)
        if isinstance(image, Skip):
            yield image
            continue
        yield image_path, image, yolo_objects(label, names, *image.shape[:2], config)
