"""onnx_backbone (pipelines/onnx_backbone.py): the temporal mode's media encoded by onnxruntime.
One graph for every size: its features match PyTorch's within float32 rounding at odd and even
sizes (the strided convolutions' 'same' padding), the same answer every call; on generated video
the track is the same (states frame by frame, boxes within a pixel) and identical run to run; where
onnxruntime cannot serve, PyTorch encodes and the track is the one without the option, to the bit."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

import pipelines.onnx_backbone as onnx_module
from pipelines.search import Searcher
from pipelines.temporal import LOST, TemporalConfig, TemporalSearcher
from pipelines.template_heat import TemplateHeat
from pipelines.onnx_backbone import medium_encoder

from tests.test_temporal import SIDE, _covered_video, _target, one_thread, searcher  # noqa: F401
from tests.test_temporal_screen import _lookalike

pytest.importorskip("onnxruntime")


def _tracks(searcher: Searcher, frames: list[np.ndarray], centre: tuple[float, float], onnx: bool) -> list:
    x, y = centre
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), TemporalConfig(onnx_backbone=onnx),
                               initial_box=(x - SIDE / 2, y - SIDE / 2, x + SIDE / 2, y + SIDE / 2))
    return [tracker.step(frame) for frame in frames]


@pytest.mark.parametrize("size", [(96, 96), (125, 166), (33, 47), (64, 81)])
def test_features_match_pytorch_and_repeat(searcher: Searcher, size: tuple[int, int]) -> None:
    model = searcher.network.model
    encoder = medium_encoder(model)
    assert encoder is not None and medium_encoder(model) is encoder  # exported once
    batch = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, again = encoder(batch), encoder(batch)
        theirs = model.encode_medium(batch.contiguous(memory_format=torch.channels_last))
    assert ours.size == theirs.size == size
    for a, b, c in zip(ours.feats, theirs.feats, again.feats):
        assert a.shape == b.shape and torch.equal(a, c)
        assert float((a - b).abs().max()) < 1e-3
    assert torch.equal(ours.skip, ours.feats[0])


def test_heat_matches_pytorch(searcher: Searcher) -> None:
    plain = TemplateHeat(searcher, _target(), None)
    fast = TemplateHeat(searcher, _target(), None)
    assert fast.use_onnx()
    for side in (112, 151):  # a window, an odd-sized whole frame
        medium = np.random.default_rng(side).integers(0, 255, (side, side + 30, 3), dtype=np.uint8)
        heat, features = plain.heat_and_features(medium, [(SIDE, SIDE)])
        fast_heat, fast_features = fast.heat_and_features(medium, [(SIDE, SIDE)])
        assert fast_heat.shape == heat.shape and fast_features.shape == features.shape
        assert np.abs(fast_heat - heat).max() < 1e-3 and np.abs(fast_features - features).max() < 1e-3


def test_the_same_track_and_identical_run_to_run(searcher: Searcher) -> None:
    """Covered in frames 12-21 while a look-alike stands elsewhere: lost, then re-detected."""
    frames, truth = _covered_video(_lookalike())
    fast = _tracks(searcher, frames, truth[0], True)
    assert [t.to_json() for t in _tracks(searcher, frames, truth[0], True)] == [t.to_json() for t in fast]
    plain = _tracks(searcher, frames, truth[0], False)
    assert [t.state for t in fast] == [t.state for t in plain]
    assert LOST in [t.state for t in fast[12:22]] and fast[-1].state != LOST
    for a, b in zip(fast, plain):
        assert np.abs(np.array(a.best_box, float) - np.array(b.best_box, float)).max() <= 1.0


def test_without_onnxruntime_pytorch_encodes(searcher: Searcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder that cannot be made (no onnxruntime, a failed export) leaves PyTorch encoding:
    the track of onnx_windows=False, to the bit; the failure is not retried."""
    calls = []

    def failing(*args: object) -> None:
        calls.append(args)
        raise ImportError("no onnxruntime")

    monkeypatch.setattr(onnx_module, "_ENCODERS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(onnx_module.OnnxMediumEncoder, "__init__", failing)
    frames, truth = _covered_video(_lookalike())
    frames = frames[:14]
    fallback = _tracks(searcher, frames, truth[0], True)
    assert medium_encoder(searcher.network.model) is None and len(calls) == 1
    assert [t.to_json() for t in fallback] == [t.to_json() for t in _tracks(searcher, frames, truth[0], False)]


def test_same_padding_folded_into_the_strided_convolutions(searcher: Searcher) -> None:
    """The traced 'same' pads are no Pad nodes of the encoder's graph (each copied an activation and
    kept onnxruntime out of its blocked layout, ~30% of an encoding): the strided convolutions pad
    themselves, SAME_UPPER, and give the unfolded graph's features to the bit at odd and even sizes."""
    import onnx
    import onnxruntime

    model = searcher.network.model
    for max_stride in (model.max_stride, 8):  # the media's graph and verification's stride-8 one
        folded = onnx.load_from_string(onnx_module.exported_graph(model, max_stride))
        ops = [node.op_type for node in folded.graph.node]
        assert "Pad" not in ops and not {"Shape", "Mod", "Gather"} & set(ops)
        strided = [n for n in folded.graph.node if n.op_type == "Conv"
                   and list(onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "strides"))) == [2, 2]]
        assert len(strided) >= 3
        for conv in strided:
            assert {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}["auto_pad"] == b"SAME_UPPER"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        sessions = [onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
                    for graph in (folded.SerializeToString(), onnx_module.exported_graph(model, max_stride, False))]
        for size in ((64, 81), (33, 47), (96, 96), (125, 166)):
            medium = np.random.default_rng(size[0]).random((2, 3, *size), dtype=np.float32)
            ours, theirs = (s.run(None, {s.get_inputs()[0].name: medium}) for s in sessions)
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs):
                # Bit-equal on the AVX-512 host it was measured on; another CPU's kernels for the two layouts
                # (blocked or plain) may round apart, so a float32 ulp-level bound.
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
