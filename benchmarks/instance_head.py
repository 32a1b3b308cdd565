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
query branch sharing them; ``--hidden`` > 0 adds the residual projection too), ``readout`` (the
readout's weights over the six score maps, 2 levels x 3 scale pairs, as gain x softmax(a): their sum
and the bias kept, so the heat stays on the untrained scale; the correlation maps are cached once and
only these shares train, with the heat objective). ``--objective pooled``: instead of heat maps,
InfoNCE (``--temperature``) of the shot's masked mean feature against its garment's in its photo,
the garments of its category in ``--negatives`` other photos and every other key of the batch.

Measured at stop 22 (2-core CPU shared with another helper's jobs, load 2-3.7, one thread; 450
train photos, 780 garments x 3 shots; proxy: 178 validation and 366 calibration cases; "real
calibration" = ``searcher_eval``, the search's heat map alone on the 160 + 60 calibration cases;
figures top-1 / hit@FPR<=0.1 / AUC). Step 0 (the untrained network): proxy validation 0.809 / 0.809 /
0.807, proxy calibration 0.863 / 0.842 / 0.853; real calibration 0.975 / 0.838 / 0.924.

- ``--kind residual --hidden 16 --lr 1e-3 --steps 300`` (heat objective; 5-10 s a step here): loss
  3.4 -> 2.6 by step 60; step 50 validation 0.809 / 0.798 / 0.801, calibration 0.869 / 0.765 /
  0.837: worse, stopped at step 60.
- ``--objective pooled --hidden 16 --lr 1e-3 --batch 32 --steps 600``: loss 2.1 -> 0.45, validation
  0.809 / 0.798 / 0.805 at every eval; calibration at step 600 0.863 / 0.820 / 0.853. With ``--lr
  1e-2 --steps 400``: loss -> 0.2, validation 0.820 / 0.798 / 0.811; calibration 0.869 / 0.820 /
  0.854. The pooled features separate instances, the correlation's heat hardly moves.
- ``--objective pooled --kind finetune --hidden 0 --lr 1e-4 --batch 16 --steps 120 --eval-every
  40`` (the stride-16 stage, 645k parameters; the heat objective through it was too slow here):
  validation 0.820 / 0.820 / 0.818 at steps 40 and 80; calibration step 120 0.852 / 0.842 / 0.849,
  step 40 (best on validation) 0.858 / 0.842 / 0.854; real calibration (step 40) 0.944 / 0.906 /
  0.918 (scale boxes).
- ``--kind readout --lr 0.05 --weight-decay 0 --batch 16 --steps 300 --eval-every 50`` (300
  training cases, 7 parameters of which 6 train): the shares go to the stride-16 map at the query's
  own scale ([0.022, 0.021, 0.004, 0.911, 0.038, 0.004] at step 100, the best on validation; 0.988 by
  step 300). Validation 0.854 / 0.854 / 0.853 from step 100 on; calibration 0.858 / 0.858 / 0.856
  (best and last); real calibration 0.969 / 0.938 / 0.950 (+0.100 at FPR <= 0.1 over untrained).
  ``--readout-garments 780``: the same shares (0.986), calibration 0.858 / 0.858 / 0.857.
  Test photos, once, at the end (``python benchmarks/search_real.py --sets ccp --device cpu
  --checkpoint CKPT``, 160 + 60): heat map alone untrained 0.969 / 0.794 / 0.913, this head 0.963 /
  0.806 / 0.905 (+0.012); fused untrained 1.000 / 0.994 / 0.996, this head 0.994 / 0.988 / 0.993
  (with the untrained network's fusion model; the head's heat threshold is not calibrated: FPR 0.567
  at the untrained 0.36). Issue 8's +0.15 is not met; the real calibration's +0.100 did not hold.

hit@FPR<=0.1 on 60 negatives is set by the sixth-highest negative: the real calibration figure moves
by 0.07-0.10 where the 366-case proxy moves by 0.00-0.02 (the fine-tuned stage: proxy 0.842 ->
0.842, real 0.838 -> 0.906), so real-calibration gains under ~0.1 are not evidence here.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
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
from bench_args import Parser, at_least, output_file  # noqa: E402
from metrics import Outcome, shown, summarise  # noqa: E402

