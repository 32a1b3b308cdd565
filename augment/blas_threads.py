"""The thread counts of the OpenBLAS libraries loaded in this process (numpy's, OpenCV's): read
(:func:`blas_threads`) and set (:func:`limit_blas_threads`) whatever was imported first."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)


# Thread-count setters and getters of the OpenBLAS builds numpy (scipy-openblas) and OpenCV bundle.
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")
_BLAS_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                 "openblas_get_num_threads64_", "openblas_get_num_threads")


def _loaded_openblas() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries loaded in this process (Linux: from /proc/self/maps; else none)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def _first(library: ctypes.CDLL, names: tuple[str, ...]) -> Any:
    return next((f for f in (getattr(library, n, None) for n in names) if f is not None), None)


def blas_threads() -> dict[str, int]:
    """Thread count of each loaded OpenBLAS that reports one, by library path."""
    found = {}
    for library in _loaded_openblas():
        getter = _first(library, _BLAS_GETTERS)
        if getter is not None:
            found[library._name] = int(getter())
    return found


def limit_blas_threads(threads: int = 1) -> int:
    """Set the thread count of every OpenBLAS loaded in this process (numpy's, OpenCV's); returns
    how many libraries were set.

    The search mixes torch (its own OpenMP threads) with numpy products (verification's feature
    matching). OpenBLAS threads that keep spinning after a product take the cores torch's next
    layer needs: measured on a 2-core machine (`benchmarks/search.py --photos 20`, 2 torch threads),
    the verified search took 131 ms a scene with numpy's default threads and 67 ms with one.
    Works whatever was imported first (unlike OPENBLAS_NUM_THREADS, read only at numpy's import);
    Linux only (reads /proc/self/maps), a no-op elsewhere."""
    done = 0
    for library in _loaded_openblas():
        setter = _first(library, _BLAS_SETTERS)
        if setter is not None:
            setter(ctypes.c_int(threads))
            done += 1
    log.debug("OpenBLAS threads set to %d in %d libraries", threads, done)
    return done
