"""The backbone's exported ONNX graph (pipelines/onnx_backbone.py), kept on disk between processes.

Exporting it takes ~1-2.3 s on this project's CPU machine (2.29 s of a 12-frame `synth search
--sequence` of Crossing that took ~14 s, measured at stop 51), paid by every process that encodes
media in onnxruntime (a video or sequence search, a long still-image job). The graph is kept in
``onnx/`` under the user's cache folder (:func:`augment.store_writes.cache_root`: ``$SYNTH_CACHE_DIR``,
else ``$XDG_CACHE_HOME/synth``, else ``~/.cache/synth``), named by a key of everything that changes
it: the backbone's weights (:func:`pipelines.segmenter.weights_digest`, their dtypes) and structure, the
sources of the code that shapes the graph (:data:`GRAPH_CODE`), the torch, onnx and onnxruntime
versions, the opset, the graph's options (its stride, folded pads) and :data:`GRAPH_FORMAT`.

Each file is the graph behind a header holding its sha256, written atomically (two processes that
export at once both end with a whole file; the last rename wins, and either is right): a damaged or
truncated one is exported again with a warning; a cache folder that cannot be written leaves the
graph in memory, with one warning a process. A killed export's temporary is removed by the next process
that uses the folder (:func:`augment.atomic_files.remove_orphaned_temporaries`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

GRAPH_FORMAT = 1  # raised when onnx_backbone's export changes what it writes for the same key
OPSET = 17
MAGIC = b"synth-onnx-graph 1\n"
_WARNED_UNWRITABLE: set[str] = set()  # cache folders already said to be unwritable (one warning each)
_CLEARED: set[str] = set()  # cache folders whose killed exports' temporaries were removed (once a process)


def cache_folder() -> Path | None:
    """``onnx/`` under the user's cache folder; None where there is none (no home folder)."""
    from augment.imageio import InputError
    from augment.store_writes import cache_root

    try:
        return cache_root() / "onnx"
    except InputError:
        return None


# The code that shapes the graph: the backbone's forward and taps (train/backbones.py), the network's
# features (train/model.py), the export's traceable padding and folded pads (pipelines/onnx_backbone.py).
# A change to any of them is another graph for the same weights: its sources' sha256 is in the key.
GRAPH_CODE = ("train.backbones", "train.model", "pipelines.onnx_backbone")


def _module_source(name: str) -> str:
    return inspect.getsource(importlib.import_module(name))


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """sha256 of :data:`GRAPH_CODE`'s sources (once a process)."""
    digest = hashlib.sha256()
    for name in GRAPH_CODE:
        digest.update(f"{name}\n{_module_source(name)}\n".encode())
    return digest.hexdigest()


def graph_key(model: nn.Module, max_stride: int, fold_pads: bool) -> str:
    """The file name's key: what changes the exported graph."""
    import onnx
    import onnxruntime

    from pipelines.segmenter import weights_digest  # (the one content hash of a model's weights)

    # The graph holds the backbone alone (onnx_backbone._Backbone): the rest of the network (its
    # untrained head is drawn afresh in every process) would make every process's key another.
    exported = getattr(model, "backbone", model)
    structure = hashlib.sha256(repr(exported).encode()).hexdigest()
    dtypes = sorted({str(tensor.dtype) for tensor in exported.state_dict().values()})
    parts = [f"format {GRAPH_FORMAT}", f"weights {weights_digest(exported)}", f"dtypes {' '.join(dtypes)}",
             f"structure {structure}", f"code {code_digest()}",
             f"model {type(model).__qualname__}",
             f"torch {torch.__version__}", f"onnx {onnx.__version__}", f"onnxruntime {onnxruntime.__version__}",
             f"opset {OPSET}", f"max_stride {int(max_stride)}", f"fold_pads {bool(fold_pads)}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _read(path: Path) -> bytes | None:
    """The graph in ``path``, or None where there is none; a damaged one is said and None."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # none yet (or no folder: said when written)
        return None
    except OSError as error:
        logger.warning("%s: cached ONNX graph unreadable (%s); exporting it again", path, error)
        return None
    header_end = len(MAGIC) + 65  # the magic line, 64 hex digits and a newline
    graph = data[header_end:]
    if data[:len(MAGIC)] != MAGIC or data[len(MAGIC):header_end - 1].decode("ascii", "replace") != \
            hashlib.sha256(graph).hexdigest() or not graph:
        logger.warning("%s: cached ONNX graph damaged or truncated; exporting it again", path)
        return None
    return graph


def _write(path: Path, graph: bytes) -> None:
    from augment.atomic_files import atomic_write_bytes

    try:
        atomic_write_bytes(path, MAGIC + hashlib.sha256(graph).hexdigest().encode() + b"\n" + graph)
    except OSError as error:
        folder = str(path.parent)
        if folder not in _WARNED_UNWRITABLE:
            _WARNED_UNWRITABLE.add(folder)
            logger.warning("%s: cannot keep the exported ONNX graph there (%s); exporting it in every process "
                           "(set SYNTH_CACHE_DIR to a writable folder)", folder, error.strerror or error)


def cached_graph(model: nn.Module, max_stride: int, fold_pads: bool,
                 export: Callable[[nn.Module, int, bool], bytes]) -> bytes:
    """The graph ``export(model, max_stride, fold_pads)`` makes, from the cache where it is there,
    else exported and kept there."""
    folder = cache_folder()
    if folder is None:
        return export(model, max_stride, fold_pads)
    if str(folder) not in _CLEARED:  # an export killed as its graph was written left its temporary there
        from augment.atomic_files import remove_orphaned_temporaries

        _CLEARED.add(str(folder))
        remove_orphaned_temporaries(folder)
    path = folder / f"backbone-{graph_key(model, max_stride, fold_pads)}.onnx.cache"
    graph = _read(path)
    if graph is not None:
        logger.debug("%s: cached ONNX graph", path)
        return graph
    graph = export(model, max_stride, fold_pads)
    _write(path, graph)
    return graph
