"""The search network's medium encoding in onnxruntime, for one fixed medium size (any batch).

The temporal mode encodes windows of one size every frame (pipelines/template_heat.py), one to
five at a time. On this project's CPU machine (AVX2, one thread) PyTorch's oneDNN path spends
~6.2 ms on a 144 x 144 window of efficientnet_lite0 up to stride 16 (channels-last, the fastest
of PyTorch's layouts and flags there), onnxruntime ~4.1 ms on the same graph: its depthwise
convolutions and fused padding cost less at batch 1. The values are not PyTorch's to the bit
(float32, a different summation order: |difference| ~3e-5 on features of order 1), so the
temporal mode uses it as an option (TemporalConfig.onnx_windows) judged on the benchmark.

The graph is exported once per (model, height, width, threads) and kept for the process: the
'same' padding of the strided convolutions depends on the input's size, which the export fixes,
so only the batch axis is dynamic. Without onnx / onnxruntime (an optional extra), or for a model
whose edge path encodes the raw image, :func:`window_encoder` answers None and PyTorch encodes.
"""

from __future__ import annotations

import io
import logging
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from train.model import MediumFeatures

logger = logging.getLogger(__name__)

# model -> {(height, width, threads): encoder or None (export failed: not retried)}
_ENCODERS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int, int], OnnxMediumEncoder | None]]" = \
    weakref.WeakKeyDictionary()


class _Backbone(nn.Module):
    """The part of ``encode_medium`` the export holds: the backbone's raw levels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model._backbone_features(self.model.backbone, x, self.model.max_stride))


class OnnxMediumEncoder:
    """``model.encode_medium`` for N x 3 x ``height`` x ``width`` float RGB in [0, 1], run by
    onnxruntime on ``threads`` threads (the features as float32 CPU tensors)."""

    def __init__(self, model: nn.Module, height: int, width: int, threads: int) -> None:
        import onnxruntime  # optional dependency (the ``onnx`` extra)

        self.model, self.size = model, (height, width)
        buffer = io.BytesIO()
        example = torch.zeros(1, 3, height, width)
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns that the padding amounts become constants: they are, for this size.
            warnings.simplefilter("ignore")
            torch.onnx.export(_Backbone(model).eval(), example, buffer, opset_version=17, dynamo=False,
                              input_names=["medium"], dynamic_axes={"medium": {0: "batch"}})
        options = onnxruntime.SessionOptions()
        # One pool of `threads` (as torch.set_num_threads): more only contend on a shared machine.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options,
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> MediumFeatures:
        array = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        raw = [torch.from_numpy(level) for level in self.session.run(None, {self.input: array})]
        return MediumFeatures(self.model._project(raw), raw[0], None, self.size)


def window_encoder(model: nn.Module, height: int, width: int) -> OnnxMediumEncoder | None:
    """The (cached) onnxruntime encoder of ``model``'s media of this size at torch's thread count,
    or None where it cannot stand in for PyTorch's (no onnxruntime, a model on another device,
    an edge path that encodes the raw image, a failed export: logged once)."""
    edge: Any = getattr(model, "edge", None)
    if edge is not None and not getattr(edge, "resize_only", False):
        return None
    if next(model.parameters()).device.type != "cpu":
        return None
    key = (int(height), int(width), torch.get_num_threads())
    per_model = _ENCODERS.setdefault(model, {})
    if key not in per_model:
        try:
            per_model[key] = OnnxMediumEncoder(model, *key)
        except Exception as error:  # noqa: BLE001 - any failure falls back to PyTorch, once
            logger.info("onnxruntime window encoder unavailable (%s); PyTorch encodes", error)
            per_model[key] = None
    return per_model[key]
