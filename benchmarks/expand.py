"""Composites per second of `synth expand`, against the cost of only encoding the outputs.

    python benchmarks/expand.py [--num 600] [--sources sample_data/objects] [--backgrounds sample_data/backgrounds]

512×512 scenes with 3–6 objects and every distortion at its default probability.
Prints, from one run (these machines are noisy, so compare ratios):
  - rendering + encoding, in process (1 worker): composites/s
  - the encode floor: JPEG q90 of each image + PNG of each mask alone
  - the whole `run_expand` (rendering, encoding, Parquet writing) on 1 and 2 workers
  - a rerun of the finished run: every shard read back end to end and verified before it is kept
Targets: >= 100 composites/s per core, <= 10x the encode floor, near-linear 1 -> 2 workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

from augment import render_rows  # noqa: E402
from bench_args import Parser, at_least, existing_folder  # noqa: E402
from augment.composite import compose_scene  # noqa: E402
from augment.config import ExpandConfig  # noqa: E402
from augment.cutouts import build_objects_table, load_cutouts  # noqa: E402
from augment.expand import collect_backgrounds, run_expand  # noqa: E402
from augment.render_rows import row_seed  # noqa: E402
from augment.imageio import encode_jpeg, encode_label_png  # noqa: E402
from augment.system import tune_malloc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def benchmark_config(num: int) -> ExpandConfig:
    config = ExpandConfig(num=num, seed=1)
    config.composition.width = config.composition.height = 512
    config.composition.min_objects, config.composition.max_objects = 3, 6
    return config


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=at_least(1), default=600, help="composites made (default 600)")
    parser.add_argument("--sources", type=existing_folder, default=ROOT / "sample_data" / "objects",
                        help="object sources (default: sample_data/objects)")
    parser.add_argument("--backgrounds", type=existing_folder, default=ROOT / "sample_data" / "backgrounds",
                        help="background images (default: sample_data/backgrounds)")
    args = parser.parse_args()
    config = benchmark_config(args.num)
    tune_malloc()

    with tempfile.TemporaryDirectory() as tmp:
        objects_path, _, count = build_objects_table([args.sources], config.sources, Path(tmp), workers=2)
        cutouts = load_cutouts(objects_path)
        backgrounds, _ = collect_backgrounds(args.backgrounds, workers=1)
        render_rows._init_state(cutouts, backgrounds, config, config.content_hash())
        for index in range(20):  # warm-up: background cache, code paths
            render_rows.render_row(index)

        # Rendering alone, then encoding alone, on the same scenes.
        state = render_rows._STATE
        started = time.perf_counter()
        scenes = [
            compose_scene(cutouts, state["backgrounds"], config.composition, config.distortions, rng=np.random.default_rng(row_seed(1, i)))
            for i in range(args.num)
        ]
        render_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for scene in scenes:
            encode_jpeg(scene.image, 90)
            encode_label_png(scene.instances)
        encode_seconds = time.perf_counter() - started
        objects = sum(len(s.objects) for s in scenes) / len(scenes)

        # The whole pipeline, shards written, on 1 and 2 workers.
        runs = {}
        for workers in (1, 2):
            out = Path(tmp) / f"out{workers}"
            started = time.perf_counter()
            run_expand([args.sources], args.backgrounds, out, config, workers=workers)
            runs[workers] = time.perf_counter() - started
        started = time.perf_counter()
        rerun = run_expand([args.sources], args.backgrounds, Path(tmp) / "out2", config, workers=2)
        verify_seconds = time.perf_counter() - started
        assert rerun.rows_written == 0

    per_image_ms = (render_seconds + encode_seconds) / args.num * 1e3
    floor_ms = encode_seconds / args.num * 1e3
    print(f"cutouts: {count}, scenes: {args.num}, 512x512, mean visible objects per scene: {objects:.2f}, cores: {os.cpu_count()}")
    print(f"render (compose + distort)      : {render_seconds / args.num * 1e3:7.2f} ms/image")
    print(f"encode floor (JPEG q90 + PNG)   : {floor_ms:7.2f} ms/image")
    print(f"render + encode, 1 process      : {per_image_ms:7.2f} ms/image = {1e3 / per_image_ms:6.1f} composites/s")
    print(f"ratio to the encode floor       : {per_image_ms / floor_ms:7.2f} x   (target <= 10)")
    for workers, seconds in runs.items():
        print(f"run_expand, {workers} worker(s)          : {args.num / seconds:7.1f} composites/s (whole run incl. cutouts and writing)")
    print(f"scaling 1 -> 2 workers          : {runs[1] / runs[2]:7.2f} x   (target ~2)")
    print(f"per core (2 workers)            : {args.num / runs[2] / 2:7.1f} composites/s   (target >= 100)")
    print(f"rerun of the finished run       : {verify_seconds:7.2f} s = {verify_seconds / runs[2]:.1%} of making it "
          "(every shard verified, none redone)")


if __name__ == "__main__":
    main()
