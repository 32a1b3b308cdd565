"""Read objects from the supported source formats.

Each reader yields :class:`SourceObject` (an RGBA crop whose alpha is the object's
mask) or :class:`Skip` (a counted, logged reason an input was not used). Problems
that make a whole source meaningless raise :class:`InputError`.

Formats:
- ``mask_pairs``: ``images/`` + ``masks/`` with matching stems (or ``x.jpg`` beside
  ``x_mask.png``); a binary mask is one object, an instance-id mask one object per id
  (names from an optional ``categories.json`` mapping id → name).
- ``rgba``: PNG cutouts whose alpha is the mask; the category is the sub-folder's name.
- ``coco``: a COCO instances JSON (polygons or RLE) and its images.
- ``label_map``: ``label_list.json`` + ``labels/`` (8/16-bit label maps) + ``photos/``
  or ``images/``; one object per connected region of each label.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import cv2
import numpy as np

from augment.config import SourceConfig
from augment.imageio import InputError, list_images, read_image, read_mask

log = logging.getLogger(__name__)


@dataclass
class SourceObject:
    rgba: np.ndarray  # H×W×4 uint8 crop; alpha 255 on the object, 0 elsewhere
    category: str
    source: str  # the image file it was cut from
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the source image


@dataclass
class Skip:
    path: str
    reason: str


SourceItem = Union[SourceObject, Skip]


def detect_format(source: Path) -> str:
    """Guess a source's format from what the folder holds."""
    if source.is_file():
        if source.suffix.lower() == ".json":
            return "coco"
        raise InputError(f"{source}: a source must be a folder or a COCO .json file")
    if not source.is_dir():
        raise InputError(f"{source}: no such file or directory")
    if (source / "label_list.json").is_file():
        return "label_map"
    for candidate in sorted(source.glob("*.json")):
        if _looks_like_coco(candidate):
            return "coco"
    if (source / "masks").is_dir() or any(source.glob("*_mask.png")):
        return "mask_pairs"
    images, _ = list_images(source)
    if images and all(p.suffix.lower() in {".png", ".webp", ".tif", ".tiff"} for p in images):
        return "rgba"
    raise InputError(
        f"{source}: cannot tell the source format (expected label_list.json, a COCO .json, masks/, or RGBA PNG cutouts); "
        "name it with --source-format"
    )


