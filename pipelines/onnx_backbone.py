"""The search network's medium encoding in onnxruntime, for media of any size and batch.

The temporal mode encodes a window (or a batch of them) every frame and, while the target is
lost, the whole frame resampled to the target's zoom (pipelines/template_heat.py). On this
project's CPU machine (AMD EPYC, AVX2, one thread) PyTorch's oneDNN path, channels-last (the
fastest of its layouts and flags there), spends ~7.5 ms on a 152 x 152 window of
efficientnet_lite0 up to stride 16 and ~62 ms on Crossing's whole frame (590 x 394); onnxruntime
~4.8 and ~46 ms on the same graph (its depthwise convolutions and padding cost less). The values
are not PyTorch's to the bit (float32, another summation order: |difference| ~3e-5 on features of
order 1), so the temporal mode uses it as an option (TemporalConfig.onnx_backbone) judged on the
tracking benchmark. The still-image search encodes a long job's media here too
(pipelines/search_outputs.py ONNX_MIN_WORK, NetworkSearch.use_onnx), judged on the real-photo
benchmarks: the export (~1.3 s) would cost a one-image search more than it saves.

One graph serves every size: it is exported with the batch, height and width dynamic, the strided
convolutions' TensorFlow 'same' padding written as the graph's own arithmetic on the input's size
(:func:`_traceable_same_padding`) instead of the constants train/backbones.py's ``SameConv2d``
traces to, then folded into those convolutions' own SAME_UPPER padding (:func:`_pads_folded`: the
same features to the bit, ~30% less time an encoding). It is exported once per (model, threads) and kept for the process (~1-2.3 s), and on disk for the
next (pipelines/onnx_graph_cache.py: under the user's cache folder, keyed by the weights and versions). Without
onnx / onnxruntime (the optional ``onnx`` extra), for a model whose edge path encodes the raw
image or with a strided convolution the traced padding does not cover, or where the export fails,
:func:`medium_encoder` answers None and PyTorch encodes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
import weakref
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augment.system import raise_if_interrupted
from pipelines.onnx_graph_cache import OPSET, cached_graph
from train.backbones import SameConv2d
from train.model import MediumFeatures

logger = logging.getLogger(__name__)

# model -> {(threads, max_stride): encoder, or None where it could not be made (not retried)}
_ENCODERS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], OnnxMediumEncoder | None]]" = \
    weakref.WeakKeyDictionary()
_EXPORTING = threading.Lock()  # one export at a time: side-by-side workers share the result
# onnxruntime's CPU memory arena: on (its default). A long still-image search (many input shapes: photos
# of many sizes at several zooms, verification's windows) holds ~0.4-0.8 GB more with it (1.13 -> 2.06 GB
# from the 1st to the 60th CCP photo, against 0.67 -> 1.3 without), but without it every run allocates
# afresh: 1.5x the encoding time, 2.48x -> 2.82-2.91x the backbone on scenes without the object. Making
# the session (and arena) afresh every 64 runs gave back only ~0.2 GB. `python benchmarks/search_memory.py`
CPU_MEMORY_ARENA = True


@contextlib.contextmanager
def _traceable_same_padding() -> Iterator[None]:
    """While exporting: ``SameConv2d``'s strided convolutions pad by arithmetic on the traced
    size, so that the graph pads right for any input size. For stride 2 and an odd kernel k,
    'same' pads (k - 1) // 2 at the bottom (right) and (k - 3) // 2 + size % 2 at the top (left):
    the same amounts as ``SameConv2d._pad_amount`` (an odd size pads one more at the top)."""
    plain = SameConv2d.forward

    def forward(self: SameConv2d, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if self.stride == (1, 1):
            return plain(self, x)  # symmetric padding inside the convolution: no size dependence
        top = (kh - 3) // 2 + x.shape[-2] % 2
        left = (kw - 3) // 2 + x.shape[-1] % 2
        return self._conv_forward(F.pad(x, [left, (kw - 1) // 2, top, (kh - 1) // 2]), self.weight, self.bias)

    SameConv2d.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        SameConv2d.forward = plain  # type: ignore[method-assign]


def _pads_folded(graph: bytes) -> bytes:
    """The exported graph with each traced 'same' ``Pad`` folded into the strided ``Conv`` it feeds:
    that convolution pads by itself (``auto_pad`` SAME_UPPER: the total (out - 1) * stride + k - in,
    the odd pixel at the end, as :func:`_traceable_same_padding`'s arithmetic, so the same features
    to the bit), and the size arithmetic feeding the pads is dropped. A dynamic ``Pad`` copied the
    activation and kept onnxruntime from running the convolutions around it in its blocked (NCHWc)
    layout: ~30% of an encoding at one thread (416 x 830: 169-295 -> 80-190 ms, 832 x 1660: 1321-1495 ->
    885-1088 ms, one alternated run under load). A ``Pad`` that is not zeros into a stride-2
    convolution with no pads of its own is left as it is."""
    import onnx

    proto = onnx.load_from_string(graph)
    nodes = list(proto.graph.node)
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = set()
    for pad in (n for n in nodes if n.op_type == "Pad"):
        users = consumers.get(pad.output[0], [])
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in pad.attribute}
        zeros = attributes.get("mode", b"constant") == b"constant" and (len(pad.input) < 3 or not pad.input[2])
        if not zeros or len(users) != 1 or users[0].op_type != "Conv":
            continue
        conv = users[0]
        own = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        if list(own.get("strides", [])) != [2, 2] or any(own.get("pads", [])) or \
                own.get("auto_pad", b"NOTSET") != b"NOTSET":
            continue
        conv.input[0] = pad.input[0]
        kept = [a for a in conv.attribute if a.name not in ("pads", "auto_pad")]
        del conv.attribute[:]
        conv.attribute.extend(kept + [onnx.helper.make_attribute("auto_pad", "SAME_UPPER")])
        folded.add(id(pad))
    nodes = [n for n in nodes if id(n) not in folded]
    outputs = {o.name for o in proto.graph.output}
    while True:  # the pads' size arithmetic, now read by nothing
        read = outputs | {name for n in nodes for name in n.input}
        live = [n for n in nodes if any(name in read for name in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto.SerializeToString()


def _pads_traceably(model: nn.Module) -> bool:
    """Whether every ``SameConv2d`` of ``model`` has an odd kernel and stride 1 or 2: the cases
    :func:`_traceable_same_padding` writes (efficientnet_lite0 has no other)."""
    return all(m.kernel_size[0] % 2 == 1 and m.kernel_size[1] % 2 == 1 and m.stride in ((1, 1), (2, 2))
               for m in model.modules() if isinstance(m, SameConv2d))


class _Backbone(nn.Module):
    """The part of ``encode_medium`` the export holds: the backbone's raw levels up to
    ``max_stride``."""

    def __init__(self, model: nn.Module, max_stride: int) -> None:
        super().__init__()
        self.model, self.max_stride = model, max_stride

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model._backbone_features(self.model.backbone, x, self.max_stride))


def exported_graph(model: nn.Module, max_stride: int, fold_pads: bool = True) -> bytes:
    """The ONNX graph (bytes) of ``model``'s backbone levels up to ``max_stride`` for any batch and
    size, its 'same' pads folded into the convolutions (:func:`_pads_folded`) unless ``fold_pads``
    is False (as exported: a ``Pad`` before each strided convolution)."""
    buffer = io.BytesIO()
    # An odd example size: nothing about it may be baked in (dynamic axes, traced padding).
    example = torch.zeros(1, 3, 97, 130)
    with warnings.catch_warnings(), torch.no_grad(), _traceable_same_padding():
        warnings.simplefilter("ignore")  # the tracer's notes on traced shape arithmetic
        graph = _Backbone(model, max_stride).eval()
        torch.onnx.export(graph, example, buffer, opset_version=OPSET, dynamo=False, input_names=["medium"],
                          dynamic_axes={"medium": {0: "batch", 2: "height", 3: "width"}})
    return _pads_folded(buffer.getvalue()) if fold_pads else buffer.getvalue()


class OnnxMediumEncoder:
    """``model.encode_medium`` for N x 3 x H x W float RGB in [0, 1] (any N, H, W), run by
    onnxruntime on ``threads`` threads; the features come back as float32 CPU tensors. With a
    ``max_stride`` under the model's, only the raw levels up to it (:meth:`raw`: verification's
    stride-8 cells)."""

    def __init__(self, model: nn.Module, threads: int, max_stride: int) -> None:
        import onnxruntime  # optional dependency (the ``onnx`` extra)

        self.model = model
        graph_bytes = cached_graph(model, max_stride, True, exported_graph)  # kept on disk between processes
        options = onnxruntime.SessionOptions()
        # One pool of `threads` (as torch.set_num_threads): more only contend on a shared machine.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # notes on unused initialisers are noise here
        options.enable_cpu_mem_arena = CPU_MEMORY_ARENA
        self.session = onnxruntime.InferenceSession(graph_bytes, options,
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def raw(self, array: np.ndarray) -> list[np.ndarray]:
        """The backbone's raw levels (float32 arrays) of an N x 3 x H x W float32 array."""
        return self.session.run(None, {self.input: np.ascontiguousarray(array, dtype=np.float32)})

    def __call__(self, batch: torch.Tensor) -> MediumFeatures:
        raw = [torch.from_numpy(level) for level in self.raw(batch.detach().float().cpu().numpy())]
        return self.model.medium_from_backbone(raw, (int(batch.shape[-2]), int(batch.shape[-1])))


