"""Folders left out of the listings of input folders while a run writes them.

A run's ``--out`` may lie inside one of its inputs (``synth expand objects/ -o objects/expanded``).
Listed with the source, its files were read as inputs: each shard a "not an image file" skip, and
the objects table, the shards and the manifest of the previous run changed the sources'
fingerprint (:func:`augment.cutouts.sources_fingerprint`), so every rerun cut the objects out again
instead of reusing its table. Within :func:`excluding`, :func:`augment.imageio.list_images` and the
fingerprint leave those folders and everything in them out. A context variable, not a parameter:
every reader of every source format lists its folders, and none needs to know of the run's output.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator

_EXCLUDED: ContextVar[tuple[Path, ...]] = ContextVar("synth_excluded_folders", default=())


@contextlib.contextmanager
def excluding(*folders: Path | str) -> Iterator[None]:
    """Leave ``folders`` (and everything in them) out of input listings until the block ends."""
    token = _EXCLUDED.set(_EXCLUDED.get() + tuple(Path(folder).resolve() for folder in folders))
    try:
        yield
    finally:
        _EXCLUDED.reset(token)


def drop_excluded(paths: Iterable[Path], folder: Path) -> list[Path]:
    """``paths`` (found under ``folder``, e.g. by its ``rglob``) less those in an excluded folder."""
    root = Path(folder).resolve()
    below = [excluded for excluded in _EXCLUDED.get() if root in excluded.parents]
    if not below:  # the common case: no per-path work
        return list(paths)
    kept = []
    for path in paths:
        resolved = root / Path(path).relative_to(folder)  # no system call per path
        if not any(resolved == excluded or excluded in resolved.parents for excluded in below):
            kept.append(path)
    return kept


def excluded(real: str | Path) -> bool:
    """Whether the resolved path ``real`` (a symbolic link's target) is an excluded folder or inside one."""
    real = Path(real)
    return any(real == folder or folder in real.parents for folder in _EXCLUDED.get())
