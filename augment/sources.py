"""Read objects from the supported source formats.

Each reader yields :class:`SourceObject` (an RGBA crop whose alpha is the object's
mask) or :class:`Skip` (a counted, logged reason an input was not used). Problems
that make a whole source meaningless raise :class:`InputError`.

Formats:
- ``mask_pairs``: ``images/`` + ``masks/`` with matching stems (or ``x.jpg`` beside
  ``x_mask.png``); a binary mask is one object, an instance-id mask one object per id
  (names from an optional ``categories.json`` mapping id → name).
- ``rgba``: PNG cutouts whose alpha is the mask; the category is the sub-folder's name.
- ``coco``: a COCO instances JSON (polygons or RLE) and its images (read by
  :mod:`augment.coco_source`).
- ``label_map``: ``label_list.json`` + ``labels/`` (8/16-bit label maps) + ``photos/``
  or ``images/``; one object per connected region of each label.
- ``labelme``, ``yolo``, ``cvat_mask``: LabelMe's .json files, YOLO segmentation labels, CVAT's
  "Segmentation mask 1.1" export (read by :mod:`augment.labelme_source`, :mod:`augment.yolo_source`,
  :mod:`augment.cvat_masks`).
- ``objects``: a folder holding an ``objects.parquet`` (what `synth extract` writes, or another
  expansion's cutouts); its cutouts as they are, provenance included.

The items and the steps every reader shares (cropping, include/exclude, labels) are in
:mod:`augment.source_items`; those names and the COCO ones are re-exported here.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from augment.coco_source import (CocoIndex, coco_photos, _looks_like_coco, _read_coco,  # noqa: F401
                                 coco_annotation_mask, coco_category, coco_images, coco_objects,
                                 load_coco_index)
from augment.config import SourceConfig
from augment.cvat_masks import cvat_photos, looks_like_cvat_masks
from augment.labelme_source import labelme_photos, looks_like_labelme
from augment.yolo_source import looks_like_yolo, yolo_photos
from augment.imageio import InputError, decode_image, is_image_path, list_images, pixels_as_uint8, read_image
from augment.label_names import named_values
from augment.mask_files import read_mask
from augment.textfiles import loads_json, read_user_text
from augment.schema import OBJECTS_FILE
from augment.source_items import (PhotoObjects, Skip, SourceItem, SourceObject, category_allowed,  # noqa: F401
                                  crop_object, cut_objects, regions, limited, skipped_summary, soft_edged, turned_hint)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Formats whose objects are masks at their photo's size: each photo with its (category, mask) objects.
PHOTO_OBJECTS: dict[str, Callable[[Path, SourceConfig], Iterator[PhotoObjects | Skip]]] = {
    "coco": coco_photos, "labelme": labelme_photos, "yolo": yolo_photos, "cvat_mask": cvat_photos}


def _has_photo(mask: Path) -> bool:
    """Whether ``x_mask.png`` has its photo ``x.*`` beside it (a LabelMe photo of a face mask,
    ``face_mask.jpg``, is no mask of mask pairs)."""
    stem = mask.stem[: -len("_mask")]
    return any(is_image_path(p) and p.stem == stem for p in mask.parent.glob(f"{glob.escape(stem)}.*"))


def detect_format(source: Path) -> str:
    """Guess a source's format from what the folder holds."""
    if source.is_file():
        if source.suffix.lower() == ".json":
            return "labelme" if looks_like_labelme(source) else "coco"
        raise InputError(f"{source}: a source must be a folder, a COCO .json file or a LabelMe .json file")
    if not source.is_dir():
        raise InputError(f"{source}: no such file or directory")
    if (source / "label_list.json").is_file():
        return "label_map"
    if (source / OBJECTS_FILE).is_file():
        return "objects"
    if looks_like_cvat_masks(source):
        return "cvat_mask"
    for candidate in sorted(source.glob("*.json")):
        if _looks_like_coco(candidate):
            return "coco"
    # Mask pairs before LabelMe: masks drawn from LabelMe files are often kept beside them.
    if (source / "masks").is_dir() or any(_has_photo(p) for p in source.glob("*_mask.*") if is_image_path(p)):
        return "mask_pairs"
    if any(looks_like_labelme(p) for p in sorted(source.glob("*.json")) + sorted(source.glob("*/*.json"))):
        return "labelme"
    if looks_like_yolo(source):  # after masks/: a mask pairs folder may keep a classes.txt of its own
        return "yolo"
    images, _ = list_images(source)
    if images and all(p.suffix.lower() in {".png", ".webp", ".tif", ".tiff"} for p in images):
        return "rgba"
    raise InputError(
        f"{source}: cannot tell the source format (expected label_list.json, a COCO .json, masks/, LabelMe .json "
        "files, data.yaml or classes.txt beside images/ (YOLO), labelmap.txt (CVAT), or RGBA PNG cutouts); "
        "name it with --source-format"
    )


