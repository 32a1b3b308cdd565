"""What a segmentation run learns and from which pixels: the class map, sizes, data mix, augmentation.

The ``segment:`` mapping of a ``task: segment`` training config (:class:`train.config.TrainConfig`)
holds these keys; ``configs/segment_cpu.yaml`` and ``configs/ccp_segment.yaml`` document them.

Class map: a list of classes in index order, each a name and the source labels merged into it.
Class 0 is the background. A pixel's class comes from its object's category (the source label a
cutout or a labelled photo region carries, or the class name an automatic mask carries): the class
whose ``source_labels`` list it, else the class of that name. The category ``background`` always
means class 0, ``__ignore__`` (automatic masks that were not trusted) always means "no loss here";
any other unknown category is ignored too (the dataset warns once of each, naming it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from augment.atomic_files import atomic_write_text
from augment.imageio import InputError
from augment.photo_shards import IGNORE_CATEGORY
from augment.schema import BACKGROUND_CATEGORY
from augment.textfiles import loads_json
from augment.validation import is_int, is_number, is_pair
from train.data import MAX_MEDIUM_SIZE

# Largest side a photo is resized or cropped to: a training config's medium_size maximum.
MAX_SIZE = MAX_MEDIUM_SIZE

IGNORE_INDEX = 255  # target value that carries no loss (and the cap on the number of classes)
CLASSES_FILE = "classes.json"
# Kinds of shard by file name prefix; everything else is a composite of `synth expand`.
PHOTO_KINDS = {"photos": "photos", "pseudo": "pseudo"}
MIX_KINDS = ("photos", "composites", "pseudo")


@dataclass(frozen=True)
class SegmentClass:
    name: str
    source_labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source_labels": list(self.source_labels)}


def parse_classes(values: Any, origin: str = "segment.classes") -> tuple[SegmentClass, ...]:
    """Classes from a list of ``{"name": str, "source_labels": [str, ...]}`` (or bare names)."""
    if not isinstance(values, (list, tuple)) or len(values) < 2:
        raise InputError(f"{origin}: expected a list of at least 2 classes (class 0 is the background), "
                         "each {name: ..., source_labels: [...]}")
    if len(values) > IGNORE_INDEX:
        raise InputError(f"{origin}: at most {IGNORE_INDEX} classes, not {len(values)}")
    classes = []
    for index, value in enumerate(values):
        if isinstance(value, SegmentClass):
            classes.append(value)
            continue
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            raise InputError(f"{origin}[{index}]: expected {{name: str, source_labels: [str, ...]}}, got {value!r}")
        unknown = set(value) - {"name", "source_labels"}
        if unknown:
            raise InputError(f"{origin}[{index}]: unknown key(s) {', '.join(sorted(unknown))}")
        labels = value.get("source_labels", [])
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise InputError(f"{origin}[{index}].source_labels: expected a list of label names")
        classes.append(SegmentClass(value["name"], tuple(labels)))
    names = [c.name for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{origin}: class name(s) listed twice: {', '.join(duplicates)}")
    owner: dict[str, str] = {}
    for cls in classes:
        for label in cls.source_labels:
            if label in owner and owner[label] != cls.name:
                raise InputError(f"{origin}: source label {label!r} is in both {owner[label]!r} and {cls.name!r}")
            owner[label] = cls.name
    return tuple(classes)


class ClassMap:
    """Category name -> class index (or :data:`IGNORE_INDEX`)."""

    def __init__(self, classes: tuple[SegmentClass, ...]) -> None:
        self.classes = classes
        self.names = [c.name for c in classes]
        self._index: dict[str, int] = {c.name: i for i, c in enumerate(classes)}
        for i, cls in enumerate(classes):  # source labels win over class names
            self._index.update({label: i for label in cls.source_labels})
        self._index[BACKGROUND_CATEGORY] = 0
        self._index[IGNORE_CATEGORY] = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, category: str) -> int:
        return self._index.get(category, IGNORE_INDEX)

    def knows(self, category: str) -> bool:
        return category in self._index

    def target(self, ids: np.ndarray, objects: list[dict], background: int) -> np.ndarray:
        """Class map (uint8) of an instance-id mask: id 0 -> ``background``, id k -> its object's class."""
        size = max(int(ids.max()) + 1, max((int(o["instance_id"]) for o in objects), default=0) + 1)
        lookup = np.full(size, IGNORE_INDEX, np.uint8)  # ids no object names: no loss
        lookup[0] = background
        for obj in objects:
            lookup[int(obj["instance_id"])] = self.index(obj["category"])
        return lookup[ids]


def write_classes(path: Path | str, classes: tuple[SegmentClass, ...]) -> None:
    """``classes.json``: a list, in index order, of ``{"name": ..., "source_labels": [...]}``."""
    atomic_write_text(path, json.dumps([c.to_dict() for c in classes], indent=2) + "\n")


def read_classes(path: Path | str) -> tuple[SegmentClass, ...]:
    path = Path(path)
    try:
        values = loads_json(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    return parse_classes(values, str(path))


def _is_whole_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_int, value))


