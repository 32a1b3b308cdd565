"""Argument checks shared by the benchmark scripts: a bad value is one line and exit code 2
(:class:`Parser`'s error, or :func:`usage_error`) before any data is read or time is spent, never a
traceback after a long run (a negative --limit, --threads 0, a --json path in a missing folder)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn


class Parser(argparse.ArgumentParser):
    """argparse's parser whose error (an unknown option, a bad value or choice) is one line,
    ``prog: error: message`` and exit code 2, without the usage block above it (--help has it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def usage_error(message: str) -> NoReturn:
    """A user's mistake found after parsing: ``error: message`` on stderr, exit code 2 (argparse's)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def above_zero(text: str) -> float:
    """An argparse ``type``: a finite number above 0 (a scale, a factor)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def device_option(text: str) -> str:
    """An argparse ``type``: a torch device as `synth search --device` takes it (auto, cpu, cuda[:N];
    pipelines.search_inputs.resolve_device), resolved: 'auto' is the device it picks."""
    from augment.imageio import InputError
    from pipelines.search_inputs import resolve_device

    try:
        return str(resolve_device(text))
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--device ")) from None


def comma_names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names, each one of ``choices`` (an unknown one was
    silently left out, so a typo ran nothing)."""
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'} given; "
                                             f"choose from {', '.join(choices)}")
        return names

    parse.__name__ = "names"
    return parse


def existing_folder(text: str) -> Path:
    """An argparse ``type``: a folder that is there (read from)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder")
    return path


def existing_file(text: str) -> Path:
    """An argparse ``type``: a file that is there (a config, a checkpoint)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a file")
    return path


def output_folder(text: str) -> Path:
    """An argparse ``type``: a folder written into during the run, made now (with its parents)."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{path}: {error.strerror or error}") from None
    return path


def output_file(text: str) -> Path:
    """An argparse ``type``: a file to write at the end of a run, in a folder that exists (checked
    before the run, so a typo does not lose its figures)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} is not a folder (create it first)")
    return path


def write_json(path: Path, value: Any) -> None:
    """``value`` as strict JSON at ``path`` (a figure with nothing to measure, NaN, is null: ``NaN``
    is not JSON), written whole or not at all (augment.atomic_files, as the commands write)."""
    from augment.atomic_files import atomic_write_text, json_safe

    atomic_write_text(path, json.dumps(json_safe(value), indent=1, allow_nan=False) + "\n")


def known_names(option: str, requested: list[str], available: list[str], where: Path) -> list[str]:
    """``requested`` if each is one of ``available`` (found in ``where``), else :func:`usage_error`
    naming the unknown ones and those there are."""
    unknown = [name for name in requested if name not in available]
    if unknown:
        usage_error(f"{option}: {', '.join(unknown)} not in {where} (there: {', '.join(available) or 'none'})")
    return requested
