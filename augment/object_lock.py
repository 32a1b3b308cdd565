"""The output lock of a run that writes to an object store, where ``flock`` does not exist.

A lease held in a lock object, ``<out>/.synth.lock``, made and kept with S3 conditional writes:

* **take**: ``PUT`` with ``If-None-Match: *``. The store creates the object only if no object of
  that key exists, atomically, so of two runs that start together exactly one gets it; the other
  stops at once with :class:`~augment.locking.BusyError` (exit code 3) naming the holder.
* **keep**: the holder rewrites the object every ``ttl / 4`` seconds with ``If-Match: <its ETag>``
  (a heartbeat). If that fails with 412, another run has taken the lock over: the holder notes it
  and stops before its next shard commit or manifest write (:meth:`ObjectStoreLock.check`).
* **take over**: a lock whose last heartbeat is older than its ``ttl`` (timed by the store's own
  clock: its ``Date`` header against the object's ``Last-Modified``), or whose holder is a dead
  process on this same machine (a killed run, resumed at once), is replaced with ``If-Match: <the
  stale ETag>``: of two runs taking over together, one wins.
* **release**: ``DELETE`` with ``If-Match: <its ETag>``.
* **readers**: once it holds the lock, a writer looks for the leases of runs reading the prefix
  (``synth train``, ``synth eval``: :mod:`augment.reader_lease`) and, while one is fresh, gives the
  lock back and stops with :class:`~augment.locking.BusyError` naming the reader.

What it guarantees, on a store that honours conditional writes (AWS S3, Google Cloud Storage's
XML API, MinIO and Ceph releases of 2024 on; the lock checks this when it is taken and refuses a
store that ignores them): two runs never hold the lock at once while the holder's heartbeats get
through. What it does not: a holder stalled longer than ``ttl`` (a network partition, a stopped
VM) can be taken over and may still commit the shard it was writing before it notices. That shard
cannot be mistaken for the new run's: every shard's footer carries its run's hash and the new run
checks each footer before it writes ``manifest.json``, so readers never see a mixed folder.
``SYNTH_OBJECT_LOCK=off`` skips the lock and the readers' leases (one writer at a time, and none
while a run reads, is then the user's rule; the run-hash check before the manifest still
applies). The conditional writes are made with boto3 (``pip install "synth[s3]"``): pyarrow's S3
client has no way to send ``If-None-Match``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator

from augment.imageio import InputError
from augment.locking import LOCK_FILE, BusyError, claim_output_folder
from augment.storage import Location, Place, StorageError, describe_failure, s3_endpoint
from augment.system import missing_modules
from augment.textfiles import loads_json
from augment.validation import positive_setting

log = logging.getLogger(__name__)

LOCK_TTL_S = 60.0  # a holder silent this long is presumed dead
# Answers to a conditional request that are the condition's, not a failure of the store: the caller decides.
CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
MISSING = ("NoSuchKey", "404")


def locks_off() -> bool:
    """``SYNTH_OBJECT_LOCK=off``: no lock object for writers, no lease for readers."""
    return os.environ.get("SYNTH_OBJECT_LOCK", "").lower() in ("off", "0", "false", "no")


def lease_ttl() -> float:
    """``SYNTH_LOCK_TTL`` seconds, else :data:`LOCK_TTL_S`: a word was a ValueError traceback, and 0, a
    negative or nan took every holder for dead (or none) without a word."""
    return positive_setting("SYNTH_LOCK_TTL", LOCK_TTL_S, "seconds")


def key_under(folder: Location, name: str) -> str:
    """The object key of ``name`` under ``folder`` (a bucket's root has no key of its own)."""
    return f"{folder.path.split('/', 1)[1]}/{name}" if "/" in folder.path else name


def client(purpose: str = "writing to s3:// needs boto3 for the output lock",
           off: str = "to write without one"):
    if missing_modules(("boto3",)):
        raise InputError(f'{purpose}: pip install "synth[s3]" (or set SYNTH_OBJECT_LOCK=off {off})')
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    try:
        return boto3.client("s3", endpoint_url=s3_endpoint(), config=config,
                            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    except (BotoCoreError, ValueError) as error:  # AWS_PROFILE naming no profile, a malformed endpoint: one line
        raise StorageError(f"s3://: boto3 cannot make its S3 client ({describe_failure(error)}); check AWS_PROFILE, "
                           "AWS_ENDPOINT_URL and the AWS configuration files") from None


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def store_request(uri: str, action: str, call: Callable[..., Any], keep: tuple[str, ...] = CONFLICT,
                  **kwargs: Any) -> Any:
    """``call(**kwargs)``; an answer whose code is in ``keep`` is raised as botocore's ClientError, any
    other failure as a one-line :class:`StorageError` naming ``uri``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**kwargs)
    except ClientError as error:
        if _error_code(error) in keep:
            raise
        raise StorageError(f"{uri}: {action} failed: {describe_failure(error)}") from None
    except BotoCoreError as error:
        raise StorageError(f"{uri}: {action} failed: {describe_failure(error)}") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Lease:
    """A lease object as found: its holder's record and how long its holder has been silent."""

    holder: dict
    silent: float  # seconds since its last heartbeat, by the store's own clock (not this machine's)
    etag: str

    def ttl(self, default: float) -> float:
        """The holder's own ttl; ``default`` where its record has none that is a positive number
        (an object not written by synth is judged by its age alone, not a traceback)."""
        value = self.holder.get("ttl", default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            return default
        return float(value)

    @property
    def dead_here(self) -> bool:
        """Its holder ran on this machine and has died (a killed run): no need to wait out its ttl."""
        pid = self.holder.get("pid")
        return self.holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)

    def stale(self, default_ttl: float) -> bool:
        return self.dead_here or self.silent > self.ttl(default_ttl)

    @property
    def who(self) -> str:
        return f"pid {self.holder.get('pid')} on {self.holder.get('host')}"


def read_lease(s3, bucket: str, key: str, action: str) -> Lease | None:
    """The lease object at ``key``, None where there is none."""
    from botocore.exceptions import ClientError

    try:
        current = store_request(f"s3://{bucket}/{key}", action, s3.get_object, MISSING, Bucket=bucket, Key=key)
    except ClientError:
        return None
    now = parsedate_to_datetime(current["ResponseMetadata"]["HTTPHeaders"]["date"])
    try:
        holder = loads_json(current["Body"].read() or b"{}")
    except ValueError:  # not written by synth: judged by its age alone, not a traceback
        holder = {}
    return Lease(holder if isinstance(holder, dict) else {}, (now - current["LastModified"]).total_seconds(),
                 current["ETag"])


class HeldObject(ABC):
    """An object under an ``s3://`` prefix that this process writes and renews every ``ttl / 4`` s
    (a heartbeat, :meth:`beat`) while it holds it: a writer's lock, a reader's lease."""

    def __init__(self, folder: Location, name: str, what: str, ttl: float, s3: Any) -> None:
        self.folder, self.what, self.ttl = folder, what, ttl
        self.key = key_under(folder, name)
        self.etag: str | None = None
        self._client = s3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = 0

    @property
    def uri(self) -> str:
        return f"s3://{self.folder.bucket}/{self.key}"

    def _record(self, **more: Any) -> bytes:
        """The object's body: who holds it (for the messages of those it stops, and staleness)."""
        return json.dumps({"what": self.what, "host": socket.gethostname(), "pid": os.getpid(), "ttl": self.ttl,
                           "beats": self._beats, **more}).encode()

    def _request(self, action: str, call: Callable[..., Any], keep: tuple[str, ...] = CONFLICT, **kwargs: Any) -> Any:
        return store_request(self.uri, action, call, keep, Bucket=self.folder.bucket, Key=self.key, **kwargs)

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, name="synth-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4) and self.beat():
            pass

    @abstractmethod
    def beat(self) -> bool:
        """Renew the object; False ends the heartbeats."""

    def _stop_heartbeat(self) -> None:
        """Stop the heartbeats and wait for the last one: none may write the object after it is deleted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class ObjectStoreLock(HeldObject):
    """A lease on ``folder`` (an ``s3://`` prefix), held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, folder: Location, what: str = "run", ttl: float = LOCK_TTL_S) -> None:
        super().__init__(folder, LOCK_FILE, what, ttl, client())
        self.run_id = uuid.uuid4().hex
        self.lost: str | None = None

    def _put(self, **condition: str) -> str:
        return self._request("writing the lock", self._client.put_object, Body=self._record(run_id=self.run_id),
                             **condition)["ETag"]

    # --- taking and keeping
    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.etag = self._put(IfNoneMatch="*")
        except ClientError:
            self.etag = self._take_over()
        self._check_store_honours_conditions()
        self._refuse_if_read()
        self._start_heartbeat()

    def _take_over(self) -> str:
        from botocore.exceptions import ClientError

        current = read_lease(self._client, self.folder.bucket, self.key, "reading the lock")
        if current is None:  # released between our create and this read: create it again
            try:
                return self._put(IfNoneMatch="*")
            except ClientError:
                raise self._busy("another run") from None
        ttl = current.ttl(self.ttl)
        if not current.stale(self.ttl):
            raise self._busy(f"{current.who}, last heard of {current.silent:.0f} s ago; its lock lapses after "
                             f"{ttl:.0f} s without a heartbeat")
        try:
            etag = self._put(IfMatch=current.etag)
        except ClientError:
            raise self._busy("another run that took over the stale lock at the same moment") from None
        log.warning("%s: took over the lock of %s (%s)", self.folder, current.who,
                    "a dead process" if current.dead_here else f"silent for {current.silent:.0f} s")
        return etag

    def _check_store_honours_conditions(self) -> None:
        """A second create-if-absent must fail now; a store that accepts it would let two runs in."""
        from botocore.exceptions import ClientError

        try:
            self.etag = self._put(IfNoneMatch="*")
        except ClientError:
            return
        self.release()
        raise InputError(f"{self.folder}: this object store ignores conditional writes (If-None-Match), so it cannot "
                         "lock --out against a second run; set SYNTH_OBJECT_LOCK=off to write without a lock "
                         "(then make sure only one run writes here)")

    def _refuse_if_read(self) -> None:
        """Stop (and give the lock back) while a reader's lease under the prefix is fresh. The lock
        object is written first and the leases looked for after, as readers do the other way round,
        so of a writer and a reader starting together at least one sees the other."""
        from augment.reader_lease import fresh_readers  # that module builds on this one

        try:
            readers = fresh_readers(self._client, self.folder)
            if readers:
                more = f" and {len(readers) - 1} more" if len(readers) > 1 else ""
                raise BusyError(f"{self.folder}: {readers[0].holder.get('what', 'a reader')} ({readers[0].who}, last "
                                f"heard of {readers[0].silent:.0f} s ago){more} is reading the shards here; wait for "
                                "it to finish before writing here, or choose another folder")
        except BaseException:
            self.release()
            raise

    def _busy(self, holder: str) -> BusyError:
        return BusyError(f"{self.folder}: another {self.what} is writing here ({holder}); "
                         "wait for it to finish or choose another folder")

    def beat(self) -> bool:
        """Renew the lease; False once it is lost (another run took it over)."""
        from botocore.exceptions import ClientError

        self._beats += 1
        try:
            self.etag = self._put(IfMatch=self.etag)
        except ClientError:
            self.lost = "another run took over the lock (this run's heartbeats did not get through in time)"
            log.error("%s: %s", self.folder, self.lost)
            return False
        except StorageError as error:  # a missed beat; the next one may get through
            log.warning("%s", error)
        return True

    def check(self) -> None:
        """Raise :class:`BusyError` if the lock has been lost: call before each commit."""
        if self.lost:
            raise BusyError(f"{self.folder}: {self.lost}; stopped before writing more")

    def release(self) -> None:
        from botocore.exceptions import ClientError

        self._stop_heartbeat()
        if self.etag is None or self.lost:
            return
        with contextlib.suppress(ClientError, StorageError):
            self._request("removing the lock", self._client.delete_object, IfMatch=self.etag)


class _NoLock:
    """``SYNTH_OBJECT_LOCK=off``: the single-writer rule."""

    def check(self) -> None:
        """Nothing to check."""


@contextlib.contextmanager
def object_store_lock(folder: Location, what: str = "run") -> Iterator[ObjectStoreLock | _NoLock]:
    """Hold the lock on an object-store output folder until the block ends (see the module's notes)."""
    if locks_off():
        log.warning("%s: SYNTH_OBJECT_LOCK=off: writing without a lock", folder)
        yield _NoLock()
        return
    if folder.scheme != "s3":
        raise InputError(f"{folder}: no output lock for {folder.scheme}:// yet (pyarrow's client cannot make "
                         "conditional writes there); write to s3:// (GCS serves it too, with HMAC keys), or set "
                         "SYNTH_OBJECT_LOCK=off and make sure only one run writes here")
    lock = ObjectStoreLock(folder, what, lease_ttl())
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def claim_output(folder: Place, what: str = "run") -> Iterator[ObjectStoreLock | _NoLock]:
    """Hold ``folder`` for this run: ``flock`` on a local folder (:func:`augment.locking.claim_output_folder`),
    the lock object on an object store. The guard's ``check()`` raises once the lock is lost."""
    if isinstance(folder, Location):
        with object_store_lock(folder, what) as lock:
            yield lock
    else:
        with claim_output_folder(folder, what):
            yield _NoLock()
