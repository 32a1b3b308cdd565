"""Speed and threshold calibration of `synth search` (pipelines/search.py).

Speed (default): frames/s of the whole search at 640x480, the backbone's forward pass alone on
the same frames, and their ratio (target: search <= 1.5x the backbone):

    python benchmarks/search.py [--device cpu|cuda] [--batch 4] [--scales 0.5 1 2]
    python benchmarks/search.py --photos 20 [--negatives 20]  # real CCP catalogue -> scene cases with and without the object

The search encodes media in onnxruntime, as `synth search` does for a long job (a folder of 50+
images, a video: pipelines/search_outputs.py ONNX_MIN_WORK); `--pytorch-backbone` times PyTorch's
path (a short job's). "The backbone" is PyTorch's forward pass; the backbone in onnxruntime is
timed beside it, and the search's ratio to each is printed.

Calibration (--calibrate): the F1-maximising heat threshold (detections at IoU >= 0.5) of a model
over generated cases (skimage photos pasted 0-2 times at 0.3-3x the query's size, partly occluded,
into other photos), which chose the untrained threshold until stop 19 (since then: real CCP calibration
photos, `synth calibrate --photos`, see UNTRAINED_THRESHOLD in pipelines/search.py):

    python benchmarks/search.py --calibrate [--cases 120] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/
import augment  # noqa: E402,F401  (before torch: OpenMP's wait policy, as synth sets it)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_args import Parser, device_option, at_least, existing_file  # noqa: E402
from timing import best_time  # noqa: E402
from pipelines.search import (DEFAULT_QUERY_SCALES, CalibrationCase, Searcher,  # noqa: E402
                              calibrate_threshold, detect)
from augment.system import tune_malloc  # noqa: E402
from pipelines.search_inputs import to_tensor  # noqa: E402
from pipelines.search_workers import SearchWorkers  # noqa: E402
from pipelines.onnx_backbone import medium_encoder  # noqa: E402


def _photos() -> dict[str, np.ndarray]:
    from skimage import data

    photos = {name: getattr(data, name)() for name in (
        "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
        "colorwheel")}
    for name in ("camera", "brick", "grass", "gravel", "moon", "coins"):
        photos[name] = np.dstack([getattr(data, name)()] * 3)
    return photos


def _crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(0, image.shape[0] - height + 1))
    x = int(rng.integers(0, image.shape[1] - width + 1))
    return image[y:y + height, x:x + width]


def generated_cases(count: int, seed: int = 0, size: tuple[int, int] = (240, 320)
                    ) -> list[CalibrationCase]:
    """Queries cut from one skimage photo, pasted 0-2 times into a scene cut from another."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    names = sorted(photos)
    colour = [n for n in names if photos[n].std(axis=2).mean() > 5]
    height, width = size
    cases = []
    for _ in range(count):
        query_name = colour[int(rng.integers(len(colour)))]
        scene_name = names[int(rng.integers(len(names)))]
        while scene_name == query_name:
            scene_name = names[int(rng.integers(len(names)))]
        side = int(rng.integers(56, 104))
        aspect = float(rng.uniform(0.7, 1.4))
        qh, qw = side, int(side * aspect)
        query = _crop(photos[query_name], min(qh, photos[query_name].shape[0]),
                      min(qw, photos[query_name].shape[1]), rng).copy()
        scene = cv2.resize(_crop(photos[scene_name], min(photos[scene_name].shape[:2]),
                                 min(photos[scene_name].shape[:2]), rng), (width, height),
                           interpolation=cv2.INTER_AREA).copy()
        mask = None
        if rng.random() < 0.5:  # an object silhouette: a filled ellipse as the query's alpha
            mask = np.zeros(query.shape[:2], np.uint8)
            cv2.ellipse(mask, (query.shape[1] // 2, query.shape[0] // 2),
                        (query.shape[1] // 2 - 1, query.shape[0] // 2 - 1), 0, 0, 360, 255, -1)
        boxes: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            scale = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
            scale = min(scale, 0.9 * height / query.shape[0], 0.9 * width / query.shape[1])
            ph, pw = max(8, round(query.shape[0] * scale)), max(8, round(query.shape[1] * scale))
            for _attempt in range(20):
                x, y = int(rng.integers(0, width - pw + 1)), int(rng.integers(0, height - ph + 1))
                box = (x, y, x + pw, y + ph)
                if all(min(b[2], box[2]) <= max(b[0], box[0]) or min(b[3], box[3]) <= max(b[1], box[1])
                       for b in boxes):
                    break
            else:
                continue
            patch = cv2.resize(query, (pw, ph), interpolation=cv2.INTER_AREA)
            keep = np.ones((ph, pw), bool) if mask is None else cv2.resize(mask, (pw, ph)) >= 128
            region = scene[y:y + ph, x:x + pw]
            region[keep] = patch[keep]
            if rng.random() < 0.3:  # occlude up to a quarter of the instance
                oh, ow = int(ph * rng.uniform(0.2, 0.5)), int(pw * rng.uniform(0.2, 0.5))
                region[:oh, :ow] = rng.integers(0, 256, 3, dtype=np.uint8)
            boxes.append(box)
        query_rgba = np.dstack([query, mask if mask is not None else
                                np.full(query.shape[:2], 255, np.uint8)])
        cases.append(CalibrationCase(query_rgba, scene, boxes))
    return cases


def calibrate(args: argparse.Namespace) -> None:
    searcher = Searcher(checkpoint=args.checkpoint, device=args.device, query_scales=None if args.auto_scales else args.scales,
                        untrained=args.untrained)
    cases = generated_cases(args.cases, seed=args.seed)
    start = time.perf_counter()
    result = calibrate_threshold(searcher, cases)
    print(f"{len(cases)} cases, {sum(len(c.boxes) for c in cases)} instances, "
          f"{time.perf_counter() - start:.1f} s")
    for row in result.table:
        print(f"  threshold {row['threshold']:.2f}  F1 {row['f1']:.3f}  "
              f"precision {row['precision']:.3f}  recall {row['recall']:.3f}")
    print(f"best threshold {result.threshold:.2f}: F1 {result.f1:.3f} "
          f"(precision {result.precision:.3f}, recall {result.recall:.3f})")


def peak_costs(repeats: int) -> tuple[float, float]:
    """Seconds to turn a 640x480 frame's maps into detections with 1 and with 150 peaks."""
    yy, xx = np.mgrid[:480, :640]
    heights = np.full((480, 640), 24.0, np.float32)

    def frame(centres: list[tuple[int, int]]) -> np.ndarray:
        heat = np.zeros((480, 640), np.float32)
        for x, y in centres:
            heat = np.maximum(heat, 0.9 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 72.0)).astype(np.float32)
        return heat

    one = frame([(320, 240)])
    many = frame([(20 + 42 * (k % 15), 24 + 46 * (k // 15)) for k in range(150)])
    times = []
    for heat in (one, many):
        times.append(best_time(lambda h=heat: detect(h, heights, 1.0, 0.5, 16), repeats, torch.device("cpu")))
    return times[0], times[1]


def speed(args: argparse.Namespace) -> None:
    tune_malloc()
    searcher = Searcher(checkpoint=args.checkpoint, device=args.device, query_scales=None if args.auto_scales else args.scales,
                        untrained=args.untrained, verify=not args.no_verify)
    if not args.pytorch_backbone:
        searcher.network.use_onnx()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(args.batch)]
    query = searcher.prepare(rng.integers(0, 256, (args.query_size, args.query_size, 3),
                                          dtype=np.uint8))
    model, device = searcher.model, searcher.device
    batch = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float() / 255
    if searcher.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)

    def backbone() -> None:
        with torch.inference_mode(), searcher._autocast():
            model.backbone.forward_features(batch, max_stride=model.max_stride)

    def search() -> None:
        searcher.find_many(query, frames)

    t_backbone = best_time(backbone, args.repeats, device)
    t_search = best_time(search, args.repeats, device)
    encoder = medium_encoder(model) if searcher.network.onnx else None
    t_onnx = best_time(lambda: encoder(batch), args.repeats, device) if encoder is not None else None
    with SearchWorkers(searcher) as workers:
        t_side = best_time(lambda: workers.find_each(query, frames), args.repeats, device)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, 640x480, "
          f"query {args.query_size}px, query scales "
          f"{searcher.network.scales(query, 480, 640)}{' (automatic)' if searcher.auto_scales else ''}, "
          f"verification {'off' if searcher.verification is None else 'on'}")
    print(f"backbone forward alone: {t_backbone / args.batch * 1000:.1f} ms/frame "
          f"({args.batch / t_backbone:.1f} frames/s)")
    print(f"whole search:           {t_search / args.batch * 1000:.1f} ms/frame "
          f"({args.batch / t_search:.1f} frames/s)")
    print(f"ratio search / backbone: {t_search / t_backbone:.2f}x (target <= 1.5x)")
    if t_onnx is not None:
        print(f"media encoded by onnxruntime (as long jobs are): the backbone there {t_onnx / args.batch * 1000:.1f} "
              f"ms/frame; search / that backbone {t_search / t_onnx:.2f}x")
    print(f"the frames searched {workers.workers} side by side, one thread each (synth search's default on "
          f"CPU for --every-instance video): {t_side / args.batch * 1000:.1f} ms/frame, "
          f"{t_side / t_backbone:.2f}x the backbone")
    one, many = peak_costs(args.repeats)
    print(f"maps -> detections, 640x480: 1 peak {one * 1000:.1f} ms, 150 peaks {many * 1000:.1f} ms "
          f"({many / one:.2f}x)")


def speed_on_photos(args: argparse.Namespace) -> None:
    """The default search (verification on) and the heat map alone, per real CCP catalogue → scene
    case (the first ``--photos`` positive and ``--negatives`` negative test cases of
    benchmarks/ccp.py), over the backbone on the same scene, for positives, negatives and both;
    random-noise frames are verification's worst case, these are what users search. A scene
    without the object costs more than one with it (the smaller object searched again in the
    medium up-sampled, every candidate verified and none confirmed): a folder search mostly
    holds such scenes."""
    import ccp

    if not ccp.available():
        print(ccp.skip_message())
        return
    searchers = {
        "heat map, as given": Searcher(checkpoint=args.checkpoint, device=args.device, untrained=args.untrained,
                                       verify=False, mirror=False),
        "heat map": Searcher(checkpoint=args.checkpoint, device=args.device, untrained=args.untrained, verify=False),
        "verified": Searcher(checkpoint=args.checkpoint, device=args.device, untrained=args.untrained),
    }
    if not args.pytorch_backbone:  # as `synth search` encodes a long job's media (ONNX_MIN_WORK)
        for searcher in searchers.values():
            searcher.network.use_onnx()
    cases = ccp.search_cases("test")
    groups = {"positives": [c for c in cases if c.positive][:args.photos],
              "negatives": [c for c in cases if not c.positive][:args.negatives]}
    groups = {name: group for name, group in groups.items() if group}
    workers = SearchWorkers(searchers["verified"])
    print(f"CCP catalogue -> scene test cases (scenes ~416x830), threads {torch.get_num_threads()}; one at a "
          f"time on all threads, or {workers.workers} side by side on one thread each (synth search's "
          f"default for stills: pipelines/search_workers.py)")
    every: dict[str, float] = {}
    for name, group in groups.items():
        totals = _photo_totals(group, searchers, workers, args.repeats)
        _print_totals(f"{len(group)} {name}", totals, len(group))
        every = {k: every.get(k, 0.0) + v for k, v in totals.items()}
    if len(groups) > 1:
        _print_totals(f"all {sum(map(len, groups.values()))}", every, sum(map(len, groups.values())))
    workers.close()


def _photo_totals(cases: list, searchers: dict[str, Searcher], workers: SearchWorkers,
                  repeats: int) -> dict[str, float]:
    """Seconds over ``cases``: the backbone and each searcher one case at a time, and (with more
    than one worker) the backbone and the verified search side by side."""
    verified = searchers["verified"]
    encoder = medium_encoder(verified.model) if verified.network.onnx else None
    totals = {"backbone": 0.0, **({"backbone, onnxruntime": 0.0} if encoder is not None else {}),
              **{name: 0.0 for name in searchers}}
    if workers.workers > 1:
        totals.update({"backbone, side by side": 0.0, "verified, side by side": 0.0})
        _side_by_side(verified, workers, cases, totals, repeats)
    for case in cases:
        queries = {name: s.prepare(case.query[..., :3], case.query[..., 3]) for name, s in searchers.items()}
        batch = to_tensor([case.scene], verified.device, verified.channels_last)

        def backbone() -> None:
            with torch.inference_mode(), verified._autocast():
                verified.model.backbone.forward_features(batch, max_stride=verified.model.max_stride)

        totals["backbone"] += best_time(backbone, repeats, verified.device)
        if encoder is not None:
            totals["backbone, onnxruntime"] += best_time(lambda: encoder(batch), repeats, verified.device)
        for name, searcher in searchers.items():
            totals[name] += best_time(lambda: searcher.find_many(queries[name], [case.scene]), repeats,
                                      verified.device)
    return totals


def _print_totals(title: str, totals: dict[str, float], count: int) -> None:
    print(title)
    for name, seconds in totals.items():
        against = "backbone, side by side" if name.endswith("side by side") else "backbone"
        print(f"  {name:24} {seconds / count * 1000:7.1f} ms/scene  "
              f"{seconds / totals['backbone']:.2f}x the backbone one at a time"
              + (f", {seconds / totals[against]:.2f}x side by side" if against != "backbone" else "")
              + (f", {seconds / totals['backbone, onnxruntime']:.2f}x the backbone in onnxruntime"
                 if "backbone, onnxruntime" in totals else ""))


def _side_by_side(searcher: Searcher, workers: SearchWorkers, cases: list, totals: dict[str, float],
                  repeats: int) -> None:
    """All ``cases`` handed to the workers at once, each searched with its own query, as `synth
    search` hands out a folder's images (pipelines/search_outputs.py ImageBatch), and the backbone
    alone on them the same way; seconds added to ``totals``."""
    def backbone(scene: np.ndarray) -> None:
        with searcher._autocast():
            searcher.model.backbone.forward_features(to_tensor([scene], searcher.device, searcher.channels_last),
                                                     max_stride=searcher.model.max_stride)

    queries = [searcher.prepare(c.query[..., :3], c.query[..., 3]) for c in cases]
    scenes = [c.scene for c in cases]
    totals["backbone, side by side"] += best_time(lambda: workers.map(backbone, scenes), repeats,
                                                  searcher.device)
    totals["verified, side by side"] += best_time(lambda: workers.find_pairs(queries, scenes), repeats,
                                                  searcher.device)


def main() -> None:
    parser = Parser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", type=device_option, default="cpu")
    parser.add_argument("--checkpoint", type=existing_file, default=None)
    parser.add_argument("--untrained", action="store_true", help="The untrained network (default: as synth search).")
    parser.add_argument("--no-verify", action="store_true", help="Speed of the heat map alone (no verification).")
    parser.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_QUERY_SCALES),
                        help="Query scales (as synth search's default).")
    parser.add_argument("--auto-scales", action="store_true", help="Automatic scales (synth search --scales auto).")
    parser.add_argument("--threads", type=at_least(0), default=0,
                        help="CPU threads of torch (0: its default); 1 steadies figures on a shared machine.")
    parser.add_argument("--batch", type=at_least(1), default=4, help="noise frames searched at once")
    parser.add_argument("--pytorch-backbone", action="store_true",
                        help="Encode media with PyTorch (a short job's path), not onnxruntime (a long one's).")
    parser.add_argument("--repeats", type=at_least(1), default=5, help="timed calls (the fastest kept)")
    parser.add_argument("--query-size", type=int, default=96)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--cases", type=at_least(1), default=120, help="--calibrate: generated cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos", type=at_least(0), default=0,
                        help="Speed on this many real CCP catalogue -> scene positive cases instead of noise frames.")
    parser.add_argument("--negatives", type=at_least(0), default=None,
                        help="... and this many negative cases (scenes without the object; default: as --photos).")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.negatives is None:
        args.negatives = args.photos
    if args.calibrate:
        calibrate(args)
    elif args.photos > 0:
        speed_on_photos(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
