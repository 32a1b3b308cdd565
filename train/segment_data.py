"""Segmentation samples streamed from shards: labelled photos, automatically labelled photos, composites.

Every row has the composite schema of :mod:`augment.schema`: an image and an instance-id mask whose
ids the row's ``objects`` name with a category. :class:`train.segment_config.ClassMap` turns that
into a class map; id 0 is a composite's background: on a labelled background (copy-paste, the
``background_labels`` columns of :mod:`augment.labelled_backgrounds`) the background photo's own
labels through the same class map, else ``composite_background`` (its class or no loss). Labelled photos (``photos-*.parquet``, written by :mod:`augment.photo_shards`) and
automatically labelled ones (``pseudo-*.parquet``, written by `synth extract`) label every pixel
through their objects, background included, so the rule for id 0 never touches them.

Streaming, sharding across loader workers and DDP ranks, shuffling and exact resumption are those
of :class:`train.data.ShardPairs`; this module only says which row groups to read (several
folders, each kind of row repeated so an epoch holds them in the ``mix`` proportions) and how a
row becomes a sample. Training samples get strong augmentation (:class:`SegmentAugment`); held-out
samples are resized to ``eval_size``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from augment.imageio import InputError, decode_image, resize_image
from augment.resizing import resize_labels
from augment.shards import find_shards, open_shard
from augment.storage import Place, as_place
from augment.validation import check_instance
from train.data import PairConfig, ShardPairs
from train.segment_config import IGNORE_INDEX, PHOTO_KINDS, SegmentConfig

logger = logging.getLogger(__name__)


def shard_kind(path: Path) -> str:
    """``photos``, ``pseudo`` or ``composites``, from a shard's file name."""
    return PHOTO_KINDS.get(path.name.split("-", 1)[0], "composites")


def rows_by_kind(shards: list[Path]) -> dict[str, int]:
    """Rows of each kind of shard (see :func:`shard_kind`)."""
    rows: dict[str, int] = {}
    for path in shards:
        rows[shard_kind(path)] = rows.get(shard_kind(path), 0) + open_shard(path).metadata.num_rows
    return rows


def row_in_split(row_id: str, split: str, eval_fraction: float) -> bool:
    """Rows are held out by a hash of their id; with ``eval_fraction`` 0 every split is every row."""
    if split == "all" or eval_fraction <= 0:
        return True
    digest = hashlib.sha1(row_id.encode("utf-8")).digest()
    held_out = int.from_bytes(digest[:8], "big") / 2.0**64 < eval_fraction
    return held_out == (split == "eval")


def mix_repeats(rows: dict[str, int], mix: dict[str, float]) -> dict[str, int]:
    """How often each kind's row groups are listed per epoch so kinds appear in the ``mix`` proportions.

    A kind with share 0 is left out; the kind most plentiful relative to its share is read once, the others
    repeated (rounded to whole listings) to match it.
    """
    shares = {kind: float(mix.get(kind, 0.0)) for kind, count in rows.items() if count}
    used = {kind: share for kind, share in shares.items() if share > 0}
    if not used:
        raise InputError(f"segment.mix gives no share to the kinds of rows found ({', '.join(sorted(rows))})")
    base = max(rows[kind] / share for kind, share in used.items())
    return {kind: max(1, round(share * base / rows[kind])) if kind in used else 0 for kind, share in shares.items()}


class _NoCutouts:
    """Segmentation reads no query cutouts: an empty library for :meth:`ShardPairs.__iter__`."""

    def ids(self) -> list[str]:
        return []


