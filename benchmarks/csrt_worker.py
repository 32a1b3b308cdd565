"""OpenCV CSRT on one frame sequence: run inside benchmarks/.venv-csrt (opencv-contrib), by
benchmarks/tracking.py in a subprocess; imports nothing of synth.

    benchmarks/.venv-csrt/bin/python benchmarks/csrt_worker.py FRAME... --box x,y,w,h [--threads 1]

Prints one JSON object: per frame after the first its box [x0, y0, x1, y1] or null (CSRT
reports a failure), and the seconds spent in the tracker's update (frames decoded beforehand).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("frames", nargs="+")
    parser.add_argument("--box", required=True, help="x,y,w,h in frame 1")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (as many as the search gets)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    frames = [cv2.imread(path, cv2.IMREAD_COLOR) for path in args.frames]
    if any(frame is None for frame in frames):
        sys.exit("csrt_worker: a frame could not be read")
    x, y, w, h = (round(float(v)) for v in args.box.split(","))
    tracker = cv2.TrackerCSRT_create()
    tracker.init(frames[0], (x, y, w, h))
    boxes = []
    start = time.perf_counter()
    for frame in frames[1:]:
        ok, (bx, by, bw, bh) = tracker.update(frame)
        boxes.append([bx, by, bx + bw, by + bh] if ok else None)
    seconds = time.perf_counter() - start
    print(json.dumps({"boxes": boxes, "seconds": seconds, "opencv": cv2.__version__}))


if __name__ == "__main__":
    main()
