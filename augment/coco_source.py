"""Read COCO instances files: the index of images, categories and annotations by image
(:func:`load_coco_index`), each annotation's mask (polygons or RLE), and the ``coco`` source format
of :mod:`augment.sources` (objects cut from the annotated images). :mod:`augment.photo_shards`
reads whole annotated photos through the same index.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import urlsplit

import numpy as np

from augment.config import SourceConfig
from augment.imageio import InputError
from augment.textfiles import file_head, loads_json, read_user_text
from augment.source_items import Skip, SourceItem, category_allowed, cut_objects, limited, turned_hint, read_photo
from augment.validation import is_number


def _looks_like_coco(path: Path) -> bool:
    head = file_head(path)
    return '"annotations"' in head or ('"images"' in head and '"categories"' in head)


@dataclass
class CocoIndex:
    json_path: Path
    images: dict[int, dict]
    categories: dict[int, str]
    by_image: dict[int, list[dict]]  # image id -> its annotations
    roots: list[Path]  # folders searched for the image files
    problems: list[Skip]  # single entries that cannot be used (counted, logged skips)
    repeated_categories: dict[int, list[str]] = field(default_factory=dict)  # id listed twice -> its names

    def ordered(self) -> list[tuple[str, int]]:
        """(file name, image id) of annotated images, in a deterministic order."""
        return [(_image_name(self.images[i]), i) for i in sorted(self.by_image)]

    def locate(self, image_id: int) -> Path | Skip:
        entry = self.images[image_id]
        file_name = entry.get("file_name")
        by_url = not (isinstance(file_name, str) and file_name)
        names = _url_names(entry.get("coco_url")) if by_url else _spellings(file_name)
        # A coco_url's 'val2017/NAME' lies under the COCO root that holds annotations/ (LVIS's layout too)
        roots = [*self.roots, self.json_path.parent.parent] if by_url else self.roots
        if not names:
            return Skip(str(self.json_path), f"image id {image_id} has no file_name (nor a coco_url naming a file)")
        file_name = names[0]
        if any(_escapes(name) for name in names):
            return Skip(str(self.json_path), f"image file {file_name!r} is an absolute path or climbs out with '..': "
                                             "a COCO file's images are read only from its folders "
                                             f"({', '.join(str(root) for root in self.roots)})")
        path = next((root / name for name in names for root in roots if (root / name).is_file()), None)
        if path is None:
            looked = ", ".join(f"{os.path.relpath(root, self.json_path.parent)}/" for root in dict.fromkeys(roots))
            return Skip(str(self.json_path),
                        f"image file {file_name!r} not found (looked in {looked} from the file's folder)")
        return path


def load_coco_index(source: Path) -> CocoIndex:
    """A COCO instances file's images, categories and annotations by image; a file whose structure is
    not COCO's (not JSON, ``annotations`` not a list...) is an InputError, a broken single entry a Skip."""
    json_path = source if source.is_file() else _the_coco_file(source)
    try:
        data = loads_json(read_user_text(json_path, "a COCO instances .json file"))
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
    repeated: dict[str, dict[int, list[str]]] = {"image": {}, "category": {}}  # id -> its entries' names
    for number, entry in enumerate(data["images"]):
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            _note_repeat(repeated["image"], images, entry, _image_name)
            images[entry["id"]] = entry
        else:
            problems.append(Skip(str(json_path), f"image entry #{number} is not an object with an integer id"))
    for number, entry in enumerate(data.get("categories", [])):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), int)):
            # said here: its annotations are skipped for a category_id not in the file's categories
            problems.append(Skip(str(json_path), f"category entry #{number} is not an object with an integer id"))
        elif not isinstance(entry.get("name", ""), str):  # (null or a list was the category 'None' or "['hat']")
            problems.append(Skip(str(json_path), f"category entry #{number} (id {entry['id']}) has a name of "
                                                 f"{type(entry['name']).__name__ if entry['name'] is not None else 'null'}, not text"))
        else:
            _note_repeat(repeated["category"], categories, entry, _category_name)
            categories[entry["id"]] = _category_name(entry)
    for kind, table in (("image", images), ("category", categories)):
        for entry_id, names in sorted(repeated[kind].items()):  # the last one's, used alone, was a guess
            del table[entry_id]
            problems.append(Skip(str(json_path), f"{kind} id {entry_id} is listed {len(names)} times "
                                                 f"({', '.join(map(repr, names))}): its annotations are skipped"))
    by_image: dict[int, list[dict]] = {}
    for number, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            problems.append(Skip(str(json_path), f"annotation #{number} is not an object: {str(annotation)[:40]}"))
            continue
        image_id = annotation.get("image_id")
        if not isinstance(image_id, int) or image_id not in images:
            which = f"image id {image_id!r}, listed more than once" if image_id in repeated["image"] \
                else f"unknown image id {image_id!r}"
            problems.append(Skip(str(json_path), f"annotation {annotation.get('id')} refers to {which}"))
            continue
        by_image.setdefault(image_id, []).append(annotation)
    return CocoIndex(json_path, images, categories, by_image, coco_image_roots(json_path), problems,
                     repeated["category"])


