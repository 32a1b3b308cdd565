"""A trained search head as it ships inside the package (pipelines/shipped.py): head-only file,
recorded sha256, loaded with weights_only=True; the default network when (and only when) one ships."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import pipelines.shipped as shipped
from augment.imageio import InputError
from pipelines.search import Searcher
from pipelines.shipped import HEAD_FILE, MANIFEST_FILE, head_state, load_head, load_shipped, write_head
from train.model import QuerySearchNet, SearchNetConfig


def _trained_head(folder: Path, conversion: bool = False) -> QuerySearchNet:
    model = QuerySearchNet(SearchNetConfig(pretrained=False, residual_projection=True, edge_path=False))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.projections[0].project.weight)
    if conversion:  # a trained conversion net: its residual branch predicts the object's pixels
        torch.nn.init.normal_(model.conversion.residual.weight, std=0.01)
    write_head(model, 0.42, folder, {"made_by": "test", "calibration": {"cases": 0}})
    return model


def test_a_written_head_loads_with_weights_only_and_matches_its_hash(tmp_path: Path):
    model = _trained_head(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    path = tmp_path / HEAD_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["sha256"]
    assert manifest["bytes"] == path.stat().st_size < 5 * 2**20  # the backbone comes from its PyPI package
    head = torch.load(path, map_location="cpu", weights_only=True)
    assert head and not any(k.startswith("backbone.") for k in head)
    loaded, threshold, _ = load_shipped(tmp_path)
    assert threshold == 0.42
    assert torch.equal(loaded.projections[0].project.weight, model.projections[0].project.weight)
    for key, tensor in head.items():
        assert torch.equal(loaded.state_dict()[key], tensor)


def test_a_changed_or_foreign_head_is_refused(tmp_path: Path):
    _trained_head(tmp_path)
    data = bytearray((tmp_path / HEAD_FILE).read_bytes())
    data[-20] ^= 0xFF
    (tmp_path / HEAD_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match the recorded"):
        load_shipped(tmp_path)
    model = QuerySearchNet(SearchNetConfig(pretrained=False, residual_projection=True))
    with pytest.raises(InputError, match="does not fit"):
        load_head(QuerySearchNet(SearchNetConfig(pretrained=False)), head_state(model), "foreign")


def test_the_default_network_is_the_shipped_head_only_where_one_ships(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "none")
    searcher = Searcher(device="cpu")
    assert searcher.model_name == "untrained" and not searcher.heat_boxes
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    _trained_head(tmp_path)
    searcher = Searcher(device="cpu")
    # Its conversion net is untrained (zero residual): peaks are boxed by scale, as untrained.
    assert searcher.model_name.startswith("shipped") and searcher.threshold == 0.42 and not searcher.heat_boxes
    assert Searcher(device="cpu", untrained=True).model_name == "untrained"
    _trained_head(tmp_path, conversion=True)  # heat regions box peaks only where the heat was trained
    assert Searcher(device="cpu").heat_boxes


def test_a_shipped_head_is_packaged() -> None:
    """pyproject's package data carries a head placed in pipelines/weights (a wheel built without
    it would silently fall back to the untrained network)."""
    import fnmatch
    import tomllib

    from pipelines import shipped

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pipelines"]
    folder = shipped.WEIGHTS_DIR.relative_to(root / "pipelines")
    for name in (shipped.HEAD_FILE, shipped.MANIFEST_FILE):
        assert any(fnmatch.fnmatch(str(folder / name), pattern) for pattern in patterns), (name, patterns)
