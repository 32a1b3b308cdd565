"""The backbone's ONNX graph is exported once and kept under the user's cache folder
(pipelines/onnx_graph_cache.py): it was exported afresh in every process (2.3 s of a 12-frame
sequence search's 14 s), and a damaged or unwritable cache is no failure."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pipelines.onnx_backbone as onnx_backbone
from pipelines import onnx_graph_cache
from pipelines.onnx_graph_cache import cached_graph

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]

SECOND_PROCESS = """
import numpy as np
import pipelines.onnx_backbone as ob
from pipelines.search_inputs import untrained_model
exports = []
export = ob.exported_graph
ob.exported_graph = lambda *a: exports.append(1) or export(*a)
model = untrained_model()  # as synth search's: its head drawn afresh, unseeded
out = ob.OnnxMediumEncoder(model, 1, 8).raw(np.load({array!r}))[0]
np.save({result!r}, out)
print(len(exports))
"""


def test_a_second_process_reuses_the_exported_graph_and_encodes_the_same(tmp_path, monkeypatch):
    import torch

    from pipelines.search_inputs import untrained_model

    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    exports = []
    export = onnx_backbone.exported_graph
    monkeypatch.setattr(onnx_backbone, "exported_graph", lambda *a: exports.append(1) or export(*a))
    model = untrained_model()
    array = np.random.default_rng(0).random((1, 3, 40, 56), dtype=np.float32)
    np.save(tmp_path / "array.npy", array)
    first = onnx_backbone.OnnxMediumEncoder(model, 1, 8).raw(array)[0]
    assert len(exports) == 1 and len(list((tmp_path / "cache" / "onnx").iterdir())) == 1
    code = SECOND_PROCESS.format(array=str(tmp_path / "array.npy"), result=str(tmp_path / "second.npy"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]  # the second process exported nothing
    assert np.array_equal(np.load(tmp_path / "second.npy"), first)
    # The same as without the cache (another weight is another graph: exported, not the cached one).
    monkeypatch.setattr(onnx_graph_cache, "cache_folder", lambda: None)
    assert np.array_equal(onnx_backbone.OnnxMediumEncoder(model, 1, 8).raw(array)[0], first) and len(exports) == 2
    monkeypatch.undo()
    # Its head is no part of the graph: a process drawing another untrained head reuses it.
    with torch.no_grad():
        model.conversion.residual.weight.add_(1.0)
    assert onnx_graph_cache.graph_key(model, 8, True) in {p.name.split("-")[1].split(".")[0]
                                                       for p in (tmp_path / "cache" / "onnx").iterdir()}
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)
    assert onnx_graph_cache.graph_key(model, 8, True) not in {p.name.split("-")[1].split(".")[0]
                                                           for p in (tmp_path / "cache" / "onnx").iterdir()}


def test_a_damaged_cached_graph_is_exported_again_with_a_warning(tmp_path, monkeypatch, caplog):
    from torch import nn

    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path))
    model = nn.Linear(2, 2)
    exports = []

    def export(*args):
        exports.append(1)
        return b"the graph" * 100

    assert cached_graph(model, 8, True, export) == b"the graph" * 100
    (path,) = (tmp_path / "onnx").iterdir()
    assert cached_graph(model, 8, True, export) == b"the graph" * 100 and len(exports) == 1
    for damage in (path.read_bytes()[:-7], path.read_bytes()[:-900] + b"X" * 900, b""):
        path.write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cached_graph(model, 8, True, export) == b"the graph" * 100
        assert "damaged or truncated; exporting it again" in caplog.text and str(path) in caplog.text
        assert cached_graph(model, 8, True, export) == b"the graph" * 100  # mended: read, not exported
    assert len(exports) == 4
    assert not [p for p in (tmp_path / "onnx").iterdir() if p != path]  # no temporary left beside it


def test_an_unwritable_cache_folder_exports_in_memory_with_one_warning(tmp_path, monkeypatch, caplog):
    from torch import nn

    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "a file"))
    model = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert cached_graph(model, 8, True, lambda *a: b"the graph") == b"the graph"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot keep the exported ONNX graph there" in warnings[0].getMessage()


def test_a_change_to_the_code_that_shapes_the_graph_is_another_key(monkeypatch):
    """The key held the weights, structure and versions, not the code that traces the graph (the
    backbone's forward and taps, the network's features, the export's padding and folded pads): a
    change there, same weights and versions, read the older graph from the cache."""
    from pipelines.search_inputs import untrained_model

    model = untrained_model()
    before = onnx_graph_cache.graph_key(model, 8, True)
    real = onnx_graph_cache._module_source
    try:
        for name in onnx_graph_cache.GRAPH_CODE:
            monkeypatch.setattr(onnx_graph_cache, "_module_source",
                                lambda module, changed=name: real(module) + ("\n# changed\n" if module == changed else ""))
            onnx_graph_cache.code_digest.cache_clear()
            assert onnx_graph_cache.graph_key(model, 8, True) != before, name
        monkeypatch.undo()
        onnx_graph_cache.code_digest.cache_clear()
        assert onnx_graph_cache.graph_key(model, 8, True) == before
    finally:
        onnx_graph_cache.code_digest.cache_clear()


def test_a_killed_exports_temporary_is_removed_from_the_cache_folder(tmp_path, monkeypatch):
    """An export killed as its graph was written left its temporary in the cache folder for good."""
    from torch import nn

    from cli_checks import killed_write

    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path))
    (tmp_path / "onnx").mkdir()
    dead = killed_write(tmp_path / "onnx" / "backbone-0123.onnx.cache")
    monkeypatch.setattr(onnx_graph_cache, "_CLEARED", set(), raising=False)  # (a folder is cleared once a process)
    assert cached_graph(nn.Linear(2, 2), 8, True, lambda *a: b"the graph") == b"the graph"
    assert not dead.exists() and len(list((tmp_path / "onnx").iterdir())) == 1
