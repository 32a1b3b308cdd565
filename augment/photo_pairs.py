"""Query/scene cases from real labelled photos: the catalogue → street task itself.

A positive case takes one object of a labelled photo, turns it into a catalogue shot
(:class:`augment.catalogue.CatalogueTransform`) and searches it in a scene made of that photo tiled
with others; a negative case searches it in photos that do not hold it. The other photos are
drawn, with a configurable chance, among photos holding an object of the query's category, so a
scene holds look-alikes (another coat, other jeans) and negatives are hard ones.

Used by the search network's training pairs (real media beside composites), by ``synth calibrate``
on labelled photos and by the real-photo benchmarks, so all three see the same task. Every case is
a pure function of its seed and the index, and records what it was made of.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from augment.catalogue import CatalogueConfig, CatalogueTransform, place_mask, tile_photos
from augment.config import SourceConfig
from augment.imageio import InputError, decode_image, encode_label_png, read_image
from augment.photo_objects import read_labelled_photos
from augment.sources import Skip, read_each, skipped_summary
from augment.validation import is_int

log = logging.getLogger(__name__)


@dataclass
class PhotoPairConfig:
    """How cases are made from labelled photos."""

    catalogue: CatalogueConfig = field(default_factory=CatalogueConfig)
    scene_height: int = 416  # photos are resized to this height and tiled side by side
    photos_per_scene: tuple[int, int] = (3, 3)  # photos in a scene: uniform in [lo, hi]
    negative_fraction: float = 0.25  # chance that a case's query is absent from its scene
    look_alike_probability: float = 0.5  # chance each other photo is drawn among those holding the query's category
    hard_negatives: bool = True  # a negative scene holds at least one object of the query's category (when any photo has one)
    min_object_fraction: float = 0.04  # objects covering less of their photo are not used as queries
    query_categories: tuple[str, ...] = ()  # categories used as queries; empty = all

    def validate(self, origin: str = "photo pairs", names: dict[str, str] | None = None) -> None:
        """Range-check every value; the first problem is an InputError naming its key, as ``names`` calls
        it (a training config's ``photo_per_scene`` is this ``photos_per_scene``)."""
        self.catalogue.validate(f"{origin}: catalogue")
        name = {key: key for key in ("scene_height", "photos_per_scene", "negative_fraction",
                                     "look_alike_probability", "min_object_fraction")} | (names or {})
        lo, hi = self.photos_per_scene
        checks = [
            (self.scene_height >= 32, f"{name['scene_height']} must be at least 32"),
            (is_int(lo) and is_int(hi) and 1 <= lo <= hi <= 16,
             f"{name['photos_per_scene']} must be whole numbers 1 <= lo <= hi <= 16, got {[lo, hi]}"),
            (0.0 <= self.negative_fraction <= 1.0, f"{name['negative_fraction']} must lie in [0, 1]"),
            (0.0 <= self.look_alike_probability <= 1.0, f"{name['look_alike_probability']} must lie in [0, 1]"),
            (0.0 <= self.min_object_fraction < 1.0, f"{name['min_object_fraction']} must lie in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{origin}: {message}")


@dataclass
class PhotoRecord:
    """One labelled photo: its file and its objects' categories, areas and masks (PNG bytes)."""

    path: Path
    size: tuple[int, int]  # height, width
    categories: list[str]
    area_fractions: list[float]
    masks_png: list[bytes]

    def mask(self, index: int) -> np.ndarray:
        return decode_image(self.masks_png[index], cv2.IMREAD_GRAYSCALE, f"{self.path} mask {index}") > 0


class PhotoIndex:
    """The labelled photos of one or more sources, with their objects; pixels read on demand.

    Masks are kept PNG-encoded (a few KB per photo) and photos are re-read from disk when used, so
    an index of thousands of photos fits in each data-loader worker.
    """

    def __init__(self, records: list[PhotoRecord], skips: list[Skip] | None = None) -> None:
        if not records:
            raise InputError("no labelled photos with objects to make cases from")
        self.records = records
        self.skips = skips or []
        self._by_category: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            for category in set(record.categories):
                self._by_category.setdefault(category, []).append(i)

    @classmethod
    def from_sources(cls, sources: Sequence[Path | str], config: SourceConfig | None = None,
                     filters: str = "") -> "PhotoIndex":
        """Read every labelled photo of ``sources`` once (any format with whole photos and masks).
        ``filters``: the options that may have left nothing, named where nothing was skipped."""
        config = config or SourceConfig()
        records, skips = [], []
        for item in read_each(sources, read_labelled_photos, config, skips):
            if not item.objects:
                continue
            total = float(item.image.shape[0] * item.image.shape[1])
            record = PhotoRecord(item.path, item.image.shape[:2], [], [], [])
            for category, mask in item.objects:  # each mask made, kept as a PNG and let go in turn
                record.categories.append(category)
                record.area_fractions.append(float(mask.sum()) / total)
                record.masks_png.append(encode_label_png(mask.astype(np.uint8)))
            records.append(record)
        if not records:
            raise InputError(f"{', '.join(map(str, sources))}: no labelled photos with objects "
                             f"({skipped_summary(skips, filters=filters)})")
        return cls(records, skips)

    def __len__(self) -> int:
        return len(self.records)

    def photos_with(self, category: str) -> list[int]:
        return self._by_category.get(category, [])

    def query_objects(self, config: PhotoPairConfig) -> list[tuple[int, int]]:
        """(photo, object) pairs usable as queries, in a fixed order."""
        wanted = set(config.query_categories)
        return [(p, o) for p, record in enumerate(self.records)
                for o, (category, fraction) in enumerate(zip(record.categories, record.area_fractions))
                if fraction >= config.min_object_fraction and (not wanted or category in wanted)]

    def image(self, photo: int) -> np.ndarray:
        record = self.records[photo]
        image = read_image(record.path, "rgb")
        if image.shape[:2] != record.size:
            raise InputError(f"{record.path}: changed on disk since it was indexed")
        return image


@dataclass
class PhotoCase:
    """A catalogue query and a scene of real photos; ``target`` marks the query's object there."""

    query: np.ndarray  # RGBA uint8, alpha = the object
    scene: np.ndarray  # RGB uint8
    target: np.ndarray  # bool, scene-sized; all False for a negative
    category: str
    params: dict[str, Any]  # photos, object, catalogue parameters: enough to replay the case

    @property
    def positive(self) -> bool:
        return bool(self.target.any())

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        """The target's box (one object: one box), or none for a negative."""
        ys, xs = np.nonzero(self.target)
        if ys.size == 0:
            return []
        return [(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)]


@dataclass
class CasePlan:
    """The choices that make a case: the query's photo and object, the scene's photos left to right
    (``position`` = where the query's photo is among them, -1 for a negative) and the catalogue
    transform's parameters."""

    photo: int
    obj: int
    category: str
    tiles: list[int]
    position: int
    catalogue: dict[str, Any]

    @property
    def positive(self) -> bool:
        return self.position >= 0


class PhotoPairSampler:
    """Draws :class:`PhotoCase` s from a :class:`PhotoIndex`; a case is a function of its seed."""

    def __init__(self, index: PhotoIndex, config: PhotoPairConfig | None = None) -> None:
        self.index = index
        self.config = config or PhotoPairConfig()
        self.config.validate()
        self.catalogue = CatalogueTransform(self.config.catalogue)
        self.queries = index.query_objects(self.config)
        if not self.queries:
            raise InputError(f"no object covers {self.config.min_object_fraction:.0%} of its photo"
                             + (f" among categories {', '.join(self.config.query_categories)}"
                                if self.config.query_categories else ""))

    def sample(self, rng: np.random.Generator, positive: bool | None = None) -> PhotoCase:
        return self.render(self.plan(rng, positive))

    def plan(self, rng: np.random.Generator, positive: bool | None = None) -> "CasePlan":
        """What a case is made of (photos, object, catalogue parameters), without any pixels."""
        c = self.config
        if positive is None:
            positive = bool(rng.random() >= c.negative_fraction)
        photo, obj = self.queries[int(rng.integers(len(self.queries)))]
        category = self.index.records[photo].categories[obj]
        count = int(rng.integers(c.photos_per_scene[0], c.photos_per_scene[1] + 1))
        tiles = self._other_photos(rng, photo, category, count - 1 if positive else count, hard=not positive)
        position = int(rng.integers(0, len(tiles) + 1)) if positive else -1
        if positive:
            tiles.insert(position, photo)
        return CasePlan(photo, obj, category, tiles, position, self.catalogue.sample(rng))

    def hard_negative_plan(self, rng: np.random.Generator, plan: "CasePlan") -> "CasePlan":
        """The same query (photo, object, catalogue shot) in a scene of as many other photos, at
        least one holding its category where any does: the negative a ranking loss needs."""
        tiles = self._other_photos(rng, plan.photo, plan.category, len(plan.tiles), hard=True)
        return CasePlan(plan.photo, plan.obj, plan.category, tiles, -1, plan.catalogue)

    def query_shot(self, plan: "CasePlan", image: np.ndarray | None = None) -> np.ndarray:
        """The plan's catalogue shot (RGBA) of its object."""
        image = self.index.image(plan.photo) if image is None else image
        return self.catalogue.apply(image, self.index.records[plan.photo].mask(plan.obj), plan.catalogue)

    def render(self, plan: "CasePlan") -> PhotoCase:
        record = self.index.records[plan.photo]
        image = self.index.image(plan.photo)
        query = self.query_shot(plan, image)
        scene, placements = tile_photos([image if p == plan.photo else self.index.image(p) for p in plan.tiles],
                                        self.config.scene_height)
        target = (place_mask(record.mask(plan.obj), placements[plan.position], scene.shape[:2]) if plan.positive
                  else np.zeros(scene.shape[:2], bool))
        return PhotoCase(query, scene, target, plan.category, {
            "query_photo": str(record.path), "query_object": plan.obj, "category": plan.category,
            "scene_photos": [str(self.index.records[p].path) for p in plan.tiles],
            "positive": plan.positive, "catalogue": plan.catalogue})

    def _other_photos(self, rng: np.random.Generator, photo: int, category: str, count: int,
                      hard: bool) -> list[int]:
        """``count`` distinct photos other than ``photo``: look-alikes by chance, at least one for
        a hard negative (where any exists)."""
        pool = [p for p in range(len(self.index)) if p != photo]
        alike = [p for p in self.index.photos_with(category) if p != photo]
        if count > len(pool):
            raise InputError(f"a scene of {count + 1} photos needs more labelled photos than the "
                             f"{len(self.index)} indexed")
        chosen: list[int] = []
        for k in range(count):
            must = hard and self.config.hard_negatives and k == 0
            candidates = [p for p in alike if p not in chosen]
            if candidates and (must or rng.random() < self.config.look_alike_probability):
                chosen.append(int(candidates[int(rng.integers(len(candidates)))]))
            else:
                rest = [p for p in pool if p not in chosen]
                chosen.append(int(rest[int(rng.integers(len(rest)))]))
        order = rng.permutation(len(chosen))
        return [chosen[i] for i in order]


def make_cases(sampler: PhotoPairSampler, positives: int, negatives: int, seed: int) -> list[PhotoCase]:
    """A fixed list of cases: case ``k`` comes from ``SeedSequence([seed, k])`` alone."""
    cases = []
    for k in range(positives + negatives):
        rng = np.random.default_rng(np.random.SeedSequence([seed, k]))
        cases.append(sampler.sample(rng, positive=k < positives))
    return cases
