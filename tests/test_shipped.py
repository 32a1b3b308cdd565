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


def test_export_head_ships_a_threshold_only_for_the_search_it_calibrates(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch, capsys):
    """A shipped head is searched verified through the untrained network's fusion model (none other
    ships) and with --no-verify by the heat map alone: export-head shipped any calibration's threshold,
    so one calibrated through the checkpoint's own fusion model, or of the other search, served both."""
    from cli_checks import assert_one_line_error, run_cli
    from pipelines.calibration_report import fusion_record
    from pipelines.fusion import DEFAULT_FUSION, FusionModel
    from pipelines.search import UNTRAINED_THRESHOLD
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu")
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(checkpoint, model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    shipped_fusion = fusion_record(FusionModel.load(DEFAULT_FUSION))
    other_fusion = {**shipped_fusion, "file": str(checkpoint) + ".fusion.json", "bias": shipped_fusion["bias"] + 1}

    def export(name: str, **fields):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"threshold": 0.61, "f1": 0.5, "model": str(checkpoint), "table": [], **fields}))
        return path, run_cli("export-head", "--checkpoint", checkpoint, "--calibration", path,
                             "--out", tmp_path / name, "--made-by", "test")

    path, result = export("own_fusion", verify=True, fusion=other_fusion)
    assert_one_line_error(result, 2, str(path), "fusion", "is not the fusion model a shipped head is searched with")
    path, result = export("unknown", fusion=shipped_fusion)
    assert_one_line_error(result, 2, str(path), "records no verify")
    for name, verify in (("verified", True), ("heat_map", False)):
        _, result = export(name, verify=verify, fusion=shipped_fusion if verify else None)
        assert result.exit_code == 0, result.output
        monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / name)
        # The calibrated search takes the threshold; the other the untrained network's, not it.
        assert Searcher(device="cpu", verify=verify).threshold == 0.61
        capsys.readouterr()  # (run_cli set synth's logging up: to stderr, each warning once)
        assert Searcher(device="cpu", verify=not verify, threshold=0.5).threshold == 0.5
        assert "pass --threshold" not in capsys.readouterr().err  # said only where no threshold was given
        other = Searcher(device="cpu", verify=not verify)
        assert other.threshold == other.heat_map_threshold == UNTRAINED_THRESHOLD
        assert "pass --threshold" in capsys.readouterr().err
