"""Epochs and exact resumption of a training stream split over DDP ranks and DataLoader workers
(:class:`ResumableStream`, the base of :class:`train.data.ShardPairs` and
:class:`train.photo_data.PhotoPairs`), and the check of a stream's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from augment.validation import is_int


MAX_SEED = 2**63 - 1  # numpy's generators take no larger (nor negative) seed


def checked_seed(seed: Any) -> int:
    """A stream's seed, a whole number in [0, MAX_SEED]; else a ValueError naming ``seed`` here, not
    numpy's 'expected non-negative integer' in each loader worker once the loader starts."""
    if not ((is_int(seed) or isinstance(seed, np.integer)) and 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be a whole number in [0, 2**63 - 1], not {seed!r}")
    return int(seed)


class ResumableStream(IterableDataset):
    """Epochs and exact resumption of a stream split over DDP ranks and DataLoader workers (what
    :class:`ShardPairs` and :class:`train.photo_data.PhotoPairs` share)."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip: dict[int, int] = {}
        self._skip_epoch = -1
        self._first_worker = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: it seeds the unit order, the shuffle buffers and the augmentation."""
        self.epoch = epoch

    def resume(self, epoch: int, positions: dict[int, int], first_worker: int = 0) -> None:
        """Continue ``epoch`` after position ``positions[w]`` of each worker ``w``'s stream.

        DataLoader worker 0 takes the role of worker ``first_worker`` (the one whose batch was due
        next), worker 1 of the one after, and so on, so the loader's round-robin yields batches in
        the order of the uninterrupted run. Later epochs start afresh.
        """
        self.epoch = epoch
        self._skip_epoch = epoch
        self._skip = {int(k): int(v) for k, v in positions.items()}
        self._first_worker = first_worker

    def _worker_slot(self) -> tuple[int, int, int, int]:
        """(worker, slot, slots, skip) of the calling loader worker: the worker role it plays (shifted
        on a resume), its slot among all ranks' workers, their number, and the last position of its
        stream already yielded before a resume (-1: none)."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        resuming = self.epoch == self._skip_epoch
        if resuming:
            worker = (worker + self._first_worker) % workers
        skip = self._skip.get(worker, -1) if resuming else -1
        return worker, self.rank * workers + worker, self.world_size * workers, skip