@dataclass
class SegmentAugment:
    """Strong augmentation of a (photo, class map) pair: scale, crop, flip, colour, grey, blur.

    ``sample`` draws the parameters from a seeded generator, ``apply`` is a pure function of them.
    """

    config: SegmentConfig

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        jitter = c.colour_jitter
        return {
            "scale": float(rng.uniform(*c.scale_range)),
            "crop": (float(rng.random()), float(rng.random())),  # crop origin as fractions of the slack
            "flip": bool(c.hflip and rng.random() < 0.5),
            "colour": [float(x) for x in rng.uniform(1 - jitter, 1 + jitter, 3)],  # brightness, contrast, saturation
            "hue": float(rng.uniform(-c.hue_jitter, c.hue_jitter)),
            "grey": bool(rng.random() < c.grayscale_p),
            "blur": float(rng.uniform(0.1, 1.5)) if rng.random() < c.blur_p else 0.0,
        }

    def apply(self, image: np.ndarray, target: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        h, w = target.shape
        factor = c.short_side * params["scale"] / min(h, w)
        new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
        image = resize_image(image, new_w, new_h)
        target = resize_labels(target, new_h, new_w)
        size = c.crop_size
        pad_h, pad_w = max(0, size - new_h), max(0, size - new_w)
        if pad_h or pad_w:  # pixels outside the photo carry no loss
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(124, 116, 104))
            target = cv2.copyMakeBorder(target, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
        fx, fy = params["crop"]
        x0 = int(fx * (image.shape[1] - size + 1))
        y0 = int(fy * (image.shape[0] - size + 1))
        image, target = image[y0:y0 + size, x0:x0 + size], target[y0:y0 + size, x0:x0 + size]
        if params["flip"]:
            image, target = image[:, ::-1], target[:, ::-1]
        return colour_augment(np.ascontiguousarray(image), params), np.ascontiguousarray(target)


def colour_augment(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Brightness, contrast, saturation, hue, grey and blur of ``params`` (see :meth:`SegmentAugment.sample`)."""
    brightness, contrast, saturation = params["colour"]
    x = image.astype(np.float32) * brightness
    mean = float(x.mean())
    x = (x - mean) * contrast + mean
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * (0.0 if params["grey"] else saturation) + grey
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if params["hue"] and not params["grey"]:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + round(params["hue"] * 180)) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if params["blur"] > 0:
        out = cv2.GaussianBlur(out, (0, 0), params["blur"])
    return out


class SegmentShards(ShardPairs):
    """(image, target) samples from one or more shard folders.

    Samples: ``image`` uint8 3×H×W, ``target`` uint8 H×W (class index, :data:`IGNORE_INDEX` = no loss),
    plus the stream bookkeeping of :class:`ShardPairs` (``worker``, ``position``, ``corrupt``,
    ``unit``, ``row``). Training samples are ``crop_size`` squares; evaluation samples ``eval_size``.
    """

    def __init__(self, folders: list[Path] | Path, config: SegmentConfig, split: str = "train", seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 64) -> None:
        self.folders = [as_place(f) for f in (folders if isinstance(folders, (list, tuple)) else [folders])]
        if not self.folders:
            raise InputError("no shard folders given")
        check_instance(config, SegmentConfig, "config")
        self.segment = config
        self.class_map = config.class_map()
        self.unknown_categories: set[str] = set()  # warned of, in this process
        self.augment = SegmentAugment(config)
        super().__init__(self.folders[0], PairConfig(eval_fraction=config.eval_fraction, shuffle_buffer=shuffle_buffer),
                         split=split, seed=seed, rank=rank, world_size=world_size)
        self.rows_by_kind = rows_by_kind(self.shards)
        if split == "train":  # evaluation reads every row once, whatever the mix
            repeats = mix_repeats(self.rows_by_kind, config.mix)
            self.units = [unit for unit in self.units for _ in range(repeats[shard_kind(unit[0])])]
            logger.info("segmentation rows per kind %s, row groups listed %s times per epoch", self.rows_by_kind, repeats)

    extra_columns = ("background_labels", "background_categories")

    def _find_shards(self) -> list[Place]:
        return find_shards(self.folders)

    def _cutouts(self) -> _NoCutouts:  # type: ignore[override]
        return _NoCutouts()

    def _pair(self, image_bytes: bytes, mask_bytes: bytes, objects: list[dict], composite_id: str,  # type: ignore[override]
              cutouts: Any, pool: list[str], rng: np.random.Generator,
              extra: dict[str, Any] | None = None) -> dict[str, torch.Tensor] | None:
        """One sample from a row; ``None`` when the row is not in this split."""
        if not row_in_split(composite_id, self.split, self.segment.eval_fraction):
            return None
        self._check_objects(objects or [], composite_id)  # (ClassMap.target's int(None) was a traceback)
        if not image_bytes or not mask_bytes:
            raise InputError(f"row {composite_id}: image or mask bytes missing")
        image = decode_image(image_bytes, cv2.IMREAD_COLOR, f"row {composite_id} image")
        ids = decode_image(mask_bytes, cv2.IMREAD_UNCHANGED, f"row {composite_id} mask")
        if ids.ndim != 2 or ids.shape != image.shape[:2]:
            raise InputError(f"row {composite_id}: mask {ids.shape} does not match image {image.shape[:2]}")
        self._warn_unknown(objects or [], composite_id)
        labels = (extra or {}).get("background_labels")
        if labels and labels.get("bytes"):
            self._warn_unknown((extra or {}).get("background_categories") or [], composite_id)
            target = self._copy_paste_target(ids, objects or [], labels["bytes"], extra.get("background_categories") or [],
                                             composite_id)
        else:
            background = 0 if self.segment.composite_background == "background" else IGNORE_INDEX
            target = self.class_map.target(ids, objects or [], background)
        if self.split == "train":
            image, target = self.augment.apply(image, target, self.augment.sample(rng))
        else:
            height, width = self.segment.eval_size
            image = resize_image(image, width, height)
            target = resize_labels(target, height, width)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "target": torch.from_numpy(target)}

    def _warn_unknown(self, objects: list[dict], composite_id: str) -> None:
        """A warning, once per category (and process), for each category no class of the class map takes:
        its pixels carry no loss, which a misspelt ``source_labels`` entry otherwise leaves unsaid."""
        for obj in objects:
            category = obj.get("category")
            if isinstance(category, str) and category not in self.unknown_categories and not self.class_map.knows(category):
                self.unknown_categories.add(category)
                logger.warning("category %r (first in row %s) is in no class of segment.classes: its pixels carry "
                               "no loss", category, composite_id)

    def _copy_paste_target(self, ids: np.ndarray, objects: list[dict], label_bytes: bytes, categories: list[dict],
                           composite_id: str) -> np.ndarray:
        """A composite on a labelled background: its labels' classes, overwritten by the visible objects'."""
        labels = decode_image(label_bytes, cv2.IMREAD_UNCHANGED, f"row {composite_id} background labels")
        if labels.ndim != 2 or labels.shape != ids.shape:
            raise InputError(f"row {composite_id}: background labels {labels.shape} do not match mask {ids.shape}")
        named = [{"instance_id": c["id"], "category": c["category"]} for c in categories]
        background = self.class_map.target(labels, named, IGNORE_INDEX)  # label id 0: no label, no loss
        return np.where(ids > 0, self.class_map.target(ids, objects, IGNORE_INDEX), background).astype(np.uint8)
