"""What the search runs on: the network (untrained or from a checkpoint), the device, a prepared
query with its cached features, the media as tensors (resized, zoomed), and the per-frame maps the
search returns (:class:`SearchMaps`). :mod:`pipelines.search_maps` runs the network over them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from augment.imageio import InputError
from train.model import QueryFeatures, QuerySearchNet, SearchNetConfig


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for absent CUDA is an InputError. A
    ``torch.device`` given to the API is taken as its name; anything else (None) is an InputError."""
    if isinstance(name, torch.device):  # Searcher(device=torch.device("cpu")) was an AttributeError
        name = str(name)
    if not isinstance(name, str):
        raise InputError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def load_checkpoint_model(checkpoint: Path | str) -> tuple[QuerySearchNet, float | None]:
    """A ``synth train`` checkpoint's network and its calibrated threshold (``search_threshold``
    key; None = not stored)."""
    from train.checkpoint import load_checkpoint, load_model_state
    from train.config import TrainConfig

    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_checkpoint(state)
    if config.task != "query_search":  # a segmenter's config has none of the search network's keys
        raise InputError(f"{checkpoint}: a {config.task} checkpoint, not a query search one (task query_search)")
    model = QuerySearchNet(config.model_config())
    load_model_state(model, state, checkpoint)
    threshold = state.get("search_threshold")
    return model, None if threshold is None else float(threshold)


def untrained_model() -> QuerySearchNet:
    """Pretrained backbone + normalised correlation + the conversion net's initial readout."""
    return QuerySearchNet(SearchNetConfig())


@dataclass
class SearchMaps:
    """Per medium of a batch: heat (N x H x W in [0, 1]) and the height in pixels of the object
    that would explain the heat at each pixel (from the best-matching scale)."""

    heat: np.ndarray
    object_height: np.ndarray
    # The media's raw stride-8 backbone features at the working size (N x C x h x w), reused by
    # verification with the network's own features (pipelines/verify.py); None where no level
    # searched the medium unzoomed and whole.
    features: np.ndarray | None = None


@dataclass
class PreparedQuery:
    """A query's pixels and its encoded features, cached per network and kernel size (computed once
    per network: one prepared query may be searched by several Searchers)."""

    name: str
    rgb: np.ndarray
    mask: np.ndarray | None
    # Features per network (held weakly: they go with their Searcher), then per (kernel size, mirrored).
    # Keyed by the network: another Searcher's network read the first one's features, silently.
    features: weakref.WeakKeyDictionary[Any, dict[tuple[tuple[int, int], bool], QueryFeatures]] = field(
        default_factory=weakref.WeakKeyDictionary)
    warned_shrink: bool = False
    # Medium sizes whose automatic scales were logged (once per size, not per frame).
    logged_scales: set[tuple[int, int]] = field(default_factory=set)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def to_tensor(images: Sequence[np.ndarray], device: torch.device, channels_last: bool) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def resize_hw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def zoom_media(batch: torch.Tensor, size: tuple[int, int], zoom: float) -> torch.Tensor:
    """A batch of ``size`` (H, W) media resampled by ``zoom``: area-averaged down, bilinear up."""
    if zoom == 1.0:
        return batch
    zoomed = (max(8, round(size[0] * zoom)), max(8, round(size[1] * zoom)))
    if zoomed[0] * 2 == size[0] and zoomed[1] * 2 == size[1]:
        # Area-averaging by exactly 2 is a 2 x 2 average pool: the same values, 1.6x faster.
        return F.avg_pool2d(batch, 2)
    if zoom < 1 and batch.device.type == "cpu" and batch.dtype == torch.float32 and batch.shape[1] <= 4:
        return _cpu_area(batch, zoomed)
    return F.interpolate(batch, size=zoomed, mode="area" if zoom < 1 else "bilinear",
                         **({} if zoom < 1 else {"align_corners": False}))


def _cpu_area(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average down-sampling of a CPU image batch with OpenCV: 3-4x faster than torch's
    ``mode="area"`` (adaptive average pooling: whole-pixel bins), and exact where a bin covers part
    of a pixel (INTER_AREA weighs it by the share covered)."""
    resized = [cv2.resize(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (size[1], size[0]),
                          interpolation=cv2.INTER_AREA).reshape(size[0], size[1], -1) for image in batch]
    out = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)  # channels_last strides, no copy
    return out if batch.is_contiguous(memory_format=torch.channels_last) else out.contiguous()
