"""onnx_windows (pipelines/window_encoder.py): the temporal mode's windows encoded by onnxruntime.
Its features match PyTorch's within float32 rounding, the same answer every call; on generated video
the track is the same (states frame by frame, boxes within a pixel) and identical run to run; where
onnxruntime cannot serve, PyTorch encodes and the track is the one without the option, to the bit."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

import pipelines.window_encoder as window_encoder_module
from pipelines.search import Searcher
from pipelines.temporal import LOST, TemporalConfig, TemporalSearcher
from pipelines.template_heat import TemplateHeat
from pipelines.window_encoder import window_encoder

from tests.test_temporal import SIDE, _covered_video, _target, one_thread, searcher  # noqa: F401
from tests.test_temporal_screen import _lookalike

pytest.importorskip("onnxruntime")


def _tracks(searcher: Searcher, frames: list[np.ndarray], centre: tuple[float, float], onnx: bool) -> list:
    x, y = centre
    tracker = TemporalSearcher(searcher, searcher.prepare(_target()), TemporalConfig(onnx_windows=onnx),
                               initial_box=(x - SIDE / 2, y - SIDE / 2, x + SIDE / 2, y + SIDE / 2))
    return [tracker.step(frame) for frame in frames]


def test_features_match_pytorch_and_repeat(searcher: Searcher) -> None:
    model = searcher.network.model
    encoder = window_encoder(model, 96, 96)
    assert encoder is not None and window_encoder(model, 96, 96) is encoder  # exported once
    batch = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, again = encoder(batch), encoder(batch)
        theirs = model.encode_medium(batch.contiguous(memory_format=torch.channels_last))
    assert ours.size == theirs.size == (96, 96)
    for a, b, c in zip(ours.feats, theirs.feats, again.feats):
        assert a.shape == b.shape and torch.equal(a, c)
        assert float((a - b).abs().max()) < 1e-3
    assert torch.equal(ours.skip, ours.feats[0])


def test_heat_matches_pytorch(searcher: Searcher) -> None:
    window = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    plain = TemplateHeat(searcher, _target(), None)
    fast = TemplateHeat(searcher, _target(), None)
    assert fast.use_onnx((112, 112))
    heat, features = plain.heat_and_features(window, [(SIDE, SIDE)])
    fast_heat, fast_features = fast.heat_and_features(window, [(SIDE, SIDE)])
    assert np.abs(fast_heat - heat).max() < 1e-3 and np.abs(fast_features - features).max() < 1e-3
    # Another size is PyTorch's, to the bit.
    other = window[:96, :96]
    assert np.array_equal(fast.heat(other, [(SIDE, SIDE)]), plain.heat(other, [(SIDE, SIDE)]))


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

    monkeypatch.setattr(window_encoder_module, "_ENCODERS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(window_encoder_module.OnnxMediumEncoder, "__init__", failing)
    frames, truth = _covered_video(_lookalike())
    frames = frames[:14]
    fallback = _tracks(searcher, frames, truth[0], True)
    model = searcher.network.model
    assert window_encoder(model, 1, 1) is None and window_encoder(model, 1, 1) is None and len(calls) == 2
    assert [t.to_json() for t in fallback] == [t.to_json() for t in _tracks(searcher, frames, truth[0], False)]
