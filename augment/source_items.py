"""What every source reader of :mod:`augment.sources` yields, and the steps all readers share.

A reader yields :class:`SourceObject` (an RGBA crop whose alpha is the object's mask) or
:class:`Skip` (a counted, logged reason an input was not used); :func:`crop_object` cuts one object
out of a photo, :func:`limited` applies a source's include/exclude/limit and
:func:`category_allowed` its keep/drop labels.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

import cv2
import numpy as np

from augment.config import SourceConfig
from augment.imageio import InputError, read_image
from augment.resizing import resize_rgba


@dataclass
class SourceObject:
    rgba: np.ndarray  # H×W×4 uint8 crop; alpha 255 on the object, 0 elsewhere
    category: str
    source: str  # the image file it was cut from
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the source image
    provenance: dict | None = None  # automatic cutouts (objects sources): source, model_id, round, confidence, stability
    superpixels: bytes | None = None  # PNG of its superpixels when already computed (objects sources)
    source_size: tuple[int, int] | None = None  # width, height of the source image (box's frame); None when unknown


@dataclass
class Skip:
    path: str
    reason: str

    @classmethod
    def of(cls, error: Exception | str, *paths: Path | str) -> "Skip":
        """The skip of an error whose message starts with the file it names (one of ``paths``, else
        the first), that file's path not said twice ("x.png: x.png: truncated PNG")."""
        message = str(error)
        named = next((str(path) for path in paths if message.startswith(f"{path}: ")), None)
        return cls(named, message[len(named) + 2:]) if named else cls(str(paths[0]), message)


SourceItem = Union[SourceObject, Skip]


def read_photo(path: Path) -> np.ndarray | Skip:
    """A source's photo as RGB, or the skip naming it when it can't be read."""
    try:
        return read_image(path, "rgb")
    except InputError as error:
        return Skip.of(error, path)


def skipped_summary(skips: list[Skip], noun: str = "input", filters: str = "") -> str:
    """``N inputs skipped`` (``noun`` in the singular: '1 input skipped') and one of them with its reason
    (the first that is not merely a non-image file), for the one line that says a run found nothing
    usable: why, not only how many. With nothing skipped, ``filters`` (the config keys that can leave nothing, e.g. a pattern that matches no file)."""
    if not skips:
        return f"0 {noun}s skipped" + (f": {filters} left none" if filters else "")
    first = next((s for s in skips if s.reason != "not an image file"), skips[0])
    said = first.reason if first.reason.startswith(f"{first.path}: ") else f"{first.path}: {first.reason}"
    more = "; `synth -v` lists them all" if len(skips) > 1 else ""
    return f"{len(skips)} {noun if len(skips) == 1 else noun + 's'} skipped, e.g. {said}{more}"


def category_allowed(name: str, config: SourceConfig) -> bool:
    if config.keep_labels and name not in config.keep_labels:
        return False
    return name not in config.drop_labels


def crop_object(image: np.ndarray, mask: np.ndarray, category: str, source: Path, config: SourceConfig) -> SourceItem:
    """Cut the masked pixels out of ``image`` as an RGBA crop, downscaled to ``max_cutout_side``."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return Skip(str(source), f"empty mask for {category!r}")
    if area < config.min_area:
        return Skip(str(source), f"{category!r} object of {area} px is below min_area {config.min_area}")
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    alpha = (mask[y : y + h, x : x + w] > 0).astype(np.uint8) * 255
    rgba = np.dstack([image[y : y + h, x : x + w, :3], alpha])
    longer = max(w, h)
    if longer > config.max_cutout_side:
        factor = config.max_cutout_side / longer
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        # Colour averaged weighted by alpha: averaged as it is, the photo's background around the object
        # bled into its edge (a white garment cut from a red wall kept a pink rim in every composite).
        resized = resize_rgba(rgba, *size)
        rgba = np.dstack([resized[:, :, :3], np.where(resized[:, :, 3] >= 128, 255, 0).astype(np.uint8)])
    return SourceObject(np.ascontiguousarray(rgba), category, str(source), (x, y, x + w, y + h),
                        source_size=(int(image.shape[1]), int(image.shape[0])))


# A photo, its RGB pixels, its (category, bool mask) objects and Skips: an iterator that draws each
# mask as it is taken (COCO's, LabelMe's, YOLO's, CVAT's), to be read once
PhotoObjects = tuple[Path, np.ndarray, Iterable]


def cut_objects(photos: Iterator[PhotoObjects | Skip], config: SourceConfig) -> Iterator[SourceItem]:
    """The cutouts of photos whose objects are masks at the photo's size (COCO, LabelMe, YOLO, CVAT)."""
    for item in photos:
        if isinstance(item, Skip):
            yield item
            continue
        path, image, found = item
        for one in found:
            yield one if isinstance(one, Skip) else crop_object(image, one[1], one[0], path, config)


def regions(mask: np.ndarray, min_area: int) -> Iterator[np.ndarray]:
    """Each 8-connected region of ``mask`` of ``min_area`` pixels or more (a label map's objects, whose
    specks are normal: not worth a logged skip each)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    for region in range(1, count):
        if stats[region, cv2.CC_STAT_AREA] >= min_area:
            yield labels == region


def limited(paths: list, config: SourceConfig) -> list:
    """Apply include/exclude (globs on the file's stem) and limit; items may be paths or (path, ...) tuples."""

    def stem(item) -> str:  # a tuple's first path that is there (a CVAT mask without its photo: the mask's)
        return Path(next(p for p in item if p is not None) if isinstance(item, tuple) else item).stem

    if config.include:
        paths = [p for p in paths if any(fnmatch.fnmatchcase(stem(p), pattern) for pattern in config.include)]
    if config.exclude:
        paths = [p for p in paths if not any(fnmatch.fnmatchcase(stem(p), pattern) for pattern in config.exclude)]
    return paths[: config.limit] if config.limit else paths


SOFT_EDGE_SHARE = 0.9  # share of a soft mask's in-between values lying on a slope (their 3x3 neighbourhood not flat)


def soft_edged(mask: np.ndarray) -> bool:
    """Whether a mask of several values is one object drawn with soft edges (an editor's anti-aliased
    or feathered selection, a background remover's or a matting model's mask), not instance ids: it
    holds its type's full value and its values in between lie on slopes down from it, not in flat
    regions as ids do. Read as ids, each grey level of the edge was an object of its own: rings round
    the object cut out as objects, hundreds of skips, the object without its edge."""
    if mask.dtype.kind != "u" or not (mask == np.iinfo(mask.dtype).max).any():
        return False
    between = (mask > 0) & (mask < np.iinfo(mask.dtype).max)
    kernel = np.ones((3, 3), np.uint8)
    on_slope = between & (cv2.dilate(mask, kernel) != cv2.erode(mask, kernel))
    return np.count_nonzero(on_slope) >= SOFT_EDGE_SHARE * np.count_nonzero(between) > 0


def turned_hint(given: tuple[int, int], read: tuple[int, int]) -> str:
    """What to say where annotations of size ``given`` (width, height) meet a photo read upright as
    ``read``: its turn, where they are its sides swapped (drawn on the photo as stored, by a tool that
    did not turn it by its EXIF orientation), else nothing."""
    return " (turned: annotated as stored, not upright as its EXIF orientation shows it?)" \
        if tuple(given) == tuple(read)[::-1] and given[0] != given[1] else ""
