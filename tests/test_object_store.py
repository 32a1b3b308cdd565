"""Sources, backgrounds, shards and training on an object store: a real S3-compatible server on loopback
(moto's server mode; the code talks HTTP to it), with the output lock made of conditional writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from augment.config import ExpandConfig
from augment.expand import run_expand
from augment.imageio import InputError
from augment.locking import BUSY_EXIT_CODE, BusyError
from augment.storage import Location, StorageError, as_place
from cli_checks import assert_one_line_error, run_cli
from object_store import closed_port, cache, s3_server  # noqa: F401 (fixtures; cache: a private SYNTH_CACHE_DIR, autouse)
from shard_factory import make_shards
from sources_factory import make_backgrounds, make_rgba_source
from train.data import PairConfig, ShardPairs, list_shards, make_loader

pytest.importorskip("boto3", reason='boto3 not installed (pip install -e ".[test]")')
from augment.object_lock import ObjectStoreLock  # noqa: E402  (needs boto3)

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"num": 24, "seed": 7, "sources": {"min_area": 50}, "composition": {"width": 64, "height": 64},
          "output": {"shard_rows": 10, "row_group_rows": 5}}
TINY_MODEL = dict(pretrained=False, feature_strides=[8], scale_pairs=[[1.0, 1.0]], edge_path=False,
                  conversion_width=8, conversion_layers=1, skip_channels=8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, s3_server):
    """Sources and backgrounds, locally and uploaded, and the local engine's output from the local copies."""
    root = tmp_path_factory.mktemp("inputs")
    objects, backgrounds = make_rgba_source(root / "objects"), make_backgrounds(root / "backgrounds")
    reference = root / "reference"
    run_expand([objects], backgrounds, reference, ExpandConfig.from_dict(CONFIG), workers=1)
    return {"objects": s3_server.upload_folder(objects, "inputs/objects"),
            "backgrounds": s3_server.upload_folder(backgrounds, "inputs/backgrounds"),
            "reference": reference, "config": _write(root / "expand.yaml", CONFIG)}


def _write(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def _shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("train-*.parquet"))


def test_location_answers_the_path_methods_the_shard_code_uses(s3_server):
    folder = as_place(s3_server.uri("paths/a"))
    assert isinstance(folder, Location) and isinstance(as_place("local/a"), Path)
    (folder / "x.txt").write_text("hello")
    assert (folder / "x.txt").read_text() == "hello" and (folder / "x.txt").is_file() and folder.is_dir()
    assert [p.name for p in folder.iterdir()] == ["x.txt"] and (folder / "x.txt").parent == folder
    (folder / "x.txt").unlink()
    assert not (folder / "x.txt").exists()
    with pytest.raises(InputError, match="not allowed"):
        Location("s3://bucket/a/../b")
    with pytest.raises(InputError, match="unsupported scheme"):
        Location("ftp://host/a")


def test_expand_from_and_to_s3_is_byte_identical_and_training_streams_from_there(s3_server, inputs, tmp_path):
    out = s3_server.uri("runs/cli")
    result = run_cli("expand", inputs["objects"], "-b", inputs["backgrounds"], "-o", out, "-c", inputs["config"], "-w", 1)
    assert result.exit_code == 0, result.output
    names = _shard_names(inputs["reference"])
    assert len(names) == 3
    keys = s3_server.keys("runs/cli/")
    assert {f"runs/cli/{n}" for n in [*names, "manifest.json", "objects.parquet"]} <= set(keys)
    assert not [k for k in keys if k.endswith(".tmp") or k.endswith(".synth.lock")]  # no temporaries, lock released
    for name in names:
        assert s3_server.read(f"runs/cli/{name}") == (inputs["reference"] / name).read_bytes(), name
    manifest = json.loads(s3_server.read("runs/cli/manifest.json"))
    assert manifest["sources"] == [inputs["objects"]] and manifest["backgrounds"]["folder"] == inputs["backgrounds"]
    assert [s["name"] for s in manifest["shards"]] == names

    # A rerun keeps every shard (verified in place) and makes nothing.
    again = run_expand([inputs["objects"]], inputs["backgrounds"], out, ExpandConfig.from_dict(CONFIG), workers=1)
    assert again.rows_written == 0 and again.shards_skipped_as_done == 3

    # `synth train --shards s3://...` streams the pairs from the bucket.
    train_config = _write(tmp_path / "train.yaml", dict(
        model=TINY_MODEL, query_size=32, medium_size=64, batch_size=2, steps=2, num_workers=1, warmup_steps=1,
        log_every=1, eval_every=0, checkpoint_every=2, shuffle_buffer=4, eval_fraction=0.3, device="cpu"))
    trained = run_cli("train", "--shards", out, "--out", tmp_path / "run", "--config", train_config)
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not [k for k in s3_server.keys("runs/cli/") if "/.synth.readers/" in k]  # its reader's lease is gone


