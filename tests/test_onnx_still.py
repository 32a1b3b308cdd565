"""The still-image search's media encoded by onnxruntime (NetworkSearch.use_onnx): the same answers
as PyTorch's within float32 rounding, taken for a long job only (its export costs ~1 s), and
exported once when side-by-side workers ask for it together."""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

import pipelines.onnx_backbone as onnx_module
import pipelines.search_outputs as search_outputs
from augment.imageio import save_image
from pipelines.search import Searcher
from pipelines.search_jobs import SearchJob
from pipelines.search_outputs import run_search

from tests.test_search import _query, _scene

pytest.importorskip("onnxruntime")


def test_the_same_detections_as_pytorch() -> None:
    """A generated scene with two instances (one partly covered, one at 0.6x): the same boxes, the
    heat and scores within float32 rounding; the verified search's fused scores too."""
    medium, truth = _scene()
    plain, fast = Searcher(device="cpu"), Searcher(device="cpu")
    fast.network.use_onnx()
    assert fast.network.onnx and not plain.network.onnx
    a = plain.find(_query(), medium)
    b = fast.find(_query(), medium)
    assert np.abs(a.heatmap - b.heatmap).max() < 1e-3
    assert len(a.detections) == len(b.detections) >= 2
    for x, y in zip(a.detections, b.detections):
        assert np.abs(np.subtract(x.box, y.box)).max() <= 1 and abs(x.score - y.score) < 1e-3
    assert a.best is not None and b.best is not None and a.best.box == b.best.box


def test_verification_cells_follow_the_search_into_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification's stride-8 cells come from an onnxruntime graph of the backbone up to stride 8
    once the search encodes in onnxruntime (a long job), within float32 rounding of PyTorch's; a
    short job's stay PyTorch's."""
    searcher = Searcher(device="cpu")
    encode = searcher.verification.verifier.network.encode
    image = np.random.default_rng(0).integers(0, 256, (2, 75, 98, 3), dtype=np.uint8)
    asked: list[object] = []
    plain_encoder = onnx_module.medium_encoder

    def recorded(model: object, max_stride: int | None = None) -> object:
        asked.append(max_stride)
        return plain_encoder(model, max_stride)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_module, "medium_encoder", recorded)
    plain = encode(image)
    assert asked == []
    searcher.network.use_onnx()
    fast = encode(image)
    assert asked == [8]
    assert fast.shape == plain.shape == (2, 40, 10, 13) and fast.dtype == np.float32
    assert np.abs(fast - plain).max() < 1e-4


@pytest.mark.parametrize("images, onnx", [(2, True), (1, False)])
def test_a_long_job_encodes_in_onnxruntime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           images: int, onnx: bool) -> None:
    """run_search switches to onnxruntime from ONNX_MIN_WORK images and frames on (here 2)."""
    monkeypatch.setattr(search_outputs, "ONNX_MIN_WORK", 2)
    medium, _ = _scene()
    save_image(tmp_path / "query.png", _query())
    jobs = []
    for k in range(images):
        save_image(tmp_path / f"scene{k}.png", medium)
        jobs.append(SearchJob(tmp_path / "query.png", tmp_path / f"scene{k}.png", None))
    searcher = Searcher(device="cpu")
    summary = run_search(searcher, jobs, tmp_path / "out", workers=1)
    assert summary.images == images and not summary.errors
    assert searcher.network.onnx is onnx


def test_workers_asking_together_export_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    plain_init = onnx_module.OnnxMediumEncoder.__init__

    def slow_init(self: onnx_module.OnnxMediumEncoder, *args: object) -> None:
        made.append(args)
        time.sleep(0.2)  # both threads ask while the first export runs
        plain_init(self, *args)

    monkeypatch.setattr(onnx_module, "_ENCODERS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(onnx_module.OnnxMediumEncoder, "__init__", slow_init)
    model = Searcher(device="cpu").network.model
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(onnx_module.medium_encoder(model))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and got[0] is not None and got[0] is got[1]