from instance_cases import Bank, Head, Photo, Shot, pooled, proxy_cases, proxy_eval, roi_covers  # noqa: E402
from instance_checkpoint import searcher_eval, write_checkpoint  # noqa: E402
from train.model import MediumFeatures, QueryFeatures, QuerySearchNet, SearchNetConfig  # noqa: E402

SEED = 20261204
VALIDATION_FROM = 451  # train photos 0451-0500: early stopping only


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


class WeightedReadout(nn.Module):
    """The readout's weights over the score maps as ``gain * softmax(a)`` (a = 0: the untrained mean,
    its bias kept): the heat stays on the untrained network's scale (thresholds, the second pass's
    trigger), only the levels' and scale pairs' shares are learned."""

    def __init__(self, readout: nn.Conv2d) -> None:
        super().__init__()
        self.gain = float(readout.weight.sum())
        self.bias = float(readout.bias)
        self.a = nn.Parameter(torch.zeros(readout.weight.shape[1]))

    def weights(self) -> torch.Tensor:
        return self.gain * torch.softmax(self.a, 0)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        """``stack``: views x maps x h x w correlation maps -> h x w logits (max over views)."""
        return (torch.einsum("vshw,s->vhw", stack, self.weights()) + self.bias).max(0).values


def map_stack(head: Head, views: list[Any], photo: Photo, encoded: dict[int, MediumFeatures], key: int) -> torch.Tensor:
    """The correlation maps (views x maps x h x w) of a shot over a photo, float16."""
    medium = encoded.get(key)
    if medium is None:
        feats = head.levels(photo.s8, photo.s16)
        medium = encoded[key] = MediumFeatures(feats, feats[0], None, photo.size)
    kernels = [QueryFeatures(head.levels(s8, s16), masks, None) for s8, s16, masks in views]
    return torch.cat(head.model.correlation_maps_many(kernels, medium)).half()


