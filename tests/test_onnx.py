"""ONNX export runs in onnxruntime and matches PyTorch."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from pipelines.train_commands import register
from train.export import export_onnx, max_difference
from train.model import QuerySearchNet, SearchNetConfig

pytest.importorskip("onnxruntime")


def test_export_matches_pytorch(tmp_path):
    model = QuerySearchNet(SearchNetConfig(feature_strides=(8, 16), scale_pairs=((1.0, 1.0), (0.5, 1.0)))).eval()
    path = tmp_path / "search.onnx"
    exported = export_onnx(model, path, query_size=64, medium_size=128)
    assert path.is_file()
    assert max_difference(path, exported.model, 64, 128) < 1e-3  # BatchNorm folded
    assert max_difference(path, model, 64, 128) < 1e-3  # the original, unfolded network


def test_cli_exports_the_untrained_network(tmp_path):
    app = typer.Typer()
    register(app)
    config = tmp_path / "small.yaml"
    config.write_text("model: {feature_strides: [8], scale_pairs: [[1.0, 1.0]], edge_path: false}\n"
                      "query_size: 32\nmedium_size: 64\n")
    out = tmp_path / "untrained.onnx"
    result = CliRunner().invoke(app, ["export-onnx", "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "max |difference|" in result.output
    result = CliRunner().invoke(app, ["export-onnx", "--out", str(out), "--checkpoint", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output
