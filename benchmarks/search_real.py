"""Search on real photos and video, heat map alone, SIFT alone and fused, in one run.

Two case sets, no training or calibration touches either:

- **CCP catalogue → scene** (test photos 0601-0700, see benchmarks/ccp.py): 160 positives (a
  garment of a test photo as a catalogue shot: mirrored, rescaled 0.6-1.4x, rotated up to 10
  degrees, recoloured, on white; searched in that photo tiled with two other test photos) and 60
  hard negatives (three test photos without it, at least one holding a garment of its category);
- **rendition pairs** (benchmarks/rendition.py): a target cut from an early frame of a real video,
  searched 100-300 frames later (pose, light, background changed), and in other videos' frames.

Methods on the same cases:

- ``heat map``: the search network's strongest peak (untrained, and each ``--checkpoint``);
- ``fused``: the same heat map's candidates verified geometrically and scored by the fitted fusion
  (pipelines/verify.py, pipelines/fusion.py); its ``+verify`` column is the time verification adds
  to the network's search, as a share of it, measured in this run;
- ``SIFT alone``: the verification's SIFT matcher on the whole scene (benchmarks/baselines.py).

Printed per method: top-1 hit (best box IoU >= 0.5, no threshold), hit and false-positive rate at
the method's own threshold, hit at FPR <= 0.10, score AUC, seconds per case (benchmarks/metrics.py).

    python benchmarks/search_real.py [--checkpoint CKPT ...] [--limit N] [--sets ccp,rendition]
                                     [--json FILE] [--overlays DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

import ccp  # noqa: E402
import rendition  # noqa: E402
from bench_args import (Parser, at_least, comma_names, device_option, existing_file,  # noqa: E402
                        output_file, output_folder, write_json)
from baselines import SiftBaseline  # noqa: E402
from metrics import Outcome, outcome, summarise  # noqa: E402

SIFT_THRESHOLD = 8.0  # inliers: the verification's own bar (VerifyConfig.min_inliers)
OVERLAYS_PER_SET = 6


@dataclass
class Tally:
    """Outcomes and seconds of one method on one case set."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    extra_seconds: float = 0.0  # fused: verification alone

    def add(self, positive: bool, truth: Any, box: Any, score: float) -> bool:
        """One case's answer (as benchmarks/metrics.py :func:`outcome` judges it: its IoU and centre
        error kept for the precision@20 and success AUC written to --json); whether it was right."""
        self.outcomes.append(outcome(positive, box, score, truth))
        return self.outcomes[-1].correct


def run_network(checkpoint: Path | None, device: str, cases: list[Any], set_name: str,
                overlays: Path | None, onnx: bool = True) -> tuple[Tally, Tally, float, float]:
    """Heat map alone and fused, from one heat map per case; also their two thresholds.

    ``overlays``: the inlier matches of the fused answer on a few positives are drawn there, half
    of them verified, half not.
    """
    from augment.imageio import save_image
    from pipelines.fusion import fuse
    from pipelines.search import Searcher
    from pipelines.verify import NOT_VERIFIED, draw_matches

    searcher = Searcher(checkpoint=checkpoint, device=device, untrained=checkpoint is None)
    if onnx:  # as `synth search` encodes a long job's media (pipelines/search_outputs.py ONNX_MIN_WORK)
        searcher.network.use_onnx()
    stage = searcher.verification
    assert stage is not None
    heat_alone, fused = Tally(), Tally()
    drawn = {True: 0, False: 0}
    for k, case in enumerate(cases):
        truth = case.boxes[0] if case.positive else None
        start = time.perf_counter()
        query = searcher.prepare(case.query)
        maps = searcher.maps(query, [case.scene])
        searched = time.perf_counter()
        found, checks = stage.check(query, case.scene, maps.heat[0], maps.object_height[0],
                                    features=maps.features)
        fill = 1.0 if query.mask is None else float((query.mask >= 0.5).mean())
        best = fuse(found, checks, stage.model, fill)[0]
        done = time.perf_counter()
        heat_alone.seconds += searched - start
        fused.seconds += done - start
        fused.extra_seconds += done - searched
        heat_alone.add(case.positive, truth, found[0].box, found[0].score)
        correct = fused.add(case.positive, truth, best.box, best.score)
        if overlays is not None and case.positive and drawn[bool(best.verified)] < OVERLAYS_PER_SET // 2:
            drawn[bool(best.verified)] += 1
            check = next((c for c in checks if c is not None and c.verified and c.box == best.box),
                         checks[0] or NOT_VERIFIED)
            tag = ("verified" if best.verified else "unverified") + ("-right" if correct else "-wrong")
            save_image(overlays / f"{set_name}-{k:03d}-{tag}.png",
                       draw_matches(case.query, case.scene, check, truth, best.box))
    return heat_alone, fused, searcher.heat_map_threshold, searcher.score_threshold


