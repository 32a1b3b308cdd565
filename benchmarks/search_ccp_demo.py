"""Search demo on real street-fashion photos (Clothing Co-Parsing, ../shared/data/ccp).

Each case cuts one garment (jacket, coat, dress, skirt, shirt, pants, jeans ... covering at least
4% of the photo) out of a photo with its label map, makes it look like a catalogue image (mirrored,
rescaled 0.6-1.4x, hue and brightness shifted slightly, on white with the garment as alpha), and
searches it in a scene of 3-4 photos side by side, one of which is the source photo (the others
random). Queries come from photos 0600-0700 only, so training on the lower ids never saw them.

Reported per model: the share of cases where the heat map's maximum lies on the true garment,
where the top detection's box has IoU >= 0.5 with the garment's box (and any detection's), where
nothing passed the threshold, and, threshold-free, where the strongest peak's box has IoU >= 0.5.
Green boxes in the written examples are the truth; red outlines the detections.

    python benchmarks/search_ccp_demo.py [--cases 120] [--checkpoint CKPT] [--out demo_out]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.imageio import read_image, read_mask, save_image  # noqa: E402
from pipelines.search import (CalibrationCase, Result, Searcher, box_iou,  # noqa: E402
                              calibrate_threshold)

CCP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ccp"
GARMENTS = ("jacket", "coat", "blazer", "cardigan", "dress", "skirt", "shirt", "blouse", "top",
            "t-shirt", "sweater", "sweatshirt", "hoodie", "jumper", "pants", "jeans", "shorts",
            "romper", "suit", "cape", "vest")
MIN_AREA_FRACTION = 0.04
QUERY_IDS = range(600, 701)
CALIBRATION_IDS = range(1, 600)  # --calibrate: cases built from these photos only
SCENE_HEIGHT = 416  # photos (832 px high) are halved, the query alike


@dataclass
class Case:
    photo: int
    label: str
    query: np.ndarray  # RGBA catalogue image
    scene: np.ndarray  # RGB
    mask: np.ndarray  # the garment's pixels in the scene (bool)
    box: tuple[int, int, int, int]


def _catalogue(photo: np.ndarray, mask: np.ndarray, scale: float,
               rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb, alpha = photo[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.uint8) * 255
    rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]  # catalogue shots are not the street pose
    size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale)))
    rgb = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=cv2.INTER_LINEAR)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-6, 7))) % 180
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.85, 1.15), 0, 255)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    white = np.full_like(rgb, 255)
    on_white = np.where(alpha[..., None] >= 128, rgb, white)
    return np.dstack([on_white, alpha])


def make_cases(count: int, seed: int = 0, ids: range = QUERY_IDS,
               distractors: range = range(1, 701)) -> list[Case]:
    """Cases with queries from photos ``ids``, the other scene photos from ``distractors``."""
    rng = np.random.default_rng(seed)
    labels = json.loads((CCP / "label_list.json").read_text())
    wanted = {labels.index(name) for name in GARMENTS if name in labels}
    pool = sorted(int(p.stem) for p in (CCP / "photos").glob("*.jpg") if int(p.stem) in distractors)
    candidates = []
    for photo_id in ids:
        label_path = CCP / "labels" / f"{photo_id:04d}.png"
        if not label_path.exists():
            continue
        label_map = read_mask(label_path)
        for value, area in zip(*np.unique(label_map, return_counts=True)):
            if int(value) in wanted and area >= MIN_AREA_FRACTION * label_map.size:
                candidates.append((photo_id, int(value)))
    order = rng.permutation(len(candidates))[:count]
    cases = []
    for index in order:
        photo_id, value = candidates[int(index)]
        photo = read_image(CCP / "photos" / f"{photo_id:04d}.jpg")
        mask = read_mask(CCP / "labels" / f"{photo_id:04d}.png") == value
        others = [p for p in rng.choice(pool, size=int(rng.integers(2, 4)) + 1, replace=False)
                  if p != photo_id][:int(rng.integers(2, 4))]
        tiles = [read_image(CCP / "photos" / f"{p:04d}.jpg") for p in others]
        position = int(rng.integers(0, len(tiles) + 1))
        tiles.insert(position, photo)
        factor = SCENE_HEIGHT / photo.shape[0]
        resized = [cv2.resize(t, (round(t.shape[1] * SCENE_HEIGHT / t.shape[0]), SCENE_HEIGHT),
                              interpolation=cv2.INTER_AREA) for t in tiles]
        offset = sum(t.shape[1] for t in resized[:position])
        scene = np.concatenate(resized, axis=1)
        scene_mask = np.zeros(scene.shape[:2], bool)
        small = cv2.resize(mask.astype(np.uint8), resized[position].shape[1::-1],
                           interpolation=cv2.INTER_NEAREST).astype(bool)
        scene_mask[:, offset:offset + small.shape[1]] = small
        ys, xs = np.nonzero(scene_mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        query = _catalogue(photo, mask, factor * float(rng.uniform(0.6, 1.4)), rng)
        cases.append(Case(photo_id, labels[value], query, scene, scene_mask, box))
    return cases


def run(searcher: Searcher, cases: list[Case], out: Path | None, tag: str,
        examples: int) -> dict[str, float]:
    argmax_hits = iou_hits = any_hits = peak_hits = empty = 0
    start = time.perf_counter()
    for k, case in enumerate(cases):
        query = searcher.prepare(case.query)
        maps = searcher.maps(query, [case.scene])
        heat, size = maps.heat[0], maps.object_height[0]
        detections = searcher.detect(query, heat, size)
        y, x = np.unravel_index(int(heat.argmax()), heat.shape)
        argmax_hits += bool(case.mask[y, x])
        ious = [box_iou(d.box, case.box) for d in detections]
        iou_hits += bool(ious) and ious[0] >= 0.5
        any_hits += any(i >= 0.5 for i in ious)
        empty += not ious
        # Threshold-free: the box of the strongest peak, whatever its heat (localisation only).
        peak = searcher.detect(query, heat, size, threshold=float(heat.max()))
        peak_hits += bool(peak) and box_iou(peak[0].box, case.box) >= 0.5
        if out is not None and k < examples:
            result = Result(heat, detections, searcher.threshold, case.scene, query_mask=query.mask)
            picture = result.highlight()
            cv2.rectangle(picture, case.box[:2], (case.box[2] - 1, case.box[3] - 1), (40, 220, 40), 2)
            stem = f"{tag}_{k:03d}_{case.photo:04d}_{case.label}"
            save_image(out / f"{stem}.highlight.jpg", picture)
            save_image(out / f"{stem}.query.png", case.query)
    n = len(cases)
    return {"cases": n, "argmax_in_mask": argmax_hits / n, "top_iou50": iou_hits / n,
            "any_iou50": any_hits / n, "peak_iou50": peak_hits / n, "no_detection": empty / n,
            "seconds_per_case": (time.perf_counter() - start) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Write a few highlighted examples here.")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", action="store_true",
                        help="Also calibrate each model's threshold on cases from photos 0001-0599 "
                        "and report the test figures with it.")
    args = parser.parse_args()
    if not (CCP / "labels").is_dir():
        print(f"skipped: {CCP.resolve()} is absent (the CCP working copy is not on this machine)")
        return
    cases = make_cases(args.cases, args.seed)
    models = [("untrained", None)] + ([("checkpoint", args.checkpoint)] if args.checkpoint else [])
    print(f"{len(cases)} cases: garments of photos {QUERY_IDS.start:04d}-{QUERY_IDS.stop - 1:04d} "
          "searched in scenes of 3-4 photos")
    calibration_cases = (make_cases(args.cases, args.seed + 1, CALIBRATION_IDS, CALIBRATION_IDS)
                         if args.calibrate else [])
    runs = [(tag, checkpoint, None) for tag, checkpoint in models]
    for tag, checkpoint in models if args.calibrate else []:
        found = calibrate_threshold(Searcher(checkpoint=checkpoint, device=args.device),
                                    [CalibrationCase(c.query, c.scene, [c.box]) for c in calibration_cases])
        print(f"{tag}: threshold calibrated on {len(calibration_cases)} cases of photos "
              f"{CALIBRATION_IDS.start:04d}-{CALIBRATION_IDS.stop - 1:04d}: {found.threshold:.2f} "
              f"(F1 {found.f1:.3f} there)")
        runs.append((f"{tag}-calibrated", checkpoint, found.threshold))
    for tag, checkpoint, threshold in runs:
        searcher = Searcher(checkpoint=checkpoint, device=args.device, threshold=threshold)
        figures = run(searcher, cases, args.out, tag, args.examples)
        print(f"{tag:>10} (threshold {searcher.threshold:.2f}): "
              f"heat argmax on the garment {figures['argmax_in_mask']:.1%}, "
              f"top box IoU>=0.5 {figures['top_iou50']:.1%}, any box IoU>=0.5 "
              f"{figures['any_iou50']:.1%}, no detection {figures['no_detection']:.1%}, "
              f"strongest peak's box IoU>=0.5 (no threshold) {figures['peak_iou50']:.1%}, "
              f"{figures['seconds_per_case']:.2f} s/case")


if __name__ == "__main__":
    main()
