"""Semantic segmentation as a training task: a class per pixel, cross-entropy, mIoU.

Samples come from :class:`train.segment_data.SegmentShards` (labelled photos, automatically
labelled photos and composites, mixed by ``segment.mix``); the model is
:class:`train.segment_model.SegmentationNet`; the classes are ``segment.classes``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.config import TrainConfig
from train.segment_config import IGNORE_INDEX
from train.segment_data import SegmentShards
from train.segment_model import SegmentationNet
from train.tasks import Metrics, adamw_groups


def confusion_metrics(logits: torch.Tensor, target: torch.Tensor, names: list[str]) -> Metrics:
    """Per-class IoU as (intersection, union) pixel counts, and pixel accuracy, over labelled pixels.

    Summed over batches, intersection / union is the IoU over the whole set (not a mean of
    per-image IoUs). Counts stay on the device.
    """
    classes = len(names)
    predicted = logits.detach().argmax(1).flatten()
    truth = target.flatten().long()
    valid = truth != IGNORE_INDEX
    cells = torch.bincount(truth[valid] * classes + predicted[valid], minlength=classes * classes)
    confusion = cells.reshape(classes, classes).float()  # rows: truth, columns: prediction
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    metrics: Metrics = {"pixel_accuracy": (hits.sum(), confusion.sum())}
    for index, name in enumerate(names):
        metrics[f"iou/{name}"] = (hits[index], union[index])
    return metrics


def mean_iou(means: dict[str, float]) -> float:
    """Mean of the per-class IoUs over classes that occur (in the truth or the prediction)."""
    values = [v for k, v in means.items() if k.startswith("iou/") and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


class SegmentTask:
    """Pixel classes over ``segment.classes``; ignored pixels (value 255) carry no loss."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.segment = config.segment_config()
        self.class_names = [c.name for c in self.segment.classes]

    def build_model(self) -> nn.Module:
        return SegmentationNet(self.config.model_config(), len(self.class_names))

    def dataset(self, shards: Path | list[Path], split: str, rank: int = 0, world_size: int = 1) -> SegmentShards:
        return SegmentShards(shards, self.segment, split=split, seed=self.config.seed, rank=rank,
                             world_size=world_size, shuffle_buffer=self.config.shuffle_buffer)

    def train_datasets(self, shards: Path | list[Path], rank: int = 0,
                       world_size: int = 1) -> list[tuple[SegmentShards, float]]:
        """One training stream: the shards' (their mix is SegmentShards' own)."""
        return [(self.dataset(shards, "train", rank, world_size), 1.0)]

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return adamw_groups(model, self.config)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        image = (batch["image"].float() / 255.0).contiguous(memory_format=fmt)
        outputs = model(image)
        logits = outputs["logits"].float()  # the loss in float32, also under bf16 autocast
        target = batch["target"].long()
        # Mean over labelled pixels without a host sync; a batch with none gives 0, not NaN.
        labelled = (target != IGNORE_INDEX).sum().clamp_min(1)
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
        return loss, outputs

    def metrics(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Metrics:
        return confusion_metrics(outputs["logits"], batch["target"], self.class_names)

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        return {"miou": mean_iou(means)}
