"""Training pairs from real labelled photos: a catalogue shot of one object vs real street scenes.

Beside the composites of :class:`train.data.ShardPairs`, this is the task the search is used for:
the query is an object cut from a labelled photo and turned into a catalogue shot (mirrored,
rescaled, rotated, recoloured, on a plain background: :class:`augment.catalogue.CatalogueTransform`),
the medium that photo tiled with others (:class:`augment.photo_pairs.PhotoPairSampler`). The other
photos are drawn among those holding an object of the query's category with a configurable chance,
so media hold look-alikes (instance discrimination: another coat is not this coat), and negatives
hold at least one object of the query's category (hard negatives).

Streaming and resumption follow :class:`train.data.ShardPairs` exactly: an epoch is
``epoch_size`` samples; sample ``k`` of epoch ``e`` is a pure function of ``(seed, e, k)`` and goes
to loader slot ``k mod slots``; every sample carries its ``worker`` and its ``position`` in that
worker's stream, which is what :meth:`PhotoPairs.resume` continues after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from augment.config import SourceConfig
from augment.imageio import InputError, resize_image
from augment.label_names import check_label_names
from augment.photo_pairs import CasePlan, PhotoIndex, PhotoPairConfig, PhotoPairSampler
from augment.validation import check_instance
from train.data import PairConfig, check_pairs
from train.resumable_stream import ResumableStream, checked_seed
from train.queries import render_query
from train.feature_cache import PhotoFeatureCache

logger = logging.getLogger(__name__)


@dataclass
class PhotoMediaConfig:
    """How real media are made (see configs/train_*.yaml, keys ``photo_*``)."""

    sources: tuple[str, ...] = ()  # labelled photo sources (label maps, mask pairs, COCO)
    format: str = "auto"
    include: tuple[str, ...] = ()  # glob patterns on photo stems (e.g. the training split's ids)
    exclude: tuple[str, ...] = ()
    min_area: int = 2500  # objects with fewer mask pixels are neither queries nor look-alikes
    drop_labels: tuple[str, ...] = ()  # labels that are never objects (skin, hair ...)
    query_categories: tuple[str, ...] = ()  # categories used as queries; empty = all
    medium_hw: tuple[int, int] = (192, 384)  # the medium's height, width (scenes are resized to it)
    photos_per_scene: tuple[int, int] = (2, 3)
    look_alike_probability: float = 0.5
    epoch_size: int = 2000  # samples per epoch (every epoch draws new ones)
    cache_features: bool = False  # media as cached backbone features (frozen backbone only; train/feature_cache.py)

    def source_config(self) -> SourceConfig:
        return SourceConfig(format=self.format, min_area=self.min_area, drop_labels=list(self.drop_labels),
                            include=list(self.include), exclude=list(self.exclude))

    def pair_config(self, negative_fraction: float) -> PhotoPairConfig:
        return PhotoPairConfig(scene_height=self.medium_hw[0], photos_per_scene=tuple(self.photos_per_scene),
                               negative_fraction=negative_fraction,
                               look_alike_probability=self.look_alike_probability, hard_negatives=True,
                               query_categories=tuple(self.query_categories))


class PhotoPairs(ResumableStream):
    """(query, query_mask, medium, target) pairs from labelled photos; the samples have the fields
    and conventions of :class:`train.data.ShardPairs` (uint8 tensors, ``positive``, ``label``, and
    the bookkeeping ``worker``, ``position``, ``corrupt``, ``unit``, ``row``)."""

    def __init__(self, config: PhotoMediaConfig, pairs: PairConfig, seed: int = 0, rank: int = 0,
                 world_size: int = 1, index: PhotoIndex | None = None,
                 backbone: tuple[str, int] = ("efficientnet_lite0", 16)) -> None:
        check_instance(config, PhotoMediaConfig, "config")
        check_pairs(pairs, "pairs")
        seed = checked_seed(seed)
        super().__init__(rank, world_size)
        if config.epoch_size < 1:
            raise InputError("photo_epoch_size must be at least 1")
        self.config, self.pairs = config, pairs
        self.folder = ", ".join(config.sources)  # named in errors, like ShardPairs' folder
        self.split = "train"
        if index is None:  # a misspelt query category matched no object without a word
            labels = SourceConfig(format=config.format, keep_labels=list(config.query_categories),
                                  drop_labels=list(config.drop_labels))
            check_label_names(config.sources, labels, keys=("photo_query_categories", "photo_drop_labels"))
        self.index = index or PhotoIndex.from_sources([Path(s) for s in config.sources], config.source_config())
        self.sampler = PhotoPairSampler(self.index, config.pair_config(pairs.negative_fraction))
        self.seed = seed
        self.units = list(range(config.epoch_size))  # one unit per sample (the loop checks there are enough)
        self.cache: PhotoFeatureCache | None = None
        if config.cache_features:
            # Built before the loader forks, so workers share it copy-on-write.
            self.cache = PhotoFeatureCache(self.index, config.medium_hw[0], backbone[0], backbone[1])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, slot, slots, skip = self._worker_slot()
        corrupt = 0
        for position, k in enumerate(range(slot, self.config.epoch_size, slots)):
            if position <= skip:
                continue
            try:
                sample = self.pair(k, self.epoch)
            except InputError as error:  # a photo that became unreadable: counted and skipped
                corrupt += 1
                logger.warning("skipping photo pair %d: %s", k, error)
                continue
            sample.update(worker=torch.tensor(worker), unit=torch.tensor(k), row=torch.tensor(0),
                          position=torch.tensor(position), corrupt=torch.tensor(corrupt))
            yield sample

    def pair(self, k: int, epoch: int = 0) -> dict[str, torch.Tensor]:
        """Sample ``k`` of ``epoch``: a pure function of them and the seed."""
        rng = np.random.default_rng([self.seed, epoch, k])
        plan = self.sampler.plan(rng)
        height, width = self.config.medium_hw
        if self.cache is None:
            case = self.sampler.render(plan)
            shot = case.query
            medium = {"medium": torch.from_numpy(np.ascontiguousarray(resize_image(case.scene, width, height)))
                      .permute(2, 0, 1).contiguous()}
            target = resize_image(case.target.astype(np.float32), width, height) >= 0.5
        else:
            shot = self.sampler.query_shot(plan)
            medium, target = self._cached_medium(plan, rng)
        # Not mirrored again: the catalogue transform mirrored the shot as configured (and recorded).
        query, query_mask = render_query(shot, self.pairs.query_size, rng, self.pairs.query_fill,
                                         self.pairs.colour_jitter, mirror=0.0)
        categories = self.pairs.categories
        return {
            "query": torch.from_numpy(query).permute(2, 0, 1).contiguous(),
            "query_mask": torch.from_numpy(query_mask)[None],
            **medium,
            "target": torch.from_numpy(target.astype(np.uint8))[None],
            "positive": torch.tensor(plan.positive),
            "label": torch.tensor(categories.index(plan.category) if plan.category in categories else -1),
        }

    def _cached_medium(self, plan: CasePlan, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """The plan's medium as cached features (``medium_feats_<level>``), ``medium_hw`` wide: a
        window of the tiled photos that holds the query's photo, padded with zeros if they are narrower."""
        assert self.cache is not None
        height, width = self.config.medium_hw
        widths = [self.cache.widths[p] for p in plan.tiles]
        starts = np.cumsum([0] + widths[:-1])
        total, step = int(sum(widths)), self.cache.stride
        lo, hi = 0, max(0, total - width)
        if plan.positive:  # keep the query's photo inside the window where it fits, else its object
            mask = self.index.records[plan.photo].mask(plan.obj)
            placed = resize_image(mask.astype(np.float32), widths[plan.position], height) >= 0.5
            a, b = int(starts[plan.position]), int(starts[plan.position] + widths[plan.position])
            if b - a > width:  # a photo wider than the medium: the window held its right end, object or not
                columns = np.flatnonzero(placed.any(axis=0))
                if columns.size:
                    a, b = a + int(columns[0]), a + int(columns[-1]) + 1
            lo, hi = max(0, min(hi, b - width)), max(0, min(hi, a))
        # Windows start on the feature grid, none before lo (an object's end need not lie on it).
        first, last = -(-lo // step), hi // step
        x0 = int(rng.integers(first, last + 1)) * step if hi > lo and last >= first else lo // step * step
        feats = self.cache.medium(plan.tiles, x0, width)
        target = np.zeros((height, width), bool)
        if plan.positive:
            a = int(starts[plan.position]) - x0
            lo_x, hi_x = max(0, a), min(width, a + widths[plan.position])
            if hi_x > lo_x:
                target[:, lo_x:hi_x] = placed[:, lo_x - a:hi_x - a]
        return {f"medium_feats_{i}": f for i, f in enumerate(feats)}, target


def describe_index(index: PhotoIndex) -> str:
    categories: dict[str, int] = {}
    for record in index.records:
        for category in record.categories:
            categories[category] = categories.get(category, 0) + 1
    top = sorted(categories.items(), key=lambda kv: -kv[1])[:6]
    return f"{len(index)} photos, {sum(categories.values())} objects ({', '.join(f'{k} {v}' for k, v in top)} ...)"


def photo_patterns(ids: Sequence[int]) -> list[str]:
    """Four-digit stems for SourceConfig.include (CCP-style numbered photos)."""
    return [f"{i:04d}" for i in ids]
