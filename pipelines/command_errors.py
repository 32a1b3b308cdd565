"""How a `synth` command ends on a user's mistake: one line on stderr and an exit code, never a
traceback (:func:`fail`, :func:`run_guarded`); the file-system errors that are the environment's
(a read-only or full disk), a stop (Ctrl-C, SIGTERM) as ``interrupted``, and range checks of
numeric options.

Exit codes: 1 done, but some inputs failed; 2 a user error; 3 busy (:data:`augment.locking.BUSY_EXIT_CODE`);
130 interrupted.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

import typer

from augment.imageio import InputError
from augment.locking import BUSY_EXIT_CODE, BusyError
from augment.system import stands_for_interrupt
from pipelines.environment import memory_line, shared_memory_line
from pipelines.terminal import say

# How a command ends once its line is printed: not errors of their own, whatever their context.
COMMAND_ENDINGS = (typer.Exit, typer.Abort, SystemExit)


def fail(message: str, code: int = 2) -> None:
    """Print a user error as one line and exit non-zero (with ``code`` also where stderr cannot take it)."""
    try:
        say("error", message)
    except OSError:
        pass
    raise typer.Exit(code)


INTERRUPTED_EXIT_CODE = 130
# File-system errors that are the environment's, not a bug: a read-only or full disk, a path that
# is a file where a folder is needed. They get one line, like a user's mistake.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR,
                      errno.ENOTDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG}


def environment_error(error: OSError) -> None:
    # (a name given as bytes, as TensorBoard's event writer opens its file: b'runs/tb/events...' was shown)
    name = os.fsdecode(error.filename) if isinstance(error.filename, bytes) else error.filename
    fail(f"{name or 'file system'}: {error.strerror or error}")


def user_line(error: InputError) -> str:
    """An InputError's line. One raised in a DataLoader worker comes back as PyTorch's "Caught InputError
    in DataLoader worker process 0.", the worker's traceback, then "augment.imageio.InputError: LINE": LINE."""
    text = str(error)
    if text.startswith("Caught ") and "DataLoader worker" in text.split("\n", 1)[0]:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def run_guarded(function, *args, interrupt_hint: str | Callable[[], str] | None = None, **kwargs):
    """Call ``function``; a user's mistake becomes one line on stderr, not a traceback.

    ``interrupt_hint`` follows "interrupted; " when Ctrl-C stops the call (how to resume, if one can);
    a callable is asked only then, for a hint that depends on how far the run got.
    """
    try:
        return function(*args, **kwargs)
    except BusyError as error:
        fail(str(error), BUSY_EXIT_CODE)
    except InputError as error:
        fail(user_line(error))
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise
        environment_error(error)
    except COMMAND_ENDINGS:  # a line already printed (a nested run_guarded's, its context the stop)
        raise
    except BaseException as error:
        # KeyboardInterrupt, or another error raised because of one (a module imported as the stop came:
        # RuntimeError from a dataclass's __set_name__, pybind11's ImportError).
        interrupted = stands_for_interrupt(error)
        if not interrupted and (line := shared_memory_line(error)):  # a container's small /dev/shm
            hint = interrupt_hint() if callable(interrupt_hint) else interrupt_hint
            fail(f"{line}; {hint}" if hint else line)
        if not interrupted and (line := memory_line(error)):  # a ulimit -v, a full machine: not a traceback
            hint = interrupt_hint() if callable(interrupt_hint) else interrupt_hint
            fail(f"{line}; {hint}" if hint else line, 1)
        # torch's word for a loader worker killed under the run (the kernel's OOM killer, a kill -9):
        # not the user's mistake, but no traceback either; the run resumes as after a stop.
        text = str(error).strip()
        if not interrupted and not (isinstance(error, RuntimeError) and text.startswith("DataLoader worker (pid")):
            raise
        hint = interrupt_hint() if callable(interrupt_hint) else interrupt_hint
        if interrupted:
            fail(f"interrupted; {hint}" if hint else "interrupted", INTERRUPTED_EXIT_CODE)
        fail(f"{text.splitlines()[0].rstrip('. ')} (out of memory? fewer num_workers, a smaller shuffle_buffer or "
             f"batch_size take less)" + (f"; {hint}" if hint else ""), 1)


def check_at_least(value: int | None, minimum: int, option: str) -> None:
    """A numeric option below its minimum is one line (typer's own range errors are a box of text)."""
    if value is not None and value < minimum:
        fail(f"{option} must be at least {minimum}, got {value}")


def check_at_most(value: int | None, maximum: int, option: str, why: str) -> None:
    """A numeric option above its maximum (one that bounds the memory a run takes) is one line,
    saying ``why`` it is bounded."""
    if value is not None and value > maximum:
        fail(f"{option} must be at most {maximum} ({why}), got {value}")

