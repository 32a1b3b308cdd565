"""The ``cvat_mask`` source format: CVAT's "Segmentation mask 1.1" export (Pascal VOC's layout).

``labelmap.txt`` names each class by its colour (``name:r,g,b:parts:actions``, ``#`` comments);
``SegmentationClass/X.png`` paints each pixel its class's colour, ``SegmentationObject/X.png`` each
object its own colour; the photos are in ``JPEGImages/`` (or ``images/``), paired by name as mask
pairs are (:class:`augment.sources.FilesByName`). An object is a colour of the object mask, of the class
its pixels have in the class mask; without an object mask, each connected region of a class (as a
label map's). Black, a class named ``background`` and VOC's border colour (224, 224, 192, where no
class has it) are no object. Pascal VOC's own folder (``JPEGImages/`` beside ``SegmentationClass/``,
no ``labelmap.txt``) is read with VOC's 20 classes and colours. A mask of another size than its photo, a colour that ``labelmap.txt``
does not list, and a photo without masks are counted skips naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from augment.config import SourceConfig
from augment.imageio import InputError, list_images, read_image
from augment.source_items import Skip, category_allowed, limited, read_photo, regions, turned_hint
from augment.textfiles import read_user_text

LABELMAP = "labelmap.txt"
VOC_BORDER = (224, 224, 192)  # Pascal VOC's "void" outline round each object
PHOTO_FOLDERS = ("JPEGImages", "images")


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def voc_colour(index: int) -> tuple[int, int, int]:
    """Pascal VOC's colour of class ``index`` (its palette: the index's bits spread over r, g and b)."""
    rgb = [0, 0, 0]
    for shift in range(8):
        for channel in range(3):
            rgb[channel] |= (index >> (3 * shift + channel) & 1) << (7 - shift)
    return rgb[0], rgb[1], rgb[2]


def looks_like_cvat_masks(source: Path) -> bool:
    """CVAT's export (``labelmap.txt``) or Pascal VOC's own folder (``JPEGImages/`` beside the masks)."""
    return (source / "SegmentationClass").is_dir() and ((source / LABELMAP).is_file() or (source / "JPEGImages").is_dir())


def source_labelmap(source: Path) -> dict[int, str]:
    """The classes of a source: its ``labelmap.txt``; without one (Pascal VOC's own folder), VOC's."""
    if (source / LABELMAP).exists():
        return read_labelmap(source / LABELMAP)
    return {packed(voc_colour(index)): name for index, name in enumerate(VOC_CLASSES)}


def read_labelmap(path: Path) -> dict[int, str]:
    """Packed colour (r << 16 | g << 8 | b) -> class name of a ``labelmap.txt``; a line that is not
    ``name:r,g,b...`` is an InputError naming the file and the line."""
    names: dict[int, str] = {}
    try:
        text = read_user_text(path, "CVAT's labelmap.txt (name:r,g,b:parts:actions lines)")
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        colour = rest.split(":", 1)[0].split(",")
        try:
            rgb = [int(v) for v in colour]
        except ValueError:
            rgb = []
        if not name.strip() or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise InputError(f"{path}: line {number} is not 'name:r,g,b::' ({line.strip()[:60]!r})")
        if packed(rgb) in names:  # which class its pixels are cannot be told
            raise InputError(f"{path}: line {number}: {name.strip()!r} has the colour {','.join(map(str, rgb))} "
                             f"of {names[packed(rgb)]!r}")
        names[packed(rgb)] = name.strip()
    if not names:
        raise InputError(f"{path}: no classes listed")
    return names


def packed(rgb) -> int:
    return int(rgb[0]) << 16 | int(rgb[1]) << 8 | int(rgb[2])


def _colours(path: Path) -> np.ndarray:
    """A colour mask as packed int32 colours (H x W)."""
    rgb = read_image(path, "rgb").astype(np.int32)
    return rgb[:, :, 0] << 16 | rgb[:, :, 1] << 8 | rgb[:, :, 2]


def cvat_label_names(source: Path) -> set[str]:
    return {name for name in source_labelmap(source).values() if name.lower() not in ("background", "_background_")}


def cvat_pairs(source: Path) -> tuple[list[tuple[Path, Path | None]], list[Skip]]:
    """(photo or None, class mask) of each class mask, and the files that are not images."""
    from augment.sources import FilesByName, name_key

    class_dir = source / "SegmentationClass"
    photo_dir = next((source / d for d in PHOTO_FOLDERS if (source / d).is_dir()), None)
    if photo_dir is None:
        raise InputError(f"{source}: a cvat_mask source needs its photos in JPEGImages/ or images/ "
                         "(export with 'Save images', or copy them there)")
    masks, others = list_images(class_dir)
    photos = FilesByName(list_images(photo_dir)[0], photo_dir, masks)
    return ([(photos.find(name_key(m, class_dir)), m) for m in masks],
            [Skip(str(other), "not an image file") for other in others])


def _background(names: dict[int, str]) -> set[int]:
    return {0, *(c for c, n in names.items() if n.lower() in ("background", "_background_"))} | (
        {packed(VOC_BORDER)} if packed(VOC_BORDER) not in names else set())


def cvat_objects(class_path: Path, object_path: Path | None, names: dict[int, str], shape: tuple[int, int],
                 config: SourceConfig) -> Iterator[tuple[str, np.ndarray] | Skip]:
    """(class name, bool mask) of each object of one photo's masks, or a Skip naming the mask file."""
    loaded = []
    for path in (class_path, object_path):
        if path is None:
            loaded.append(None)
            continue
        try:
            colours = _colours(path)
        except InputError as error:
            yield Skip.of(error, path)
            return
        if colours.shape != shape:
            turned = turned_hint(colours.shape[::-1], shape[::-1])
            yield Skip(str(path), f"mask is {colours.shape[1]}x{colours.shape[0]} but its photo is "
                                  f"{shape[1]}x{shape[0]}{turned}")
            return
        loaded.append(colours)
    classes, instances = loaded
    background = _background(names)
    present = [int(c) for c in np.unique(classes) if c not in background]
    if not present:
        yield Skip(str(class_path), "empty mask")
        return
    unknown = [c for c in present if c not in names]
    if unknown:
        listed = ", ".join(f"({c >> 16}, {c >> 8 & 255}, {c & 255})" for c in unknown[:3])
        yield Skip(str(class_path), f"colour(s) {listed} not in {LABELMAP}: their pixels are no object")
    if instances is None:
        for colour in np.unique(classes):
            if colour in background or colour not in names or not category_allowed(names[colour], config):
                continue
            for region in regions(classes == colour, config.min_area):
                yield names[int(colour)], region
        return
    for colour in np.unique(instances):
        if colour in (0, packed(VOC_BORDER)):
            continue
        mask = instances == colour
        under = classes[mask]
        under = under[np.isin(under, list(names)) & ~np.isin(under, list(background))]
        if not under.size:
            yield Skip(str(object_path), f"object of colour ({colour >> 16}, {colour >> 8 & 255}, {colour & 255}) "
                                         "has no class in its class mask")
            continue
        values, counts = np.unique(under, return_counts=True)
        name = names[int(values[np.argmax(counts)])]
        if category_allowed(name, config):
            yield name, mask


def cvat_photos(source: Path, config: SourceConfig) -> Iterator[tuple[Path, np.ndarray, list] | Skip]:
    """(photo, RGB image, its (class, mask) objects and Skips) per class mask ``config`` picks, or a Skip."""
    names = source_labelmap(source)
    pairs, others = cvat_pairs(source)
    yield from others
    object_dir = source / "SegmentationObject"
    for photo, class_path in limited(pairs, config):
        if photo is None:
            yield Skip(str(class_path), "no photo with this name")
            continue
        image = read_photo(photo)
        if isinstance(image, Skip):
            yield image
            continue
        object_path = None
        if object_dir.is_dir():
            object_path = object_dir / class_path.relative_to(source / "SegmentationClass")
            if not object_path.is_file():
                yield Skip(str(class_path), f"no object mask ({object_path.relative_to(source)})")
                continue
        yield photo, image, cvat_objects(class_path, object_path, names, image.shape[:2], config)