def test_every_rank_and_worker_reads_disjoint_row_groups_from_s3(s3_server, tmp_path):
    local = make_shards(tmp_path / "shards", n_cutouts=8, n_composites=24, rows_per_group=3, rows_per_shard=12, size=64)
    folder = s3_server.upload_folder(local.folder, "ddp/shards")
    assert all(isinstance(p, Location) for p in list_shards(folder))
    config = PairConfig(query_size=32, medium_size=64, negative_fraction=0.0, shuffle_buffer=4)
    seen = []
    for rank in range(2):
        dataset = ShardPairs(folder, config, split="all", seed=1, rank=rank, world_size=2)
        for batch in make_loader(dataset, batch_size=1, num_workers=2):  # forked workers open their own S3 clients
            seen.append((rank, int(batch["worker"]), int(batch["unit"]), int(batch["row"])))
    rows = [(unit, row) for _, _, unit, row in seen]
    assert len(rows) == len(set(rows)) == 24  # every row once across 2 ranks x 2 workers
    units_of = {}
    for rank, worker, unit, _ in seen:
        units_of.setdefault(unit, set()).add((rank, worker))
    assert all(len(owners) == 1 for owners in units_of.values())  # a row group belongs to one rank and worker
    assert len({owner for owners in units_of.values() for owner in owners}) == 4


def test_an_unreachable_endpoint_is_one_line_and_nothing_is_written(inputs, tmp_path, monkeypatch, cache):
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    result = run_cli("expand", inputs["objects"], "-b", inputs["backgrounds"],
                     "-o", "s3://synth-test/runs/dead", "-n", 5)
    line = assert_one_line_error(result, 2, inputs["objects"], dead)
    assert "cannot reach" in line
    local_out = run_cli("expand", REPO / "sample_data/objects", "-b", REPO / "sample_data/backgrounds",
                        "-o", "s3://synth-test/runs/dead", "-n", 5)
    assert_one_line_error(local_out, 2, "s3://synth-test/runs/dead", dead)
    trained = run_cli("train", "--shards", "s3://synth-test/runs/cli", "--out", tmp_path / "run")
    assert_one_line_error(trained, 2, "s3://synth-test/runs/cli", dead)
    assert sorted(os.listdir(tmp_path)) == before and not cache.exists()


def test_a_missing_bucket_is_one_line(s3_server, inputs):
    result = run_cli("expand", inputs["objects"], "-b", inputs["backgrounds"], "-o", "s3://no-such-bucket/out", "-n", 5)
    assert_one_line_error(result, 2, "s3://no-such-bucket/out", "no such bucket")