def run_sift(cases: list[Any]) -> Tally:
    sift = SiftBaseline()
    tally = Tally()
    for case in cases:
        start = time.perf_counter()
        found = sift.find(case.query, case.scene)
        tally.seconds += time.perf_counter() - start
        tally.add(case.positive, case.boxes[0] if case.positive else None, found.box, found.score)
    return tally


def case_sets(names: list[str], limit: int) -> list[tuple[str, list[Any], str]]:
    sets = []
    if "ccp" in names:
        if ccp.available():
            first, last = ccp.SEARCH_SPLIT["test"]
            sets.append(("ccp", ccp.search_cases("test"), f"CCP catalogue -> scene, test photos {first:04d}-{last:04d}"))
        else:
            print(ccp.skip_message())
    if "rendition" in names:
        if rendition.available():
            sets.append(("rendition", rendition.rendition_cases(), "rendition pairs, tracking videos (+100-300 frames)"))
        else:
            print(rendition.skip_message())
    if limit:
        sets = [(name, [c for c in cases if c.positive][:limit] + [c for c in cases if not c.positive][:max(1, limit // 3)], title)
                for name, cases, title in sets]
    return sets


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=existing_file, action="append", default=[])
    parser.add_argument("--no-untrained", action="store_true")
    parser.add_argument("--limit", type=at_least(0), default=0,
                        help="Use only the first N positives and N/3 negatives (quick looks; 0: all).")
    parser.add_argument("--sets", type=comma_names(("ccp", "rendition")), default=["ccp", "rendition"],
                        help="Case sets: ccp, rendition (comma-separated).")
    parser.add_argument("--device", type=device_option, default="auto")
    parser.add_argument("--json", type=output_file, default=None, help="Also write the figures here.")
    parser.add_argument("--overlays", type=output_folder, default=None,
                        help="Write inlier overlays of a few positives here.")
    parser.add_argument("--pytorch-backbone", action="store_true",
                        help="Encode media with PyTorch (a short job's path), not onnxruntime (a long one's).")
    args = parser.parse_args()
    networks: list[Path | None] = ([] if args.no_untrained else [None]) + list(args.checkpoint)
    figures: dict[str, dict[str, Any]] = {}
    for set_name, cases, title in case_sets(args.sets, args.limit):
        print(f"\n{title}: {sum(c.positive for c in cases)} positives, {sum(not c.positive for c in cases)} negatives")
        print(f"{'method':<30} {'top1':>6} {'hit@thr':>8} {'FPR@thr':>8} {'hit@FPR.1':>9} {'AUC':>6} {'s/case':>7} {'+verify':>8}")
        rows: dict[str, tuple[Tally, float]] = {}
        for checkpoint in networks:
            name = "untrained" if checkpoint is None else str(checkpoint)[-18:]
            heat_alone, fused, heat_threshold, fused_threshold = run_network(
                checkpoint, args.device, cases, set_name, args.overlays, onnx=not args.pytorch_backbone)
            rows[f"{name} heat map"] = (heat_alone, heat_threshold)
            rows[f"{name} fused"] = (fused, fused_threshold)
        rows["SIFT alone"] = (run_sift(cases), SIFT_THRESHOLD)
        figures[set_name] = {}
        for method, (tally, threshold) in rows.items():
            result = summarise(tally.outcomes, threshold)
            result["seconds_per_case"] = tally.seconds / max(1, len(cases))
            result["threshold"] = threshold
            added = ""
            if tally.extra_seconds:
                searched = tally.seconds - tally.extra_seconds
                result["verify_share"] = tally.extra_seconds / searched
                added = f"{100 * result['verify_share']:>7.1f}%"
            figures[set_name][method] = result
            print(f"{method:<30} {result['top1']:>6.3f} {result['hit_at_threshold']:>8.3f} "
                  f"{result['fpr_at_threshold']:>8.3f} {result['hit_at_fpr10']:>9.3f} {result['auc']:>6.3f} "
                  f"{result['seconds_per_case']:>7.3f} {added:>8}", flush=True)
    if args.json:
        write_json(args.json, figures)


if __name__ == "__main__":
    main()
