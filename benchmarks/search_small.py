"""Small objects among look-alikes, on real photos and real video (benchmarks/crowd.py).

- Crowd mosaics of CCP test photos (people 60-120 px tall, 6-12 per 640x480 frame), the query a
  garment cut at the photo's original resolution (``original``: shrunk 4-8x by the search) or cut
  small from the mosaic, mirrored and recoloured (``mosaic``: 30-60 px).
- The tracking sequences of ../shared/data/tracking: the target cut from frame 1, every later
  frame searched whole (no motion prior).

Methods in the same run: the untrained network, the shipped head (where one ships), any ``--checkpoint``, and the
classical baselines (multi-scale template matching; SIFT + RANSAC). Printed per method: top-1 hit
(IoU >= 0.5), hit and FPR at its threshold, hit at FPR <= 0.10 and AUC (mosaics, which have
negatives), and OTB's precision at 20 px and success AUC of the best box, seconds per case.

    python benchmarks/search_small.py [--mosaics N] [--negatives M] [--every K] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

import ccp  # noqa: E402
from baselines import SiftBaseline, TemplateBaseline  # noqa: E402
from bench_args import Parser, device_option, at_least, existing_file, output_file, write_json  # noqa: E402
from crowd import TRACKING, VARIANTS, CrowdMosaics, SmallCase, tracking_cases, tracking_sequences  # noqa: E402
from metrics import outcome, summarise  # noqa: E402

from pipelines.shipped import head_ships  # noqa: E402

Answer = tuple[tuple[int, int, int, int] | None, float]


def methods(args: argparse.Namespace) -> list[tuple[str, Callable[[SmallCase], Answer], float]]:
    from pipelines.search import Searcher

    def network(**options: Any) -> tuple[Callable[[SmallCase], Answer], float]:
        searcher = Searcher(device=args.device, mirror=args.mirror, **options)
        if not args.pytorch_backbone:  # as `synth search` encodes a long job's media (ONNX_MIN_WORK)
            searcher.network.use_onnx()

        def run(case: SmallCase) -> Answer:
            best = searcher.find_many(case.query, [case.scene], keep_images=False)[0].best
            return (best.box, best.score) if best is not None else (None, 0.0)

        return run, searcher.score_threshold

    found: list[tuple[str, Callable[[SmallCase], Answer], float]] = []
    if not args.no_untrained:
        found.append(("untrained", *network(untrained=True)))
        # synth search --scales auto: sizes chosen per query and medium (an original-resolution
        # query is also searched 4-16x smaller).
        found.append(("untrained, --scales auto", *network(untrained=True, query_scales=None)))
    if head_ships():
        found.append(("shipped", *network()))
    for checkpoint in args.checkpoint:
        found.append((str(checkpoint), *network(checkpoint=checkpoint)))
    for name, baseline, threshold in (("template (multi-scale)", TemplateBaseline(), 0.6),
                                      ("SIFT+RANSAC", SiftBaseline(), 8.0)):
        def run(case: SmallCase, baseline: Any = baseline) -> Answer:
            answer = baseline.find(case.query, case.scene)
            return answer.box, answer.score

        found.append((name, run, threshold))
    return found


def run_all(name: str, cases: Iterable[SmallCase], found: list, rows: dict[str, Any]) -> None:
    """Every method on every case (one pass over the cases), then one table."""
    outcomes: dict[str, list] = {m: [] for m, _, _ in found}
    seconds = {m: 0.0 for m, _, _ in found}
    count = 0
    for case in cases:
        count += 1
        for method, run, _ in found:
            start = time.perf_counter()
            box, score = run(case)
            seconds[method] += time.perf_counter() - start
            outcomes[method].append(outcome(case.positive, box, score, case.box))
    print(f"\n{name}: {sum(o.positive for o in outcomes[found[0][0]])} positives, "
          f"{sum(not o.positive for o in outcomes[found[0][0]])} negatives")
    print(f"{'method':<26} {'top1':>6} {'hit@thr':>8} {'FPR@thr':>8} {'hit@FPR.1':>9} {'AUC':>6} "
          f"{'prec@20':>8} {'succAUC':>8} {'s/case':>7}")
    for method, _, threshold in found:
        f = summarise(outcomes[method], threshold)
        f["seconds_per_case"] = seconds[method] / max(1, count)
        rows.setdefault(name, {})[method] = f
        print(f"{method[-26:]:<26} {f['top1']:>6.3f} {f['hit_at_threshold']:>8.3f} {f['fpr_at_threshold']:>8.3f} "
              f"{f['hit_at_fpr10']:>9.3f} {f['auc']:>6.3f} {f['precision20']:>8.3f} {f['success_auc']:>8.3f} "
              f"{f['seconds_per_case']:>7.3f}", flush=True)


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mosaics", type=at_least(0), default=100, help="Positive mosaic cases per variant.")
    parser.add_argument("--negatives", type=at_least(0), default=40, help="Negative mosaic cases per variant.")
    parser.add_argument("--every", type=at_least(1), default=1, help="Search every K-th frame of the sequences.")
    parser.add_argument("--only", choices=("mosaic", "tracking"), default=None)
    parser.add_argument("--checkpoint", type=existing_file, action="append", default=[])
    parser.add_argument("--no-untrained", action="store_true")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="Networks do not also search the query mirrored (the default does).")
    parser.add_argument("--device", type=device_option, default="auto")
    parser.add_argument("--pytorch-backbone", action="store_true",
                        help="Encode media with PyTorch (a short job's path), not onnxruntime (a long one's).")
    parser.add_argument("--json", type=output_file, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    found = methods(args)
    rows: dict[str, Any] = {}
    if args.only != "tracking":
        if ccp.available():
            mosaics = CrowdMosaics()
            for variant in VARIANTS:
                run_all(f"crowd mosaic, query cut {'at original resolution' if variant == 'original' else 'from the mosaic'}",
                        mosaics.cases(variant, args.mosaics, args.negatives), found, rows)
        else:
            print(ccp.skip_message())
    if args.only != "mosaic":
        sequences = tracking_sequences()
        if not sequences:
            print(f"skipped: {TRACKING} is absent (no tracking sequences on this machine)")
        for sequence in sequences:
            run_all(f"tracking {sequence.name} (every {args.every} frame(s), whole-frame search)",
                    tracking_cases(sequence, args.every), found, rows)
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
