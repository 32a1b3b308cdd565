"""An endless, resumable stream of training batches over epochs of a streaming dataset."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from augment.imageio import InputError
from train.data import ShardPairs


class BatchStream:
    """Endless batches over epochs that remembers where it is, so a checkpoint can resume it exactly.

    The position is the epoch, per loader worker the last stream position consumed, and the worker
    whose batch is due next; rows a worker had prefetched but the loop had not yet used are read
    again after a resume.
    """

    def __init__(self, dataset: ShardPairs, loader: DataLoader, state: dict[str, Any] | None = None) -> None:
        self.dataset, self.loader = dataset, loader
        state = state or {}
        self.epoch: int = state.get("epoch", 0)
        self.positions: dict[int, int] = dict(state.get("positions", {}))
        self.next_worker: int = state.get("next_worker", 0)  # whose batch the loader's round-robin yields next
        self.corrupt: dict[int, int] = {}  # per worker, rows decoded in this epoch (since a resume)
        self.corrupt_total: int = state.get("corrupt", 0)  # everything counted before that
        self._iterator: Iterator | None = None

    def _start_epoch(self) -> None:
        if self.positions:
            self.dataset.resume(self.epoch, self.positions, self.next_worker)
        else:
            self.dataset.set_epoch(self.epoch)
        self._iterator = iter(self.loader)

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        for attempt in range(2):
            try:
                batch = next(self._iterator)
                break
            except StopIteration:
                if attempt == 1 or not self.positions:  # a fresh epoch gave nothing: no pairs at all
                    raise InputError(f"{self.dataset.folder}: no {self.dataset.split} pairs for a batch of "
                                     f"{self.loader.batch_size} (too few rows or hold-out cutouts)") from None
                self.corrupt_total += sum(self.corrupt.values())
                self.epoch, self.positions, self.corrupt, self.next_worker = self.epoch + 1, {}, {}, 0
                self._start_epoch()
        worker = int(batch["worker"][0])  # a batch comes from a single worker
        self.positions[worker] = int(batch["position"].max())
        self.next_worker = (worker + 1) % max(1, self.loader.num_workers)
        self.corrupt[worker] = int(batch["corrupt"].max())
        return batch

    @property
    def corrupt_rows(self) -> int:
        return self.corrupt_total + sum(self.corrupt.values())

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "positions": dict(self.positions), "next_worker": self.next_worker,
                "corrupt": self.corrupt_rows}
