"""Endless, resumable streams of training batches: over epochs of one streaming dataset
(:class:`BatchStream`), and several of them mixed by weights (:class:`MixedStream`)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from augment.imageio import InputError
from augment.validation import is_int


class BatchStream:
    """Endless batches over epochs that remembers where it is, so a checkpoint can resume it exactly.

    The position is the epoch, per loader worker the last stream position consumed, and the worker
    whose batch is due next; rows a worker had prefetched but the loop had not yet used are read
    again after a resume.
    """

    def __init__(self, dataset: IterableDataset, loader: DataLoader, state: dict[str, Any] | None = None) -> None:
        self.dataset, self.loader = dataset, loader
        state = state or {}
        self.epoch: int = state.get("epoch", 0)
        self.positions: dict[int, int] = dict(state.get("positions", {}))
        self.next_worker: int = state.get("next_worker", 0)  # whose batch the loader's round-robin yields next
        self.corrupt: dict[int, int] = {}  # per worker, rows decoded in this epoch (since a resume)
        self.corrupt_total: int = state.get("corrupt", 0)  # everything counted before that
        self._iterator: Iterator | None = None
        counts = [self.epoch, self.next_worker, self.corrupt_total, *self.positions, *self.positions.values()]
        if not all(is_int(count) and count >= -1 for count in counts):  # -1: a worker's position before its first row
            raise ValueError(f"a data position holds {next(c for c in counts if not is_int(c) or c < -1)!r}, "
                             "not a whole number")

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


class MixedStream:
    """Batches drawn from several :class:`BatchStream` s, each batch from one of them.

    Batch ``i`` comes from the stream that ``SeedSequence([seed, i])`` picks with probability
    proportional to its weight, so the sequence of sources is fixed by the seed and resuming
    continues it exactly: the state is the number of batches drawn and every stream's own state.
    Whole batches (rather than mixed ones) let the sources keep their own medium sizes.
    """

    def __init__(self, streams: Sequence[BatchStream], weights: Sequence[float], seed: int,
                 state: dict[str, Any] | None = None) -> None:
        if len(streams) != len(weights) or not streams or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("MixedStream needs one non-negative weight per stream, not all zero")
        self.streams = list(streams)
        self.weights = np.asarray(weights, float) / float(sum(weights))
        self.seed = seed
        self.drawn: int = (state or {}).get("drawn", 0)
        self.source = -1  # which stream the last batch came from

    def __next__(self) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.drawn]))
        self.source = int(rng.choice(len(self.streams), p=self.weights))
        batch = next(self.streams[self.source])
        self.drawn += 1
        return batch

    @property
    def corrupt_rows(self) -> int:
        return sum(s.corrupt_rows for s in self.streams)

    def state(self) -> dict[str, Any]:
        return {"drawn": self.drawn, "streams": [s.state() for s in self.streams]}


def make_stream(parts: Sequence[tuple[IterableDataset, DataLoader, float]], seed: int,
                state: dict[str, Any] | None = None) -> BatchStream | MixedStream:
    """One stream over (dataset, loader, weight) parts: a plain :class:`BatchStream` for one part
    (whose checkpoint state keeps its long-standing format), else a :class:`MixedStream`."""
    if len(parts) == 1:
        return BatchStream(parts[0][0], parts[0][1], state)
    states = (state or {}).get("streams") or [None] * len(parts)
    if len(states) != len(parts):
        raise InputError(f"the checkpoint's data position has {len(states)} streams, the config makes {len(parts)}")
    return MixedStream([BatchStream(d, loader, s) for (d, loader, _), s in zip(parts, states)],
                       [w for _, _, w in parts], seed, state)


def restart_state(ranks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where to continue when the checkpoint's ranks do not match this world size: each stream at
    the epoch after the furthest one any rank reached."""
    if ranks and "streams" in ranks[0]:
        return {"drawn": max(r["drawn"] for r in ranks),
                "streams": [{"epoch": max(r["streams"][i]["epoch"] for r in ranks) + 1}
                            for i in range(len(ranks[0]["streams"]))]}
    return {"epoch": max((r["epoch"] for r in ranks), default=-1) + 1}
