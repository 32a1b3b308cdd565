"""Training throughput: correlation kernels, the data loader, and the training step.

    python benchmarks/train.py [--shards DIR] [--config configs/train_cpu.yaml]
    python benchmarks/train.py --device cuda [--config configs/train_gpu.yaml] [--compile]

Prints, from one run (shared machines are noisy, so compare ratios):
  (a) batched (grouped conv; batched matmul) vs looped correlation at batch 32, forward and
      forward + backward, at the GPU and CPU configs' sizes: the target is >= 5x;
  (b) data-loader samples/s with 0, 1 and 2 workers, against training-step samples/s with the
      config's sizes, and the headroom ratio loader / step (> 1 means the step is the bottleneck);
  (c) with --device cuda: samples/s and peak GPU memory at batch 64, 384x384 media, bf16,
      channels_last (the GPU config), and the loader headroom at that rate.
Without --shards, shards are generated into a temporary folder by tests/shard_factory.py.

glibc returns large freed blocks to the OS at once and page-faults them back on the next
forward; on this CPU that doubles the backbone's time. The script re-executes itself with
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ raised unless they are already set.
"""

from __future__ import annotations

import os
import sys

_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
if __name__ == "__main__" and any(key not in os.environ for key in _MALLOC):
    os.environ.update({k: v for k, v in _MALLOC.items() if k not in os.environ})
    os.execv(sys.executable, [sys.executable, *sys.argv])

from functools import partial  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
sys.path.append(str(ROOT / "benchmarks"))  # after the repo: this file must not shadow train/

from shard_factory import make_shards  # noqa: E402
from bench_args import Parser, device_option, at_least, existing_file, existing_folder  # noqa: E402
from timing import best_time  # noqa: E402
from train.correlation import correlate, correlate_looped  # noqa: E402
from train.data import make_loader  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.loop import autocast, to_device  # noqa: E402
from train.tasks import build_task  # noqa: E402


# (channels, query side, medium side): the GPU config's stride-8 level (query 128, medium 384), and
# the CPU config's stride-8 and stride-16 levels (query 96, medium 192).
CORRELATION_SIZES = ((40, 16, 48), (40, 12, 24), (112, 6, 12))


def bench_correlation(device: torch.device, batch: int = 32) -> None:
    """Batched correlation (grouped conv, and batched matmul + shifted sums) against a per-sample loop."""
    for channels, query_side, medium_side in CORRELATION_SIZES:
        generator = torch.Generator().manual_seed(0)
        query = torch.randn(batch, channels, query_side, query_side, generator=generator).to(device).requires_grad_()
        medium = torch.randn(batch, channels, medium_side, medium_side, generator=generator).to(device).requires_grad_()
        mask = torch.rand(batch, 1, query_side, query_side, generator=generator).to(device)

        def forward(function) -> None:
            with torch.no_grad():
                function(query, medium, mask)

        def forward_backward(function) -> None:
            function(query, medium, mask).sum().backward()

        for name, run in (("fwd", forward), ("fwd+bwd", forward_backward)):
            looped = best_time(lambda: run(correlate_looped), 5, device)
            times = {m: best_time(lambda: run(partial(correlate, method=m)), 5, device) for m in ("grouped", "matmul")}
            auto = "matmul" if device.type == "cpu" else "grouped"
            print(
                f"(a) correlation {name:7s} batch {batch}, {channels}x{query_side}x{query_side} over "
                f"{channels}x{medium_side}x{medium_side}: looped {looped * 1e3:7.1f} ms | "
                + " | ".join(f"{m} {t * 1e3:7.1f} ms = {looped / t:4.1f}x" for m, t in times.items())
                + f"  (auto uses {auto}; target >= 5x)"
            )


def loader_rate(config: TrainConfig, shards: Path, workers: int, batches: int) -> float:
    """Samples/s of the training loader, after its first batch (worker start-up excluded)."""
    dataset = build_task(config).dataset(shards, "train")
    seen, start, epoch = 0, 0.0, 0
    while seen < batches:
        dataset.set_epoch(epoch)
        for batch in make_loader(dataset, config.batch_size, workers):
            if start == 0.0:
                start = time.perf_counter()
                continue
            seen += 1
            if seen >= batches:
                break
        epoch += 1
    return batches * config.batch_size / (time.perf_counter() - start)


def step_rate(config: TrainConfig, shards: Path, device: torch.device, steps: int) -> tuple[float, int]:
    """Training samples/s (forward, backward, AdamW step) on one fixed batch; peak CUDA bytes."""
    task = build_task(config)
    model = task.build_model().to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(task.parameter_groups(model), lr=1e-4)
    train_model = torch.compile(model) if config.compile else model
    batch = next(iter(make_loader(task.dataset(shards, "train"), config.batch_size, 0)))
    batch = to_device(batch, device)
    train_model.train()

    def one_step() -> None:
        with autocast(device, config):
            loss, _ = task.step(train_model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3 if config.compile else 1):
        one_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = sum(best_time(one_step, 1, device) for _ in range(steps)) / steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return config.batch_size / seconds, peak


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=existing_folder, help="shard folder (default: generate small ones)")
    parser.add_argument("--config", type=existing_file, help="training config (default: train_cpu / train_gpu by device)")
    parser.add_argument("--device", type=device_option, default="cpu", help="cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model for (c)")
    parser.add_argument("--steps", type=at_least(1), default=5, help="timed training steps")
    parser.add_argument("--batches", type=at_least(1), default=8, help="timed loader batches per worker count")
    args = parser.parse_args()
    device = torch.device(args.device)
    config_path = args.config or ROOT / "configs" / ("train_gpu.yaml" if device.type == "cuda" else "train_cpu.yaml")
    config = TrainConfig.from_yaml(config_path, device=args.device)
    config.compile = args.compile
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, config {config_path.name}")

    with tempfile.TemporaryDirectory() as scratch:
        shards = args.shards
        if shards is None:
            shards = Path(scratch)
            make_shards(shards, n_cutouts=24, n_composites=96, rows_per_group=8, rows_per_shard=48, size=512,
                        max_objects=4)
        bench_correlation(device)
        if device.type == "cuda":
            config.batch_size, config.medium_size, config.amp, config.channels_last = 64, 384, "bf16", True
        rate, peak = step_rate(config, shards, device, args.steps)
        step_line = (f"training step: {rate:.1f} samples/s (batch {config.batch_size}, query {config.query_size}, "
                     f"medium {config.medium_size}, amp {config.amp}, channels_last {config.channels_last}, "
                     f"compile {config.compile})")
        if device.type == "cuda":
            step_line += f", peak GPU memory {peak / 2**30:.2f} GiB"
        print(("(c) " if device.type == "cuda" else "(b) ") + step_line)
        for workers in sorted({0, 1, 2, config.num_workers} if device.type == "cuda" else {0, 1, 2}):
            loader = loader_rate(config, shards, workers, args.batches)
            print(f"    loader, {workers} workers: {loader:.1f} samples/s -> headroom {loader / rate:.2f}x the step")


if __name__ == "__main__":
    main()
