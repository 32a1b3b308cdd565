"""`synth expand --engine ray`: the same shards, made by the tasks of a Ray cluster.

Why Ray tasks and not Ray Data: the shards must be the local engine's, byte for byte (the same
names, row groups, footers and ``manifest.json``), and each must land exactly once however often
a task is retried. Ray Data's writers choose their own file names and block boundaries and may
leave a retried block's file twice; tasks let the shard plan stay ours while Ray does the
scheduling, retries and data movement.

The work of a run:

* the driver builds the cutout table (with superpixels) once, as the local engine does, and
  ``ray.put``s it with the backgrounds list and config (a :class:`~augment.render_rows.RenderJob`): each
  worker process fetches it once (zero-copy for its arrays on the worker's node) and keeps it for
  every later task, so no task recomputes or re-downloads it;
* one **render task** per row group returns the group as an Arrow table (row ``i`` from
  ``SeedSequence([seed, i])`` alone, so any worker, and any retry, makes the same bytes);
* one **writer task** per shard takes its groups' tables (Ray moves them to the writer's node)
  and writes the shard through :func:`augment.shard_writer.write_shard`: a temporary file, read
  back and checked, then renamed (a shared file system) or copied server-side (an object store)
  into place. A retried writer makes the same bytes again, so the shard lands exactly once;
* the driver checks each committed shard's footer (rows, run hash) before counting it, and writes
  ``manifest.json`` last, as the local engine does.

Render tasks are retried by Ray when their worker process dies (``max_retries``); writers are
also retried on storage errors. Rerunning after the driver was killed resumes like the local
engine: finished shards are verified (by Ray tasks, next to the data) and kept.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable
from urllib.parse import urlparse

import pyarrow as pa
import ray
from ray.exceptions import RayError, RayTaskError

from augment.expand import ShardPlan, planned_ids, present_shards, unfinished_plans
from augment.imageio import InputError
from augment.render_rows import GROUPS_IN_FLIGHT_PER_CPU, RenderJob, render_table
from augment.schema import RUN_HASH_KEY
from augment.shard_writer import write_shard
from augment.shards import footer_problem, verify_shard
from augment.storage import Place, StorageError
from augment.system import STOP_SIGNALS

log = logging.getLogger(__name__)

TASK_RETRIES = 3
# Storage settings the driver passes on to the cluster's workers (no secrets among them).
FORWARDED_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                      "STORAGE_EMULATOR_HOST")
# A cluster with no CPUs cannot run a task, and Ray waits for one without end or word (its nodes may be
# an autoscaler's, still joining). The run waits this long, saying so, then stops with one line.
NO_CPU_WAIT_S = 600.0
CPU_POLL_S = 5.0

# ----------------------------------------------------------------- tasks (run in Ray's worker processes)
_worker_job: dict[str, Any] = {}


def _activate(job_box: list) -> bool:
    """Make the run's job this worker's state, fetching it from the object store once per process.

    The reference comes inside a list so Ray does not resolve it before every task: the worker
    resolves it itself, only the first time. Returns whether this call fetched it.
    """
    reference = job_box[0]
    if _worker_job.get("ref") == reference.hex():
        return False
    job: RenderJob = ray.get(reference)
    job.activate()
    _worker_job.update(ref=reference.hex(), job=job)
    return True


def render_group(job_box: list, start: int, stop: int) -> tuple[pa.Table, dict[str, Any]]:
    """Rows ``start``..``stop`` as an Arrow table, and a note for the driver's progress and statistics."""
    fetched = _activate(job_box)
    table = render_table(start, stop, _worker_job["job"].schema)
    return table, {"rows": stop - start, "pid": os.getpid(), "fetched": fetched}


def write_group_tables(target: Place, schema: pa.Schema, group_rows: int, expected_ids: list[str],
                       *tables: pa.Table) -> dict[str, Any]:
    """Write and commit one shard from its row groups' tables."""
    rows = sum(write_shard(target, tables, schema, group_rows, expected_ids))
    return {"name": target.name, "rows": rows, "pid": os.getpid()}