def _note_repeat(repeats: dict[int, list[str]], table: dict, entry: dict, name_of: Callable[[dict], str]) -> None:
    """Note an entry whose id an earlier entry of another name (``name_of``: its file, its category's
    name) has: its annotations name one of them, which cannot be told (CVAT's project exports gave one
    image id to images of several tasks: the objects of one photo were cut from another)."""
    entry_id = entry["id"]
    if entry_id not in table:
        return
    earlier = table[entry_id]
    earlier_name, name = name_of(earlier) if isinstance(earlier, dict) else str(earlier), name_of(entry)
    if earlier_name != name or entry_id in repeats:
        repeats.setdefault(entry_id, [earlier_name]).append(name)


def _image_name(entry: dict) -> str:
    """An image entry's file: its file_name, else the one its coco_url names (LVIS's entries)."""
    return str(entry.get("file_name") or next(iter(_url_names(entry.get("coco_url"))), entry["id"]))


def _category_name(entry: dict) -> str:
    return str(entry.get("name", entry["id"]))


def _the_coco_file(folder: Path) -> Path:
    """The one COCO .json of a source folder; several are an InputError naming them (the first by
    name was read alone: of COCO's annotations/, captions_train2017.json, whose every annotation has
    no category, and of instances_train.json beside instances_val.json, the training split only)."""
    found = [p for p in sorted(folder.glob("*.json")) if _looks_like_coco(p)]
    if not found:
        raise InputError(f"{folder}: no COCO instances .json found")
    if len(found) > 1:
        raise InputError(f"{folder}: holds {len(found)} COCO .json files ({', '.join(p.name for p in found)}); "
                         "give the one to read as the source (several: each as a source of its own)")
    return found[0]


def coco_image_roots(json_path: Path) -> list[Path]:
    """The folders where a COCO file's images are looked for, in order: ``images/`` beside it, its own
    folder, ``images/`` beside its folder; for ``instances_SUBSET.json`` (COCO's own and Datumaro's name,
    as CVAT exports it) also the subset's folder as those lay it out: ``images/SUBSET/`` (Datumaro) and
    ``SUBSET/`` beside ``annotations/`` (COCO 2017's ``val2017/``), where every image was 'not found'."""
    parent = json_path.parent
    roots = [parent / "images", parent, parent.parent / "images"]
    match = re.fullmatch(r"(?:instances|person_keypoints)_(.+)", json_path.stem)
    if match and match.group(1) not in (".", ".."):
        subset = match.group(1)
        roots += [parent / "images" / subset, parent.parent / "images" / subset, parent.parent / subset]
    return list(dict.fromkeys(roots))


def coco_category(coco: CocoIndex, annotation: dict) -> str | Skip:
    """The name of an annotation's category, or a Skip naming the file and the id when the file's
    ``categories`` do not list it (it was named by its id, a category no config or class map knows), or
    list it more than once under other names (which one the annotation means cannot be told)."""
    category_id = annotation.get("category_id")
    if isinstance(category_id, int) and not isinstance(category_id, bool) and category_id in coco.categories:
        return coco.categories[category_id]
    if isinstance(category_id, int) and category_id in coco.repeated_categories:  # (a list id is unhashable)
        names = coco.repeated_categories[category_id]
        return Skip(str(coco.json_path), f"annotation {annotation.get('id')}: category_id {category_id!r} is listed "
                                         f"{len(names)} times in the file's categories ({', '.join(map(repr, names))})")
    return Skip(str(coco.json_path), f"annotation {annotation.get('id')}: category_id {category_id!r} "
                                     "is not in the file's categories")


def _polygons(segmentation: list, height: int, width: int) -> list[list[float]]:
    """The polygons of a COCO segmentation that have an area (3 points or more); a ValueError saying
    what is wrong otherwise. A polygon of 2 points alone would be read by pycocotools as a box. A
    point more than the image's own size outside it is an error: pycocotools rasterises every edge
    whole, in memory by its length (one triangle with a corner at 3e8 took 15 GB and a minute)."""
    if not all(isinstance(polygon, list) and all(is_number(v) for v in polygon) for polygon in segmentation):
        raise ValueError("polygons must be lists of numbers x1, y1, x2, y2, ...")
    odd = next((polygon for polygon in segmentation if len(polygon) % 2), None)
    if odd is not None:
        raise ValueError(f"a polygon has an odd count of coordinates ({len(odd)})")
    far = next(((x, y) for polygon in segmentation for x, y in zip(polygon[::2], polygon[1::2])
                if not (-width <= x <= 2 * width and -height <= y <= 2 * height)), None)
    if far is not None:
        raise ValueError(f"a polygon's point {far} lies far outside the {width}x{height} image")
    polygons = [[float(v) for v in polygon] for polygon in segmentation if len(polygon) >= 6]
    if not polygons:
        raise ValueError("no polygon of 3 points or more" if segmentation else
                         "missing: a box-only annotation has no mask to cut")
    return polygons


