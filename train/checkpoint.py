"""Training checkpoints: written atomically, loaded safely, checked against the run's config.

A checkpoint holds everything needed to continue a run bit for bit: model, optimizer, the step
(the learning-rate schedule is a pure function of it), the config and its hash, the RNG states
(Python, NumPy, torch, CUDA), the data stream's position (epoch and, per DDP rank and loader
worker, the last row consumed) and the shards that position counts in (:mod:`train.shard_set`). It contains only tensors and plain Python values, so it loads
with ``torch.load(weights_only=True)``: opening a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import logging
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from augment.atomic_files import atomic_path
from augment.imageio import InputError, check_plain_file
from augment.shards import one_line

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and ``DistributedDataParallel`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def torch_save(obj: Any, path: Path | str) -> None:
    """``torch.save`` to ``path`` through memory: torch's own file writer turns a full disk (or any
    failed write) into "RuntimeError: [enforce fail at inline_container.cc] unexpected pos", a
    traceback; written as bytes here, it is the system's OSError (ENOSPC, EDQUOT, EIO), which the CLI
    says in one line. Write to a temporary (:func:`augment.atomic_files.atomic_path`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    Path(path).write_bytes(buffer.getbuffer())


def save_checkpoint(path: Path | str, *, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                    config: dict[str, Any], config_hash: str, data_state: dict[str, Any] | None = None,
                    shards: dict[str, Any] | None = None) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous one intact. ``shards``: the
    record of the shards trained on (:func:`train.shard_set.shard_set`), checked by ``--resume``."""
    state = {
        "format": FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "config": config,
        "config_hash": config_hash,
        "rng": rng_state(),
        "data": data_state or {},
        **({"shards": shards} if shards is not None else {}),
    }
    with atomic_path(path) as temporary:
        torch_save(state, temporary)
    logger.info("wrote checkpoint %s (step %d)", path, step)


def checkpoint_file(path: Path | str) -> Path:
    """The checkpoint file ``path`` names: itself, or a training run's folder's :data:`CHECKPOINT_FILE`
    (an :class:`InputError` when that folder holds none; so is a ``path`` that is no path, given to
    the API). Nothing is checked of another path."""
    if not isinstance(path, (str, os.PathLike)):  # Searcher(checkpoint=5): Path's TypeError named nothing
        raise InputError(f"checkpoint must be a path to a checkpoint file or a run's folder, not {path!r}")
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_FILE).is_file():
            raise InputError(f"{path}: is a folder with no {CHECKPOINT_FILE}; give the checkpoint file")
        return path / CHECKPOINT_FILE
    return path


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint onto the CPU; anything that is not one becomes an :class:`InputError`.
    ``path`` may be a training run's folder: its :data:`CHECKPOINT_FILE` is read."""
    path = checkpoint_file(path)
    check_plain_file(path, "a checkpoint")  # a FIFO was 'no such checkpoint'
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file; all mean "not a checkpoint"
        raise InputError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise InputError(f"{path}: not a synth training checkpoint (format {FORMAT_VERSION})")
    config = state.get("config")
    wrong = next((key for key, ok in (
        ("model", isinstance(state.get("model"), dict)),
        ("config", isinstance(config, dict) and isinstance(config.get("values"), dict)
         and isinstance(config.get("identity", {}), dict)),
        ("config_hash", isinstance(state.get("config_hash"), str)),
        ("step", isinstance(state.get("step"), int) and not isinstance(state.get("step"), bool)
         and state.get("step") >= 0)) if not ok), None)
    if wrong is not None:  # a file made to look like one: its readers' KeyError or TypeError was a traceback
        raise InputError(f"{path}: not a synth training checkpoint ({wrong!r} missing, of the wrong type or out of range)")
    return state


@contextmanager
def resuming(path: Path | str, key: str) -> Iterator[None]:
    """Restore a checkpoint's ``key`` (its optimizer, RNG states, data position) in the block: what a damaged
    or hand-made file holds there that cannot be restored is one InputError naming the file and the key (a
    KeyError, TypeError or AttributeError traceback out of `synth train --resume`)."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as error:  # (RuntimeError:
        # torch's, for an RNG state of the wrong size)
        raise InputError(f"{path}: its {key!r} cannot be resumed ({type(error).__name__}: {one_line(error)}); "
                         "not a checkpoint `synth train` wrote") from None


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """The settings that differ between two config identities, as "key old -> new" lines. A key
    the saved identity lacks was added to the config after it was written, when the code behaved
    as its off value does (None, 0, False, empty): it differs only when set to something else."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [d for key in sorted(set(saved) | set(current))
                if key in saved or current[key] not in (None, 0, False, "", [], (), {})
                for d in config_differences(saved.get(key), current.get(key), f"{prefix}{key}.")]
    saved = list(saved) if isinstance(saved, tuple) else saved
    current = list(current) if isinstance(current, tuple) else current
    return [] if saved == current else [f"{prefix.rstrip('.')} {saved!r} -> {current!r}"]


def check_compatible(state: dict[str, Any], config_hash: str, identity: dict[str, Any], path: Path | str) -> None:
    """Refuse to resume from a checkpoint that another config (architecture, loss, data...) wrote."""
    if state["config_hash"] == config_hash:
        return
    saved = state["config"].get("identity", {})
    changed = config_differences(saved, identity)
    if saved and not changed:
        return  # only options added since, left off
    detail = "; ".join(changed[:4]) + (" ..." if len(changed) > 4 else "") if changed else "hash differs"
    raise InputError(f"{path}: checkpoint was written with a different config (the checkpoint's -> this run's: "
                     f"{detail}); "
                     "use the same config or start a new run folder")


def load_model_state(model: nn.Module, state: dict[str, Any], path: Path | str) -> None:
    """Load weights strictly, turning an architecture mismatch into a one-line error."""
    try:
        unwrap(model).load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        # torch's first line only says "Error(s) in loading state_dict for X:"; the first mismatch follows
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "shape mismatch"
        detail = detail if len(detail) <= 240 else detail[:237] + "..."
        more = f"; {len(lines) - 2} more" if len(lines) > 2 else ""
        raise InputError(f"{path}: checkpoint does not fit this model ({detail.rstrip('. ')}{more})") from None
