"""What a command line gets from the environment a scheduler gives it (systemd, cron, a container, CI)
rather than from a shell: arguments that no shell expanded, the signals that stop a run, a container's
small shared memory.

A ``~`` reaches synth as typed where no shell ran (systemd's ``ExecStart=``, a container's exec form,
Kubernetes' ``args``, ``subprocess`` with a list). Python's paths keep it literally, but pyarrow's
readers and writers expand it to the home folder: ``--out ~/found`` made a folder named ``~`` in the
working directory for synth's own files while its Parquet tables went to ``$HOME/found`` (an expand
failed once its objects table was written, leaving a part-made ``./~/found``; ``train --shards ~/x``
listed ``./~/x`` and read ``$HOME/x``). A leading ``~`` is expanded here, as a shell would, before any
command sees it, so every layer names the same file.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import signal
import sys
import threading
import time

from augment.imageio import InputError
from augment.system import stop_signals

_HANDLER_PID: int | None = None  # the process whose SIGTERM is an interrupt (not its forked workers)
_ENDED = False  # the command has returned: the process is exiting (its threads joined, atexit callbacks)


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    if os.getpid() != _HANDLER_PID:  # a forked worker inherits the handler: it ends as SIGTERM ends it
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if signum == getattr(signal, "SIGHUP", None):
        _leave_hung_up_terminal()
    if _ENDED:
        _stopped_while_exiting(signum, frame)
    raise KeyboardInterrupt


def _stopped_while_exiting(signum: int, frame: object) -> None:
    """A stop once the command has returned, while the interpreter exits: the KeyboardInterrupt raised
    in an atexit callback (weakref's finalizers, torch's and multiprocessing's clean-ups) was printed as
    'Exception ignored in atexit callback' and a traceback, and the run ended with its own exit code as
    if not stopped. Its outputs are all written: what was printed is flushed, then the one line
    ``interrupted`` and exit code 130, as a stop during the command's last lines of output ends it."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(2, b"error: interrupted\n")
    os._exit(130)


def _stop_raised_in_a_callback(unraisable: object) -> None:
    """sys.unraisablehook: a stop's KeyboardInterrupt raised while the interpreter ran a finalizer or a
    weakref callback (a garbage collection under way as Ctrl-C or SIGTERM came: WeakSet's ``_remove``)
    cannot propagate; it was printed as 'Exception ignored in ...' with a traceback and the stop lost,
    the run going on to its end (exit code 0). The stop is raised again, in the code that runs next."""
    if isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt) and os.getpid() == _HANDLER_PID:
        if _ENDED:
            _stopped_while_exiting(signal.SIGINT, None)
        for number in (signal.SIGINT, *stop_signals()):
            if callable(signal.getsignal(number)):  # (a Python handler: the stop's own raises again)
                # Sent from a thread once this hook has returned: raised here, it was lost again.
                threading.Thread(target=_stop_again, args=(number,), name="stop again", daemon=True).start()
                return
    _unraisable_before(unraisable)


def _stop_again(number: int) -> None:
    time.sleep(0.01)
    os.kill(os.getpid(), number)


_unraisable_before = sys.unraisablehook


def command_ended() -> None:
    """A command has returned (done, or ended by its one line), in the console script or in a program
    calling the app in-process (a test's CliRunner): the interpreter's ``sys.unraisablehook`` is given
    back. Only :func:`process_exiting` (the console script's, once the app returns) marks the process as
    exiting: set here, a SIGTERM or SIGHUP in the host program after a CliRunner command ended it with
    ``os._exit(130)``, not its KeyboardInterrupt, and the hook stayed replaced for good."""
    global _unraisable_before
    if os.getpid() != _HANDLER_PID or threading.current_thread() is not threading.main_thread():
        return
    if sys.unraisablehook is _stop_raised_in_a_callback:
        sys.unraisablehook = _unraisable_before


def process_exiting() -> None:
    """The app has returned in the console script (``synth``, ``python -m pipelines.cli``): the process
    exits now. A stop from here on ends it at once (:func:`_stopped_while_exiting`): SIGTERM and SIGHUP's
    handler sees it now, a stop landing in a finalizer too; Ctrl-C's (the interpreter's own) is replaced
    as the exit's callbacks begin."""
    global _ENDED, _unraisable_before
    if os.getpid() != _HANDLER_PID or threading.current_thread() is not threading.main_thread():
        return
    _ENDED = True
    if sys.unraisablehook is not _stop_raised_in_a_callback:
        _unraisable_before = sys.unraisablehook
        sys.unraisablehook = _stop_raised_in_a_callback
    _register_exit_handler()


@functools.lru_cache(maxsize=None)
def _register_exit_handler() -> None:
    """Once per process; registered after every callback that modules loaded by the command registered,
    so it runs first (atexit runs them last in, first out)."""
    atexit.register(_stop_at_once_while_exiting)


def _stop_at_once_while_exiting() -> None:
    if _ENDED and os.getpid() == _HANDLER_PID:
        for number in stop_signals():
            signal.signal(number, _stopped_while_exiting)


