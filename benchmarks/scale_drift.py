"""The temporal mode's size alone, on the real sequences (../shared/data/tracking): is a wrong box
size the scale filter's fault, or the centre's?

Two runs per sequence, both started from frame 1's box (the query cut from it):
- ``tracked``: the temporal mode as it is, its size error counted on every frame, and (``tracked,
  near``) on the frames whose centre is within 20 px of the truth only (the box on the target);
- ``true centre``: the window and the scale filter are centred on the true centre every frame
  (the tracker's own centre is replaced), so only the size is the tracker's.

The size error of a frame is log(sqrt(box area / true box area)) (the box keeps the query's
aspect; the truth's may change): printed as the mean of its absolute value, its mean (the bias:
+ too large) and the same from frame ``--late`` on.

    python benchmarks/scale_drift.py [--sequences Skating1 VOT_bag] [--band-trust 0.7] [--threads 1]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(Path(__file__).resolve().parent))

from bench_args import Parser, at_least  # noqa: E402
from metrics import PRECISION_PX, centre_error  # noqa: E402
from tracking import DATA, TUNED_ON, load_sequence, query_of, read_frames, sequence_names  # noqa: E402


def size_errors(boxes: list, truth: np.ndarray, near_only: bool) -> np.ndarray:
    """Per frame log(sqrt(area ratio)); with ``near_only`` only where the centres are <= 20 px apart."""
    errors = []
    for box, true in zip(boxes, truth):
        if box is None:
            continue
        if near_only and centre_error(box, true) > PRECISION_PX:
            continue
        area = max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
        errors.append(0.5 * math.log(area / ((true[2] - true[0]) * (true[3] - true[1]))))
    return np.array(errors)


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", nargs="*", default=list(TUNED_ON))
    parser.add_argument("--band-trust", type=float, default=None,
                        help="TemporalConfig.band_trust (default: its default)")
    parser.add_argument("--late", type=at_least(1), default=230, help="frame from which the late figures count")
    parser.add_argument("--threads", type=at_least(1), default=1)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"scale drift benchmark skipped: {DATA} absent (shared data)")
        return
    names = sequence_names(DATA, args.sequences)
    import torch

    from pipelines.search import Searcher
    from pipelines.temporal import TemporalConfig, TemporalSearcher

    torch.set_num_threads(args.threads)
    searcher = Searcher(device="cpu")
    config = TemporalConfig() if args.band_trust is None else TemporalConfig(band_trust=args.band_trust)

    class TrueCentre(TemporalSearcher):
        """The tracker with its centre replaced by the true one on every frame it holds."""
        truth: np.ndarray

        def _frame_point(self, look, dx: float = 0.0, dy: float = 0.0  # type: ignore[no-untyped-def]
                         ) -> tuple[float, float]:
            x0, y0, x1, y1 = self.truth[self.index - 1]
            return (x0 + x1) / 2, (y0 + y1) / 2

    print(f"{'sequence':10} {'run':14} {'frames':>6} {'|err|':>6} {'bias':>7} {'late |err|':>10} {'late bias':>9}")
    for name in names:
        sequence = load_sequence(DATA / name, None)
        frames = read_frames(sequence)
        for label, kind in (("tracked", TemporalSearcher), ("true centre", TrueCentre)):
            tracker = kind(searcher, searcher.prepare(query_of(frames, sequence.boxes[0])), config,
                           initial_box=sequence.boxes[0])
            tracker.truth = sequence.boxes
            boxes = [tracker.step(frame).best_box for frame in frames][1:]
            truth = sequence.boxes[1:]
            for near in (False, True) if label == "tracked" else (False,):
                errors = size_errors(boxes, truth, near)
                late = size_errors(boxes[args.late - 1:], truth[args.late - 1:], near)
                late_text = (f"{np.abs(late).mean():10.3f} {late.mean():+9.3f}" if len(late)
                             else f"{'-':>10} {'-':>9}")
                run = label + (", near" if near else "")
                print(f"{name:10} {run:14} {len(errors):6d} {np.abs(errors).mean():6.3f} {errors.mean():+7.3f} "
                      f"{late_text}", flush=True)


if __name__ == "__main__":
    main()
