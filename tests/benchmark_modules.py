"""Load a script of benchmarks/ as a module for tests (benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(script: str, module_name: str) -> ModuleType:
    """``benchmarks/<script>.py`` as module ``module_name`` (registered in sys.modules, where its
    dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