def _leave_hung_up_terminal() -> None:
    """After a hang-up, writes to the terminal fail (EIO): the resume line and a progress bar's last
    refresh would raise while the run unwinds. Its stdout and stderr where they are that terminal go to
    /dev/null instead (what is redirected to a file or a pipe is kept)."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for descriptor in (1, 2):
            with contextlib.suppress(OSError):
                if os.isatty(descriptor):
                    os.dup2(null, descriptor)
        os.close(null)


def stop_as_interrupt() -> None:
    """A scheduler stops a run with SIGTERM (systemd, Kubernetes, `kill`), a session's end with SIGHUP (an
    ssh connection dropped, a terminal closed; unless ``nohup`` ignores it): both are taken as Ctrl-C, so
    the run cleans up its part-written files, `train` checkpoints the step under way, and the command
    says how to resume (exit code 130). SIGHUP's default action killed the run on the spot: exit code
    129, no line, a training run's steps since its last checkpoint lost."""
    global _HANDLER_PID, _ENDED, _unraisable_before
    if threading.current_thread() is threading.main_thread():
        _HANDLER_PID = os.getpid()
        _ENDED = False
        if sys.unraisablehook is not _stop_raised_in_a_callback:  # (a stop lost in a finalizer: raised again)
            _unraisable_before = sys.unraisablehook
            sys.unraisablehook = _stop_raised_in_a_callback
        for number in set(stop_signals()) - {signal.SIGINT}:
            signal.signal(number, _terminate_as_interrupt)


def check_working_folder() -> None:
    """:class:`InputError` (one line) where the working directory no longer exists (removed under a cron
    job's or CI step's shell): relative paths name nothing, and torch cannot load there at all (oneMKL's
    "FATAL ERROR: Cannot load libtorch_cpu.so", exit code 2, under `synth train`, `search` ...)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise InputError("the working directory no longer exists (it was removed after this shell entered it); "
                         "cd to a folder that exists and run the command again") from None


def expand_home(arguments: list[str]) -> list[str]:
    """``arguments`` with a leading ``~`` or ``~user`` expanded as a shell expands it, in an argument of
    its own and also in an option's ``--name=~/...`` value (which a shell leaves); ``~name`` of no user
    is left as typed, as a shell leaves it; :class:`InputError` (one line) where a bare ``~`` names no
    home folder (HOME unset and the user not in the password database). A folder
    named ``~`` is given by its full path (pathlib reads ``./~/x`` as ``~/x``, which pyarrow expands)."""
    return [_expanded(argument) for argument in arguments]


def _expanded(argument: str) -> str:
    if not isinstance(argument, str):  # (a Path given to the app in-process: no shell word)
        return argument
    head, equals, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
    if not value.startswith("~"):
        return argument
    expanded = os.path.expanduser(value)
    if expanded.startswith("~"):
        if value[1:].split("/", 1)[0]:  # ~name of no user (~draft*, ~nosuchuser.png): a shell leaves it too
            return argument
        raise InputError(f"{value}: '~' names no home folder here (HOME is not set and this user has no home in "
                         "the password database); give the full path")
    return f"{head}{equals}{expanded}"


# PyTorch's words where a DataLoader's workers cannot hand a batch over in shared memory: the worker's
# RuntimeError, re-raised in the loop as "Caught RuntimeError in DataLoader worker process 0. ...", and
# the SIGBUS of a worker whose /dev/shm filled as it wrote ("... is killed by signal: Bus error. It is
# possible that dataloader's workers are out of shared memory").
_SHARED_MEMORY = re.compile(r"unable to (?:allocate|write to file|open) shared memory|out of shared memory|"
                            r"unable to write to file </torch_")


def shared_memory_line(error: BaseException, folder: str = "/dev/shm") -> str | None:
    """The one line for a run whose DataLoader ran out of shared memory (``folder``, a container's 64 MB
    by default: Docker's ``--shm-size``), else None. It was PyTorch's traceback of the worker's
    traceback, or "out of memory? fewer num_workers ..." for the SIGBUS, which named neither /dev/shm
    nor the container's setting."""
    if not isinstance(error, RuntimeError) or not _SHARED_MEMORY.search(str(error)):
        return None
    try:
        size = f"{shutil.disk_usage(folder).total / 2 ** 20:.3g} MB"
    except OSError:
        size = "none"
    return (f"the DataLoader's workers ran out of shared memory ({folder}: {size} here; a container's default is "
            "64 MB): give it more (docker run --shm-size 2g; on Kubernetes an emptyDir of medium Memory at "
            f"{folder}), or set num_workers: 0 or a smaller batch_size in the config")


# The words of a failed allocation that is no Python MemoryError: torch's CPU allocator, OpenCV's.
_OUT_OF_MEMORY = re.compile(r"DefaultCPUAllocator: (?:can't|not enough memory)|Insufficient memory|Failed to allocate")


def memory_line(error: BaseException) -> str | None:
    """The one line for a run that could not get memory (a ``ulimit -v`` or a full machine): a
    MemoryError (numpy's, pyarrow's ``ArrowMemoryError``), torch's or OpenCV's failed allocation, or a
    library that could not be mapped as it was imported (``libtorch_cpu.so: failed to map segment``);
    else None. Each was a Python traceback."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    within = (f"this process may use {limit / 2 ** 30:.3g} GB of address space (ulimit -v {limit // 1024})"
              if limit != resource.RLIM_INFINITY else "the machine's memory is used up")
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, ImportError) and "failed to map segment" in text:
        return f"cannot load {text.split(':', 1)[0]}: it could not be mapped into memory ({within})"
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and _OUT_OF_MEMORY.search(text)) \
            or (type(error).__name__ == "error" and _OUT_OF_MEMORY.search(text)):  # cv2.error
        return f"out of memory ({text}): {within}; fewer --workers or smaller inputs take less"
    return None
