"""Cached cases of ``benchmarks/instance_head.py``: CCP photos encoded once at the benchmark's scene
height, catalogue shots of their garments encoded once at the garment's size, the head whose map of
the correlated features training changes (replaying the search's readout on cached features), and the
proxy evaluation used to choose (validation and calibration photos, never the test photos)."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))
import augment  # noqa: E402,F401  (before torch: OpenMP's wait policy, as synth sets it)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import ccp  # noqa: E402
from metrics import Outcome, summarise  # noqa: E402

from augment.catalogue import tile_photos  # noqa: E402
from augment.photo_pairs import PhotoIndex, PhotoPairSampler  # noqa: E402
from pipelines.search_inputs import resize_hw, to_tensor  # noqa: E402
from train.correlation import ResidualProjection  # noqa: E402
from train.model import MediumFeatures, QueryFeatures, QuerySearchNet  # noqa: E402

SCENE_HEIGHT = 416
CPU = torch.device("cpu")

@dataclass
class Photo:
    s8: torch.Tensor  # 1 x 40 x h x w, float16
    s16: torch.Tensor  # 1 x 112 x h/2 x w/2, float16
    size: tuple[int, int]
    category_objects: dict[str, list[int]]  # category -> object indices (usable as queries or not)


@dataclass
class Shot:
    photo: int
    obj: int
    category: str
    cells: torch.Tensor  # bool, the garment on its photo's stride-8 grid (cover >= 0.5)
    loose: torch.Tensor  # bool, cover > 0: where a best cell counts as a hit
    views: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = field(default_factory=list)
    # per view (given, mirrored): s8, s16 (float16) and the masks pooled on each level's grid


class Bank:
    """Cached backbone features of a range of CCP photos and of catalogue shots of their garments."""

    def __init__(self, model: QuerySearchNet, split: str, first: int, last: int, draws: int, seed: int,
                 max_shots: int | None = None) -> None:
        config = ccp.source_config(split)
        config.include = ccp.id_patterns(first, last)
        self.index = PhotoIndex.from_sources([ccp.CCP], config)
        self.sampler = PhotoPairSampler(self.index, ccp.pair_config())
        self.model = model
        self.photos: list[Photo] = []
        images = []
        with torch.no_grad():
            for p, record in enumerate(self.index.records):
                image = self.index.image(p)
                images.append(image)
                tile, _ = tile_photos([image], SCENE_HEIGHT)
                s8, s16 = self._encode(tile)
                by_category: dict[str, list[int]] = {}
                for o, category in enumerate(record.categories):
                    by_category.setdefault(category, []).append(o)
                self.photos.append(Photo(s8, s16, tile.shape[:2], by_category))
            queries = self.sampler.queries[:max_shots]
            self.shots: list[list[Shot]] = []  # per garment, its draws
            for p, o in queries:
                record = self.index.records[p]
                mask = record.mask(o)
                photo = self.photos[p]
                grid = photo.s8.shape[-2:]
                cover = F.adaptive_avg_pool2d(torch.from_numpy(resize_hw(mask.astype(np.float32), *photo.size))[None, None],
                                              grid)[0, 0]
                cells = cover >= 0.5 if bool((cover >= 0.5).any()) else cover >= 0.5 * float(cover.max())
                ys, xs = np.nonzero(resize_hw(mask.astype(np.uint8), *photo.size))
                if ys.size == 0:
                    continue
                object_hw = (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
                draws_of = []
                for d in range(draws):
                    rng = np.random.default_rng(np.random.SeedSequence([seed, p, o, d]))
                    params = self.sampler.catalogue.sample(rng)
                    rgba = self.sampler.catalogue.apply(images[p], mask, params)
                    shot = Shot(p, o, record.categories[o], cells, cover > 0)
                    shot.views = self._query(rgba, object_hw)
                    if shot.views:
                        draws_of.append(shot)
                if draws_of:
                    self.shots.append(draws_of)
        self.by_category = {c: list(self.index.photos_with(c)) for c in {c for r in self.index.records for c in r.categories}}

    def _encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        s8, s16 = self.model.backbone.forward_features(to_tensor([rgb], CPU, False), max_stride=16)
        return s8.half(), s16.half()

    def _query(self, rgba: np.ndarray, object_hw: tuple[int, int]) -> list[Any]:
        """The shot cropped to its garment and resized to the garment's size in its photo: the
        kernel the search's best-matching level would correlate."""
        alpha = rgba[..., 3] > 127
        ys, xs = np.nonzero(alpha)
        if ys.size == 0:
            return []
        crop = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        h, w = max(16, int(object_hw[0])), max(16, int(object_hw[1]))
        crop = resize_hw(crop, h, w)
        rgb = np.ascontiguousarray(crop[..., :3])
        mask = crop[..., 3].astype(np.float32) / 255.0
        views = []
        for mirrored in (False, True):
            view = np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb
            m = torch.from_numpy(np.ascontiguousarray(mask[:, ::-1] if mirrored else mask))[None, None]
            s8, s16 = self._encode(view)
            views.append((s8, s16, [F.adaptive_avg_pool2d(m, s8.shape[-2:]), F.adaptive_avg_pool2d(m, s16.shape[-2:])]))
        return views

    def look_alikes(self, photo: int, category: str) -> list[int]:
        return [p for p in self.by_category.get(category, []) if p != photo]

    @classmethod
    def cached(cls, path: Path | None, *args: Any) -> "Bank":
        """The bank from ``path`` when it was written with the same arguments (a local cache of
        tensors this script wrote), else built and written there. Its photos and shots are stored as
        plain containers of tensors and numbers, read with ``torch.load(weights_only=True)``: a cache
        file handed on cannot run code (its pickled dataclasses could be read only with full pickle). A file that
        does not read so (an older cache) is built again."""
        if path is not None and path.is_file():
            try:
                state = torch.load(path, weights_only=True)
            except Exception:  # noqa: BLE001 - not a cache of this form: built again below
                state = None
            if isinstance(state, dict) and state.get("args") == [a for a in args[1:]]:
                return cls.from_plain(state["bank"])
        bank = cls(*args)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"args": list(args[1:]), "bank": bank.to_plain()}, path)
        return bank

    def to_plain(self) -> dict[str, Any]:
        """The photos, shots and categories as dicts, lists, tensors, strings and numbers only."""
        return {"photos": [{"s8": p.s8, "s16": p.s16, "size": [int(v) for v in p.size],
                            "category_objects": {str(c): [int(o) for o in os] for c, os in p.category_objects.items()}}
                           for p in self.photos],
                "shots": [[{"photo": int(s.photo), "obj": int(s.obj), "category": str(s.category), "cells": s.cells,
                            "loose": s.loose, "views": s.views} for s in draws] for draws in self.shots],
                "by_category": {str(c): [int(p) for p in ps] for c, ps in self.by_category.items()}}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> "Bank":
        bank = cls.__new__(cls)
        bank.photos = [Photo(p["s8"], p["s16"], tuple(p["size"]), p["category_objects"]) for p in plain["photos"]]
        bank.shots = [[Shot(**shot) for shot in draws] for draws in plain["shots"]]
        bank.by_category = plain["by_category"]
        return bank


