"""The head of ``benchmarks/instance_head.py`` saved as a ``synth train`` checkpoint
(:func:`write_checkpoint`) and checked with the real search's heat map (:func:`searcher_eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

import ccp
from instance_cases import Head
from metrics import summarise
from train.model import QuerySearchNet


def write_checkpoint(head: Head, hidden: int, step: int, path: Path, readout: nn.Conv2d | None = None) -> None:
    """The head as a ``synth train`` checkpoint that ``Searcher(checkpoint=...)`` loads: the untrained
    network with the trained residual projections and/or stride-16 stage put in."""
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig

    model_keys: dict[str, Any] = {"edge_path": False}
    if hidden > 0:
        model_keys.update(residual_projection=True, residual_hidden=hidden)
    if head.blocks is not None:
        model_keys.update(freeze_backbone=True, trainable_blocks=len(head.blocks))
    config = TrainConfig(model=model_keys)
    model = QuerySearchNet(config.model_config())
    if head.projections is not None:
        assert model.projections is not None
        model.projections.load_state_dict(head.projections.state_dict())
    if head.blocks is not None:
        for offset, block in enumerate(head.blocks):
            model.backbone._blocks[head.first + offset].load_state_dict(block.state_dict())
    if readout is not None:
        model.conversion.readout.load_state_dict(readout.state_dict())
    save_checkpoint(path, model=model, optimizer=None, step=step, config=config.to_dict(), config_hash=config.hash())


def searcher_eval(checkpoint: Path | None, heat_boxes: bool | None = None) -> dict[str, float]:
    """The real search's heat map alone (no verification) on the 160 + 60 calibration cases."""
    from pipelines.search import Searcher

    searcher = Searcher(checkpoint=checkpoint, device="cpu", untrained=checkpoint is None, verify=False)
    if heat_boxes is not None:
        searcher.heat_boxes = heat_boxes
    return summarise(ccp.best_outcomes(searcher, ccp.search_cases("calibrate")))
