"""Process-wide settings: a faster allocator set-up on glibc machines, quiet worker processes, stops
held until a safe point (:class:`DeferredStop`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_tuned = False


def tune_malloc(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Keep large temporary buffers in the heap instead of mmap/munmap on every call.

    By default glibc returns each multi-megabyte temporary (a 512x512 float image, a
    feature map) to the OS and page-faults it back in on the next call: measured here,
    that doubles the cost of scene-level distortions and of the backbone's forward pass.
    Same effect as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set before start-up.
    Inherited by forked workers. Returns False where glibc is not the allocator.
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("mallopt not available; allocator left as it is")
        return False
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
    return _tuned


def raise_if_interrupted(error: BaseException) -> None:
    """Raise KeyboardInterrupt if ``error`` stands for one (Ctrl-C, or SIGTERM as the CLI turns it).

    An extension module's initialisation (pybind11's, as onnxruntime's) reports an exception raised
    while it runs as ``ImportError("initialization failed")``, the interrupt only its cause: a caller
    that reads an ImportError as "not installed", or falls back to another path on any Exception,
    would carry on (or blame a missing package) instead of stopping as asked.
    """
    if stands_for_interrupt(error):
        raise KeyboardInterrupt from error


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (an optional extra's modules) are not installed: asked before the work that
    needs them, so a missing extra is one line naming it, not a traceback (a stop during an import
    is a stop, not a missing package). One installed that fails to import (built for another numpy,
    a dependency of its own missing) is an InputError saying so: "pip install" would change nothing."""
    import importlib

    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise_if_interrupted(error)
            if isinstance(error, ModuleNotFoundError) and error.name == name:
                missing.append(name)
                continue
            from augment.imageio import InputError

            cause = next((e for e in (error, error.__cause__, error.__context__) if e is not None and str(e).strip()),
                         error)  # onnxruntime's ImportError beside the wrong numpy has no words of its own
            reason = (str(cause).strip().splitlines() or ["its import failed"])[0]
            raise InputError(f"{name} is installed but does not import ({type(cause).__name__}: {reason}); "
                             f"upgrade or reinstall it: pip install --upgrade --force-reinstall {name}") from None
    return missing


def stands_for_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is, or was raised because of, a KeyboardInterrupt (its causes and contexts):
    Python reports one raised inside a class body's ``__set_name__`` (a dataclass being imported when
    SIGTERM came) as ``RuntimeError('Error calling __set_name__ ...')``, pybind11 as an ImportError."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def usable_cpus(cgroups: str | None = None, root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may keep busy: those it may run on (``taskset``, a cpuset), and no more
    than its cgroup's CPU quota allows (a container's ``--cpus 2``, a Kubernetes CPU limit, systemd's
    ``CPUQuota=``), rounded up. A container limited to 2 CPUs of a 64-core host sees all 64 cores:
    one worker process per core was 64 workers throttled to 2 CPUs' time, each with its own memory.
    ``cgroups``: the text of ``/proc/self/cgroup`` (read where None); ``root``: where cgroups are mounted."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(cgroups, root)
    return max(1, min(cpus, math.ceil(quota)) if quota is not None else cpus)


def threads_within_quota(environ: Any) -> None:
    """Set ``OMP_NUM_THREADS`` in ``environ`` (``os.environ``, before torch loads) to :func:`usable_cpus`
    where a cgroup's CPU quota allows fewer CPUs than this process may run on, unless it is set: torch,
    OpenMP and OpenBLAS start a thread per core they may run on, blind to the quota (a container's
    ``--cpus 2`` on a 64-core host: 64 threads throttled to 2 CPUs' time)."""
    cpus = usable_cpus()
    if hasattr(os, "sched_getaffinity") and cpus < len(os.sched_getaffinity(0)):
        environ.setdefault("OMP_NUM_THREADS", str(cpus))


def cpu_quota(cgroups: str | None = None, root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time this process's cgroups allow (quota / period; the smallest along its cgroup's
    path, cgroup v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``), None where none is set or none can be read."""
    limits = []
    for controllers, path in _cgroups_of(cgroups):
        if controllers == "":  # v2: "0::/path"
            limits += [_v2_limit(folder) for folder in _along(root, path)]
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            base = next((root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / name).is_dir()), None)
            limits += [_v1_limit(folder) for folder in _along(base, path)] if base is not None else []
    return min((limit for limit in limits if limit is not None), default=None)


def memory_limit(cgroups: str | None = None, root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process's cgroups allow (the smallest along its cgroup's path: v2's ``memory.max``, v1's
    ``memory.limit_in_bytes``), None where none is set or none can be read: a container's ``--memory 4g``
    on a 256 GB host, which the host's page count does not show."""
    limits = []
    for controllers, path in _cgroups_of(cgroups):
        if controllers == "":
            limits += [_number_in(folder / "memory.max") for folder in _along(root, path)]
        elif "memory" in controllers.split(","):
            limits += [_number_in(folder / "memory.limit_in_bytes") for folder in _along(root / "memory", path)]
    # (v1 writes "no limit" as a page-rounded 2^63)
    return min((limit for limit in limits if limit is not None and limit < 1 << 62), default=None)


