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
- ``objects``: a folder holding an ``objects.parquet`` (what `synth extract` writes, or another
  expansion's cutouts); its cutouts as they are, provenance included.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar, Union

import cv2
import numpy as np

from augment.config import SourceConfig
from augment.imageio import InputError, decode_image, list_images, read_image, read_mask
from augment.schema import OBJECTS_FILE

log = logging.getLogger(__name__)


@dataclass
class SourceObject:
    rgba: np.ndarray  # H×W×4 uint8 crop; alpha 255 on the object, 0 elsewhere
    category: str
    source: str  # the image file it was cut from
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the source image
    provenance: dict | None = None  # automatic cutouts (objects sources): source, model_id, round, confidence, stability
    superpixels: bytes | None = None  # PNG of its superpixels when already computed (objects sources)


@dataclass
class Skip:
    path: str
    reason: str


SourceItem = Union[SourceObject, Skip]
T = TypeVar("T")


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
    if (source / OBJECTS_FILE).is_file():
        return "objects"
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
    readers = {"mask_pairs": _read_mask_pairs, "rgba": _read_rgba, "coco": _read_coco, "label_map": _read_label_maps,
               "objects": _read_objects}
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


def limited(paths: list, config: SourceConfig) -> list:
    """Apply include/exclude (globs on the file's stem) and limit; items may be paths or (path, ...) tuples."""

    def stem(item) -> str:
        return Path(item[0] if isinstance(item, tuple) else item).stem

    if config.include:
        paths = [p for p in paths if any(fnmatch.fnmatchcase(stem(p), pattern) for pattern in config.include)]
    if config.exclude:
        paths = [p for p in paths if not any(fnmatch.fnmatchcase(stem(p), pattern) for pattern in config.exclude)]
    return paths[: config.limit] if config.limit else paths


def load_pair(image_path: Path, mask_path: Path, empty_reason: str) -> tuple[np.ndarray, np.ndarray, list[int]] | Skip:
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
def mask_pair_files(source: Path) -> tuple[dict[int, str], list[tuple[Path, Path | None]], list[Skip]]:
    """Category names, (image, mask or None) pairs and the non-image files of a mask_pairs source."""
    names = _load_categories(source / "categories.json")
    if (source / "masks").is_dir():
        image_dir = source / "images" if (source / "images").is_dir() else source
        images, others = list_images(image_dir)
        masks = {p.stem: p for p in list_images(source / "masks")[0]}
        pairs = [(p, masks.get(p.stem) or masks.get(f"{p.stem}_mask")) for p in images if p.parent != source / "masks"]
    else:
        images, others = list_images(source)
        pairs = [(p, p.with_name(f"{p.stem}_mask.png")) for p in images if not p.stem.endswith("_mask")]
    skips = [Skip(str(other), "not an image file") for other in others if other.name != "categories.json"]
    if not pairs:
        raise InputError(f"{source}: no images with masks found")
    return names, pairs, skips


LoadedPair = tuple[Path, Path, np.ndarray, np.ndarray, list[int]]  # image path, mask path, image, mask, its values


def loaded_pairs(pairs: list[tuple[Path | None, Path | None]], empty_reason: str) -> Iterator[LoadedPair | Skip]:
    """Each (image, mask) pair loaded, or why it can't be used (no photo, no mask, unreadable, empty...)."""
    for image_path, mask_path in pairs:
        if image_path is None:
            yield Skip(str(mask_path), "no photo with this name")
        elif mask_path is None or not mask_path.exists():
            yield Skip(str(image_path), "no mask found for this image")
        else:
            loaded = load_pair(image_path, mask_path, empty_reason)
            yield loaded if isinstance(loaded, Skip) else (image_path, mask_path, *loaded)


def _read_mask_pairs(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    names, pairs, skips = mask_pair_files(source)
    yield from skips
    for loaded in loaded_pairs(limited(pairs, config), "empty mask"):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        image_path, _, image, mask, values = loaded
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
    for path in limited(images, config):
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
@dataclass
class CocoIndex:
    json_path: Path
    images: dict[int, dict]
    categories: dict[int, str]
    by_image: dict[int, list[dict]]  # image id -> its annotations
    roots: list[Path]  # folders searched for the image files
    problems: list[Skip]  # single entries that cannot be used (counted, logged skips)

    def ordered(self) -> list[tuple[str, int]]:
        """(file name, image id) of annotated images, in a deterministic order."""
        return [(str(self.images[i].get("file_name", i)), i) for i in sorted(self.by_image)]

    def locate(self, image_id: int) -> Path | Skip:
        file_name = self.images[image_id].get("file_name")
        if not isinstance(file_name, str) or not file_name:
            return Skip(str(self.json_path), f"image id {image_id} has no file_name")
        path = next((root / file_name for root in self.roots if (root / file_name).is_file()), None)
        return path if path is not None else Skip(str(self.json_path), f"image file {file_name!r} not found")


def load_coco_index(source: Path) -> CocoIndex:
    """A COCO instances file's images, categories and annotations by image; a file whose structure is
    not COCO's (not JSON, ``annotations`` not a list...) is an InputError, a broken single entry a Skip."""
    json_path = source if source.is_file() else next((p for p in sorted(source.glob("*.json")) if _looks_like_coco(p)), None)
    if json_path is None:
        raise InputError(f"{source}: no COCO instances .json found")
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
            problems.append(Skip(str(json_path), f"image entry #{number} is not an object with an integer id"))
    for entry in data.get("categories", []):
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            categories[entry["id"]] = str(entry.get("name", entry["id"]))
    by_image: dict[int, list[dict]] = {}
    for number, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            problems.append(Skip(str(json_path), f"annotation #{number} is not an object: {str(annotation)[:40]}"))
            continue
        image_id = annotation.get("image_id")
        if not isinstance(image_id, int) or image_id not in images:
            problems.append(Skip(str(json_path), f"annotation {annotation.get('id')} refers to unknown image id {image_id!r}"))
            continue
        by_image.setdefault(image_id, []).append(annotation)
    roots = [json_path.parent / "images", json_path.parent, json_path.parent.parent / "images"]
    return CocoIndex(json_path, images, categories, by_image, roots, problems)


def coco_category(coco: CocoIndex, annotation: dict) -> str:
    category_id = annotation.get("category_id")
    return coco.categories.get(category_id, str(category_id)) if isinstance(category_id, int) else str(category_id)


def coco_annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """The annotation's mask (polygons, uncompressed or compressed RLE); ValueError and friends when broken."""
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


def coco_images(coco: CocoIndex, config: SourceConfig) -> Iterator[tuple[int, Path, np.ndarray] | Skip]:
    """(image id, path, RGB image) of the annotated images picked by ``config``; unusable ones as Skip
    (the index's broken entries first)."""
    yield from coco.problems
    for _, image_id in limited(coco.ordered(), config):
        path = coco.locate(image_id)
        if isinstance(path, Skip):
            yield path
            continue
        try:
            yield image_id, path, read_image(path, "rgb")
        except InputError as error:
            yield Skip(str(path), str(error))


def coco_objects(coco: CocoIndex, image_id: int, path: Path, height: int, width: int,
                 config: SourceConfig) -> Iterator[tuple[str, np.ndarray] | Skip]:
    """(category, bool mask) of each usable, allowed, non-crowd annotation of one image, or a Skip."""
    for annotation in coco.by_image[image_id]:
        category = coco_category(coco, annotation)
        if not _category_allowed(category, config):
            continue
        if annotation.get("iscrowd"):
            yield Skip(str(path), f"annotation {annotation.get('id')} is a crowd region")
            continue
        try:
            mask = coco_annotation_mask(annotation, height, width)
        except Exception as error:  # pycocotools raises bare Exceptions on malformed input
            yield Skip(str(path), f"annotation {annotation.get('id')}: broken segmentation ({error})")
            continue
        yield category, mask > 0


def _coco_photos(source: Path, config: SourceConfig) -> Iterator[tuple[Path, np.ndarray, list] | Skip]:
    """(path, RGB image, its (category, mask) objects and Skips) per annotated image, or a Skip."""
    coco = load_coco_index(source)
    for item in coco_images(coco, config):
        if isinstance(item, Skip):
            yield item
            continue
        image_id, path, image = item
        yield path, image, list(coco_objects(coco, image_id, path, *image.shape[:2], config))


def _read_coco(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    for item in _coco_photos(source, config):
        if isinstance(item, Skip):
            yield item
            continue
        path, image, found = item
        for one in found:
            yield one if isinstance(one, Skip) else crop_object(image, one[1], one[0], path, config)


# ---------------------------------------------------------------- label maps
def label_map_files(source: Path) -> tuple[dict[int, str], list[Path], dict[str, Path], list[Skip]]:
    """Label names, label map files, photos by stem and the non-image files of a label_map source."""
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
    return names, label_files, photos, [Skip(str(other), "not an image file") for other in others]


def _read_label_maps(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    names, label_files, photos, skips = label_map_files(source)
    yield from skips
    pairs = [(photos.get(label.stem), label) for label in limited(label_files, config)]
    for loaded in loaded_pairs(pairs, "empty label map"):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        photo, label_path, image, labels, present = loaded
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


# ---------------------------------------------------------------- objects tables
def _read_objects(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = source / OBJECTS_FILE
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path}: not a readable objects table ({error})") from None
    columns = set(table.column_names)
    if not {"category", "image", "source", "box"} <= columns:
        raise InputError(f"{path}: not an objects table (needs category, image, source and box columns)")
    rows = table.to_pylist()
    if not rows:
        raise InputError(f"{path}: the objects table is empty")
    for row in _limited_rows(rows, config):
        if not _category_allowed(row["category"], config):
            continue
        name = f"{path}:{row.get('cutout_id', '?')}"
        try:
            rgba = decode_image(row["image"]["bytes"], name=name)
        except (InputError, TypeError) as error:
            yield Skip(name, str(error))
            continue
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            yield Skip(name, "cutout has no alpha channel")
            continue
        area = int(np.count_nonzero(rgba[:, :, 3]))
        if area < config.min_area:
            yield Skip(name, f"{row['category']!r} object of {area} px is below min_area {config.min_area}")
            continue
        superpixels = (row.get("superpixels") or {}).get("bytes")
        yield SourceObject(rgba, row["category"], row["source"], tuple(row["box"]), row.get("provenance"), superpixels)


def _limited_rows(rows: list[dict], config: SourceConfig) -> list[dict]:
    """include, exclude and limit of an objects table apply to the stem of each cutout's source image."""
    keyed = limited([(Path(row["source"]), index) for index, row in enumerate(rows)], config)
    return [rows[index] for _, index in keyed]


def photo_mask_pairs(source: Path, fmt: str, config: SourceConfig
                     ) -> tuple[dict[int, str], list[tuple[Path | None, Path | None]], list[Skip]]:
    """Value names, the (photo, mask) pairs ``config`` picks and the non-image files, of a source whose
    masks are whole-photo maps (``label_map`` or ``mask_pairs``); other formats have no such pairs."""
    if fmt == "label_map":
        names, label_files, photos, skips = label_map_files(source)
        return names, [(photos.get(p.stem), p) for p in limited(label_files, config)], skips
    if fmt == "mask_pairs":
        names, pairs, skips = mask_pair_files(source)
        return names, limited(pairs, config), skips
    raise InputError(f"{source}: {fmt} sources hold cutouts, not labelled photos (use label_map, mask_pairs or coco)")


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
    cutouts and ``objects`` tables have no photos and are an error.
    """
    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    if fmt == "coco":
        for item in _coco_photos(source, config):
            if isinstance(item, Skip):
                yield item
                continue
            path, image, found = item
            yield LabelledPhoto(path, image, [o for o in found if not isinstance(o, Skip) and o[1].sum() >= config.min_area])
        return
    names, pairs, _ = photo_mask_pairs(source, fmt, config)
    for loaded in loaded_pairs(pairs, "empty mask"):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        photo, label_path, image, labels, present = loaded
        objects = []
        for value in present:
            if value in names:
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
