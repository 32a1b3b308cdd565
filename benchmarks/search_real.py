"""Catalogue → scene search on real street photos (CCP test photos 0601-0700, see benchmarks/ccp.py).

160 positives (a garment of a test photo as a catalogue shot: mirrored, rescaled 0.6-1.4x, rotated
up to 10 degrees, recoloured, on white; searched in that photo tiled with two other test photos)
and 60 hard negatives (three test photos without it, at least one holding a garment of its
category). No training or calibration touches these photos. Methods run on the same cases:

- the search network untrained (pretrained backbone + correlation), and each ``--checkpoint``;
- SIFT + ratio test + RANSAC similarity (the classical baseline, benchmarks/baselines.py).

Printed per method: top-1 hit (best box IoU >= 0.5, no threshold), hit and false-positive rate at
the method's own threshold, hit at FPR <= 0.10, score AUC, seconds per case (figures:
benchmarks/metrics.py).

    python benchmarks/search_real.py [--checkpoint CKPT ...] [--limit N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

import ccp  # noqa: E402
from baselines import SiftBaseline  # noqa: E402
from metrics import Outcome, box_iou, summarise  # noqa: E402

from augment.photo_pairs import PhotoCase  # noqa: E402

Method = Callable[[PhotoCase], tuple[tuple[int, int, int, int] | None, float]]


def network_method(checkpoint: Path | None, device: str) -> tuple[Method, float]:
    """The search network's best peak (box, heat) per case, and its own threshold."""
    from pipelines.search import Searcher

    searcher = Searcher(checkpoint=checkpoint, device=device)

    def run(case: PhotoCase) -> tuple[tuple[int, int, int, int] | None, float]:
        query = searcher.prepare(case.query)
        maps = searcher.maps(query, [case.scene])
        heat, size = maps.heat[0], maps.object_height[0]
        peak = searcher.detect(query, heat, size, threshold=float(heat.max()))
        return (peak[0].box, peak[0].score) if peak else (None, float(heat.max()))

    return run, searcher.threshold


def sift_method() -> Method:
    sift = SiftBaseline()

    def run(case: PhotoCase) -> tuple[tuple[int, int, int, int] | None, float]:
        found = sift.find(case.query, case.scene)
        return found.box, found.score

    return run


def evaluate(method: Method, cases: list[PhotoCase]) -> tuple[list[Outcome], float]:
    outcomes = []
    start = time.perf_counter()
    for case in cases:
        box, score = method(case)
        truth = case.boxes[0] if case.positive else None
        correct = case.positive and box is not None and box_iou(box, truth) >= 0.5
        outcomes.append(Outcome(case.positive, bool(correct), score if box is not None else -np.inf))
    return outcomes, (time.perf_counter() - start) / max(1, len(cases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--no-untrained", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="Use only the first N positives and N/3 negatives (quick looks).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    if not ccp.available():
        print(ccp.skip_message())
        return
    cases = ccp.search_cases("test")
    if args.limit:
        positives = [c for c in cases if c.positive][:args.limit]
        negatives = [c for c in cases if not c.positive][:max(1, args.limit // 3)]
        cases = positives + negatives
    print(f"{sum(c.positive for c in cases)} positives, {sum(not c.positive for c in cases)} negatives "
          f"(CCP test photos {ccp.SEARCH_SPLIT['test'][0]:04d}-{ccp.SEARCH_SPLIT['test'][1]:04d})")
    methods: list[tuple[str, Method, float | None]] = []
    if not args.no_untrained:
        run, threshold = network_method(None, args.device)
        methods.append(("untrained", run, threshold))
    for checkpoint in args.checkpoint:
        run, threshold = network_method(checkpoint, args.device)
        methods.append((str(checkpoint), run, threshold))
    methods.append(("SIFT+RANSAC", sift_method(), 8.0))
    rows = {}
    header = f"{'method':<28} {'top1':>6} {'hit@thr':>8} {'FPR@thr':>8} {'hit@FPR.1':>9} {'AUC':>6} {'s/case':>7}"
    print(header)
    for name, method, threshold in methods:
        outcomes, seconds = evaluate(method, cases)
        figures = summarise(outcomes, threshold)
        figures["seconds_per_case"] = seconds
        figures["threshold"] = threshold
        rows[name] = figures
        print(f"{name[-28:]:<28} {figures['top1']:>6.3f} {figures['hit_at_threshold']:>8.3f} "
              f"{figures['fpr_at_threshold']:>8.3f} {figures['hit_at_fpr10']:>9.3f} {figures['auc']:>6.3f} "
              f"{seconds:>7.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
