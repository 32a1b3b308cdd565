"""Helpers of the lock tests: a lock held by another process (killed with SIGKILL, so no clean-up
code runs and only the kernel can release it), waiting until a lock is free again, and a writer that
tries a folder while a reader holds it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from augment.locking import BusyError, folder_lock

HOLD = """
import sys, time
from augment.locking import {function}
with {function}(sys.argv[1]{what}):
    print("locked", flush=True)
    time.sleep(60)
"""


@contextlib.contextmanager
def held_elsewhere(function: str, path: Path, what: str | None = None) -> Iterator[subprocess.Popen]:
    """``augment.locking.<function>(path[, what])`` held by another process until the block ends,
    which kills it (SIGKILL)."""
    code = HOLD.format(function=function, what="" if what is None else f", {what!r}")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def take_when_free(lock: Callable[[], ContextManager], seconds: float = 5.0) -> object:
    """Enter and leave ``lock()`` as soon as no one holds it (the kernel drops a killed holder's lock
    a moment after its death); what the block yielded."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with lock() as held:
                return held
        except BusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def try_writing(folder: Path, tried: list[str]) -> None:
    """A writer's try at ``folder`` (as `synth expand` takes it), noted in ``tried``: "written", or
    the one line it was refused with."""
    try:
        with folder_lock(folder, "synth expand"):
            tried.append("written")
    except BusyError as error:
        tried.append(str(error))
