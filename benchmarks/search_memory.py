"""Memory of a long still-image search: resident memory as a folder of photos of many sizes is searched.

A long `synth search` job (ONNX_MIN_WORK media or more) encodes its media in onnxruntime. Each photo is
searched at several zooms and verification encodes windows of many sizes, so the encoder sees a new
input shape at almost every call. This script searches ``--photos`` real street photos (CCP's unlabeled
pool, ../shared/data/ccp/photos 1005 onwards; generated pictures of random sizes where it is absent) one
after another, as the command does, and prints the process's resident memory after the first photo,
the fifth and the last, with the time per photo, each in a fresh process (one run, one machine: compare
the rows, not figures from other runs), with onnxruntime's CPU memory arena (synth's setting,
pipelines/onnx_backbone.py CPU_MEMORY_ARENA) and without it.

    python benchmarks/search_memory.py [--photos 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "benchmarks"))  # after the repo: benchmarks/train.py must not shadow train/
from bench_args import Parser, at_least  # noqa: E402
CCP_PHOTOS = REPO.parent / "shared" / "data" / "ccp" / "photos"
FIRST_UNLABELED = 1005  # CCP photos from here on have no pixel labels: no benchmark's test or calibration case


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def media(count: int) -> tuple[list, object]:
    """``count`` scenes and a query: CCP's unlabeled photos and a crop of the first, or generated pictures."""
    import numpy as np

    from augment.imageio import read_image

    if CCP_PHOTOS.is_dir():
        paths = sorted(p for p in CCP_PHOTOS.glob("*.jpg") if int(p.stem) >= FIRST_UNLABELED)[:count + 1]
        first = read_image(paths[0])
        h, w = first.shape[:2]
        return [str(p) for p in paths[1:]], first[h // 4:h // 2, w // 3:2 * w // 3].copy()
    print(f"{CCP_PHOTOS} not found: generated pictures of random sizes instead", file=sys.stderr)
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (int(rng.integers(300, 900)), int(rng.integers(300, 900)), 3), dtype=np.uint8)
              for _ in range(count)]
    return scenes, scenes[0][50:150, 60:140].copy()


SETTINGS = {"synth": "memory arena (synth)", "off": "no memory arena"}


def measure(photos: int, threads: int, setting: str) -> dict:
    """In this process: search the photos one by one with the onnxruntime encoder, its arena as ``setting``."""
    import torch

    import pipelines.onnx_backbone as onnx_backbone
    from pipelines.search import Searcher

    torch.set_num_threads(threads)
    onnx_backbone.CPU_MEMORY_ARENA = setting != "off"
    scenes, query = media(photos)
    searcher = Searcher()
    searcher.network.use_onnx()  # as `synth search` does for a long job
    prepared = searcher.prepare(query)
    marks, start = {}, time.perf_counter()
    for index, scene in enumerate(scenes, 1):
        searcher.find(prepared, scene)
        if index in (1, 5, len(scenes)):
            marks[index] = round(resident_mb())
    return {"setting": setting, "photos": len(scenes), "resident_mb": marks,
            "seconds_per_photo": (time.perf_counter() - start) / len(scenes)}


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=at_least(5), default=60)
    parser.add_argument("--threads", type=at_least(1), default=1)
    parser.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.photos, args.threads, args.worker)))
        return
    print(f"{args.photos} photos searched one by one, {args.threads} thread(s), media encoded by onnxruntime")
    print(f"{'onnxruntime memory':<40}{'MB after 1':>11}{'after 5':>9}{'after last':>12}{'s/photo':>9}")
    for setting in SETTINGS:  # a fresh process each: memory is the process's
        done = subprocess.run([sys.executable, __file__, "--photos", str(args.photos), "--threads", str(args.threads),
                               "--worker", setting], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        marks = list(row["resident_mb"].values())
        print(f"{SETTINGS[setting]:<40}{marks[0]:>11}{marks[1]:>9}{marks[-1]:>12}{row['seconds_per_photo']:>9.3f}")


if __name__ == "__main__":
    main()