def medium_encoder(model: nn.Module, max_stride: int | None = None) -> OnnxMediumEncoder | None:
    """The (cached) onnxruntime encoder of ``model``'s media at torch's thread count (its levels
    up to ``max_stride``, default the model's), or None where it cannot stand in for PyTorch's (no
    onnxruntime, a model on another device, an edge path that encodes the raw image, a failed
    export: logged once). Thread-safe: side-by-side searches (pipelines/search_workers.py) export
    once per thread count, not once each."""
    key = (torch.get_num_threads(), int(max_stride or model.max_stride))
    cached = _ENCODERS.get(model, {})
    if key in cached:
        return cached[key]
    with _EXPORTING:
        per_model = _ENCODERS.setdefault(model, {})
        if key not in per_model:
            per_model[key] = _new_encoder(model, *key)
        return per_model[key]


def _new_encoder(model: nn.Module, threads: int, max_stride: int) -> OnnxMediumEncoder | None:
    edge: Any = getattr(model, "edge", None)
    if edge is not None and not getattr(edge, "resize_only", False):
        return None
    if next(model.parameters()).device.type != "cpu" or not _pads_traceably(model):
        return None
    try:
        return OnnxMediumEncoder(model, threads, max_stride)
    except Exception as error:  # noqa: BLE001 - any failure falls back to PyTorch, once
        raise_if_interrupted(error)  # a stop during onnxruntime's import is no failure to fall back from
        logger.info("onnxruntime encoder unavailable (%s); PyTorch encodes", error)
        return None


def encode_medium(model: nn.Module, batch: torch.Tensor, onnx: bool) -> MediumFeatures:
    """``model.encode_medium(batch)``, by onnxruntime where ``onnx`` and it can stand in
    (:func:`medium_encoder`), else by PyTorch."""
    encoder = medium_encoder(model) if onnx else None
    return encoder(batch) if encoder is not None else model.encode_medium(batch)  # type: ignore[operator]