class Head(nn.Module):
    """What training changes: the stride-16 stage (from stride-8 features) and/or a residual
    projection of each correlated level. At the start it is the untrained network."""

    def __init__(self, model: QuerySearchNet, finetune: bool, hidden: int) -> None:
        super().__init__()
        self.model = model
        last = model.backbone.last_block(16)
        self.first = model.backbone._tap_indices[0] + 1
        self.blocks = nn.ModuleList(copy.deepcopy(model.backbone._blocks[self.first:last + 1])) if finetune else None
        if self.blocks is not None:
            self.blocks.eval()  # BatchNorm keeps its statistics; its affine is trained
        channels = list(model.backbone.feature_channels)[:2]
        self.projections = (nn.ModuleList(ResidualProjection(c, hidden) for c in channels) if hidden > 0 else None)

    def levels(self, s8: torch.Tensor, s16: torch.Tensor) -> list[torch.Tensor]:
        x8 = s8.float()
        if self.blocks is None:
            x16 = s16.float()
        else:
            x16 = x8
            for block in self.blocks:
                x16 = block(x16)
        feats = [x8, x16]
        return feats if self.projections is None else [p(f) for p, f in zip(self.projections, feats)]

    def logits(self, views: list[Any], photo: Photo, encoded: dict[int, MediumFeatures] | None = None,
               key: int | None = None) -> torch.Tensor:
        """Grid logits of a shot (given and mirrored, max) over one photo: the search's readout."""
        medium = None if encoded is None else encoded.get(key)
        if medium is None:
            feats = self.levels(photo.s8, photo.s16)
            medium = MediumFeatures(feats, feats[0], None, photo.size)
            if encoded is not None:
                encoded[key] = medium
        kernels = [QueryFeatures(self.levels(s8, s16), masks, None) for s8, s16, masks in views]
        best = None
        for scores in self.model.correlation_maps_many(kernels, medium):
            out = self.model.conversion.readout(scores)
            best = out if best is None else torch.maximum(best, out)
        assert best is not None
        return best[0, 0]


