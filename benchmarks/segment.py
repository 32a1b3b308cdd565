"""Segmentation throughput: training samples/s and inference images/s on this machine.

    python benchmarks/segment.py [--config configs/ccp_segment.yaml] [--device cpu|cuda] [--photos N] [--steps N]

Prints, from one run (shared machines are noisy: compare the ratios):
  (a) training step samples/s (forward, backward, AdamW) at the config's crop and batch, with the
      config's settings and with the backbone fully trainable / fully frozen, channels_last off;
      the data loader's samples/s with 0, 1 and 2 workers and its headroom over the step;
  (b) inference images/s of `synth segment` (one view) and of `synth extract`'s two views, on
      photos at the config's short side, and the whole `synth extract` per photo (masks, cutouts,
      superpixels, pseudo-labels written); the network's share is its time over the backbone's alone.
Photos: CCP's (../shared/data/ccp) when present, else generated ones. The network is untrained:
speed does not depend on the weights. With --device cuda, bf16 autocast and channels_last.
"""

from __future__ import annotations

import os
import sys

_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
if __name__ == "__main__" and any(key not in os.environ for key in _MALLOC):
    os.environ.update({k: v for k, v in _MALLOC.items() if k not in os.environ})
    os.execv(sys.executable, [sys.executable, *sys.argv])

import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
CCP = ROOT.parent / "shared" / "data" / "ccp"

from augment.config import SourceConfig  # noqa: E402
from augment.imageio import list_images, read_image  # noqa: E402
from augment.photo_shards import write_photo_shards  # noqa: E402
from pipelines.extract import ExtractConfig, run_extract  # noqa: E402
from pipelines.segmenter import Segmenter  # noqa: E402
from segment_factory import make_scene_photos  # noqa: E402
from bench_args import Parser, device_option, at_least, existing_file  # noqa: E402
from timing import best_time  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.tasks import build_task  # noqa: E402


def _train_benchmark():
    """benchmarks/train.py's loader and step timers (loaded by path: `train` is also the package's name)."""
    spec = importlib.util.spec_from_file_location("train_benchmark", ROOT / "benchmarks" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo_source(scratch: Path, count: int) -> tuple[Path, SourceConfig]:
    if (CCP / "labels").is_dir():
        return CCP, SourceConfig(format="label_map", limit=count)
    return make_scene_photos(scratch / "generated", count=count, size=512), SourceConfig(limit=count)


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=existing_file, default=ROOT / "configs" / "ccp_segment.yaml")
    parser.add_argument("--device", type=device_option, default="cpu")
    parser.add_argument("--photos", type=at_least(1), default=24, help="photos timed for inference and extraction")
    parser.add_argument("--steps", type=at_least(1), default=3, help="timed training steps per setting")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = TrainConfig.from_yaml(args.config, device=args.device)
    if device.type == "cuda":
        config.amp, config.channels_last = "bf16", True
    bench = _train_benchmark()
    segment = config.segment_config()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, config {args.config.name}")

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        source, source_config = photo_source(scratch, max(args.photos, 2 * config.batch_size))
        shards = scratch / "photos"
        write_photo_shards([source], shards, source_config, segment.store_short_side)
        print(f"photos: {source} ({'real CCP' if source == CCP else 'generated'}), stored at {segment.store_short_side} px "
              f"short side, trained at {segment.crop_size}x{segment.crop_size} crops, batch {config.batch_size}")

        # (a) training
        rate, _ = bench.step_rate(config, shards, device, args.steps)
        print(f"(a) training step, config as is (frozen_blocks {config.model.get('frozen_blocks', 0)}, "
              f"channels_last {config.channels_last}): {rate:.2f} samples/s")
        variants = {"whole backbone trained": {"frozen_blocks": 0, "freeze_backbone": False},
                    "backbone frozen (decoder only)": {"freeze_backbone": True}}
        for name, model in variants.items():
            other = dataclasses.replace(config, model={**config.model, **model})
            other_rate, _ = bench.step_rate(other, shards, device, args.steps)
            print(f"    {name}: {other_rate:.2f} samples/s = {other_rate / rate:.2f}x the config's")
        if device.type == "cpu":
            plain = dataclasses.replace(config, channels_last=False)
            plain_rate, _ = bench.step_rate(plain, shards, device, args.steps)
            print(f"    channels_last off: {plain_rate:.2f} samples/s = {plain_rate / rate:.2f}x the config's")
        for workers in (0, 1, 2):
            loader = bench.loader_rate(config, shards, workers, 6)
            print(f"    loader, {workers} workers: {loader:.1f} samples/s -> headroom {loader / rate:.2f}x the step")

        # (b) inference
        checkpoint = scratch / "untrained.pt"
        model = build_task(config).build_model()
        save_checkpoint(checkpoint, model=model, optimizer=None, step=0, config=config.to_dict(), config_hash=config.hash())
        segmenter = Segmenter(checkpoint, args.device)
        paths = list_images(source / "photos" if source == CCP else source / "images")[0][:args.photos]
        photos = [read_image(p, "rgb") for p in paths]
        height, width = segmenter.working_size(*photos[0].shape[:2])
        one = best_time(lambda: [segmenter.predict(p) for p in photos], 1, device) / len(photos)
        two = best_time(lambda: [segmenter.views(p) for p in photos], 1, device) / len(photos)
        batch = torch.rand(1, 3, height, width, device=device)
        backbone = segmenter.model.backbone

        def backbone_only() -> None:
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=segmenter.amp):
                backbone.forward_features(batch.contiguous(memory_format=torch.channels_last)
                                          if segmenter.channels_last else batch)

        alone = best_time(backbone_only, 3, device)
        print(f"(b) inference at {width}x{height} (photos {photos[0].shape[1]}x{photos[0].shape[0]}): "
              f"`synth segment` network {1 / one:.1f} images/s = {one / alone:.2f}x the backbone alone; "
              f"two views (extract) {1 / two:.1f} images/s")
        config_extract = ExtractConfig(min_confidence=0.0, min_stability=0.0, previews=0)
        started = time.perf_counter()
        summary = run_extract(segmenter, paths, scratch / "extract", config_extract)
        seconds = time.perf_counter() - started
        print(f"    whole `synth extract` (untrained network, every region accepted: {summary.cutouts} cutouts with "
              f"superpixels, {summary.pseudo_photos} pseudo-labelled photos): {len(paths) / seconds:.2f} photos/s")


if __name__ == "__main__":
    main()