def _looks_like_coco(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(1 << 16).decode("utf-8", "ignore")
    except OSError:
        return False
    return '"annotations"' in head or ('"images"' in head and '"categories"' in head)


def read_source(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    """Objects of one source, in a deterministic order."""
    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    log.info("%s: reading as %s", source, fmt)
    readers = {"mask_pairs": _read_mask_pairs, "rgba": _read_rgba, "coco": _read_coco, "label_map": _read_label_maps}
    if fmt not in readers:
        raise InputError(f"{source}: unknown source format {fmt!r}")
    if not source.exists():
        raise InputError(f"{source}: no such file or directory")
    yield from readers[fmt](source, config)


def _category_allowed(name: str, config: SourceConfig) -> bool:
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
        rgb = cv2.resize(rgba[:, :, :3], size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        rgba = np.dstack([rgb, np.where(alpha >= 128, 255, 0).astype(np.uint8)])
    return SourceObject(np.ascontiguousarray(rgba), category, str(source), (x, y, x + w, y + h))


def _limited(paths: list, config: SourceConfig) -> list:
    """Apply include/exclude (globs on the file's stem) and limit; items may be paths or (path, ...) tuples."""

    def stem(item) -> str:
        return Path(item[0] if isinstance(item, tuple) else item).stem

    if config.include:
        paths = [p for p in paths if any(fnmatch.fnmatchcase(stem(p), pattern) for pattern in config.include)]
    if config.exclude:
        paths = [p for p in paths if not any(fnmatch.fnmatchcase(stem(p), pattern) for pattern in config.exclude)]
    return paths[: config.limit] if config.limit else paths


def _load_pair(image_path: Path, mask_path: Path, empty_reason: str) -> tuple[np.ndarray, np.ndarray, list[int]] | Skip:
    """An image, its mask, and the mask's non-zero values; or why the pair can't be used."""
    try:
        image = read_image(image_path, "rgb")
        mask = read_mask(mask_path)
    except InputError as error:
        return Skip(str(image_path), str(error))
    if mask.shape[:2] != image.shape[:2]:
        return Skip(str(mask_path), f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}")
    values = [int(v) for v in np.unique(mask) if v != 0]
    if not values:
        return Skip(str(mask_path), empty_reason)
    return image, mask, values


# ---------------------------------------------------------------- mask pairs
def _mask_pair_files(source: Path) -> tuple[dict[int, str], list[tuple[Path, Path | None]], list[Path]]:
    """Category names by mask value, (image, mask or None) pairs, and non-image files."""
    names = _load_categories(source / "categories.json")
    if (source / "masks").is_dir():
        image_dir = source / "images" if (source / "images").is_dir() else source
        images, others = list_images(image_dir)
        masks = {p.stem: p for p in list_images(source / "masks")[0]}
        pairs = [(p, masks.get(p.stem) or masks.get(f"{p.stem}_mask")) for p in images if p.parent != source / "masks"]
    else:
        images, others = list_images(source)
        pairs = [(p, p.with_name(f"{p.stem}_mask.png")) for p in images if not p.stem.endswith("_mask")]
    return names, pairs, others


def _read_mask_pairs(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    names, pairs, others = _mask_pair_files(source)
    for other in others:
        if other.name != "categories.json":
            yield Skip(str(other), "not an image file")
    if not pairs:
        raise InputError(f"{source}: no images with masks found")
    for image_path, mask_path in _limited(pairs, config):
        if mask_path is None or not mask_path.exists():
            yield Skip(str(image_path), "no mask found for this image")
            continue
        loaded = _load_pair(image_path, mask_path, "empty mask")
        if isinstance(loaded, Skip):
            yield loaded
            continue
        image, mask, values = loaded
        if len(values) == 1 and not names:  # binary mask: the whole foreground is one object
            if _category_allowed("object", config):
                yield crop_object(image, mask > 0, "object", image_path, config)
            continue
        for value in values:
            category = names.get(value, "object")
            if _category_allowed(category, config):
                yield crop_object(image, mask == value, category, image_path, config)


def _load_categories(path: Path) -> dict[int, str]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {int(k): str(v) for k, v in data.items()}
    except (ValueError, AttributeError) as error:
        raise InputError(f"{path}: expected a JSON object mapping mask values to category names ({error})") from None


# ---------------------------------------------------------------- RGBA cutouts
def _read_rgba(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    images, others = list_images(source)
    for other in others:
        yield Skip(str(other), "not an image file")
    if not images:
        raise InputError(f"{source}: no image files found")
    for path in _limited(images, config):
        try:
            rgba = read_image(path, "unchanged")
        except InputError as error:
            yield Skip(str(path), str(error))
            continue
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            yield Skip(str(path), "no alpha channel (RGBA cutouts need one)")
            continue
        if rgba.dtype != np.uint8:
            rgba = (rgba / 257).astype(np.uint8)
        category = path.parent.name if path.parent != source else "object"
        if _category_allowed(category, config):
            yield crop_object(rgba[:, :, :3], rgba[:, :, 3] >= 128, category, path, config)


# ---------------------------------------------------------------- COCO
def _coco_images(source: Path, config: SourceConfig) -> Iterator[tuple[Path, np.ndarray, list[dict], dict[int, str]] | Skip]:
    """(image path, RGB pixels, its annotations, category names) per annotated image, or a Skip."""
    json_path = source if source.is_file() else next((p for p in sorted(source.glob("*.json")) if _looks_like_coco(p)), None)
    if json_path is None:
        raise InputError(f"{source}: no COCO instances .json found")
    problems, images, categories, annotations = _load_coco(json_path)
    yield from (Skip(str(json_path), reason) for reason in problems)
    roots = [json_path.parent / "images", json_path.parent, json_path.parent.parent / "images"]
    by_image: dict[int, list[dict]] = {}
    for number, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            yield Skip(str(json_path), f"annotation #{number} is not an object: {str(annotation)[:40]}")
            continue
        image_id = annotation.get("image_id")
        if not isinstance(image_id, int) or image_id not in images:
            yield Skip(str(json_path), f"annotation {annotation.get('id')} refers to unknown image id {image_id!r}")
            continue
        by_image.setdefault(image_id, []).append(annotation)
    ordered = [(str(images[i].get("file_name", i)), i) for i in sorted(by_image)]
    for _, image_id in _limited(ordered, config):
        file_name = images[image_id].get("file_name")
        if not isinstance(file_name, str) or not file_name:
            yield Skip(str(json_path), f"image id {image_id} has no file_name")
            continue
        path = next((root / file_name for root in roots if (root / file_name).is_file()), None)
        if path is None:
            yield Skip(str(json_path), f"image file {file_name!r} not found")
            continue
        try:
            image = read_image(path, "rgb")
        except InputError as error:
            yield Skip(str(path), str(error))
            continue
        yield path, image, by_image[image_id], categories


def _coco_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """The annotation's mask (polygons or RLE) as an H×W uint8 array; raises on malformed input."""
    from pycocotools import mask as mask_utils

    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"RLE size {rle['size']} differs from the image's {[height, width]}")
    return mask_utils.decode(rle)


def _coco_objects(path: Path, image: np.ndarray, annotations: list[dict], categories: dict[int, str],
                  config: SourceConfig) -> Iterator[tuple[str, np.ndarray] | Skip]:
    """(category, mask) of each usable annotation of one image, or a Skip."""
    height, width = image.shape[:2]
    for annotation in annotations:
        category_id = annotation.get("category_id")
        category = categories.get(category_id, str(category_id)) if isinstance(category_id, int) else str(category_id)
        if not _category_allowed(category, config):
            continue
        if annotation.get("iscrowd"):
            yield Skip(str(path), f"annotation {annotation.get('id')} is a crowd region")
            continue
        try:
            mask = _coco_mask(annotation, height, width)
        except Exception as error:  # pycocotools raises bare Exceptions on malformed input
            yield Skip(str(path), f"annotation {annotation.get('id')}: broken segmentation ({error})")
            continue
        yield category, mask > 0


def _read_coco(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    for item in _coco_images(source, config):
        if isinstance(item, Skip):
            yield item
            continue
        path, image, annotations, categories = item
        for found in _coco_objects(path, image, annotations, categories, config):
            yield found if isinstance(found, Skip) else crop_object(image, found[1], found[0], path, config)


def _load_coco(json_path: Path) -> tuple[list[str], dict[int, dict], dict[int, str], list]:
    """Problems with single entries (skipped), images by id, category names by id, and the annotations.

    A file whose structure is not COCO's (not JSON, ``annotations`` not a list...) is an InputError.
    """
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise InputError(f"{json_path}: not a COCO instances file (not readable JSON: {error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{json_path}: not a COCO instances file (the top level is not an object)")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise InputError(f'{json_path}: not a COCO instances file ("{key}" must be a list, '
                             f"got {type(data.get(key)).__name__})")
    if not isinstance(data.get("categories", []), list):
        raise InputError(f'{json_path}: not a COCO instances file ("categories" must be a list)')
    problems, images, categories = [], {}, {}
    for number, entry in enumerate(data["images"]):
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            images[entry["id"]] = entry
        else:
            problems.append(f"image entry #{number} is not an object with an integer id")
    for entry in data.get("categories", []):
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            categories[entry["id"]] = str(entry.get("name", entry["id"]))
    return problems, images, categories, data["annotations"]


# ---------------------------------------------------------------- label maps
def _label_map_files(source: Path) -> tuple[dict[int, str], list[Path], list[Path], dict[str, Path]]:
    """Label names by value, label-map files, other files in labels/, and photos by stem."""
    list_path = source / "label_list.json"
    try:
        raw = json.loads(list_path.read_text())
        names = {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else dict(enumerate(map(str, raw)))
    except (OSError, ValueError, AttributeError) as error:
        raise InputError(f"{list_path}: expected a JSON list of label names ({error})") from None
    label_dir = source / "labels"
    if not label_dir.is_dir():
        raise InputError(f"{source}: label_map sources need a labels/ folder")
    image_dir = next((source / d for d in ("photos", "images") if (source / d).is_dir()), None)
    if image_dir is None:
        raise InputError(f"{source}: label_map sources need a photos/ or images/ folder")
    label_files, others = list_images(label_dir)
    photos = {p.stem: p for p in list_images(image_dir)[0]}
    return names, label_files, others, photos


def _read_label_maps(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    names, label_files, others, photos = _label_map_files(source)
    for other in others:
        yield Skip(str(other), "not an image file")
    for label_path in _limited(label_files, config):
        photo = photos.get(label_path.stem)
        if photo is None:
            yield Skip(str(label_path), "no photo with this name")
            continue
        loaded = _load_pair(photo, label_path, "empty label map")
        if isinstance(loaded, Skip):
            yield loaded
            continue
        image, labels, present = loaded
        for value in present:
            if value not in names:
                yield Skip(str(label_path), f"unknown label value {value}")
                continue
            category = names[value]
            if not _category_allowed(category, config):
                continue
            count, regions, stats, _ = cv2.connectedComponentsWithStats((labels == value).astype(np.uint8), connectivity=8)
            for region in range(1, count):
                if stats[region, cv2.CC_STAT_AREA] < config.min_area:
                    continue  # specks of a label are normal in label maps: not worth a logged skip each
                yield crop_object(image, regions == region, category, photo, config)


# ---------------------------------------------------------------- whole labelled photos
@dataclass
class LabelledPhoto:
    """A real photo with the masks of its objects, at the photo's size (not cropped)."""

    path: Path
    image: np.ndarray  # H×W×3 RGB uint8
    objects: list[tuple[str, np.ndarray]]  # (category, H×W bool mask) per object


def read_labelled_photos(source: Path, config: SourceConfig) -> Iterator[LabelledPhoto | Skip]:
    """Whole photos and their object masks, for using real photos as media (not only as cutouts).

    An object is what its format calls one: an annotation (COCO), an instance id (mask pairs), or
    all pixels of one label (label maps: a garment split in two by an arm stays one object, where
    cutouts take each connected region). Objects smaller than ``min_area`` are left out; ``rgba``
    cutouts have no photos and are an error.
    """
    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    if fmt == "rgba":
        raise InputError(f"{source}: RGBA cutouts have no whole photos; real media need label maps, mask pairs or COCO")
    if fmt == "label_map":
        names, label_files, _, photos = _label_map_files(source)
        pairs = [(photos.get(p.stem), p) for p in _limited(label_files, config)]
    elif fmt == "mask_pairs":
        pairs = None  # paired below
    elif fmt == "coco":
        for item in _coco_images(source, config):
            if isinstance(item, Skip):
                yield item
                continue
            path, image, annotations, categories = item
            objects = [o for o in _coco_objects(path, image, annotations, categories, config) if not isinstance(o, Skip)]
            yield LabelledPhoto(path, image, [(c, m) for c, m in objects if m.sum() >= config.min_area])
        return
    else:
        raise InputError(f"{source}: unknown source format {fmt!r}")
    if pairs is None:
        names, all_pairs, _ = _mask_pair_files(source)
        pairs = _limited(all_pairs, config)
    for photo, label_path in pairs:
        if photo is None or label_path is None or not label_path.exists():
            yield Skip(str(label_path or photo), "no photo or mask to pair with")
            continue
        loaded = _load_pair(photo, label_path, "empty mask")
        if isinstance(loaded, Skip):
            yield loaded
            continue
        image, labels, present = loaded
        objects = []
        for value in present:
            if fmt == "mask_pairs" and len(present) == 1 and not names:
                category = "object"
            elif value in names:
                category = names[value]
            elif fmt == "mask_pairs":
                category = "object"
            else:
                yield Skip(str(label_path), f"unknown label value {value}")
                continue
            mask = labels == value
            if _category_allowed(category, config) and mask.sum() >= config.min_area:
                objects.append((category, mask))
        yield LabelledPhoto(photo, image, objects)