def coco_annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """The annotation's mask (polygons, uncompressed or compressed RLE); ValueError and friends when broken."""
    from pycocotools import mask as mask_utils

    segmentation = annotation.get("segmentation")
    if segmentation is None:
        raise ValueError("missing: a box-only annotation has no mask to cut")
    if not isinstance(segmentation, (list, dict)):
        raise ValueError(f"segmentation must be a list of polygons or an RLE object, not {type(segmentation).__name__}")
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(_polygons(segmentation, height, width), height, width)))
    if not {"counts", "size"} <= set(segmentation):
        raise ValueError("an RLE segmentation needs counts and size")
    if segmentation["size"] != [height, width]:
        raise ValueError(f"RLE size {segmentation['size']} differs from the image's {[height, width]}")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(is_number(c) and c >= 0 and float(c).is_integer() for c in counts) or sum(counts) != height * width:
            raise ValueError(f"RLE counts must be whole numbers of 0 or more covering the image's {height * width} pixels")
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:  # compressed; an empty string has no runs: pycocotools decoded it as uninitialised memory
        if not isinstance(counts, (str, bytes)) or not counts:
            raise ValueError("compressed RLE counts must be a non-empty string")
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
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
        image = read_photo(path)
        if isinstance(image, Skip):
            yield image
            continue
        mismatch = _size_mismatch(coco.images[image_id], image.shape[1], image.shape[0])
        yield Skip(str(path), f"{mismatch} in {coco.json_path.name}") if mismatch else (image_id, path, image)


def _size_mismatch(entry: dict, width: int, height: int) -> str | None:
    """Why an image read as ``width`` x ``height`` cannot take the annotations of its COCO ``entry``
    (their coordinates are in the size the entry gives: a photo resized since, or one annotated as
    stored without its EXIF turn, had its objects cut from the wrong pixels without a word); None when
    they agree or the entry gives no size."""
    given = entry.get("width"), entry.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in given) or given == (width, height):
        return None
    turned = turned_hint(given, (width, height))
    return f"image is {width}x{height} but its annotations are for {given[0]}x{given[1]}{turned}"


def coco_objects(coco: CocoIndex, image_id: int, path: Path, height: int, width: int,
                 config: SourceConfig) -> Iterator[tuple[str, np.ndarray] | Skip]:
    """(category, bool mask) of each usable, allowed, non-crowd annotation of one image, or a Skip."""
    for annotation in coco.by_image[image_id]:
        category = coco_category(coco, annotation)
        if isinstance(category, Skip):
            yield category
            continue
        if not category_allowed(category, config):
            continue
        if annotation.get("iscrowd"):
            yield Skip(str(path), f"annotation {annotation.get('id')} is a crowd region")
            continue
        mask = annotation_mask_or_skip(annotation, path, height, width)
        yield mask if isinstance(mask, Skip) else (category, mask)


def annotation_mask_or_skip(annotation: dict, path: Path, height: int, width: int) -> np.ndarray | Skip:
    """An annotation's bool mask on its image ``path``, or a Skip naming that image and what is broken."""
    try:
        return coco_annotation_mask(annotation, height, width) > 0
    except Exception as error:  # pycocotools raises bare Exceptions on malformed input
        return Skip(str(path), f"annotation {annotation.get('id')}: broken segmentation ({error})")


def coco_photos(source: Path, config: SourceConfig) -> Iterator[tuple[Path, np.ndarray, list] | Skip]:
    """(path, RGB image, its (category, mask) objects and Skips, an iterator drawing each as it is taken)
    per annotated image, or a Skip."""
    coco = load_coco_index(source)
    for item in coco_images(coco, config):
        if isinstance(item, Skip):
            yield item
            continue
        image_id, path, image = item
        yield path, image, coco_objects(coco, image_id, path, *image.shape[:2], config)  # drawn as taken


def _read_coco(source: Path, config: SourceConfig) -> Iterator[SourceItem]:
    yield from cut_objects(coco_photos(source, config), config)


def _escapes(name: str) -> bool:
    """Whether the file name ``name`` leaves the folder it is joined to (absolute, or a '..' part): a
    COCO file from a stranger names any image on the machine so, read into shards one shares."""
    return PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts


def _url_names(url: object) -> list[str]:
    """The file names an image entry without ``file_name`` (LVIS's) gives by its ``coco_url``
    (``http://images.cocodataset.org/val2017/0001.jpg``): ``val2017/0001.jpg``, then ``0001.jpg``."""
    parts = [part for part in urlsplit(url).path.split("/") if part not in ("", ".")] if isinstance(url, str) else []
    if not parts or ".." in parts[-2:]:
        return []
    return list(dict.fromkeys(["/".join(parts[-2:]), parts[-1]]))


def _spellings(file_name: str) -> list[str]:
    """``file_name`` as written, then as a COCO file written on Windows means it (``images\\0001.jpg``),
    then in each Unicode form (``café.jpg`` typed in the JSON, saved decomposed by a Mac): the names
    under which its image may be found."""
    names = [file_name, file_name.replace("\\", "/")]
    names += [unicodedata.normalize(form, name) for name in names[:2] for form in ("NFC", "NFD")]
    return list(dict.fromkeys(names))
