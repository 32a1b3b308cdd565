"""Labelled photos as backgrounds of composites (copy-paste onto labelled photos).

With ``backgrounds.format`` other than ``images`` (:class:`augment.config.BackgroundConfig`), the
BACKGROUNDS folder is a labelled source (``label_map`` or ``mask_pairs``, as for objects) and every
composite carries its background's labels after the same crop, resize and scene distortions as its
pixels (Ghiasi et al. 2021, "Simple Copy-Paste"; Dwibedi et al. 2017): with the pasted objects on
top, every pixel of the composite is labelled.

Labels are stored as *ids*: the source's label value + 1, so id 0 means "no label" (a value no name
is given for, the border a pillar-box adds, the visible part of an object dropped as too hidden).
Each id's category is the source's name for its value; value 0 is ``background``, as in
:mod:`augment.photo_shards`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augment.config import BackgroundConfig, SourceConfig
from augment.imageio import InputError
from augment.photo_objects import photo_mask_pairs
from augment.photo_shards import MAX_LABEL_ID, label_id, shared_label_id
from augment.schema import BACKGROUND_CATEGORY
from augment.sources import Skip, detect_format, load_pair, skipped_summary, value_category

MIN_SIDE = 16  # backgrounds (plain or labelled) with a shorter side under this are skipped


@dataclass(frozen=True)
class LabelledBackground:
    """A background photo and its label file (read when a composite needs it)."""

    image: Path
    labels: Path
    categories: dict[int, str] = field(default_factory=dict)  # label id (value + 1) -> category

    @property
    def name(self) -> str:
        return self.image.name


def label_ids(values: np.ndarray, categories: dict[int, str]) -> np.ndarray:
    """Label ids (:func:`augment.photo_shards.label_id`, value + 1; 0 where the value has no name) of a
    label map, uint8 when they fit."""
    top = int(values.max()) + 1 if values.size else 1  # the number of values the lookup is indexed by
    ids = np.minimum(np.arange(1, top + 1, dtype=np.uint32), MAX_LABEL_ID)  # each value's id
    lookup = np.where(np.isin(ids, list(categories)), ids, 0).astype(np.uint16)
    ids = lookup[values]
    return ids.astype(np.uint8) if top < 256 else ids


def read_background(background: LabelledBackground) -> tuple[np.ndarray, np.ndarray]:
    """The photo (RGB) and its label ids; a file that became unusable since it was checked is an InputError."""
    loaded = load_pair(background.image, background.labels, "empty label map")
    if isinstance(loaded, Skip):
        raise InputError(f"{loaded.path}: {loaded.reason}")
    image, values, _ = loaded
    return image, label_ids(values, background.categories)


def collect_labelled_backgrounds(folder: Path, config: BackgroundConfig) -> tuple[list[LabelledBackground], list[Skip]]:
    """The usable labelled photos of ``folder`` (picked by include/exclude/limit) and the skips.

    Each pair is read once here, so a photo whose labels are unreadable, of another size or empty is
    a counted skip rather than an error in the middle of rendering.
    """
    folder = Path(folder)
    fmt = config.format if config.format != "auto" else detect_format(folder)
    if fmt not in ("label_map", "mask_pairs"):
        raise InputError(f"{folder}: backgrounds.format {fmt} is not supported for labelled backgrounds "
                         "(use label_map or mask_pairs)")
    names, pairs, skips = photo_mask_pairs(folder, fmt, SourceConfig(include=config.include, exclude=config.exclude,
                                                                       limit=config.limit))
    good: list[LabelledBackground] = []
    for image_path, label_path in pairs:
        if image_path is None:
            skips.append(Skip(str(label_path), "no photo with this name"))
            continue
        if label_path is None or not label_path.exists():
            skips.append(Skip(str(image_path), "no label file found for this photo"))
            continue
        loaded = load_pair(image_path, label_path, "empty label map")
        if isinstance(loaded, Skip):
            skips.append(loaded)
            continue
        image, _, present = loaded
        if collision := shared_label_id(present, label_path):
            skips.append(collision)
            continue
        if min(image.shape[:2]) < MIN_SIDE:
            skips.append(Skip(str(image_path), f"too small to use as a background ({image.shape[1]}x{image.shape[0]})"))
            continue
        categories = {}
        for value in present:  # named as the object sources name them; an unknown label value is a skip
            category = value_category(value, names, fmt, label_path)
            if isinstance(category, Skip):
                skips.append(category)
            else:
                categories[label_id(value)] = category
        categories[1] = BACKGROUND_CATEGORY  # value 0, as a labelled photo's row names it
        good.append(LabelledBackground(image_path, label_path, categories))
    if not good:
        raise InputError(f"{folder}: no usable labelled background photos ({skipped_summary(skips, 'file')})")
    return good, skips