def read_source(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    """Objects of one source, in a deterministic order."""
    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    log.info("%s: reading as %s", source, fmt)
    readers = {"mask_pairs": _read_mask_pairs, "rgba": _read_rgba, "label_map": _read_label_maps, "objects": _read_objects}
    if fmt not in readers and fmt not in PHOTO_OBJECTS:
        raise InputError(f"{source}: unknown source format {fmt!r}")
    if not source.exists():
        raise InputError(f"{source}: no such file or directory")
    if fmt in PHOTO_OBJECTS:
        yield from cut_objects(PHOTO_OBJECTS[fmt](source, config), config)
    else:
        yield from readers[fmt](source, config)


def load_pair(image_path: Path, mask_path: Path, empty_reason: str,
              named: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]] | Skip:
    """An image, its mask, and the mask's non-zero values; or why the pair can't be used. ``named``: the
    mask's values are ids that names are given for (:func:`augment.mask_files.read_mask`)."""
    try:
        image = read_image(image_path, "rgb")
        mask = read_mask(mask_path, named)
    except InputError as error:  # the file it names, once (the message starts with that file's path)
        return Skip.of(error, image_path, mask_path)
    if mask.shape[:2] != image.shape[:2]:
        turned = turned_hint((mask.shape[1], mask.shape[0]), (image.shape[1], image.shape[0]))
        return Skip(str(mask_path), f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                    f"{image.shape[1]}x{image.shape[0]}{turned}")
    values = [int(v) for v in np.unique(mask) if v != 0]
    if not values:
        return Skip(str(mask_path), empty_reason)
    return image, mask, values


def value_category(value: int, names: dict[int, str], fmt: str, mask_path: Path) -> str | Skip:
    """The category of a (non-zero) value of a whole-photo mask, the same for every command that reads one:
    its name; a ``mask_pairs`` value without one is an ``object`` (a binary or unnamed instance mask);
    a ``label_map`` value that ``label_list.json`` does not list is a Skip naming the file and the value."""
    if value in names:
        return names[value]
    if fmt == "mask_pairs":
        return "object"
    return Skip(str(mask_path), f"unknown label value {value}")


# ---------------------------------------------------------------- pairing files by name
def name_key(path: Path, root: Path) -> str:
    """``path`` under ``root`` without its suffix: ``day1/0001`` for ROOT/day1/0001.png; in Unicode's
    composed form (NFC), so ``café.png`` saved on a Mac (decomposed: e and a combining accent) pairs
    with ``café.jpg`` typed elsewhere, as the two names look the same."""
    return unicodedata.normalize("NFC", path.relative_to(root).with_suffix("").as_posix())


class FilesByName:
    """The files of a folder looked up by their :func:`name_key`, else by their stem where one file
    alone has it on either side (``askers``: the files that look up): a mask in masks/day1/ pairs with
    images/day1/, never with images/day2/ because the file names match. Flat folders pair by stem, as
    before; so does a flat folder beside a nested one while the names are unique."""

    def __init__(self, files: list[Path], root: Path, askers: list[Path]) -> None:
        self.by_key = {name_key(p, root): p for p in files}
        self.by_stem: dict[str, list[Path]] = {}
        for path in files:
            self.by_stem.setdefault(unicodedata.normalize("NFC", path.stem), []).append(path)
        self.asking = collections.Counter(unicodedata.normalize("NFC", p.stem) for p in askers)

    def find(self, key: str) -> Path | None:
        found = self.by_key.get(key)
        if found is not None:
            return found
        stem = key.rsplit("/", 1)[-1]
        same = self.by_stem.get(stem, [])
        # Several files of that name on either side: which one is meant cannot be told.
        return same[0] if len(same) == 1 and self.asking[stem] <= 1 else None


