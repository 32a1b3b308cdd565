"""Process-group setup for ``torchrun`` launches (and a no-op for single-process runs)."""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from augment.imageio import InputError
from augment.validation import whole_setting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's env vars when WORLD_SIZE > 1.

    NCCL on CUDA, gloo on CPU. Each process uses GPU ``LOCAL_RANK``.
    """
    world_size = whole_setting("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    local_rank = whole_setting("LOCAL_RANK", 0)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
    if missing:  # torch's rendezvous raised a ValueError traceback ("environment variable RANK expected")
        raise InputError(f"WORLD_SIZE={world_size} without {', '.join(missing)}: start the ranks with torchrun "
                         "(it sets them all), or unset WORLD_SIZE for one process")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    logger.info("joined process group: rank %d of %d (%s)", info.rank, info.world_size, dist.get_backend())
    return info


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every rank, in rank order (a collective: every rank must call it)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown(info: DistInfo) -> None:
    """Leave the process group once every rank is done.

    The barrier matters: a rank that tears down gloo while another still talks to it (rank 0
    writing the last checkpoint, say) aborts the other with "terminate called without an active
    exception".
    """
    if not (info.enabled and dist.is_initialized()):
        return
    # The DDP wrapper and its reducer hold the gloo process group; freed by a late garbage
    # collection at interpreter exit, after the peers are gone, its threads abort the process.
    gc.collect()
    dist.barrier()
    # Rank 0 hosts the TCP store; if it exits while another rank is still inside
    # destroy_process_group, that rank aborts. So the others check in once they are out,
    # and rank 0 keeps the store up until they have.
    store = dist.distributed_c10d._get_default_store()
    dist.destroy_process_group()
    if info.rank == 0:
        store.wait([f"synth/left/{rank}" for rank in range(1, info.world_size)], timedelta(seconds=60))
    else:
        store.set(f"synth/left/{info.rank}", "1")
