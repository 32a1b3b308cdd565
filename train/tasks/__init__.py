"""Training tasks: what a model learns and from which data. The loop (:mod:`train.loop`) knows
only the :class:`Task` protocol; each task is one module of this package."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import IterableDataset

from augment.imageio import InputError
from augment.storage import Place, as_place
from train.config import TrainConfig

Metrics = dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (sum, count), summed over batches


class Task(Protocol):
    """What the loop needs from a task."""

    def build_model(self) -> nn.Module: ...

    def dataset(self, shards: Path | list[Path], split: str, rank: int = 0, world_size: int = 1) -> IterableDataset:
        """This rank's stream of samples from one shard folder (or several, where the task mixes them)."""
        ...

    def train_datasets(self, shards: Path | list[Path], rank: int = 0,
                       world_size: int = 1) -> list[tuple[IterableDataset, float]]:
        """The training streams and their shares of the batches (one: the whole stream)."""
        ...

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]: ...

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scalar) and outputs for a batch already on the device."""
        ...

    def metrics(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Metrics: ...

    # Optional: ``summarize(means) -> dict[str, float]`` adds metrics derived from the means (e.g. mIoU
    # over per-class IoUs); the loop shows them first.


def single_folder(shards: Place | list[Place], task: str) -> Place:
    """The one shard folder (or object-store prefix) of a task that reads one."""
    if isinstance(shards, (list, tuple)):
        if len(shards) != 1:
            raise InputError(f"task {task} trains on one shard folder, not {len(shards)}")
        return as_place(shards[0])
    return as_place(shards)


def adamw_groups(model: nn.Module, config: TrainConfig,
                 backbone_prefixes: tuple[str, ...] = ("backbone.",)) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on conv/linear weights only; the pretrained backbone at a lower lr."""
    from train.checkpoint import unwrap

    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in unwrap(model).named_parameters():
        if param.requires_grad:
            key = (name.startswith(backbone_prefixes), param.dim() >= 2)
            groups.setdefault(key, []).append(param)
    return [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
             "lr_scale": config.backbone_lr_scale if backbone else 1.0}
            for (backbone, decay), params in sorted(groups.items())]


def build_task(config: TrainConfig) -> Task:
    """The task named by ``config.task``."""
    if config.task == "query_search":
        from train.tasks.query_search import QuerySearchTask

        return QuerySearchTask(config)
    if config.task == "segment":
        from train.tasks.segment import SegmentTask

        return SegmentTask(config)
    raise ValueError(f"unknown task {config.task!r}")  # TrainConfig validated the name already