def usable_memory() -> int:
    """The machine's memory, no more than this process's cgroup allows (0 where it cannot be read)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 0
    limit = memory_limit()
    return min(physical, limit) if limit is not None and physical else (limit or physical)


def _number_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroups_of(cgroups: str | None) -> list[tuple[str, str]]:
    """(controllers, path) of each line of ``cgroups`` (the text of ``/proc/self/cgroup``, read where None;
    none where it cannot be read); v2's line has no controllers: "0::/path"."""
    if cgroups is None:
        try:
            cgroups = Path("/proc/self/cgroup").read_text()
        except OSError:
            return []
    return [tuple((line.split(":", 2) + ["", ""])[1:3]) for line in cgroups.splitlines()]  # type: ignore[misc]


def _along(base: Path, path: str) -> list[Path]:
    """``base/path`` and each folder above it up to ``base`` (inside a container the cgroup's own path
    is often not under the mount, which is its cgroup itself)."""
    parts = [part for part in path.split("/") if part]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None


# What stops a run: Ctrl-C, a scheduler's SIGTERM (systemd, Kubernetes, `kill`), and the SIGHUP a
# session's end sends (an ssh connection dropped, a terminal closed, tmux's window killed). A SIGHUP
# ignored from the start (`nohup`) stays ignored.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_signals() -> list[int]:
    """Those of :data:`STOP_SIGNALS` this process has not been told to ignore (``nohup``'s SIGHUP,
    a background job's SIGINT)."""
    return [number for number in STOP_SIGNALS if signal.getsignal(number) != signal.SIG_IGN]


def ignore_interrupts() -> None:
    """Initializer of worker processes: Ctrl-C reaches the whole process group, but only the parent
    should react (it stops the pool and prints one line); workers would each print a traceback.

    SIGTERM is set back to the default (the process ends at once) and unblocked: a forked worker
    inherits the CLI's Python-level handler, which runs only between bytecodes and loses a signal
    that arrives before the child's interpreter is ready, so ``Pool.terminate()`` could leave a
    worker waiting on the task queue's lock and ``join()`` hang for good (see :func:`fork_pool`).

    A worker whose parent is killed (SIGKILL, the OOM killer) ends quietly: see :func:`_end_quietly_if_orphaned`
    and :func:`_end_when_orphaned`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a session's end reaches the group too: the parent's to take
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    import multiprocessing.util

    # Run as the worker exits, before multiprocessing prints what ended it (high priority: first).
    parent = os.getppid()
    multiprocessing.util.Finalize(None, _end_quietly_if_orphaned, args=(parent,), exitpriority=100)
    threading.Thread(target=_end_when_orphaned, args=(parent,), name="synth-orphan", daemon=True).start()


def _end_when_orphaned(parent: int, every: float = 0.5) -> None:
    """End this worker once its parent is gone. A ``ProcessPoolExecutor`` worker keeps both ends of its
    queues, so no broken pipe ever tells it: orphaned by a kill -9 of `synth extract`, it waited on its
    next task, or on sending a result nobody reads, for good (memory and a process held until
    reboot). It works for no one any more and writes nothing itself: ended at once."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


def _end_quietly_if_orphaned(parent: int, wait: float = 1.0) -> None:
    """A pool worker sending its result as its parent dies (blocked on the full pipe, or done before
    :func:`_end_when_orphaned` looked) gets ``BrokenPipeError`` (the parent held the only reading end), which
    multiprocessing prints as a traceback on the terminal the killed command shared, long after its
    prompt came back. Such a worker ends here, at its exit, silently (it writes no output: results go
    to the parent); any other end (the parent alive) goes on as multiprocessing's. A broken pipe can
    be seen a moment before the kernel hands the worker to a new parent, hence the short ``wait``.

    Not PR_SET_PDEATHSIG: it fires when the *thread* that forked the worker ends (a pool's own thread
    forks replacement workers), not only when the parent process does.
    """
    broken = isinstance(sys.exc_info()[1], BrokenPipeError)
    deadline = time.monotonic() + (wait if broken else 0.0)
    while os.getppid() == parent:
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)
    os._exit(0)


