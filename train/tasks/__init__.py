"""Training tasks: what a model learns and from which data. The loop (:mod:`train.loop`) knows
only the :class:`Task` protocol; each task is one module of this package."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import IterableDataset

from train.config import TrainConfig

Metrics = dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (sum, count), summed over batches


class Task(Protocol):
    """What the loop needs from a task."""

    def build_model(self) -> nn.Module: ...

    def dataset(self, shards: Path, split: str, rank: int = 0, world_size: int = 1) -> IterableDataset: ...

    def train_datasets(self, shards: Path, rank: int = 0,
                       world_size: int = 1) -> list[tuple[IterableDataset, float]]:
        """The training streams and their shares of the batches (one: the whole stream)."""
        ...

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]: ...

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scalar) and outputs for a batch already on the device."""
        ...

    def metrics(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Metrics: ...


def build_task(config: TrainConfig) -> Task:
    """The task named by ``config.task``."""
    if config.task == "query_search":
        from train.tasks.query_search import QuerySearchTask

        return QuerySearchTask(config)
    raise ValueError(f"unknown task {config.task!r}")  # TrainConfig validated the name already