def roi_covers(bank: Bank, split: str, first: int, last: int) -> list[list[tuple[str, torch.Tensor]]]:
    """Per photo of ``bank``: every garment's (category, cover of each stride-8 cell) (the ROIs the
    pooled objective contrasts)."""
    config = ccp.source_config(split)
    config.include = ccp.id_patterns(first, last)
    index = PhotoIndex.from_sources([ccp.CCP], config)
    garments = set(ccp.GARMENTS)
    out = []
    for record, photo in zip(index.records, bank.photos):
        rois = []
        for o, category in enumerate(record.categories):
            if category in garments:
                mask = resize_hw(record.mask(o).astype(np.float32), *photo.size)
                cover = F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], photo.s8.shape[-2:])[0, 0]
                if float(cover.sum()) >= 4.0:  # at least four cells' worth
                    rois.append((category, cover))
        out.append(rois)
    return out


def pooled(feats: list[torch.Tensor], covers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per level, the L2-normalised mean feature over a cover (1 x C x h x w, h x w weights)."""
    return [F.normalize((f[0] * (c / c.sum().clamp_min(1e-6))).sum((-2, -1)), dim=0) for f, c in zip(feats, covers)]


def proxy_cases(bank: Bank, seed: int) -> list[tuple[Shot, list[int], bool]]:
    """One shot per garment, a positive scene (its photo + 2 others) and a negative scene (3 others,
    one at least holding its category), fixed by ``seed``."""
    cases = []
    everyone = list(range(len(bank.photos)))
    for g, draws in enumerate(bank.shots):
        shot = draws[0]
        rng = np.random.default_rng(np.random.SeedSequence([seed, g]))
        alike = bank.look_alikes(shot.photo, shot.category)
        others = [p for p in everyone if p != shot.photo]
        if not alike or len(others) < 3:
            continue

        def pick(count: int, must_alike: bool) -> list[int]:
            chosen = [int(rng.choice(alike))] if must_alike else []
            while len(chosen) < count:
                pool = alike if rng.random() < 0.5 else others
                p = int(rng.choice(pool))
                if p not in chosen:
                    chosen.append(p)
            return chosen

        cases.append((shot, [shot.photo] + pick(2, False), True))
        cases.append((shot, pick(3, True), False))
    return cases


def proxy_eval(head: Head, bank: Bank, cases: list[tuple[Shot, list[int], bool]]) -> dict[str, float]:
    outcomes = []
    encoded: dict[int, MediumFeatures] = {}
    with torch.no_grad():
        for shot, photos, positive in cases:
            best, correct = -math.inf, False
            for p in photos:
                logits = head.logits(shot.views, bank.photos[p], encoded, p)
                peak = float(logits.max())
                if peak > best:
                    best = peak
                    cell = int(logits.argmax())
                    correct = positive and p == shot.photo and bool(shot.loose.flatten()[cell])
            outcomes.append(Outcome(positive, correct, best))
    return summarise(outcomes)


