"""The YAML configs that ship with synth (``configs/`` of a checkout, ``pipelines/configs/`` of an
installed wheel): ``--config`` takes one by its name (``--config train_cpu``) or by the path README
gives (``--config configs/train_cpu.yaml``) where no such file is in the working directory."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
# An installed wheel's copy (pyproject's package-dir maps configs/ there), else the checkout's own.
SHIPPED_FOLDERS = (_HERE / "configs", _HERE.parent / "configs")


def shipped_config(name: str) -> Path | None:
    """The shipped config named ``name`` (``train_cpu`` or ``train_cpu.yaml``); None where none is."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        return None
    for folder in SHIPPED_FOLDERS:
        if (folder / f"{stem}.yaml").is_file():
            return folder / f"{stem}.yaml"
    return None


def config_option(path: Path | None) -> Path | None:
    """``--config``'s value: the file given where it exists; else a shipped config of that name, given
    bare (``train_cpu``) or as ``configs/NAME.yaml``; else the path as given (its reader names it missing).
    A ``pip install``ed synth has no configs/ folder beside the user: README's commands said 'no such file'."""
    if path is None or path.exists():
        return path
    parts = Path(path).parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
        found = shipped_config(parts[-1])
        if found is not None:
            logger.info("%s: the config shipped with synth, %s", path, found)
            return found
    return path
