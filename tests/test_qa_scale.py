"""Scaling out, as a careless or unlucky user meets it: shards read back from s3:// by `show`, `export`
and `calibrate`; an object deleted from an s3:// source; an s3:// --out that is an input or an object;
a --ray-address where something other than Ray listens. A real S3-compatible server on loopback
(moto's server mode, tests/object_store.py)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from augment.config import ExpandConfig
from augment.expand import run_expand
from augment.imageio import InputError
from cli_checks import assert_one_line_error, run_cli
from object_store import cache, s3_server  # noqa: F401 (fixtures; cache: a private SYNTH_CACHE_DIR, autouse)
from sources_factory import make_backgrounds, make_rgba_source

pytest.importorskip("boto3", reason='boto3 not installed (pip install -e ".[test]")')

CONFIG = {"num": 24, "seed": 3, "sources": {"min_area": 50}, "composition": {"width": 64, "height": 64},
          "output": {"shard_rows": 6, "row_group_rows": 3}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, s3_server):
    root = tmp_path_factory.mktemp("qa-scale")
    objects, backgrounds = make_rgba_source(root / "objects", 16), make_backgrounds(root / "backgrounds")
    return {"objects": s3_server.upload_folder(objects, "qa/objects"),
            "backgrounds": s3_server.upload_folder(backgrounds, "qa/backgrounds")}


@pytest.fixture(scope="module")
def shards(inputs, s3_server, tmp_path_factory) -> str:
    """An expand output on s3:// (made once; readers only read it)."""
    out = s3_server.uri("qa/expanded")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        run_expand([inputs["objects"]], inputs["backgrounds"], out, ExpandConfig.from_dict(CONFIG), workers=1)
    finally:
        monkeypatch.undo()
    return out


# ----------------------------------------------------------------- readers of s3:// shards
def test_show_and_export_read_s3_shards_a_folder_and_a_shard_file(shards, tmp_path):
    """They took their shards as local paths: 's3://b/k' became 's3:/b/k', 'no such file or directory'."""
    sheet = run_cli("show", shards, "-o", tmp_path / "sheet.png", "--rows", 2, "--columns", 2, "--tile", 32)
    assert sheet.exit_code == 0, sheet.output
    assert (tmp_path / "sheet.png").stat().st_size > 0
    one = run_cli("show", f"{shards}/train-00001.parquet", "-o", tmp_path / "one.png", "--rows", 1, "--columns", 2,
                  "--tile", 32)
    assert one.exit_code == 0, one.output
    exported = run_cli("export", shards, "-o", tmp_path / "coco")
    assert exported.exit_code == 0, exported.output
    annotations = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(annotations["images"]) == CONFIG["num"]
    assert len(list((tmp_path / "coco" / "images").iterdir())) == CONFIG["num"]
    cutouts = run_cli("show", f"{shards}/objects.parquet", "-o", tmp_path / "no.png")
    assert_one_line_error(cutouts, 2, f"{shards}/objects.parquet", "cutouts table")


