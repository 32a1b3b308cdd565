"""ONNX export of the search network at fixed input sizes.

The graph takes ``query`` (B×3×q×q), ``query_mask`` (B×1×q×q) and ``medium`` (B×3×M×M), all float
in [0, 1], and returns ``heatmap`` (B×1×M×M, the probability that each medium pixel belongs to the
query object). Shapes are fixed: the correlation is a grouped convolution whose group count is the
batch size, and the 'same' padding amounts are derived from the input size, so both are baked in.
BatchNorm is folded into the convolutions first.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from augment.atomic_files import atomic_path
from augment.imageio import InputError
from augment.system import missing_modules
from train.backbones import fold_batchnorm

logger = logging.getLogger(__name__)

OPSET = 17


def check_onnx_installed(with_runtime: bool = False) -> None:
    """An InputError naming the extra to install when ``onnx`` (and, to check an export, ``onnxruntime``)
    cannot be imported: asked before any work, so a missing package is one line, not two tracebacks."""
    missing = missing_modules(("onnx", "onnxruntime") if with_runtime else ("onnx",))
    if missing:
        raise InputError(f"ONNX export needs {' and '.join(missing)}: pip install 'synth[onnx]'"
                         + (" (or pass --no-check to skip the onnxruntime comparison)" if missing == ["onnxruntime"] else ""))


MAX_ONNX_BYTES = 2 * 2**30  # protobuf's own limit on a model file without external data


def check_replaceable_onnx(path: Path) -> None:
    """A file already at ``path`` must be an ONNX model (an earlier export) to be replaced: an --out
    naming the checkpoint being exported, a shard folder's objects.parquet or any other file by
    mistake is refused in one line, not overwritten. Needs ``onnx`` (:func:`check_onnx_installed`)."""
    if not path.is_file():
        return
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False) if path.stat().st_size < MAX_ONNX_BYTES else None
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not a model
        model = None
    if model is None or not len(model.graph.node):
        raise InputError(f"{path}: --out exists and is not an ONNX model; not overwriting it (remove it or "
                         "choose another name)")


class HeatmapModel(nn.Module):
    """Wraps :class:`train.model.QuerySearchNet` to output a probability map instead of a dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, query: torch.Tensor, query_mask: torch.Tensor, medium: torch.Tensor) -> torch.Tensor:
        return self.model(query, medium, query_mask)["logits"].sigmoid()


def example_inputs(query_size: int, medium_size: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.rand(batch, 3, query_size, query_size, generator=generator)
    mask = torch.zeros(batch, 1, query_size, query_size)
    margin = query_size // 6
    mask[:, :, margin:-margin, margin:-margin] = 1.0
    medium = torch.rand(batch, 3, medium_size, medium_size, generator=generator)
    return query, mask, medium


def check_query_size(model: nn.Module, query_size: int) -> None:
    """An InputError when the exporter cannot trace ``query_size``: ONNX pools the query mask onto
    each correlated level's grid only when the grid's side divides the query's."""
    strides = getattr(getattr(model, "cfg", None), "feature_strides", ())
    for stride in strides:
        cells = math.ceil(query_size / stride)
        if query_size % cells:
            step = max(strides)
            raise InputError(f"query size {query_size} cannot be exported to ONNX (its stride-{stride} grid of "
                             f"{cells} cells does not divide it); use a multiple of {step}, e.g. "
                             f"{max(step * round(query_size / step), step)}")


def export_onnx(model: nn.Module, path: Path | str, query_size: int, medium_size: int, batch: int = 1) -> nn.Module:
    """Write ``model`` as ONNX to ``path`` (atomically); returns the folded module that was exported."""
    check_query_size(model, query_size)
    wrapped = HeatmapModel(fold_batchnorm(model)).eval()
    with atomic_path(path) as temporary, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is the one that needs no extra packages; silence its notices.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # fixed shapes are the intent
        torch.onnx.export(wrapped, example_inputs(query_size, medium_size, batch), str(temporary), dynamo=False,
                          input_names=["query", "query_mask", "medium"], output_names=["heatmap"],
                          opset_version=OPSET, do_constant_folding=True)
    logger.info("exported %s (query %d, medium %d, batch %d)", path, query_size, medium_size, batch)
    return wrapped


def max_difference(onnx_path: Path | str, model: nn.Module, query_size: int, medium_size: int,
                   batch: int = 1) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's heat maps on random inputs."""
    import onnxruntime  # optional dependency: only needed to check an export

    inputs = example_inputs(query_size, medium_size, batch, seed=1)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {name: x.numpy() for name, x in zip(["query", "query_mask", "medium"], inputs)})
    with torch.no_grad():
        reference = HeatmapModel(model).eval()(*inputs).numpy()
    return float(np.abs(ours - reference).max())
