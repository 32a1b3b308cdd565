"""Cost of turning heat peaks into detections and a highlight, by the number of peaks.

A 1280x720 frame (a Skating1 frame of ../shared/data/tracking, or a generated scene without it),
searched once; then per threshold (the top peak only, and 0.01, which leaves ~150 peaks there):
detections (peak finding, boxes, non-maximum suppression) and the highlighted frame, timed
(best of 5). Printed: peaks, milliseconds, and the whole frame's cost (search + detections +
highlight) relative to the one-peak frame (target: at most 1.2x with 150 peaks).

    python benchmarks/detections.py [--threshold 0.01]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

from bench_args import Parser, at_least  # noqa: E402
from timing import best_time  # noqa: E402

FRAME = Path(__file__).resolve().parents[2] / "shared" / "data" / "tracking" / "Skating1" / "img" / "0001.jpg"


def frame_and_query() -> tuple[np.ndarray, np.ndarray, str]:
    if FRAME.is_file():
        frame = cv2.cvtColor(cv2.imread(str(FRAME)), cv2.COLOR_BGR2RGB)
        query = frame[188:272, 162:196]  # the skater, frame 1's box
        source = str(FRAME)
    else:
        from skimage import data

        frame = cv2.resize(data.coffee(), (640, 360))
        query = frame[100:180, 200:260]
        source = "generated (shared data absent)"
    return cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR), \
        cv2.resize(query, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR), source


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=0.01, help="heat threshold of the many-peak row")
    parser.add_argument("--repeat", type=at_least(1), default=5, help="timed calls (the fastest kept)")
    args = parser.parse_args()
    from pipelines.highlight import highlight
    from pipelines.search import Searcher

    frame, query_rgb, source = frame_and_query()
    searcher = Searcher(device="cpu")
    query = searcher.prepare(query_rgb)
    search_s = best_time(lambda: searcher.maps(query, [frame]), args.repeat, searcher.device)
    maps = searcher.maps(query, [frame])
    heat, size = maps.heat[0], maps.object_height[0]
    print(f"frame 1280x720 from {source}; search (network) {search_s * 1000:.0f} ms")
    rows = []
    for label, threshold in (("top peak", float(heat.max())), (f"threshold {args.threshold:g}", args.threshold)):
        detections = searcher.detect(query, heat, size, threshold)
        detect_s = best_time(lambda: searcher.detect(query, heat, size, threshold), args.repeat, searcher.device)
        draw_s = best_time(lambda: highlight(frame, heat, detections), args.repeat, searcher.device)
        rows.append((label, len(detections), detect_s, draw_s, search_s + detect_s + draw_s))
    for label, count, detect_s, draw_s, total in rows:
        print(f"{label:16} {count:4d} detections: detect {detect_s * 1000:7.1f} ms, highlight "
              f"{draw_s * 1000:7.1f} ms, frame {total * 1000:7.1f} ms = {total / rows[0][4]:.2f}x the one-peak frame")


if __name__ == "__main__":
    main()
