"""A stop (Ctrl-C, a scheduler's SIGTERM) of a training run, held to the end of the step under way and,
under DDP, agreed by every rank so that all of them stop after the same step.

Each rank records the first SIGINT or SIGTERM it receives (:class:`augment.system.DeferredStop`):
torchrun forwards one to every rank, a scheduler may signal only one of them, and each may land at
another moment (one rank between steps, another waiting in a gradient all-reduce). The recorded flag
is read only at step ends, by :meth:`AgreedStop.agreed`, which every rank calls there: one
all-reduce (MAX) of a single number, so the ranks stop together after the step in which any of them
was signalled. A second signal to a rank still ends it at once. Measured on two gloo ranks of a
2-core CPU: 0.3-0.4 ms a call, lost in the noise of the tests' smallest model's 55-85 ms steps, so it
runs every step rather than every k (which would hold a stop up to k steps).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from augment.system import DeferredStop
from train.distributed import DistInfo


class Stopped(KeyboardInterrupt):
    """Raised out of the loop at an agreed stop, after its checkpoint (``path``, on the main rank) is
    written. A KeyboardInterrupt, so that code between the loop and :func:`train.loop.train` treats
    it as the interrupt it stands for; ``train`` turns it into a plain one once the rank has left the
    process group."""

    def __init__(self, signum: int, step: int, path: Path | None) -> None:
        super().__init__(signum, step, path)
        self.signum, self.step, self.path = signum, step, path


class AgreedStop:
    """A :class:`DeferredStop` whose request every DDP rank agrees on at a step's end."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.deferred = DeferredStop()
        self.signal: int | None = None  # the signal agreed on (the highest number any rank received)
        self._group = None
        if info.enabled and dist.get_backend() != "gloo":
            # On NCCL the flag would live on the GPU and reading it back would wait for the step's
            # kernels every step; a CPU (gloo) group keeps the check off the GPU's queue.
            self._group = dist.new_group(backend="gloo")

    def __enter__(self) -> "AgreedStop":
        self.deferred.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deferred.__exit__(*exc)

    def agreed(self) -> bool:
        """Whether this rank or any other was asked to stop. Under DDP a collective: every rank calls
        it at the same step's end (never elsewhere, so a signal that arrives while a rank waits in
        another collective only sets its flag)."""
        local = self.deferred.signal or 0
        if self.info.enabled:
            flag = torch.tensor([local], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            local = int(flag.item())
        self.signal = local or None
        return self.signal is not None