# ---------------------------------------------------------------- mask pairs
def mask_pair_files(source: Path, config: SourceConfig | None = None
                    ) -> tuple[dict[int, str], list[tuple[Path, Path | None]], list[Skip]]:
    """Category names, (image, mask or None) pairs and the non-image files of a mask_pairs source, and
    masks that no image has (those ``config``'s include/exclude keep) as skips."""
    names = load_categories(source / "categories.json")
    masks_dir = source / "masks"
    if masks_dir.is_dir():
        image_dir = source / "images" if (source / "images").is_dir() else source
        images, others = list_images(image_dir)
        images = [p for p in images if masks_dir not in p.parents]
        mask_files = list_images(masks_dir)[0]
        masks = FilesByName(mask_files, masks_dir, images)
        pairs = [(p, masks.find(name_key(p, image_dir)) or masks.find(f"{name_key(p, image_dir)}_mask"))
                 for p in images]
    else:
        images, others = list_images(source)
        # x_mask.png, or .tif, .bmp... as the mask is saved (a PNG first where both are): a.jpg beside
        # a_mask.tif was 'no mask found for this image' and a_mask.tif 'a mask without its image'
        mask_files = sorted((p for p in images if p.stem.endswith("_mask")), key=lambda p: p.suffix.lower() == ".png")
        images = [p for p in images if not p.stem.endswith("_mask")]
        masks = FilesByName(mask_files, source, [p.with_name(f"{p.stem}_mask") for p in images])
        pairs = [(p, masks.find(f"{name_key(p, source)}_mask")) for p in images]
    skips = [Skip(str(other), "not an image file") for other in others if other.name != "categories.json"]
    if not pairs:
        raise InputError(f"{source}: no images with masks found")
    paired = {mask for _, mask in pairs}
    unpaired = [p for p in mask_files if p not in paired]
    if config is not None:
        unpaired = limited(unpaired, dataclasses.replace(config, limit=0))
    skips += [Skip(str(mask), "no image with this name (a mask without its image)") for mask in unpaired]
    return names, pairs, skips


LoadedPair = tuple[Path, Path, np.ndarray, np.ndarray, list[int]]  # image path, mask path, image, mask, its values


