"""Type predicates shared by the config loaders, which range-check every value at load time."""

from __future__ import annotations

import dataclasses
import math
import os
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


def whole_setting(variable: str, default: int) -> int:
    """The environment variable ``variable`` as a whole number at least 0, ``default`` when it is unset
    or blank; anything else is an InputError naming it (``int()``'s ValueError was a traceback)."""
    from augment.imageio import InputError

    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        raise InputError(f"{variable} must be a whole number at least 0, not {text!r}")
    return int(text)


def expected_type(value: Any, default: Any, annotation: Any = "") -> str | None:
    """What a config field holding ``value`` should hold, judged by its ``default``'s type (None when it
    does): a bool true or false, an int a whole number, a float a finite number, a tuple a pair of
    numbers, a list a list of names; a None default takes None or a value of the ``annotation``'s type."""
    if default is None:  # optional: e.g. decay_steps: int | None
        kind = str(annotation)
        check, expected = ((is_int, "a whole number or null") if "int" in kind else
                           (is_number, "a number or null") if "float" in kind else
                           (lambda v: isinstance(v, str), "a string or null") if "str" in kind else
                           (lambda v: True, ""))
        ok = value is None or check(value)
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = is_int(value), "a whole number"
    elif isinstance(default, float):
        ok, expected = is_number(value), "a number"
    elif isinstance(default, tuple):
        ok, expected = is_pair(value), f"a pair of numbers like {list(default)}"
    elif isinstance(default, list):
        ok, expected = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of names"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    return None if ok else f"expected {expected}, got {value!r}"


def check_field_types(instance: Any, skip: tuple[str, ...] = ()) -> None:
    """Every field of the dataclass ``instance`` (but ``skip``) of its default's type (:func:`expected_type`);
    a ValueError ``name: expected ..., got ...`` for the first that is not."""
    for spec in dataclasses.fields(instance):
        if spec.name in skip:
            continue
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        problem = expected_type(getattr(instance, spec.name), default, spec.type)
        if problem:
            raise ValueError(f"{spec.name}: {problem}")
