"""Text files the user hands the CLI: a COCO ``.json``, ``categories.json``, ``label_list.json``, a
``--pairs`` JSONL file, a YAML config, a fusion model or a calibration report.

One reader for all of them, so each accepts what Notepad and Excel save as "UTF-8": a file that starts
with a byte-order mark, which ``json.loads`` refuses ('Unexpected UTF-8 BOM').
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augment.imageio import InputError


def read_user_text(path: Path | str, expected: str) -> str:
    """The text of a user's file, UTF-8 with or without a byte-order mark (the mark is dropped).

    Bytes that are not UTF-8 are an :class:`InputError` naming the file, the first bad byte and what
    was ``expected`` (e.g. "a YAML config file"); a missing file's ``OSError`` is the caller's.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start:error.start + 1]!r}); "
                         f"expected {expected}") from None


def loads_json(text: str | bytes) -> Any:
    """``json.loads``, where arrays or objects nested thousands deep (a JSON file of a few hundred KB:
    '[[[[...]]]]') are a ValueError, as any other bad JSON is to its readers: Python's RecursionError
    was a traceback."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None


def file_head(path: Path, size: int = 1 << 16) -> str:
    """The first ``size`` bytes of a regular file as text (undecodable bytes dropped), to tell a format
    by the keys it names; "" for a FIFO or special file (reading one would wait for a writer forever)
    or a file that cannot be read."""
    if not path.is_file():
        return ""
    try:
        with path.open("rb") as handle:
            return handle.read(size).decode("utf-8", "ignore")
    except OSError:
        return ""