def test_calibrate_reads_s3_shards(shards, tmp_path):
    """README: `synth calibrate --shards s3://...` holds a reader's lease; it could not read s3:// at all."""
    out = tmp_path / "calibration.json"
    result = run_cli("calibrate", "--shards", shards, "--untrained", "--cases", 2, "--no-verify", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["shards"] == shards and report["cases"] == 2
    missing = run_cli("calibrate", "--shards", f"{shards}-missing", "--untrained", "--cases", 1, "-o",
                      tmp_path / "other.json")
    assert_one_line_error(missing, 2, f"{shards}-missing")


# ----------------------------------------------------------------- sources mirrored from s3://
def test_an_object_deleted_from_an_s3_source_is_no_longer_cut_out(inputs, s3_server, tmp_path, cache):
    """The local mirror only ever added files: a photo deleted from the bucket went on being used."""
    from augment.cutouts import load_cutouts
    from augment.storage import as_place
    from augment.store_writes import stage

    prefix = "qa/deleting"
    keys = [key for key in s3_server.keys("qa/objects/") if key.endswith(".png")]
    client = s3_server.client()
    for key in keys:
        client.copy_object(Bucket=s3_server.bucket, Key=f"{prefix}/{key.rsplit('/', 1)[1]}",
                           CopySource={"Bucket": s3_server.bucket, "Key": key})
    source = s3_server.uri(prefix)
    config = ExpandConfig.from_dict({**CONFIG, "num": 3})
    first = run_expand([source], inputs["backgrounds"], tmp_path / "first", config, workers=1)
    removed = keys[0].rsplit("/", 1)[1]
    client.delete_object(Bucket=s3_server.bucket, Key=f"{prefix}/{removed}")
    second = run_expand([source], inputs["backgrounds"], tmp_path / "second", config, workers=1)
    assert not (stage(as_place(source)) / removed).exists()
    assert len(load_cutouts(tmp_path / "second" / "objects.parquet")) < len(load_cutouts(tmp_path / "first" / "objects.parquet"))
    assert second.manifest["objects"]["cutouts"] < first.manifest["objects"]["cutouts"]


def test_the_mirror_keeps_its_other_files_and_a_live_writers_temporary(s3_server, cache):
    from augment.atomic_files import temporary_beside
    from augment.storage import as_place
    from augment.store_writes import stage

    client = s3_server.client()
    for name in ("a/one.png", "a/two.png", "masks/m.png"):
        client.put_object(Bucket=s3_server.bucket, Key=f"qa/mirror/{name}", Body=b"x")
    root = stage(as_place(s3_server.uri("qa/mirror")))
    writing = temporary_beside(root / "a" / "three.png")  # another run's atomic write, this very moment
    for name in ("a/two.png", "masks/m.png"):
        client.delete_object(Bucket=s3_server.bucket, Key=f"qa/mirror/{name}")
    assert stage(as_place(s3_server.uri("qa/mirror"))) == root
    assert (root / "a" / "one.png").read_bytes() == b"x"
    assert not (root / "a" / "two.png").exists()
    assert not (root / "masks").exists()  # an empty masks/ would still make the folder look like mask pairs
    assert writing.exists()


# ----------------------------------------------------------------- where an s3:// --out may be
@pytest.mark.parametrize("where", ["source", "inside-source", "backgrounds", "inside-backgrounds", "object"])
def test_an_s3_out_that_is_an_input_or_an_object_is_one_line_and_nothing_is_written(inputs, s3_server, where):
    """Local --out == a source is refused; on s3:// it was taken: the next run mirrored the shards with
    the source and read its objects.parquet as the source's objects (format auto: objects). An --out
    naming an existing object wrote KEY/train-*.parquet beside it."""
    out = {"source": inputs["objects"], "inside-source": f"{inputs['objects']}/expanded",
           "backgrounds": inputs["backgrounds"], "inside-backgrounds": f"{inputs['backgrounds']}/x",
           "object": s3_server.uri(s3_server.keys("qa/backgrounds/")[0])}[where]
    before = s3_server.keys("qa/")
    with pytest.raises(InputError) as raised:
        run_expand([inputs["objects"]], inputs["backgrounds"], out, ExpandConfig.from_dict(CONFIG), workers=1)
    assert out in str(raised.value) and "\n" not in str(raised.value)
    assert s3_server.keys("qa/") == before


def test_an_s3_out_beside_its_inputs_is_fine(inputs, s3_server):
    out = s3_server.uri("qa/beside")
    result = run_expand([inputs["objects"]], inputs["backgrounds"], out, ExpandConfig.from_dict({**CONFIG, "num": 3}),
                        workers=1)
    assert result.rows_written == 3


# ----------------------------------------------------------------- --ray-address where Ray is not
class _HttpServer:
    """A loopback server answering every connection as an HTTP/1.1 server does (a dashboard, an S3 endpoint)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                connection.recv(1024)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_a_ray_address_where_another_server_listens_is_one_line_not_minutes_of_retries():
    """The reachability check only connected: Ray then retried its gRPC connection for minutes."""
    pytest.importorskip("ray", reason='Ray not installed (pip install "synth[ray]")')
    from augment.engines.ray_engine import check_reachable

    server = _HttpServer()
    try:
        with pytest.raises(InputError, match="not a Ray cluster") as raised:
            check_reachable(f"127.0.0.1:{server.port}")
        assert f"127.0.0.1:{server.port}" in str(raised.value)
    finally:
        server.socket.close()


# A real Ray cluster's address passing the check: test_ray_engine.py (its Ray session, not one more started here).


# ----------------------------------------------------------------- messages naming the right server
def test_an_unreachable_gcs_is_not_blamed_on_the_s3_endpoint(monkeypatch):
    """`-o gs://...` with no route to GCS said 'cannot reach the object store at $AWS_ENDPOINT_URL'."""
    from augment.storage import Location, StorageError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)

    def unreachable() -> None:
        raise OSError("google::cloud::Status(UNAVAILABLE: PerformWork() - CURL error [6]=Could not resolve hostname)")

    with pytest.raises(StorageError) as raised:
        Location("gs://some-bucket/x")._call("reaching its bucket", unreachable)
    assert "storage.googleapis.com" in str(raised.value) and "127.0.0.1:9" not in str(raised.value)
    with pytest.raises(StorageError) as raised:
        Location("s3://some-bucket/x")._call("reaching its bucket", unreachable)
    assert "127.0.0.1:9" in str(raised.value)
