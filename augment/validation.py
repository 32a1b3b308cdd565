"""Type predicates shared by the config loaders, which range-check every value at load time."""

from __future__ import annotations

import math
from typing import Any


def is_int(value: Any) -> bool:
    """A whole number (YAML ``true`` is a bool, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_instance(value: Any, kind: type, name: str) -> None:
    """A TypeError naming the argument ``name`` unless ``value`` is a ``kind`` (a dict given for a
    config object is an AttributeError deep inside otherwise)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__} ({kind.__name__}(**options)), not {type(value).__name__}")


def is_pair(value: Any) -> bool:
    """Two numbers, as a tuple or list (a range or a pair of factors)."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_number, value))