# The task functions stay importable under their own names (the remote handles get other names), so
# Ray pickles them by reference and they share this module's per-process state in the worker.
_render_group = ray.remote(num_returns=2, max_retries=TASK_RETRIES)(render_group)
_write_shard = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=[OSError, StorageError])(write_group_tables)
_verify_shard = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=[OSError, StorageError])(verify_shard)


# ----------------------------------------------------------------- the driver
def check_reachable(address: str, timeout: float = 5.0) -> None:
    """One line naming ``address`` when nothing listens there (Ray itself would retry for a minute)."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise InputError(f"--ray-address {address}: expected HOST:PORT (the head's GCS port, 6379 by default), "
                         "ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            answer = _http2_answer(connection, timeout)
    except OSError as error:
        raise InputError(f"--ray-address {address}: no Ray cluster reachable there ({error.strerror or error})") from None
    if answer is not None and not _is_http2_settings(answer):
        # Ray's own client would retry its gRPC connection for minutes, its C++ warnings on the terminal.
        seen = f"it answered {answer[:16]!r}" if answer else "it closed the connection"
        raise InputError(f"--ray-address {address}: something listens there but it is not a Ray cluster ({seen}); "
                         "give the head's GCS port (6379 by default, `ray start --head --port`), ray://HOST:10001 "
                         "for Ray Client, or auto; the dashboard's port (8265) is for `ray job submit`")


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # and an empty SETTINGS frame


def _http2_answer(connection: socket.socket, timeout: float) -> bytes | None:
    """The first bytes a server sends back to an HTTP/2 client preface (Ray's GCS and its client
    server speak gRPC, which is HTTP/2), or None where it cannot tell: TLS (``RAY_USE_TLS``), where
    the preface would be no handshake, or no answer in ``timeout`` seconds (a busy head gets the
    benefit of the doubt)."""
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        return None
    connection.settimeout(timeout)
    try:
        connection.sendall(HTTP2_PREFACE)
        answer = b""
        while len(answer) < 9:  # a frame header
            chunk = connection.recv(9 - len(answer))
            if not chunk:
                break
            answer += chunk
        return answer
    except socket.timeout:
        return None
    except OSError:  # reset by a server that refuses what it read
        return b""


def _is_http2_settings(answer: bytes) -> bool:
    """Whether ``answer`` starts with an HTTP/2 frame header of type SETTINGS, a gRPC server's first words."""
    return len(answer) == 9 and answer[3] == 0x04


def _auth_hint(address: str | None) -> str:
    """Why joining a cluster by its address may fail on Ray 2.59 and later: a cluster started with `ray start`
    requires its token, which a driver sends only with RAY_AUTH_MODE=token (Ray's own message about it is a
    C++ warning, "Authentication token is missing or incorrect", not the error raised)."""
    if not address or address == "auto" or os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return ("; if the cluster uses token authentication (Ray >= 2.59 starts clusters with it), set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the head's token (`ray get-auth-token` there)")


def _error_text(error: BaseException) -> str:
    """An error's one line, an OSError's file named first (a PermissionError's own text is "[Errno 13] ...")."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return _one_line(error)


def _home_hint(error: BaseException) -> str:
    """Ray (2.59 and later) keeps its authentication token under the home folder, ``~/.ray``: a service's
    user whose HOME cannot be written (``nobody``'s /nonexistent, a container's read-only one) or who has
    none (an arbitrary uid) cannot start a local Ray, and Ray's error names only the folder."""
    home = os.environ.get("HOME")
    in_home = (isinstance(error, OSError) and error.filename is not None and home
               and (str(error.filename) + "/").startswith(home.rstrip("/") + "/"))
    if in_home or "home directory" in str(error):
        return "; Ray keeps its token under the home folder (~/.ray): set HOME to a folder this user can write"
    return ""


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class CpuWatch:
    """Notices a cluster left with no CPUs (its worker nodes lost, or not joined yet): a warning at once,
    and one line (:class:`InputError`) once it has lasted ``wait_s`` seconds. Polls Ray at most every
    :data:`CPU_POLL_S` seconds."""

    def __init__(self, address: str, wait_s: float) -> None:
        self.address, self.wait_s = address, wait_s
        self.since: float | None = None
        self.next_poll = 0.0

    def check(self, shards_done: int) -> None:
        now = time.monotonic()
        if now < self.next_poll:
            return
        self.next_poll = now + CPU_POLL_S
        if ray.cluster_resources().get("CPU", 0) > 0:
            self.since = None
            return
        if self.since is None:
            self.since = now
            log.warning("the Ray cluster at %s has no CPUs (its worker nodes were lost or have not joined yet); "
                        "waiting up to %.0f s for some", self.address, self.wait_s)
        elif now - self.since >= self.wait_s:
            raise InputError(f"--ray-address {self.address}: the Ray cluster has had no CPUs for {self.wait_s:.0f} s "
                             f"(its worker nodes were lost or never joined); {shards_done} shard(s) finished this run "
                             "are kept: rerun to resume")


