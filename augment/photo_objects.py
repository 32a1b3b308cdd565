"""Whole labelled photos, not cutouts: the (photo, mask) pairs of a source whose masks are whole-photo
maps (:func:`photo_mask_pairs`), and each photo with its objects' masks at the photo's size
(:func:`read_labelled_photos`, for using real photos as search media); the source formats
themselves are read by :mod:`augment.sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, overload

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


class PhotoMasks(Sequence[tuple[str, np.ndarray]]):
    """A photo's objects, each ``(category, H×W bool mask)``, the mask made when it is taken: from the
    photo's label map (a value's pixels) or from the object's own mask kept cropped to its box and
    bit-packed. Every mask held at once was the photo's size each (50 objects of a 12-MP photo: 600 MB)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self._objects: list[tuple[str, np.ndarray, int | None, tuple[int, int, int, int] | None]] = []

    def add_value(self, category: str, labels: np.ndarray, value: int) -> None:
        """The object of ``labels``' pixels of ``value`` (the label map is shared, not copied)."""
        self._objects.append((category, labels, value, None))

    def add_mask(self, category: str, mask: np.ndarray) -> None:
        """The object of ``mask`` (photo-sized), kept as its box's pixels, eight to a byte."""
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        y0, y1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
        x0, x1 = (int(columns[0]), int(columns[-1]) + 1) if columns.size else (0, 0)
        self._objects.append((category, np.packbits(mask[y0:y1, x0:x1].astype(bool)), None, (y0, y1, x0, x1)))

    def __len__(self) -> int:
        return len(self._objects)

    @overload
    def __getitem__(self, index: int) -> tuple[str, np.ndarray]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, np.ndarray]]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, np.ndarray] | list[tuple[str, np.ndarray]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        category, data, value, box = self._objects[index]
        if box is None:
            return category, data == value
        y0, y1, x0, x1 = box
        mask = np.zeros(self.shape, bool)
        mask[y0:y1, x0:x1] = np.unpackbits(data, count=(y1 - y0) * (x1 - x0)).reshape(y1 - y0, x1 - x0).view(bool)
        return category, mask


@dataclass
class LabelledPhoto:
    """A real photo with the masks of its objects, at the photo's size (not cropped)."""

    path: Path
    image: np.ndarray  # H×W×3 RGB uint8
    objects: PhotoMasks  # (category, H×W bool mask) per object, each made as it is taken


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
            objects = PhotoMasks(image.shape[:2])
            for one in found:  # masks drawn as taken: one photo-sized mask at a time
                if isinstance(one, Skip):
                    # An annotation left out (box-only, crowd, broken) is a counted skip, as a mask pair's
                    # unknown label is: dropped here, calibrate said '(0 inputs skipped)' of box-only COCO.
                    yield one
                elif np.count_nonzero(one[1]) >= config.min_area:
                    objects.add_mask(*one)
            yield LabelledPhoto(path, image, objects)
        return
    names, pairs, unpaired = photo_mask_pairs(source, fmt, config)
    yield from unpaired  # a mask without its image: counted, as expand counts it
    for loaded in loaded_pairs(pairs, "empty mask", soft_edges=fmt == "mask_pairs" and not names):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        photo, label_path, image, labels, present = loaded
        objects = PhotoMasks(image.shape[:2])
        for value in present:
            category = value_category(value, names, fmt, label_path)
            if isinstance(category, Skip):
                yield category
                continue
            if category_allowed(category, config) and np.count_nonzero(labels == value) >= config.min_area:
                objects.add_value(category, labels, value)
        yield LabelledPhoto(photo, image, objects)