@dataclass
class SegmentConfig:
    """The ``segment:`` keys of a training config (``task: segment``)."""

    classes: tuple[SegmentClass, ...] = ()  # class map, index order; class 0 = background (required)
    short_side: int = 256  # photos are scaled so their shorter side is this (times a random scale in training)
    scale_range: tuple[float, float] = (0.75, 1.5)  # random scale of the short side in training
    crop_size: int = 256  # training crops are crop_size x crop_size (padded with "ignore" where the image ends)
    eval_size: tuple[int, int] = (384, 256)  # (height, width) evaluation images are resized to
    mix: dict[str, float] = field(default_factory=lambda: {"photos": 0.5, "composites": 0.5, "pseudo": 0.5})
    # ^ share of each kind of row per epoch: photos-*.parquet (labelled photos), pseudo-*.parquet
    #   (automatically labelled photos), other shards (composites); kinds absent from the data are dropped
    composite_background: str = "ignore"  # class of composites' background pixels: ignore | background
    eval_fraction: float = 0.0  # rows held out for evaluation by a hash of the row id; 0 = evaluate on
    #                             every row of --eval-shards (a held-out set of photos)
    hflip: bool = True  # random horizontal flips
    colour_jitter: float = 0.4  # brightness, contrast, saturation change by up to this fraction (strong augmentation)
    hue_jitter: float = 0.05  # hue shift, fraction of the hue circle
    grayscale_p: float = 0.1  # chance of a grey image
    blur_p: float = 0.3  # chance of a gaussian blur (sigma 0.1-1.5 px)
    store_short_side: int = 384  # `synth extract` and selftune store photos at this side (photo-shards: --short-side)

    def __post_init__(self) -> None:
        if self.classes:
            self.classes = parse_classes(list(self.classes))
        self._check_types()
        self.scale_range = tuple(float(x) for x in self.scale_range)
        self.eval_size = tuple(int(x) for x in self.eval_size)
        checks = [
            # At most MAX_SIZE: short_side 200000 asked OpenCV for 110 GB at the first photo (a traceback).
            (32 <= self.short_side <= MAX_SIZE and 32 <= self.crop_size <= MAX_SIZE,
             f"short_side and crop_size must lie in [32, {MAX_SIZE}], got {self.short_side} and {self.crop_size}"),
            (len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
             "scale_range must be [lo, hi] with 0 < lo <= hi"),
            (len(self.eval_size) == 2 and 32 <= min(self.eval_size) <= max(self.eval_size) <= MAX_SIZE,
             f"eval_size must be [height, width], each in [32, {MAX_SIZE}]"),
            (self.composite_background in ("ignore", "background"), "composite_background must be ignore or background"),
            (0.0 <= self.eval_fraction < 1.0, "eval_fraction must lie in [0, 1)"),
            (0.0 <= self.colour_jitter < 1.0 and 0.0 <= self.hue_jitter <= 0.5, "colour_jitter in [0, 1), hue_jitter in [0, 0.5]"),
            (0.0 <= self.grayscale_p <= 1.0 and 0.0 <= self.blur_p <= 1.0, "grayscale_p and blur_p must lie in [0, 1]"),
            (set(self.mix) <= set(MIX_KINDS), f"mix keys must be among {', '.join(MIX_KINDS)}"),
            # is_number: .inf was an OverflowError traceback as the row groups were listed, true a share of 1
            (all(is_number(v) and v >= 0 for v in self.mix.values()) and sum(self.mix.values()) > 0,
             f"mix shares must be finite numbers at least 0, not all zero, got {self.mix!r}"),
            (32 <= self.store_short_side <= MAX_SIZE, f"store_short_side must lie in [32, {MAX_SIZE}]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _check_types(self) -> None:
        """Each value of its key's type, so a YAML slip is one line naming the key (not a failed comparison)."""
        expected = {"short_side": (is_int, "a whole number"), "crop_size": (is_int, "a whole number"),
                    "store_short_side": (is_int, "a whole number"),
                    "scale_range": (is_pair, "a pair of numbers [low, high]"),
                    "eval_size": (_is_whole_pair, "[height, width] in whole numbers"),
                    "mix": (lambda v: isinstance(v, dict), "a mapping of kind -> share"),
                    "composite_background": (lambda v: isinstance(v, str), "ignore or background"),
                    "hflip": (lambda v: isinstance(v, bool), "true or false")}
        for spec in dataclasses.fields(self):
            if spec.name == "classes":
                continue
            check, what = expected.get(spec.name, (is_number, "a number"))
            value = getattr(self, spec.name)
            if not check(value):
                raise ValueError(f"{spec.name}: expected {what}, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SegmentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown segment key(s) {', '.join(unknown)}")
        if "classes" in values:
            values = {**values, "classes": parse_classes(values["classes"])}
        return cls(**values)

    def class_map(self) -> ClassMap:
        return ClassMap(self.classes)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["classes"] = [c.to_dict() for c in self.classes]
        return json.loads(json.dumps(values))
