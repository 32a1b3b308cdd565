"""Evaluate a checkpoint (or the untrained network, as the baseline) on held-out shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from augment.atomic_files import atomic_write_text, json_safe
from augment.storage import as_place
from train.checkpoint import load_checkpoint, load_model_state
from train.data import make_loader
from train.distributed import DistInfo
from train.config import TrainConfig
from train.loop import evaluate, resolve_device
from train.tasks import build_task


def load_trained(checkpoint: Path | str | None, config: TrainConfig | None = None) -> tuple[nn.Module, TrainConfig]:
    """The model of ``checkpoint`` and its training config, or (without a checkpoint) the untrained
    network of ``config``: pretrained backbone + correlation + the conversion net's initial readout."""
    if checkpoint is None:
        config = config or TrainConfig()
        return build_task(config).build_model(), config
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_checkpoint(state, checkpoint)
    model = build_task(config).build_model()
    load_model_state(model, state, checkpoint)
    return model, config


def evaluate_shards(model: nn.Module, config: TrainConfig, shards: Path | str, *, split: str = "eval",
                    batches: int | None = None, batch_size: int | None = None, num_workers: int | None = None,
                    device: str = "auto") -> dict[str, Any]:
    """Loss, IoU@0.5, hit rate and false-alarm rate of ``model`` over pairs of ``shards``.

    ``batches`` None evaluates one full pass over the split.
    """
    task = build_task(config)
    dataset = task.dataset(as_place(shards), split)
    loader = make_loader(dataset, batch_size or config.batch_size,
                         config.num_workers if num_workers is None else num_workers, drop_last=False)
    target = resolve_device(device, DistInfo())
    metrics = evaluate(model.to(target), task, loader, target, config, batches)
    return {"shards": str(shards), "split": split, "batches": batches, "metrics": metrics}


def write_report(report: dict[str, Any], path: Path | str) -> None:
    atomic_write_text(path, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
