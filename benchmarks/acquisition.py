"""A video searched without a box: is the target acquired, and is a query that is absent never taken?

``benchmarks/tracking.py`` starts every method from frame 1's true box. A user often has no box:
``synth search QUERY VIDEO`` must find the target first (pipelines/temporal_acquire.py). Here the
query is the target cut from frame 1 of a real sequence (../shared/data/tracking), and the video
handed to the temporal mode starts later (``--starts``: frames 21, 51, 101 by default), so the
target no longer looks exactly like the query:

- *present*: each sequence searched for its own query, ``--frames`` frames from each start: the
  frame it was acquired at (None: never), whether there on the target (centre within 20 px), and
  precision@20 / success AUC of the box shown on every frame (lost frames show the best guess);
- *absent*: each sequence searched for the other sequences' queries and for ``--ccp`` catalogue
  queries of CCP calibration photos (garments, which none of these videos holds), from
  ``--absent-starts`` for ``--absent-frames`` frames: the runs in which anything was acquired
  (every such run is a false acquisition) and the frames claimed.

Each case is run with the default rule (``TemporalConfig.acquire_confirm``: the still search's best
guess followed, and taken once the still search lands on it again) and with the rule before it
(``--set acquire_confirm=0``: only a detection the still search reports acquires). The acquisition
rule was chosen on TUNED_ON (benchmarks/tracking.py); the other sequences are reported apart.

    python benchmarks/acquisition.py [--sequences A B] [--starts 20 50 100] [--frames 60] [--ccp 8]
    python benchmarks/acquisition.py --only present [--set acquire_inliers=9] [--rules confirm]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))  # after the repo: benchmarks/train.py must not shadow train/

from bench_args import Parser, at_least  # noqa: E402
from tracking import (DATA, TUNED_ON, load_sequence, precision_and_auc, query_of, read_frames,  # noqa: E402
                      sequence_names)
from tracking_settings import temporal_config  # noqa: E402

RULES = {"confirm": [], "reported only": ["acquire_confirm=0"]}


def run(searcher, query, frames: list[np.ndarray], config) -> tuple[list, list[str], float]:
    """The temporal mode without a box over ``frames``: the boxes shown, the states, seconds."""
    from pipelines.temporal import TemporalSearcher

    tracker = TemporalSearcher(searcher, query, config)
    boxes, states = [], []
    start = time.perf_counter()
    for frame in frames:
        track = tracker.step(frame)
        boxes.append(track.best_box)
        states.append(track.state)
    return boxes, states, time.perf_counter() - start


def on_target(box, truth) -> bool:
    """The box's centre within 20 px of the true one (precision@20 of one frame)."""
    return precision_and_auc([box], np.asarray([truth], float))[0] == 1.0


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", nargs="*", default=None, help="default: every sequence of the shared data")
    parser.add_argument("--starts", type=at_least(0), nargs="+", default=[20, 50, 100],
                        help="present: first frame index")
    parser.add_argument("--frames", type=at_least(1), default=60, help="present: frames searched from each start")
    parser.add_argument("--absent-starts", type=at_least(0), nargs="+", default=[20, 150])
    parser.add_argument("--absent-frames", type=at_least(1), default=100)
    parser.add_argument("--ccp", type=at_least(0), default=8, help="CCP catalogue queries searched as absent ones")
    parser.add_argument("--only", choices=("present", "absent"), default=None)
    parser.add_argument("--threads", type=at_least(1), default=1)
    parser.add_argument("--rules", nargs="+", choices=tuple(RULES), default=list(RULES),
                        help="the acquisition rules run (default: both)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="TemporalConfig settings over the defaults, for each rule run (see tracking.py)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"acquisition benchmark skipped: {DATA} absent (shared data)")
        return
    names = sequence_names(DATA, args.sequences)
    import torch

    from pipelines.search import Searcher

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    configs = {rule: temporal_config(args.set + RULES[rule]) for rule in args.rules}
    searcher = Searcher()
    searcher.network.use_onnx()  # as `synth search` encodes a video's (a long job's) media: ONNX_MIN_WORK
    sequences = {name: load_sequence(DATA / name, None) for name in names}
    frames = {name: read_frames(sequence) for name, sequence in sequences.items()}
    queries = {name: searcher.prepare(query_of(frames[name], sequences[name].boxes[0])) for name in names}
    if args.only != "present":
        import ccp

        if ccp.available() and args.ccp:
            cases = [case for case in ccp.search_cases("calibrate") if case.positive][:args.ccp]
            queries.update({f"ccp-{i}": searcher.prepare(case.query) for i, case in enumerate(cases)})
        else:
            print(f"CCP queries skipped: {ccp.skip_message() if not ccp.available() else '--ccp 0'}")
    totals: dict = {}
    if args.only != "absent":
        print(f"{'present':10} {'rule':14} {'start':>5} {'acquired':>8} {'on':>5} {'prec@20':>7} {'AUC':>6} {'s':>5}")
        for name in names:
            group = "tuned on" if name in TUNED_ON else "held out"
            for start in args.starts:
                if start + 1 >= len(frames[name]):  # said, or a wrong --starts looks like a finished run
                    print(f"{name:10} {'-':14} {start:5d} skipped: past the sequence's {len(frames[name])} frames")
                    continue
                clip, truth = frames[name][start:start + args.frames], sequences[name].boxes[start:start + args.frames]
                for rule, config in configs.items():
                    boxes, states, seconds = run(searcher, queries[name], clip, config)
                    first = next((i for i, state in enumerate(states) if state != "lost"), None)
                    on = None if first is None else on_target(boxes[first], truth[first])
                    precision, auc = precision_and_auc(boxes, truth)
                    total = totals.setdefault(("present", group, rule), [0, 0, 0, [], [], 0.0])
                    total[0] += 1
                    total[5] += seconds
                    total[1] += first is not None
                    total[2] += bool(on)
                    total[3].append(precision)
                    total[4].append(auc)
                    print(f"{name:10} {rule:14} {start:5d} {str(first):>8} {str(on):>5} {precision:7.3f} {auc:6.3f} "
                          f"{seconds:5.1f}", flush=True)
    if args.only != "present":
        print(f"{'absent in':10} {'query':9} {'rule':14} {'start':>5} {'claimed':>7} {'s':>5}")
        if len(queries) < 2:
            print("absent runs skipped: no query but the sequence's own (name more --sequences, or --ccp N with CCP)")
        for name in names:
            group = "tuned on" if name in TUNED_ON else "held out"
            for query_name, query in queries.items():
                if query_name == name:
                    continue
                for start in args.absent_starts:
                    clip = frames[name][start:start + args.absent_frames]
                    if not clip:
                        print(f"{name:10} {query_name:9} {'-':14} {start:5d} skipped: past the sequence's "
                              f"{len(frames[name])} frames")
                        continue
                    for rule, config in configs.items():
                        _, states, seconds = run(searcher, query, clip, config)
                        claimed = sum(state != "lost" for state in states)
                        total = totals.setdefault(("absent", group, rule), [0, 0, 0, 0.0])
                        total[0] += 1
                        total[3] += seconds
                        total[1] += claimed > 0
                        total[2] += claimed
                        print(f"{name:10} {query_name:9} {rule:14} {start:5d} {claimed:7d} {seconds:5.1f}", flush=True)
    print()
    for (kind, group, rule), total in sorted(totals.items()):
        if kind == "present":
            print(f"present, {group:8}, {rule:14}: acquired in {total[1]} of {total[0]} runs, on the target in "
                  f"{total[2]}; prec@20 {np.mean(total[3]):.3f}, AUC {np.mean(total[4]):.3f}; {total[5]:.1f} s")
        else:
            print(f"absent,  {group:8}, {rule:14}: false acquisitions in {total[1]} of {total[0]} runs "
                  f"({total[2]} frames claimed); {total[3]:.1f} s")


if __name__ == "__main__":
    main()
