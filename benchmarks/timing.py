"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable

import torch


def best_time(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Seconds per call: the fastest of ``repeats`` calls after one warm-up call.

    The minimum is the figure least disturbed by other processes sharing the CPU; CUDA work is
    synchronised so queued kernels are counted.
    """
    function()  # warm-up: allocations, cuDNN algorithm choice, cached query features
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best
