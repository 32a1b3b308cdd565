"""Type predicates shared by the config loaders, which range-check every value at load time."""

from __future__ import annotations

import math
import os
from typing import Any


def is_int(value: Any) -> bool:
    """A whole number (YAML ``true`` is a bool, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_pair(value: Any) -> bool:
    """Two numbers, as a tuple or list (a range or a pair of factors)."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_number, value))


def positive_setting(variable: str, default: float, unit: str) -> float:
    """The environment variable ``variable`` as a finite number of ``unit`` above 0, ``default`` when it is
    unset or blank; anything else (a word, 0, a negative, nan, inf) is an InputError naming it."""
    from augment.imageio import InputError

    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{variable} must be a number of {unit} above 0, not {text!r}")
    return value