def ignore_stop_signals(worker_id: int = 0, loader_pid: int | None = None) -> None:
    """``worker_init_fn`` of DataLoader workers: they ignore Ctrl-C, and SIGTERM from any process but
    their loader's, and end when their loader shuts them down (or, its process gone, on their next
    look at it).

    A stop often reaches every process of the group (Ctrl-C in a terminal, torchrun stopping a rank,
    systemd), and a training run holds it to a step's end (:class:`DeferredStop`). A worker that
    ended on it instead (PyTorch's own SIGTERM handler ends a worker, quietly if its parent sent the
    signal) would fail the run's next batch, or its DataLoader's SIGCHLD handler would raise wherever
    the run is: mid-step, not at the step's end where it can checkpoint.

    The SIGTERM of the worker's own parent still ends it at once, quietly, as PyTorch's handler
    does: it is how the loader ends a worker that does not end by itself, and how multiprocessing's
    exit hook ends the workers of a loader still alive when the interpreter exits (a run failed
    with a traceback: ``sys.last_traceback`` keeps its frames). Ignored, that hook's ``join()``
    waited for good. A signal handler cannot tell who sent a signal, so SIGTERM is blocked and a
    thread takes it with ``sigwaitinfo``, which can (where that call is missing, not on Linux,
    SIGTERM is left to PyTorch's handler). ``loader_pid``: the process that made the loader (its
    parent where workers are forked; with forkserver or spawn, Python 3.14's default on Linux, the
    parent is a server process, and the loader's SIGTERM would be ignored); default the parent.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a session's end, as Ctrl-C: the training loop's to take
    if not hasattr(signal, "sigwaitinfo"):
        return
    # Blocked before any other thread starts here: the threads this worker starts inherit the mask,
    # so every SIGTERM waits for the thread below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_end_on_loaders_sigterm, args=(loader_pid or os.getppid(),), name="synth-sigterm",
                     daemon=True).start()


def _end_on_loaders_sigterm(loader: int) -> None:
    """Take this process's SIGTERMs: one from ``loader`` ends it (exit code 0, which the loader's
    SIGCHLD handler does not count as a failure), any other is ignored."""
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == loader:
            os._exit(0)


def fork_pool(workers: int) -> Any:
    """A ``multiprocessing`` pool of forked workers that ``terminate()`` always ends.

    The workers (and the pool's own threads, which fork replacements) are made with SIGTERM
    blocked, so a ``terminate()`` that comes before a worker has run :func:`ignore_interrupts`
    stays pending until the default action is in place, then ends it. Without this, terminating a
    pool while the CLI's SIGTERM handler was inherited could hang ``join()`` for good (seen with
    ``synth expand``: all shards written, no manifest, the command never returning).
    """
    import multiprocessing

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        return multiprocessing.get_context("fork").Pool(workers, initializer=ignore_interrupts)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class DeferredStop:
    """Ctrl-C, SIGTERM and SIGHUP (:func:`stop_signals`) held until the caller reaches a point where
    stopping loses nothing.

    Within the block, the first of them this process gets is only recorded (:attr:`signal`);
    the caller checks :attr:`requested` at its safe points (a training step's end, where a
    checkpoint can be written) and stops there. A second one raises KeyboardInterrupt at once, as
    before. Forked children that inherit the handler (data-loader workers) ignore them: the
    caller ends them when it stops. They get them too when the whole process group is signalled
    (Ctrl-C in a terminal, torchrun stopping a rank, systemd), and a worker that died of one would
    fail the caller wherever it is (the DataLoader's SIGCHLD handler raises), not at its safe point.
    Outside the main thread (no signal handlers there), or where not ``enabled``, the block changes
    nothing and :attr:`requested` stays False.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # False: the block changes nothing (signals act at once, as outside it)
        self.signal: int | None = None
        self._owner = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> "DeferredStop":
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._owner = os.getpid()
            self._previous = {number: signal.getsignal(number) for number in stop_signals()}
            for number in self._previous:
                signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._owner:  # a forked worker: its parent ends it at the safe point
            return
        if self.signal is not None:  # asked twice: stop now
            raise KeyboardInterrupt
        self.signal = signum


# OpenCV draws and encodes every pixel; cv2 comes from whichever of its wheels is installed (the headless one is
# synth's dependency, but opencv-python or a contrib build installed for another tool provides it as well).
OPENCV_DISTRIBUTIONS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` (None where it is not installed): what a
    run records (expand's manifest) or keys its outputs on (a resumable search)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