# ----------------------------------------------------------------- the lock object
def test_a_second_run_into_a_locked_prefix_exits_3_naming_the_holder(s3_server, inputs):
    out = s3_server.uri("runs/locked")
    holder = ObjectStoreLock(Location(out), "synth expand")  # this (live) process holds it
    holder.acquire()
    try:
        result = run_cli("expand", inputs["objects"], "-b", inputs["backgrounds"], "-o", out, "-c", inputs["config"])
        assert_one_line_error(result, BUSY_EXIT_CODE, out, f"pid {os.getpid()}")
        assert s3_server.keys("runs/locked/") == ["runs/locked/.synth.lock"]  # nothing else written
    finally:
        holder.release()
    assert s3_server.keys("runs/locked/") == []


def test_a_stale_lock_is_taken_over_and_a_lost_lock_stops_its_holder(s3_server, monkeypatch):
    folder = Location(s3_server.uri("runs/lease"))
    # A holder on another machine that stopped sending heartbeats: taken over once its ttl has passed.
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="runs/lease/.synth.lock",
                                  Body=json.dumps({"host": "elsewhere", "pid": 1, "ttl": 1}).encode())
    with pytest.raises(BusyError, match="elsewhere"):
        ObjectStoreLock(folder, ttl=1).acquire()  # still fresh
    time.sleep(2.2)
    first = ObjectStoreLock(folder, ttl=1)
    first.acquire()
    first._stop.set()  # its heartbeats stall (a paused VM, a partition)...
    first._thread.join()
    time.sleep(2.2)
    second = ObjectStoreLock(folder, ttl=30)
    second.acquire()  # ...so the next run takes over
    assert first.beat() is False and first.lost
    with pytest.raises(BusyError, match="took over"):
        first.check()
    second.release()
    assert s3_server.keys("runs/lease/") == []


def test_a_run_killed_mid_way_resumes_on_s3(s3_server, inputs, tmp_path, cache):
    out = s3_server.uri("runs/killed")
    config = _write(tmp_path / "slow.yaml", {**CONFIG, "num": 300, "composition": {"width": 160, "height": 160,
                                                                                   "min_objects": 3, "max_objects": 5}})
    command = [sys.executable, "-m", "pipelines.cli", "expand", inputs["objects"], "-b", inputs["backgrounds"], "-o", out,
               "-c", config, "-w", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True, env={**os.environ, "SYNTH_CACHE_DIR": str(cache)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if len([k for k in s3_server.keys("runs/killed/") if k.endswith(".parquet") and "train-" in k]) >= 2:
                break
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read().decode()
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    client = s3_server.client()
    kept = {k: client.head_object(Bucket=s3_server.bucket, Key=k)["ETag"]
            for k in s3_server.keys("runs/killed/") if "/train-" in k}
    assert "runs/killed/manifest.json" not in s3_server.keys("runs/killed/")
    assert socket.gethostname() in s3_server.read("runs/killed/.synth.lock").decode()  # its lock stays behind...

    resumed = run_expand([inputs["objects"]], inputs["backgrounds"], out, ExpandConfig.from_yaml(config), workers=1)
    # ...and is taken over at once (its holder is a dead process on this machine); every committed shard is kept.
    assert resumed.shards_skipped_as_done == len(kept) >= 2
    assert all(client.head_object(Bucket=s3_server.bucket, Key=k)["ETag"] == etag for k, etag in kept.items())
    keys = s3_server.keys("runs/killed/")
    assert "runs/killed/manifest.json" in keys and not [k for k in keys if k.endswith(".tmp") or "lock" in k]
    ids = []
    for entry in resumed.manifest["shards"]:
        ids += pq.ParquetFile(Location(f"{out}/{entry['name']}").open_input()).read(columns=["id"]).column(0).to_pylist()
    assert ids == [f"train-{i:08d}" for i in range(300)]


def test_storage_errors_are_input_errors_naming_the_uri(s3_server):
    with pytest.raises(StorageError, match="s3://no-such-bucket/x: .*no such bucket"):
        Location("s3://no-such-bucket/x").check_bucket()
    with pytest.raises(InputError, match="no such file"):
        Location(s3_server.uri("nothing/here.txt")).read_bytes()
