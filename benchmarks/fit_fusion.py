"""Fit the fused score (pipelines/fusion.py) of a search network on the CCP calibration split.

Photos 0501-0600 only (benchmarks/ccp.py): 160 catalogue → scene positives and 60 hard negatives.
Every case's heat-map candidates are verified with a low pre-threshold, labelled by whether the box
the fusion would report is right, and a logistic model with non-negative evidence weights is fitted;
the pre-threshold keeps 97% of the correct candidates; then the fused search's detection threshold
is calibrated (F1, IoU >= 0.5) on the same cases. Written beside the model:

    python benchmarks/fit_fusion.py                        # the untrained network -> pipelines/fusion_untrained.json
    python benchmarks/fit_fusion.py --checkpoint CKPT      # a trained one -> CKPT.fusion.json (found by `synth search --checkpoint CKPT`)

Refit whenever the network changes (its heat is scaled differently). ``--out`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

import ccp  # noqa: E402
from bench_args import Parser, device_option, existing_file, output_file  # noqa: E402

from pipelines.fusion import (Candidate, FusionModel, VerificationStage, fit_fusion,  # noqa: E402
                              fusion_path, label_candidates, searcher_verifier)
from pipelines.calibration import CalibrationCase, calibrate_threshold  # noqa: E402
from pipelines.verify import VerifyConfig  # noqa: E402

# Candidates are gathered down to this heat (and the top peak always), before the fit sets the
# pre-threshold: low enough that the fit sees nearly every correct candidate.
COLLECT_FLOOR = 0.05


def collect(searcher, cases, config: VerifyConfig | None = None) -> list[Candidate]:
    """Labelled, verified candidates of ``cases`` (PhotoCase-like: query, scene, boxes)."""
    # Every candidate checked (no stop at a verified one): the fit needs them all labelled.
    config = replace(config or VerifyConfig(), enough_inliers=0)
    stage = VerificationStage(searcher, FusionModel([1.0, 0.0, 0.0], 0.0, COLLECT_FLOOR),
                              searcher_verifier(searcher, config))
    candidates: list[Candidate] = []
    for k, case in enumerate(cases):
        query = searcher.prepare(case.query)
        maps = searcher.maps(query, [case.scene])
        found, checks = stage.check(query, case.scene, maps.heat[0], maps.object_height[0],
                                    features=maps.features)
        candidates.extend(label_candidates(k, found, checks, case.boxes))
    return candidates


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=existing_file, default=None)
    parser.add_argument("--out", type=output_file, default=None, help="Default: beside the model (see above).")
    parser.add_argument("--device", type=device_option, default="auto")
    parser.add_argument("--features", choices=("network", "sift"), default=VerifyConfig().features,
                        help="Feature source of the verification (to compare them; the search uses the default).")
    args = parser.parse_args()
    if not ccp.available():
        print(ccp.skip_message())
        return
    from pipelines.search import Searcher

    searcher = Searcher(checkpoint=args.checkpoint, device=args.device, verify=False)
    cases = ccp.search_cases("calibrate")
    start = time.perf_counter()
    config = VerifyConfig(features=args.features)
    candidates = collect(searcher, cases, config)
    name = "untrained" if args.checkpoint is None else str(args.checkpoint)
    first, last = ccp.SEARCH_SPLIT["calibrate"]
    model = fit_fusion(candidates, name, f"CCP calibration photos {first:04d}-{last:04d}: "
                       f"{sum(c.positive for c in cases)} positives, {sum(not c.positive for c in cases)} negatives",
                       config.max_candidates)
    out = args.out or fusion_path(args.checkpoint)
    model.save(out)
    # The fused search's threshold, calibrated as it searches (stopping at the first verified
    # candidate) on the same calibration cases, with the model just fitted.
    fused = Searcher(checkpoint=args.checkpoint, device=args.device, fusion=out)
    calibration = calibrate_threshold(fused, [CalibrationCase(c.query[..., :3], c.scene, list(c.boxes),
                                                              c.query[..., 3]) for c in cases])
    model = replace(model, threshold=calibration.threshold)
    model.save(out)
    print(f"fused search threshold {calibration.threshold:.2f} (heat level): F1 {calibration.f1:.3f}, "
          f"precision {calibration.precision:.3f}, recall {calibration.recall:.3f}")
    positives = {c.case for c in candidates if c.correct and c.check.verified}
    negatives = {c.case for c in candidates if not cases[c.case].positive and c.check.verified}
    print(f"{args.features} features: the garment verified in {len(positives)} of "
          f"{sum(c.positive for c in cases)} positives; a verified candidate in {len(negatives)} of "
          f"{sum(not c.positive for c in cases)} negatives")
    print(f"fitted on {len(cases)} cases in {time.perf_counter() - start:.0f} s: weights "
          f"{dict(zip(('logit_heat', 'log_inliers', 'spread'), model.weights))}, bias {model.bias}, "
          f"pre-threshold {model.pre_threshold} ({model.figures}) -> {out}")


if __name__ == "__main__":
    main()
