"""Instance discrimination on real photos: can a trained map of the correlated features (or the
stride-16 stage of the backbone) rank the query's own garment above other garments of its kind?

Issue 8's last target (a trained head >= 0.15 above the untrained network at FPR <= 0.10 on held-out
CCP photos). ``benchmarks/rank_head.py`` (stop 20) trained on 400 fixed tiled scenes and overfitted.
This script makes MANY cases cheaply by working per photo: every train photo (0001-0450) is encoded
once at the benchmark's scene height (416 px), every usable garment is turned into several catalogue
shots (each draw its own mirror / rescale / rotation / recolour), each shot encoded once at the
garment's size in its photo (the scale the search's best level would match). A training case is a
shot against its own photo (the target: the garment's cells) and ``--negatives`` photos holding
another garment of its category (hard negatives); the search's readout of the correlation (query as
given and mirrored, max) is replayed on the cached features. Loss: InfoNCE of the target cells
against every cell of the case's photos, plus softplus(best negative - target peak + 1) across the
batch (the cut hit@FPR makes across queries).

Choosing happens on a proxy, never on the test photos: photos 0451-0500 (validation, early stopping)
and 0501-0600 (calibration), each garment one shot, a positive "scene" = its photo + 2 others, a
negative = 3 other photos, one at least holding its category; score = the best logit, hit = the best
cell on the garment. The head chosen is then saved as a checkpoint (``--save``) and checked with the
real search (``Searcher(checkpoint=...)``, heat map alone, the 160 + 60 calibration cases of
``benchmarks/ccp.py``) by ``--searcher-eval``.

Kinds (``--kind``): ``residual`` (x + W2 relu(W1 x), hidden ``--hidden``, W2 = 0 at the start: the
identity), ``finetune`` (the stride-16 stage, blocks 5-10, trained from cached stride-8 features, the
query branch sharing them; ``--hidden`` > 0 adds the residual projection too).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/
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
from train.model import MediumFeatures, QueryFeatures, QuerySearchNet, SearchNetConfig  # noqa: E402

SEED = 20261204
SCENE_HEIGHT = 416
VALIDATION_FROM = 451  # train photos 0451-0500: early stopping only
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
        tensors this script wrote), else built and written there."""
        if path is not None and path.is_file():
            state = torch.load(path, weights_only=False)
            if state["args"] == [a for a in args[1:]]:
                bank = cls.__new__(cls)
                bank.__dict__.update(state["bank"])
                return bank
        bank = cls(*args)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            keep = {k: v for k, v in bank.__dict__.items() if k in ("photos", "shots", "by_category")}
            torch.save({"args": list(args[1:]), "bank": keep}, path)
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


def pooled_loss(head: Head, bank: Bank, rois: list[list[tuple[str, torch.Tensor]]], batch: list[Shot],
                negatives: int, rng: np.random.Generator, temperature: float) -> torch.Tensor:
    """InfoNCE over pooled features: a shot against its garment in its photo (positive), the
    garments of its category in ``negatives`` other photos and every other key of the batch."""
    queries, keys, positive_index = [], [], []
    encoded: dict[int, list[torch.Tensor]] = {}

    def photo_levels(p: int) -> list[torch.Tensor]:
        if p not in encoded:
            encoded[p] = head.levels(bank.photos[p].s8, bank.photos[p].s16)
        return encoded[p]

    def key(p: int, cover: torch.Tensor) -> list[torch.Tensor]:
        feats = photo_levels(p)
        return pooled(feats, [cover] + [F.adaptive_avg_pool2d(cover[None, None], f.shape[-2:])[0, 0] for f in feats[1:]])

    for shot in batch:
        s8, s16, masks = shot.views[0]
        queries.append(pooled(head.levels(s8, s16), [m[0, 0] for m in masks]))
        own = [c for cat, c in rois[shot.photo] if cat == shot.category]
        cover = max(own, key=lambda c: float((c * shot.cells).sum())) if own else shot.cells.float()
        positive_index.append(len(keys))
        keys.append(key(shot.photo, cover))
        alike = bank.look_alikes(shot.photo, shot.category)
        for p in rng.choice(alike, size=min(negatives, len(alike)), replace=False):
            for category, c in rois[int(p)]:
                if category == shot.category:
                    keys.append(key(int(p), c))
    levels = len(queries[0])
    sim = sum(torch.stack([q[level] for q in queries]) @ torch.stack([k[level] for k in keys]).T
              for level in range(levels)) / levels
    return F.cross_entropy(sim / temperature, torch.tensor(positive_index))