def run_readout(args: argparse.Namespace, head: Head, train: Bank, valid: Bank, calib: Bank,
                valid_cases: list[Any], calib_cases: list[Any]) -> nn.Conv2d:
    """``--kind readout``: the correlation maps cached once (nothing before the readout trains), the
    maps' shares learned with the heat objective; returns the trained readout as the network's conv."""
    start = time.perf_counter()
    rng = np.random.default_rng(1)
    with torch.no_grad():
        cases = []
        encoded: dict[int, MediumFeatures] = {}
        for draws in train.shots[:args.readout_garments]:
            shot = draws[int(rng.integers(len(draws)))]
            alike = train.look_alikes(shot.photo, shot.category)
            chosen = [int(p) for p in rng.choice(alike, size=min(args.negatives, len(alike)), replace=False)]
            cases.append((shot.cells, map_stack(head, shot.views, train.photos[shot.photo], encoded, shot.photo),
                          [map_stack(head, shot.views, train.photos[p], encoded, p) for p in chosen]))
            if len(encoded) > 200:
                encoded.clear()

        def proxy(bank: Bank, proxy_list: list[Any]) -> list[Any]:
            out, enc = [], {}
            for shot, photos, positive in proxy_list:
                out.append((shot, positive, [(p, map_stack(head, shot.views, bank.photos[p], enc, p)) for p in photos]))
            return out

        valid_maps, calib_maps = proxy(valid, valid_cases), proxy(calib, calib_cases)
    print(f"cached correlation maps of {len(cases)} training and the proxy cases in {time.perf_counter() - start:.0f} s",
          flush=True)
    readout = WeightedReadout(head.model.conversion.readout)

    def evaluate(maps: list[Any]) -> dict[str, float]:
        outcomes = []
        with torch.no_grad():
            for shot, positive, stacks in maps:
                best, correct = -math.inf, False
                for p, stack in stacks:
                    logits = readout(stack.float())
                    if float(logits.max()) > best:
                        best = float(logits.max())
                        correct = positive and p == shot.photo and bool(shot.loose.flatten()[int(logits.argmax())])
                outcomes.append(Outcome(positive, correct, best))
        return summarise(outcomes)

    print(f"readout step 0: validation {shown(evaluate(valid_maps))}; calibration {shown(evaluate(calib_maps))}", flush=True)
    optimizer = torch.optim.AdamW(readout.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    best = (-1.0, 0, readout.a.detach().clone())
    order: list[int] = []
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order += [int(i) for i in rng.permutation(len(cases))]
        picked, order = order[:args.batch], order[args.batch:]
        nce, peaks, negative_max = [], [], []
        for i in picked:
            cells, positive_stack, negative_stacks = cases[i]
            positive = readout(positive_stack.float())
            others = [readout(n.float()) for n in negative_stacks]
            target = positive[cells]
            every = torch.cat([positive.flatten()] + [o.flatten() for o in others])
            nce.append(torch.logsumexp(every, 0) - torch.logsumexp(target, 0))
            peaks.append(target.max())
            negative_max.append(torch.stack([o.max() for o in others]).max())
        rank = F.softplus(torch.stack(negative_max)[None, :] - torch.stack(peaks)[:, None] + 1.0).mean()
        loss = torch.stack(nce).mean() + args.rank_weight * rank
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            v = evaluate(valid_maps)
            print(f"readout step {step}: loss {float(loss.detach()):.3f}, shares "
                  f"{[round(float(w), 3) for w in torch.softmax(readout.a.detach(), 0)]}, validation {shown(v)}",
                  flush=True)
            if v["hit_at_fpr10"] + v["top1"] > best[0]:
                best = (v["hit_at_fpr10"] + v["top1"], step, readout.a.detach().clone())
    print(f"readout step {args.steps} (last): calibration {shown(evaluate(calib_maps))}", flush=True)
    with torch.no_grad():
        readout.a.copy_(best[2])
    print(f"readout step {best[1]} (best on validation): calibration {shown(evaluate(calib_maps))}", flush=True)
    conv = copy.deepcopy(head.model.conversion.readout)
    with torch.no_grad():
        conv.weight.copy_(readout.weights().detach().view_as(conv.weight))
    return conv


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
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("residual", "finetune", "readout"), default="residual")
    parser.add_argument("--readout-garments", type=at_least(1), default=300, help="Training cases of --kind readout.")
    parser.add_argument("--objective", choices=("heat", "pooled"), default="heat",
                        help="heat: InfoNCE + ranking on the replayed heat maps; pooled: instance "
                             "discrimination on pooled (masked) features.")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--hidden", type=at_least(0), default=16, help="Residual projection's hidden width (0: none).")
    parser.add_argument("--draws", type=at_least(1), default=3, help="Catalogue shots per training garment.")
    parser.add_argument("--garments", type=at_least(1), default=None, help="Training garments (default all).")
    parser.add_argument("--steps", type=at_least(1), default=400)
    parser.add_argument("--batch", type=at_least(1), default=8)
    parser.add_argument("--negatives", type=at_least(0), default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--rank-weight", type=float, default=1.0)
    parser.add_argument("--eval-every", type=at_least(1), default=50)
    parser.add_argument("--save", type=output_file, default=None, help="Write the best head (validation) as a checkpoint.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="Folder for the cached features (reused by later runs with the same draws).")
    parser.add_argument("--searcher-eval", action="store_true",
                        help="After --save: the real search's heat map alone on the calibration cases.")
    parser.add_argument("--threads", type=at_least(1), default=1)
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
    head = Head(model, args.kind == "finetune", 0 if args.kind == "readout" else args.hidden)
    if args.kind == "readout":
        conv = run_readout(args, head, train, valid, calib, valid_cases, calib_cases)
        if args.save is not None:
            write_checkpoint(head, 0, args.steps, args.save, conv)
            print(f"wrote {args.save}", flush=True)
            if args.searcher_eval:
                print(f"{args.save}, the search's heat map alone on the calibration cases (scale boxes): "
                      f"{shown(searcher_eval(args.save, False))}", flush=True)
        return 0
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
