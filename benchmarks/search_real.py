"""Catalogue → scene search on real street photos (CCP, split fixed in benchmarks/ccp.py).

160 positives (a garment of a photo as a catalogue shot: mirrored, rescaled 0.6-1.4x, rotated up
to 10 degrees, recoloured, on white; searched in that photo tiled with two other photos) and 60
hard negatives (three photos without it, at least one holding a garment of its category). The
``test`` split (photos 0601-0700, the default) is touched by no training or calibration; the
``calibrate`` split (0501-0600) is where model and config decisions are made. Methods, same cases:

- the search network: the untrained network (pretrained backbone + correlation), the head shipped
  with synth (``shipped``, where one ships; none does yet), and each ``--checkpoint``;
- SIFT + ratio test + RANSAC similarity (the classical baseline, benchmarks/baselines.py).

Each method answers with its best box and score per case (the network: ``Result.best``, the top
peak whatever its score). Printed per method: top-1 hit (best box IoU >= 0.5, no threshold), hit
and false-positive rate at the method's own threshold, hit at FPR <= 0.10, score AUC, best-box
centre within 20 px, seconds per case (figures: benchmarks/metrics.py).

    python benchmarks/search_real.py [--split test|calibrate] [--checkpoint CKPT ...] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

import ccp  # noqa: E402
from baselines import SiftBaseline  # noqa: E402
from metrics import Outcome, outcome, summarise  # noqa: E402

from augment.photo_pairs import PhotoCase  # noqa: E402
from pipelines.shipped import head_ships  # noqa: E402

Answer = tuple[tuple[int, int, int, int] | None, float]
Method = Callable[[PhotoCase], Answer]


def network_method(device: str, examples: Path | None = None, **searcher_options: Any) -> tuple[Method, float]:
    """The search network's best peak (box, heat) per case, and its own threshold. With
    ``examples``, the first cases' highlights (truth in green) are written there as PNGs."""
    from pipelines.search import Searcher

    searcher = Searcher(device=device, **searcher_options)
    written = {True: 0, False: 0}

    def run(case: PhotoCase) -> Answer:
        result = searcher.find_many(case.query, [case.scene], keep_images=examples is not None)[0]
        if examples is not None and written[case.positive] < EXAMPLES:
            written[case.positive] += 1
            write_example(examples / f"{'positive' if case.positive else 'negative'}-{written[case.positive]}.png",
                          case, result)
        best = result.best
        return (best.box, best.score) if best is not None else (None, 0.0)

    return run, searcher.threshold


EXAMPLES = 4


def write_example(path: Path, case: PhotoCase, result: Any) -> None:
    """The highlight beside the query, the truth's box in green and the best peak's in blue."""
    import cv2
    import numpy as np

    from augment.imageio import save_image

    picture = result.highlight()
    for box, colour in ((case.boxes[0] if case.positive else None, (40, 220, 40)),
                        (result.best.box if result.best else None, (40, 120, 255))):
        if box is not None:
            cv2.rectangle(picture, tuple(box[:2]), (box[2] - 1, box[3] - 1), colour, 2)
    query = case.query[..., :3]
    scale = picture.shape[0] / query.shape[0]
    query = cv2.resize(query, (max(1, round(query.shape[1] * scale)), picture.shape[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, np.concatenate([query, picture], axis=1))


def sift_method() -> Method:
    sift = SiftBaseline()

    def run(case: PhotoCase) -> Answer:
        found = sift.find(case.query, case.scene)
        return found.box, found.score

    return run


def evaluate(method: Method, cases: list[PhotoCase]) -> tuple[list[Outcome], float]:
    outcomes = []
    start = time.perf_counter()
    for case in cases:
        box, score = method(case)
        outcomes.append(outcome(case.positive, box, score, case.boxes[0] if case.positive else None))
    return outcomes, (time.perf_counter() - start) / max(1, len(cases))


def limited(cases: list[PhotoCase], limit: int) -> list[PhotoCase]:
    """The first ``limit`` positives and ``limit // 3`` negatives (quick looks)."""
    if not limit:
        return cases
    positives = [c for c in cases if c.positive][:limit]
    negatives = [c for c in cases if not c.positive][:max(1, limit // 3)]
    return positives + negatives


HEADER = (f"{'method':<28} {'top1':>6} {'hit@thr':>8} {'FPR@thr':>8} {'hit@FPR.1':>9} {'AUC':>6} "
          f"{'<=20px':>7} {'s/case':>7}")


def row(name: str, figures: dict[str, float]) -> str:
    return (f"{name[-28:]:<28} {figures['top1']:>6.3f} {figures['hit_at_threshold']:>8.3f} "
            f"{figures['fpr_at_threshold']:>8.3f} {figures['hit_at_fpr10']:>9.3f} {figures['auc']:>6.3f} "
            f"{figures['precision20']:>7.3f} {figures['seconds_per_case']:>7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("test", "calibrate"), default="test")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--no-untrained", action="store_true")
    parser.add_argument("--no-sift", action="store_true")
    parser.add_argument("--mirror", action="store_true", help="Networks also search the query mirrored.")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="Query scales of the networks.")
    parser.add_argument("--limit", type=int, default=0, help="Use only the first N positives and N/3 negatives.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--examples", type=Path, default=None,
                        help="Write the first positives' and negatives' highlights (the first network's) here.")
    args = parser.parse_args()
    if not ccp.available():
        print(ccp.skip_message())
        return
    cases = limited(ccp.search_cases(args.split), args.limit)
    first, last = ccp.SEARCH_SPLIT[args.split]
    print(f"{sum(c.positive for c in cases)} positives, {sum(not c.positive for c in cases)} negatives "
          f"(CCP {args.split} photos {first:04d}-{last:04d})")
    options: dict[str, Any] = {"mirror": args.mirror}
    if args.scales:
        options["query_scales"] = tuple(args.scales)
    networks: list[tuple[str, dict[str, Any]]] = []
    if not args.no_untrained:
        networks.append(("untrained", {"untrained": True}))
    if head_ships():
        networks.append(("shipped", {}))
    networks += [(str(checkpoint), {"checkpoint": checkpoint}) for checkpoint in args.checkpoint]
    methods: list[tuple[str, Callable[[], tuple[Method, float]]]] = [
        (name, lambda k=k, first=i == 0: network_method(args.device, args.examples if first else None, **k, **options))
        for i, (name, k) in enumerate(networks)]
    if not args.no_sift:
        methods.append(("SIFT+RANSAC", lambda: (sift_method(), 8.0)))
    rows = {}
    print(HEADER)
    for name, make in methods:
        method, threshold = make()
        outcomes, seconds = evaluate(method, cases)
        figures = summarise(outcomes, threshold)
        figures.update(seconds_per_case=seconds, threshold=threshold)
        rows[name] = figures
        print(row(name, figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