def write_checkpoint(head: Head, hidden: int, step: int, path: Path) -> None:
    """The head as a ``synth train`` checkpoint that ``Searcher(checkpoint=...)`` loads: the untrained
    network with the trained residual projections and/or stride-16 stage put in."""
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig

    model_keys: dict[str, Any] = {"edge_path": False}
    if hidden > 0:
        model_keys.update(residual_projection=True, residual_hidden=hidden)
    if head.blocks is not None:
        model_keys.update(freeze_backbone=True, trainable_blocks=len(head.blocks))
    config = TrainConfig(model=model_keys)
    model = QuerySearchNet(config.model_config())
    if head.projections is not None:
        assert model.projections is not None
        model.projections.load_state_dict(head.projections.state_dict())
    if head.blocks is not None:
        for offset, block in enumerate(head.blocks):
            model.backbone._blocks[head.first + offset].load_state_dict(block.state_dict())
    save_checkpoint(path, model=model, optimizer=None, step=step, config=config.to_dict(), config_hash=config.hash())


def searcher_eval(checkpoint: Path | None, heat_boxes: bool | None = None) -> dict[str, float]:
    """The real search's heat map alone (no verification) on the 160 + 60 calibration cases."""
    from metrics import box_iou
    from pipelines.search import Searcher

    searcher = Searcher(checkpoint=checkpoint, device="cpu", untrained=checkpoint is None, verify=False)
    if heat_boxes is not None:
        searcher.heat_boxes = heat_boxes
    outcomes = []
    for case in ccp.search_cases("calibrate"):
        best = searcher.find_many(case.query, [case.scene], keep_images=False)[0].best
        correct = bool(case.positive and best is not None and box_iou(best.box, case.boxes[0]) >= 0.5)
        outcomes.append(Outcome(case.positive, correct, best.score if best is not None else -np.inf))
    return summarise(outcomes)


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


def shown(f: dict[str, float]) -> str:
    return f"top-1 {f['top1']:.3f}, hit@FPR<=0.1 {f['hit_at_fpr10']:.3f}, AUC {f['auc']:.3f}"


