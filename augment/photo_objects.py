"""Whole labelled photos, not cutouts: the (photo, mask) pairs of a source whose masks are whole-photo
maps (:func:`photo_mask_pairs`), and each photo with its objects' masks at the photo's size
(:func:`read_labelled_photos`, for using real photos as search media); the source formats
themselves are read by :mod:`augment.sources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from augment.config import SourceConfig
from augment.imageio import InputError
from augment.source_items import Skip, category_allowed, limited
from augment.sources import PHOTO_OBJECTS, detect_format, label_map_files, loaded_pairs, mask_pair_files, value_category


def photo_mask_pairs(source: Path, fmt: str, config: SourceConfig
                     ) -> tuple[dict[int, str], list[tuple[Path | None, Path | None]], list[Skip]]:
    """Value names, the (photo, mask) pairs ``config`` picks and the non-image files, of a source whose
    masks are whole-photo maps (``label_map`` or ``mask_pairs``); other formats have no such pairs."""
    if fmt == "label_map":
        names, label_files, photo_of, skips = label_map_files(source)
        return names, [(photo_of(p), p) for p in limited(label_files, config)], skips
    if fmt == "mask_pairs":
        names, pairs, skips = mask_pair_files(source, config)
        return names, limited(pairs, config), skips
    if fmt in ("rgba", "objects"):
        raise InputError(f"{source}: {fmt} sources hold cutouts, not labelled photos "
                         "(use label_map, mask_pairs, coco, labelme, yolo or cvat_mask)")
    raise InputError(f"{source}: unknown source format {fmt!r} (use auto, label_map, mask_pairs, coco, labelme, yolo or cvat_mask)")


@dataclass
class LabelledPhoto:
    """A real photo with the masks of its objects, at the photo's size (not cropped)."""

    path: Path
    image: np.ndarray  # H×W×3 RGB uint8
    objects: list[tuple[str, np.ndarray]]  # (category, H×W bool mask) per object


def read_labelled_photos(source: Path, config: SourceConfig) -> Iterator[LabelledPhoto | Skip]:
    """Whole photos and their object masks, for using real photos as media (not only as cutouts).

    An object is what its format calls one: an annotation (COCO), a shape or group (LabelMe), a
    label line (YOLO), an object colour (CVAT), an instance id (mask pairs), or
    all pixels of one label (label maps: a garment split in two by an arm stays one object, where
    cutouts take each connected region). Objects smaller than ``min_area`` are left out; ``rgba``
    cutouts and ``objects`` tables have no photos and are an error.
    """
    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    if fmt in PHOTO_OBJECTS:
        for item in PHOTO_OBJECTS[fmt](source, config):
            if isinstance(item, Skip):
                yield item
                continue
            path, image, found = item
            found = list(found)  # read twice below (an iterator of masks drawn as taken)
            # An annotation left out (box-only, crowd, broken) is a counted skip, as a mask pair's
            # unknown label is: dropped here, calibrate said '(0 inputs skipped)' of box-only COCO.
            yield from (o for o in found if isinstance(o, Skip))
            yield LabelledPhoto(path, image, [o for o in found if not isinstance(o, Skip) and o[1].sum() >= config.min_area])
        return
    names, pairs, unpaired = photo_mask_pairs(source, fmt, config)
    yield from unpaired  # a mask without its image: counted, as expand counts it
    for loaded in loaded_pairs(pairs, "empty mask", soft_edges=fmt == "mask_pairs" and not names):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        photo, label_path, image, labels, present = loaded
        objects = []
        for value in present:
            category = value_category(value, names, fmt, label_path)
            if isinstance(category, Skip):
                yield category
                continue
            mask = labels == value
            if category_allowed(category, config) and mask.sum() >= config.min_area:
                objects.append((category, mask))
        yield LabelledPhoto(photo, image, objects)
