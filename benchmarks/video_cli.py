"""What a user's `synth search QUERY VIDEO --box ...` costs end to end, beside the search alone.

benchmarks/tracking.py times the temporal mode's search on frames decoded beforehand. A user's
command also decodes the video, draws each highlighted frame and encodes the highlighted video
(decoding and encoding run in their own threads, drawing on the searching one). Here each shared
sequence (../shared/data/tracking) is written to an mp4 at its own size and scaled up (``--scales``),
the query cut from frame 1 by its box, and timed two ways in one run on the same frames:

- ``search``: the temporal mode's steps alone (TemporalSearcher.step), frames decoded beforehand;
- ``command``: the command's own path (pipelines/temporal_run.py ``search_temporal``: decode, search,
  draw, encode, detections lines), after the same one-time set-up (the onnxruntime export);
- ``draw``: the highlight drawing alone (pipelines/temporal_draw.py), on the search's tracks.

    python benchmarks/video_cli.py [--sequences Skating1] [--scales 1 2] [--threads 1] [--limit N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from bench_args import Parser, above_zero, at_least  # noqa: E402
from tracking import DATA, load_sequence, query_of, read_frames, sequence_names  # noqa: E402


def write_video(frames: list, path: Path, scale: float) -> list:
    """``frames`` (RGB) scaled by ``scale`` into an mp4 at ``path`` (the project's own writer, as the
    highlighted video is written); the scaled frames as the command's reader decodes them back."""
    import cv2

    from pipelines.video import FrameReader
    from pipelines.video_writer import VideoWriter

    h, w = frames[0].shape[:2]
    size = (round(w * scale), round(h * scale))
    with VideoWriter(path, 25.0, *size) as writer:
        for frame in frames:
            writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
    return [frame for _, batch in FrameReader(path) for frame in batch]


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", nargs="*", default=["Skating1"])
    parser.add_argument("--scales", type=above_zero, nargs="+", default=[1.0, 2.0],
                        help="each sequence's frames scaled by these (2: 640x360 -> 1280x720)")
    parser.add_argument("--threads", type=at_least(1), default=1)
    parser.add_argument("--limit", type=at_least(2), default=None,
                        help="first N frames of each sequence (N >= 2: frame 1 gives the query)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"video benchmark skipped: {DATA} absent (shared data)")
        return
    names = sequence_names(DATA, args.sequences)
    import numpy as np
    import torch

    from pipelines.search import Searcher
    from pipelines.temporal import TemporalSearcher
    from pipelines.temporal_draw import draw_track
    from pipelines.temporal_run import search_temporal

    torch.set_num_threads(args.threads)
    searcher = Searcher(device="cpu")
    searcher.network.use_onnx()  # as `synth search` encodes a video (pipelines/search_outputs.py ONNX_MIN_WORK)
    print(f"{'sequence':10} {'size':>9} {'frames':>6} {'search fps':>10} {'command fps':>11} "
          f"{'draw ms':>8} {'command / search':>16}")
    for name in names:
        sequence = load_sequence(DATA / name, args.limit)
        frames = read_frames(sequence)
        for scale in args.scales:
            with tempfile.TemporaryDirectory() as folder:
                video = Path(folder) / f"{name}.mp4"
                decoded = write_video(frames, video, scale)
                box = tuple(float(v) * scale for v in sequence.boxes[0])
                query = searcher.prepare(query_of(decoded, np.array(box)))
                tracker = TemporalSearcher(searcher, query, initial_box=box)
                tracker.step(decoded[0])  # the one-time set-up (export, first frame) out of both timings
                start = time.perf_counter()
                tracks = [tracker.step(frame) for frame in decoded[1:]]
                search = time.perf_counter() - start
                start = time.perf_counter()
                for frame, track in zip(decoded[1:], tracks):
                    draw_track(frame, track)
                draw = time.perf_counter() - start
                start = time.perf_counter()
                lines = sum(1 for _ in search_temporal(searcher, query, video, Path(folder), "out",
                                                       initial_box=box))
                command = time.perf_counter() - start
                steps = len(decoded) - 1
                h, w = decoded[0].shape[:2]
                print(f"{name:10} {f'{w}x{h}':>9} {lines:>6} {steps / search:>10.1f} {lines / command:>11.1f} "
                      f"{draw / steps * 1e3:>8.2f} {command / lines / (search / steps):>16.2f}", flush=True)


if __name__ == "__main__":
    main()