def case_loss(head: Head, bank: Bank, batch: list[Shot], negatives: int, rng: np.random.Generator,
              rank_weight: float) -> tuple[torch.Tensor, float, float]:
    nce, peaks, negative_max = [], [], []
    for shot in batch:
        alike = bank.look_alikes(shot.photo, shot.category)
        chosen = [int(p) for p in rng.choice(alike, size=min(negatives, len(alike)), replace=False)]
        positive = head.logits(shot.views, bank.photos[shot.photo])
        others = [head.logits(shot.views, bank.photos[p]) for p in chosen]
        target = positive[shot.cells]
        every = torch.cat([positive.flatten()] + [o.flatten() for o in others])
        nce.append(torch.logsumexp(every, 0) - torch.logsumexp(target, 0))
        peaks.append(target.max())
        negative_max.append(torch.stack([o.max() for o in others]).max())
    rank = F.softplus(torch.stack(negative_max)[None, :] - torch.stack(peaks)[:, None] + 1.0).mean()
    info = torch.stack(nce).mean()
    return info + rank_weight * rank, float(info.detach()), float(rank.detach())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("residual", "finetune"), default="residual")
    parser.add_argument("--objective", choices=("heat", "pooled"), default="heat",
                        help="heat: InfoNCE + ranking on the replayed heat maps; pooled: instance "
                             "discrimination on pooled (masked) features.")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=16, help="Residual projection's hidden width (0: none).")
    parser.add_argument("--draws", type=int, default=3, help="Catalogue shots per training garment.")
    parser.add_argument("--garments", type=int, default=None, help="Training garments (default all).")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--rank-weight", type=float, default=1.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--save", type=Path, default=None, help="Write the best head (validation) as a checkpoint.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="Folder for the cached features (reused by later runs with the same draws).")
    parser.add_argument("--searcher-eval", action="store_true",
                        help="After --save: the real search's heat map alone on the calibration cases.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not ccp.available():
        print(ccp.skip_message())
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = QuerySearchNet(SearchNetConfig()).eval()
    model.requires_grad_(False)
    cache = args.cache
    train = Bank.cached(None if cache is None else cache / f"train_{args.draws}_None.pt",
                        model, "train", 1, VALIDATION_FROM - 1, args.draws, SEED, None)
    train.shots = train.shots[:args.garments]
    valid = Bank.cached(None if cache is None else cache / "valid.pt", model, "train", VALIDATION_FROM, 500, 1, SEED + 1)
    calib = Bank.cached(None if cache is None else cache / "calib.pt", model, "calibrate", 501, 600, 1, SEED + 2)
    valid_cases, calib_cases = proxy_cases(valid, SEED + 3), proxy_cases(calib, SEED + 4)
    print(f"cached {len(train.photos)} photos / {len(train.shots)} garments x {args.draws} shots (train), "
          f"{len(valid_cases)} validation and {len(calib_cases)} calibration proxy cases in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    head = Head(model, args.kind == "finetune", args.hidden)
    rois = roi_covers(train, "train", 1, VALIDATION_FROM - 1) if args.objective == "pooled" else []
    params = [p for p in head.parameters() if p.requires_grad and not any(p is q for q in model.parameters())]
    if head.blocks is not None:
        head.blocks.requires_grad_(True)
        params = list(head.blocks.parameters()) + ([] if head.projections is None else list(head.projections.parameters()))
    print(f"{sum(p.numel() for p in params)} trained parameters", flush=True)
    v0, c0 = proxy_eval(head, valid, valid_cases), proxy_eval(head, calib, calib_cases)
    print(f"step 0: validation {shown(v0)}; calibration {shown(c0)}", flush=True)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(0)
    order: list[int] = []
    best = (v0["hit_at_fpr10"] + v0["top1"], 0, copy.deepcopy(head.state_dict()))
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order += [int(i) for i in rng.permutation(len(train.shots))]
        picked, order = order[:args.batch], order[args.batch:]
        batch = [train.shots[g][int(rng.integers(len(train.shots[g])))] for g in picked]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        if args.objective == "pooled":
            loss = pooled_loss(head, train, rois, batch, args.negatives, rng, args.temperature)
            info, rank = float(loss.detach()), 0.0
        else:
            loss, info, rank = case_loss(head, train, batch, args.negatives, rng, args.rank_weight)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step}: loss {float(loss.detach()):.3f} (InfoNCE {info:.3f}, rank {rank:.3f}), "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            v = proxy_eval(head, valid, valid_cases)
            print(f"step {step}: validation {shown(v)}", flush=True)
            if v["hit_at_fpr10"] + v["top1"] > best[0]:
                best = (v["hit_at_fpr10"] + v["top1"], step, copy.deepcopy(head.state_dict()))
    # Calibration at the last step and at the best step on validation (step 0's above).
    print(f"step {args.steps} (last): calibration {shown(proxy_eval(head, calib, calib_cases))}", flush=True)
    if best[1] not in (0, args.steps):
        head.load_state_dict(best[2])
        print(f"step {best[1]} (best on validation): calibration {shown(proxy_eval(head, calib, calib_cases))}",
              flush=True)
    print(f"best on validation: step {best[1]}", flush=True)
    if args.save is not None:
        head.load_state_dict(best[2])
        write_checkpoint(head, args.hidden, best[1], args.save)
        print(f"wrote {args.save}", flush=True)
        if args.searcher_eval:
            for boxes in (False, True):
                print(f"{args.save}, the search's heat map alone on the calibration cases "
                      f"({'heat-region' if boxes else 'scale'} boxes): {shown(searcher_eval(args.save, boxes))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