def loaded_pairs(pairs: list[tuple[Path | None, Path | None]], empty_reason: str,
                 soft_edges: bool = False) -> Iterator[LoadedPair | Skip]:
    """Each (image, mask) pair loaded, or why it can't be used (no photo, no mask, unreadable, empty...).
    With ``soft_edges`` (masks whose values are no names' ids) a mask of soft edges is one object
    (:func:`soft_edged`)."""
    for image_path, mask_path in pairs:
        if image_path is None:
            yield Skip(str(mask_path), "no photo with this name")
        elif mask_path is None or not mask_path.exists():
            yield Skip(str(image_path), "no mask found for this image")
        else:
            loaded = load_pair(image_path, mask_path, empty_reason, named=not soft_edges)
            if isinstance(loaded, Skip):
                yield loaded
                continue
            image, mask, values = loaded
            if soft_edges and len(values) > 1 and soft_edged(mask):
                top = np.iinfo(mask.dtype).max
                mask, values = np.where(mask > top // 2, top, 0).astype(mask.dtype), [int(top)]
                log.info("%s: a mask with soft edges (anti-aliased or feathered): one object, split at half", mask_path)
            yield image_path, mask_path, image, mask, values


def _read_mask_pairs(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    names, pairs, skips = mask_pair_files(source, config)
    yield from skips
    for loaded in loaded_pairs(limited(pairs, config), "empty mask", soft_edges=not names):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        image_path, mask_path, image, mask, values = loaded
        if len(values) == 1 and not names:  # binary mask: the whole foreground is one object
            if category_allowed("object", config):
                yield crop_object(image, mask > 0, "object", image_path, config)
            continue
        for value in values:
            category = value_category(value, names, "mask_pairs", mask_path)
            if category_allowed(category, config):
                yield crop_object(image, mask == value, category, image_path, config)


def load_categories(path: Path) -> dict[int, str]:
    if not path.is_file():
        return {}
    expected = "a JSON object mapping mask values to category names"
    try:
        data = loads_json(read_user_text(path, expected))
    except ValueError as error:
        raise InputError(f"{path}: expected {expected} ({error})") from None
    return named_values(data, path, expected)


# ---------------------------------------------------------------- RGBA cutouts
def _read_rgba(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    images, others = list_images(source)
    for other in others:
        yield Skip(str(other), "not an image file")
    if not images:
        raise InputError(f"{source}: no image files found")
    for path in limited(images, config):
        try:
            rgba = read_image(path, "unchanged")
        except InputError as error:
            yield Skip.of(error, path)
            continue
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            yield Skip(str(path), "no alpha channel (RGBA cutouts need one)")
            continue
        rgba = pixels_as_uint8(rgba)  # 16-bit or float (a float TIFF: its alpha 1.0 read as 0, "empty mask")
        category = path.parent.name if path.parent != source else "object"
        if category_allowed(category, config):
            yield crop_object(rgba[:, :, :3], rgba[:, :, 3] >= 128, category, path, config)


# ---------------------------------------------------------------- label maps
def label_map_files(source: Path) -> tuple[dict[int, str], list[Path], Callable[[Path], Path | None], list[Skip]]:
    """Label names, label map files, the photo of a label map file (None when it has none) and the
    non-image files of a label_map source."""
    list_path = source / "label_list.json"
    try:
        raw = loads_json(read_user_text(list_path, "a JSON list of label names"))
    except (OSError, ValueError) as error:
        raise InputError(f"{list_path}: expected a JSON list of label names ({error})") from None
    names = named_values(raw, list_path, "a JSON list of label names", by_index=True)
    label_dir = source / "labels"
    if not label_dir.is_dir():
        raise InputError(f"{source}: label_map sources need a labels/ folder")
    image_dir = next((source / d for d in ("photos", "images") if (source / d).is_dir()), None)
    if image_dir is None:
        raise InputError(f"{source}: label_map sources need a photos/ or images/ folder")
    label_files, others = list_images(label_dir)
    photos = FilesByName(list_images(image_dir)[0], image_dir, label_files)
    return (names, label_files, lambda label: photos.find(name_key(label, label_dir)),
            [Skip(str(other), "not an image file") for other in others])


def _read_label_maps(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    names, label_files, photo_of, skips = label_map_files(source)
    yield from skips
    pairs = [(photo_of(label), label) for label in limited(label_files, config)]
    for loaded in loaded_pairs(pairs, "empty label map"):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        photo, label_path, image, labels, present = loaded
        for value in present:
            category = value_category(value, names, "label_map", label_path)
            if isinstance(category, Skip):
                yield category
                continue
            if not category_allowed(category, config):
                continue
            for region in regions(labels == value, config.min_area):
                yield crop_object(image, region, category, photo, config)


# ---------------------------------------------------------------- objects tables
def _read_objects(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    from augment.objects_table import iter_objects_table, objects_table_columns, read_objects_table

    path = source / OBJECTS_FILE
    # The sources first (include, exclude and limit), then the rows a row group at a time: the whole table
    # read and made rows held every cutout's PNG twice, beside the rows expand makes of them.
    if not {"category", "image", "source", "box"} <= set(objects_table_columns(path)):
        raise InputError(f"{path}: not an objects table (needs category, image, source and box columns)")
    sources = read_objects_table(path, ["source"]).column("source").to_pylist()
    if not sources:  # `synth extract` accepted no mask: a source of no cutouts, beside others or alone
        yield Skip(str(path), "no cutouts (an empty objects table: `synth extract` accepted no mask)")
        return
    kept = {index for _, index in limited([(Path(source), index) for index, source in enumerate(sources)], config)}
    rows = (row for group in iter_objects_table(path) for row in group.to_pylist())
    for row in (row for index, row in enumerate(rows) if index in kept):
        if not category_allowed(row["category"], config):
            continue
        name = f"{path}:{row.get('cutout_id', '?')}"
        try:
            rgba = decode_image(row["image"]["bytes"], name=name)
        except (InputError, TypeError) as error:
            yield Skip.of(error, name)
            continue
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            yield Skip(name, "cutout has no alpha channel")
            continue
        area = int(np.count_nonzero(rgba[:, :, 3]))
        if area < config.min_area:
            yield Skip(name, f"{row['category']!r} object of {area} px is below min_area {config.min_area}")
            continue
        superpixels = (row.get("superpixels") or {}).get("bytes")
        size = row.get("source_size")  # tables written before the column have none
        yield SourceObject(rgba, row["category"], row["source"], tuple(row["box"]), row.get("provenance"), superpixels,
                           tuple(size) if size else None)


def read_each(sources: Iterable[Path | str], reader: Callable[[Path, SourceConfig], Iterator[T | Skip]],
              config: SourceConfig, skips: list[Skip]) -> Iterator[T]:
    """What ``reader`` gives for each source in turn; its Skips are logged and appended to ``skips``."""
    for source in sources:
        for item in reader(Path(source), config):
            if isinstance(item, Skip):
                log.info("skipped %s: %s", item.path, item.reason)
                skips.append(item)
                continue
            yield item
