"""The reader's lease on an object-store prefix: what :func:`augment.locking.reading_lock` is to a local folder.

A run that reads shards from ``s3://bucket/prefix`` for a long time (``synth train``, ``synth eval``)
holds a lease object of its own, ``<prefix>/.synth.readers/<uuid>.json`` (its host, pid, what it is,
its ttl and this machine's time), while it reads:

* **take**: ``PUT`` the lease, *then* read the writer's lock object (``<prefix>/.synth.lock``,
  :mod:`augment.object_lock`). A fresh lock there means a run is writing these shards: the reader
  deletes its lease and stops with :class:`~augment.locking.BusyError` (exit code 3) naming it.
* **keep**: the holder rewrites its lease every ``ttl / 4`` seconds (a heartbeat), conditionally on
  its ETag, so a lease that another run deleted as stale is noticed (and written again).
* **release**: ``DELETE`` it when the block ends, also on an exception or a stop (Ctrl-C, SIGTERM).
* **writers**: :class:`~augment.object_lock.ObjectStoreLock` writes its lock object, *then* lists the
  leases (:func:`fresh_readers`); while one is fresh it gives the lock back and stops with
  ``BusyError`` naming the reader. Stale leases it finds are deleted.

A lease is stale as the writer's lock is (:class:`~augment.object_lock.Lease`): its last heartbeat
is older than its ttl by the store's own clock, or its holder is a dead process on this same
machine (a killed run). What it guarantees, on a store that reads its own writes and lists them at
once (AWS S3 since 2020, GCS, MinIO, Ceph): each side writes its own object before it looks for the
other's, so of a writer and a reader starting together at least one sees the other and stops (both
may: both then exit 3, and the next try goes through); a writer never starts while a reader's
heartbeats get through. What it does not: a reader stalled longer than its ttl (a stopped VM, a
partition) can have its lease deleted and a writer let in; it logs an error when its next heartbeat
finds the lease gone, but the shards it reads from then on may be another run's. A killed reader's
lease holds writers off for up to a ttl (60 s) from other machines. A prefix where the reader may
not write (read-only credentials) is read without a lease, as a read-only local folder is; ``gs://``
has no lease yet; ``SYNTH_OBJECT_LOCK=off`` skips leases as it skips the writer's lock. The lease is
written with boto3 (``pip install "synth[s3]"``), as the lock is.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import uuid
from typing import Iterator

from augment.locking import LOCK_FILE, BusyError
from augment.object_lock import (CONFLICT, LOCK_TTL_S, MISSING, HeldObject, Lease, client, key_under, lease_ttl,
                                 locks_off, read_lease, store_request)
from augment.storage import Location, StorageError

log = logging.getLogger(__name__)

READERS_FOLDER = ".synth.readers"  # hidden, as the lock is: shard listings pass it over
DENIED = ("AccessDenied", "403")


def fresh_readers(s3, folder: Location) -> list[Lease]:
    """The fresh leases of readers of ``folder``; the stale ones found are deleted on the way."""
    from botocore.exceptions import ClientError

    prefix, keys, more = key_under(folder, READERS_FOLDER) + "/", [], {}
    while True:
        page = store_request(f"s3://{folder.bucket}/{prefix}", "listing its readers", s3.list_objects_v2,
                             Bucket=folder.bucket, Prefix=prefix, **more)
        keys += [item["Key"] for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            break
        more = {"ContinuationToken": page["NextContinuationToken"]}
    fresh = []
    for key in keys:
        lease = read_lease(s3, folder.bucket, key, "reading a reader's lease")
        if lease is None:  # its reader ended meanwhile
            continue
        if not lease.stale(lease_ttl()):
            fresh.append(lease)
            continue
        log.info("%s: removing the stale lease of a reader (%s, silent for %.0f s)", folder, lease.who, lease.silent)
        with contextlib.suppress(ClientError, StorageError):  # renewed or removed meanwhile: left as it is
            store_request(f"s3://{folder.bucket}/{key}", "removing a stale lease", s3.delete_object,
                          Bucket=folder.bucket, Key=key, IfMatch=lease.etag)
    return fresh


class ReaderLease(HeldObject):
    """A reader's lease on ``folder`` (an ``s3://`` prefix), held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, folder: Location, what: str = "synth train", ttl: float = LOCK_TTL_S) -> None:
        super().__init__(folder, f"{READERS_FOLDER}/{uuid.uuid4().hex}.json", what, ttl,
                         client("reading s3:// shards needs boto3 for the reader's lease that keeps writers out",
                                "to read without one"))
        self.pid = os.getpid()

    def _put(self, keep: tuple[str, ...] = (), **condition: str) -> str:
        # This machine's time is for people only: staleness is timed by the store's clock.
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return self._request("writing the reader's lease", self._client.put_object, keep, Body=self._record(time=now),
                             **condition)["ETag"]

    def acquire(self) -> bool:
        """Take the lease, or raise :class:`BusyError` while a run writes here; False where the
        credentials may not write under the prefix (read without a lease)."""
        from botocore.exceptions import ClientError

        try:
            self.etag = self._put(DENIED)
        except ClientError:
            log.info("%s: read without a reader's lease (these credentials may not write here)", self.folder)
            return False
        try:
            writer = read_lease(self._client, self.folder.bucket, key_under(self.folder, LOCK_FILE),
                                "reading the writer's lock")
            if writer is not None and not writer.stale(self.ttl):
                raise BusyError(f"{self.folder}: {writer.holder.get('what', 'another run')} ({writer.who}) is writing "
                                "these shards; wait for it to finish (its manifest.json marks it done) and start again")
        except BaseException:
            self._delete()
            raise
        self._start_heartbeat()
        return True

    def beat(self) -> bool:
        """Renew the lease; one found gone (deleted as stale: this run was silent too long) is written again."""
        from botocore.exceptions import ClientError

        self._beats += 1
        try:
            self.etag = self._put(MISSING + CONFLICT, IfMatch=self.etag)
        except ClientError:
            log.error("%s: this run's reader's lease lapsed (its heartbeats did not get through in time), so a "
                      "writer may have been let in: the shards read from now on may be another run's", self.folder)
            with contextlib.suppress(StorageError):
                self.etag = self._put()
        except StorageError as error:  # a missed beat; the next one may get through
            log.warning("%s", error)
        return True

    def _delete(self) -> None:
        try:
            self._request("removing the reader's lease", self._client.delete_object, ())
        except StorageError as error:
            log.warning("%s (it lapses %.0f s after its last heartbeat)", error, self.ttl)

    def release(self) -> None:
        self._stop_heartbeat()
        # A forked child (a DataLoader worker) that ends through this block leaves its parent's lease alone.
        if self.etag is not None and os.getpid() == self.pid:
            self._delete()


@contextlib.contextmanager
def reader_lease(folder: Location, what: str = "synth train") -> Iterator[None]:
    """Hold a reader's lease on the object-store prefix ``folder`` until the block ends (see the module's notes)."""
    if locks_off():
        log.warning("%s: SYNTH_OBJECT_LOCK=off: reading without a reader's lease", folder)
        yield
        return
    if folder.scheme != "s3":
        log.info("%s: read without a reader's lease (none for %s:// yet)", folder, folder.scheme)
        yield
        return
    lease = ReaderLease(folder, what, lease_ttl())
    if not lease.acquire():
        yield
        return
    try:
        yield
    finally:
        lease.release()