def _ray_records_to_the_application() -> None:
    """Ray's records in this process go to the application's logging as every other library's do (synth's:
    one ``warning: ...`` line, INFO with -v), not to the handler Ray sets up as it is imported: each run
    wrote '2026-12-07 09:47:54,685<TAB>WARNING authentication_token_setup.py:85 -- Token authentication
    is enabled ...' in Ray's own format beside synth's lines."""
    ray_logger = logging.getLogger("ray")
    for handler in ray_logger.handlers[:]:
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True


def _python_signal_handlers() -> dict[int, Any]:
    """This process's Python handlers of the signals that stop a run (the CLI turns SIGTERM and SIGHUP
    into a stop)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.getsignal(number) for number in STOP_SIGNALS}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    """Put back what ray.init replaced: its core worker installs a C-level handler that answers SIGTERM
    with a stack dump and abort() (exit 134, no "interrupted" line, the lock left to go stale). Python's
    own record still shows its handler, so each is installed again, not compared."""
    for number, handler in handlers.items():
        if handler is not None:
            signal.signal(number, handler)


class RayEngine:
    """Render and write shards on a Ray cluster; a context manager that connects and disconnects."""

    def __init__(self, address: str | None, workers: int = 0) -> None:
        self.address, self.workers = address, workers
        self._started = False
        self.stats: dict[str, Any] = {"engine": "ray"}

    def __enter__(self) -> "RayEngine":
        if self.address:
            check_reachable(self.address)
        if ray.is_initialized():  # a caller's own session (a test, a notebook): used as it is
            return self._describe()
        handlers = _python_signal_handlers()
        _ray_records_to_the_application()
        try:
            if self.address:
                # Where the object store is, not who may use it: credentials come from each node's own environment.
                settings = {name: os.environ[name] for name in FORWARDED_SETTINGS if os.environ.get(name)}
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False,
                         runtime_env={"env_vars": settings} if settings else None)
            else:
                # "local": a new Ray of this machine's cores, never a cluster found running (that is --ray-address auto).
                ray.init(address="local", num_cpus=self.workers or None, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
        except (OSError, RuntimeError, ValueError) as error:  # (ConnectionError, TimeoutError: OSErrors)
            raise InputError(f"--ray-address {self.address or '(local)'}: cannot start or join Ray "
                             f"({_error_text(error)}){_home_hint(error)}{_auth_hint(self.address)}") from None
        finally:
            _restore_signal_handlers(handlers)
        self._started = True
        return self._describe()

    def __exit__(self, *exc_info) -> None:
        if self._started:
            ray.shutdown()

    def _describe(self) -> "RayEngine":
        self.stats.update(address=self.address or "local", cluster_cpus=int(ray.cluster_resources().get("CPU", 0)),
                          nodes=len([n for n in ray.nodes() if n.get("Alive")]))
        return self

    def unfinished(self, plans: list[ShardPlan], out_dir: Place, split: str, run_hash: str) -> list[ShardPlan]:
        present = present_shards(out_dir)
        checks = {p.name: _verify_shard.remote(out_dir / p.name, planned_ids(p, split), run_hash)
                  for p in plans if p.name in present}
        problems = self._get_all([checks[p.name] for p in plans if p.name in checks])
        found = dict(zip([p.name for p in plans if p.name in checks], problems))
        return unfinished_plans(plans, [found.get(p.name, "missing") for p in plans])

    def write(self, plans: list[ShardPlan], out_dir: Place, job: RenderJob,
              progress: Callable[[str, int, int], None] | None) -> int:
        if not plans:
            return 0
        output = job.config.output
        job_box = [ray.put(job)]  # the cutout table goes into the object store once
        self.stats["job_bytes"] = _object_size(job_box[0])
        window = max(2, GROUPS_IN_FLIGHT_PER_CPU * max(1, self.stats.get("cluster_cpus", 1)))
        rows_total, rows_done, rows_written = sum(p.stop - p.start for p in plans), 0, 0
        rendering: dict[Any, int] = {}  # info ref → rows
        writing: dict[Any, ShardPlan] = {}
        queue = list(plans)
        fetches, pids, tasks = 0, set(), 0
        watch = CpuWatch(self.address or "local", NO_CPU_WAIT_S)
        shards_done = 0
        if progress:
            progress("composites", 0, rows_total)
        try:
            while queue or rendering or writing:
                while queue and len(rendering) < window:
                    plan = queue.pop(0)
                    tables = []
                    for start in range(plan.start, plan.stop, output.row_group_rows):
                        table, info = _render_group.remote(job_box, start, min(start + output.row_group_rows, plan.stop))
                        tables.append(table)
                        rendering[info] = 0
                        tasks += 1
                    writer = _write_shard.remote(out_dir / plan.name, job.schema, output.row_group_rows,
                                                 planned_ids(plan, output.split), *tables)
                    writing[writer] = plan
                ready, _ = ray.wait([*rendering, *writing], num_returns=1, timeout=1.0, fetch_local=False)
                if not ready:
                    watch.check(shards_done)
                for reference in ready:
                    if reference in rendering:
                        info = self._get(reference)
                        del rendering[reference]
                        rows_done += info["rows"]
                        fetches += info["fetched"]
                        pids.add(info["pid"])
                        if progress:
                            progress("composites", rows_done, rows_total)
                    else:
                        plan = writing.pop(reference)
                        result = self._get(reference)
                        self._check_committed(out_dir / plan.name, plan, job)
                        rows_written += result["rows"]
                        shards_done += 1
        except BaseException:  # a failed task or Ctrl-C: stop the rest of the run's tasks, wherever they run
            for reference in [*rendering, *writing]:
                ray.cancel(reference, force=True)
            raise
        finally:
            self.stats.update(render_tasks=tasks, writer_tasks=len(plans), job_fetches=fetches, render_processes=len(pids))
        return rows_written

    @staticmethod
    def _check_committed(target: Place, plan: ShardPlan, job: RenderJob) -> None:
        """Count a shard only once it is there, whole, with this run's footer (verify before count)."""
        if not target.exists():
            raise InputError(f"{target}: a Ray worker wrote it but it is not there for this driver: a local --out "
                             "must be on a file system every node shares (or use s3://)")
        problem = footer_problem(target, plan.stop - plan.start, job.schema.metadata[RUN_HASH_KEY].decode())
        if problem is not None:
            raise RuntimeError(f"{target}: {problem}")

    def _get_all(self, references: list[Any]) -> list[Any]:
        """``_get`` of every reference, waiting as :meth:`write` does (a cluster without CPUs is said, then stopped)."""
        watch = CpuWatch(self.address or "local", NO_CPU_WAIT_S)
        while references:
            ready, _ = ray.wait(references, num_returns=len(references), timeout=1.0, fetch_local=False)
            if len(ready) == len(references):
                break
            watch.check(0)
        return self._get(references)

    @staticmethod
    def _get(reference: Any) -> Any:
        """``ray.get``; a task's user error (a bad input, an unreachable store) comes back as its one line."""
        try:
            return ray.get(reference)
        except RayTaskError as error:
            if isinstance(error.cause, InputError):
                raise type(error.cause)(str(error.cause)) from None
            raise


def _object_size(reference: Any) -> int | None:
    """Bytes of an object in Ray's store (what each node receives of the broadcast job)."""
    try:
        return int(ray.experimental.get_object_locations([reference])[reference]["object_size"])
    except (KeyError, TypeError, AttributeError, RayError):
        return None
