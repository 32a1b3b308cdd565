"""Readers' leases on an object-store prefix (augment/reader_lease.py): a training or evaluation run
reading s3:// shards keeps `synth expand` out of the prefix, and does not start while one writes there.
Against moto's S3 server on loopback, as tests/test_object_store.py; tiny shards and networks on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from augment.locking import BUSY_EXIT_CODE, BusyError
from augment.storage import Location
from cli_checks import assert_one_line_error, run_cli
from object_store import cache, s3_server  # noqa: F401 (fixtures; cache: a private SYNTH_CACHE_DIR, autouse)
from shard_factory import make_shards
from sources_factory import make_backgrounds, make_rgba_source
from test_trainer import TINY_MODEL, tiny_config
from train.shard_set import reading_shards

pytest.importorskip("boto3", reason='boto3 not installed (pip install -e ".[test]")')
from augment.object_lock import ObjectStoreLock  # noqa: E402  (needs boto3)
from augment.reader_lease import READERS_FOLDER, ReaderLease, reader_lease  # noqa: E402

HERE = f"pid {os.getpid()} on {socket.gethostname()}"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return make_rgba_source(root / "objects"), make_backgrounds(root / "backgrounds")


@pytest.fixture(scope="module")
def shards(tmp_path_factory, s3_server):
    """Tiny shards uploaded to a prefix: (its URI, the local copy)."""
    local = make_shards(tmp_path_factory.mktemp("shards"), n_cutouts=8, n_composites=8, size=64).folder
    return s3_server.upload_folder(local, "leased/shards")


def _expand(sources, out: str):
    objects, backgrounds = sources
    return run_cli("expand", objects, "-b", backgrounds, "-o", out, "-n", 2, "-w", 1, "--overwrite")


def _leases(s3_server, prefix: str) -> list[str]:
    return s3_server.keys(f"{prefix}/{READERS_FOLDER}/")


def test_a_held_reader_lease_makes_expand_exit_3_naming_the_reader_and_is_gone_after(s3_server, sources):
    out = s3_server.uri("leased/expand")
    with reader_lease(Location(out), "synth train"):
        [key] = _leases(s3_server, "leased/expand")
        body = json.loads(s3_server.read(key))
        assert (body["host"], body["pid"], body["what"]) == (socket.gethostname(), os.getpid(), "synth train")
        result = _expand(sources, out)
        assert_one_line_error(result, BUSY_EXIT_CODE, f"{out}: synth train ({HERE}", "is reading the shards here")
        assert s3_server.keys("leased/expand/") == [key]  # the writer gave its lock back and wrote nothing
    assert _leases(s3_server, "leased/expand") == []  # released with the block
    assert _expand(sources, out).exit_code == 0  # the reader gone, the prefix is free


def test_a_stale_lease_does_not_hold_a_writer_and_is_removed(s3_server):
    folder, client = Location(s3_server.uri("leased/stale")), s3_server.client()
    # A reader on another machine that stopped sending heartbeats: ignored once its ttl has passed.
    away = "leased/stale/.synth.readers/away.json"
    client.put_object(Bucket=s3_server.bucket, Key=away,
                      Body=json.dumps({"host": "elsewhere", "pid": 1, "what": "synth train", "ttl": 1}).encode())
    with pytest.raises(BusyError, match="synth train \\(pid 1 on elsewhere"):
        ObjectStoreLock(folder, "synth expand").acquire()  # still fresh
    assert s3_server.keys("leased/stale/") == [away]
    # A reader that was killed on this machine: its lease is stale at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client.put_object(Bucket=s3_server.bucket, Key="leased/stale/.synth.readers/dead.json",
                      Body=json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "ttl": 60}).encode())
    time.sleep(2.2)
    writer = ObjectStoreLock(folder, "synth expand")
    writer.acquire()
    try:
        assert s3_server.keys("leased/stale/") == ["leased/stale/.synth.lock"]  # both stale leases deleted
    finally:
        writer.release()


def test_heartbeats_keep_a_lease_fresh_past_its_ttl_and_one_deleted_as_stale_is_written_again(s3_server, caplog):
    folder = Location(s3_server.uri("leased/beats"))
    lease = ReaderLease(folder, "synth eval", ttl=1)
    assert lease.acquire()
    try:
        time.sleep(1.6)  # longer than its ttl: only the heartbeats (every 0.25 s) keep it
        with pytest.raises(BusyError, match="synth eval"):
            ObjectStoreLock(folder).acquire()
        s3_server.client().delete_object(Bucket=s3_server.bucket, Key=lease.key)  # as a writer deletes a stale one
        lease.beat()
        assert "lapsed" in caplog.text and _leases(s3_server, "leased/beats") == [lease.key]
    finally:
        lease.release()
    assert s3_server.keys("leased/beats/") == []


def test_a_held_writer_lock_makes_train_and_eval_refuse_with_one_line(s3_server, shards, tmp_path):
    writer = ObjectStoreLock(Location(shards), "synth expand")
    writer.acquire()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(model=TINY_MODEL, query_size=32, medium_size=64, batch_size=2,
                                          steps=1, num_workers=0, device="cpu")))
    try:
        busy = f"{shards}: synth expand ({HERE}) is writing these shards"
        trained = run_cli("train", "--shards", shards, "--out", tmp_path / "run", "--config", config)
        assert_one_line_error(trained, BUSY_EXIT_CODE, busy)
        evaluated = run_cli("eval", "--shards", shards, "--untrained", "--config", config)
        assert_one_line_error(evaluated, BUSY_EXIT_CODE, busy)
        local = make_shards(tmp_path / "local", n_cutouts=8, n_composites=8, size=64).folder
        trained = run_cli("train", "--shards", local, "--eval-shards", shards, "--out", tmp_path / "run2",
                          "--config", config)
        assert_one_line_error(trained, BUSY_EXIT_CODE, busy)
        assert _leases(s3_server, "leased/shards") == []  # each reader removed its lease as it stopped
    finally:
        writer.release()


def test_a_training_run_holds_its_lease_for_the_whole_run_and_drops_it_on_an_exception(s3_server, shards, tmp_path,
                                                                                      monkeypatch):
    import train.loop as loop
    from train.loop import train

    real_save, seen = loop.save_checkpoint, []

    def save_and_look(*args, **kwargs):  # mid-run: the lease is there, and a writer into the prefix stops
        seen.append(_leases(s3_server, "leased/shards"))
        with pytest.raises(BusyError, match=f"synth train \\({HERE}"):
            ObjectStoreLock(Location(shards), "synth expand").acquire()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", save_and_look)
    train(tiny_config(steps=1), shards, tmp_path / "run", show_progress=False)
    assert len(seen) == 1 and len(seen[0]) == 1, seen
    assert _leases(s3_server, "leased/shards") == []

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # a stop: the block ends as on any exception

    monkeypatch.setattr(loop, "save_checkpoint", fail)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=1), shards, tmp_path / "run2", show_progress=False)
    assert _leases(s3_server, "leased/shards") == []
    with pytest.raises(RuntimeError):
        with reading_shards(shards):
            assert len(_leases(s3_server, "leased/shards")) == 1
            raise RuntimeError("a failing run")
    assert _leases(s3_server, "leased/shards") == []


def test_a_writer_and_a_reader_starting_together_never_both_go_ahead(s3_server):
    folder = Location(s3_server.uri("leased/race"))
    for _ in range(8):
        start, went = threading.Barrier(2), {}
        writer, reader = ObjectStoreLock(folder, "synth expand"), ReaderLease(folder)

        def take(name: str, holder) -> None:
            start.wait()
            try:
                holder.acquire()
                went[name] = True
            except BusyError:
                went[name] = False

        threads = [threading.Thread(target=take, args=pair) for pair in (("writer", writer), ("reader", reader))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not (went["writer"] and went["reader"]), went
        for name, holder in (("writer", writer), ("reader", reader)):
            if went[name]:
                holder.release()
        assert s3_server.keys("leased/race/") == []  # the one that stopped removed its object


def test_synth_object_lock_off_skips_leases(s3_server, sources, monkeypatch):
    out = s3_server.uri("leased/off")
    writer = ObjectStoreLock(Location(out), "synth expand")
    writer.acquire()
    monkeypatch.setenv("SYNTH_OBJECT_LOCK", "off")
    try:
        with reading_shards(out):  # a writer holds the prefix, yet reading starts...
            assert _leases(s3_server, "leased/off") == []  # ...with no lease written
    finally:
        writer.release()
    monkeypatch.delenv("SYNTH_OBJECT_LOCK")
    with reader_lease(Location(out)):
        monkeypatch.setenv("SYNTH_OBJECT_LOCK", "off")
        assert _expand(sources, out).exit_code == 0  # nor does a writer look for them
    assert _leases(s3_server, "leased/off") == []


@pytest.mark.parametrize("command", ["eval", "expand"])
def test_an_aws_profile_that_boto3_cannot_find_is_one_line(s3_server, shards, sources, tmp_path, monkeypatch, command):
    """The reader's lease made `synth eval --shards s3://...` build a boto3 client where pyarrow alone
    read the shards before: with credentials in the environment and an AWS_PROFILE naming no
    profile (pyarrow reads on; boto3 refuses), the run ended in botocore's ProfileNotFound
    traceback. The writer's lock (expand) built its client the same way."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(model=TINY_MODEL, query_size=32, medium_size=64, batch_size=2,
                                          steps=1, num_workers=0, device="cpu")))
    monkeypatch.setenv("AWS_PROFILE", "nosuchprofile")
    if command == "eval":
        result = run_cli("eval", "--shards", shards, "--untrained", "--config", config, "--batches", 1)
    else:
        result = _expand(sources, s3_server.uri("leased/profile"))
    assert_one_line_error(result, 2, "nosuchprofile")


def test_a_lease_record_not_written_by_synth_is_judged_by_its_age_not_a_traceback():
    from augment.object_lock import Lease

    for odd in ("soon", None, [], {"s": 1}, True, -5, 0, float("nan"), float("inf")):
        lease = Lease({"ttl": odd}, silent=30.0, etag='"e"')
        assert lease.ttl(60.0) == 60.0 and not lease.stale(60.0), odd
        assert Lease({"ttl": odd}, silent=90.0, etag='"e"').stale(60.0), odd
    assert Lease({"ttl": 10}, silent=30.0, etag='"e"').stale(60.0)  # a holder's own ttl counts
