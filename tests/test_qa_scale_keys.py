"""Object-store sources whose keys no local file can be named after (S3 takes any UTF-8 key up to
1,024 bytes): each such object is a counted, logged skip naming its URI, not the end of the run.
A real S3-compatible server on loopback (moto's server mode, tests/object_store.py)."""

from __future__ import annotations

import pytest

from augment.config import ExpandConfig
from augment.expand import run_expand
from augment.storage import as_place
from augment.store_writes import stage
from object_store import cache, s3_server  # noqa: F401 (fixtures; cache: a private SYNTH_CACHE_DIR, autouse)
from sources_factory import make_backgrounds, make_rgba_source

pytest.importorskip("boto3", reason='boto3 not installed (pip install -e ".[test]")')

CONFIG = {"num": 3, "seed": 3, "sources": {"min_area": 50}, "composition": {"width": 64, "height": 64},
          "output": {"shard_rows": 3, "row_group_rows": 3}}


def test_objects_whose_keys_cannot_be_mirrored_are_counted_skips(s3_server, tmp_path, cache):
    """A key part over 255 bytes was 'File name too long' naming the cache; a key that is also another's
    folder 'File exists'; a '..' part pyarrow's refusal; an empty part (a//b) 'no such file': each
    stopped the whole run (exit 2) over one object."""
    objects = make_rgba_source(tmp_path / "objects", 3)
    source = s3_server.upload_folder(objects, "keys/objects")
    backgrounds = s3_server.upload_folder(make_backgrounds(tmp_path / "backgrounds"), "keys/backgrounds")
    data = (objects / "box" / "object_0.png").read_bytes()
    odd = {"long": f"box/{'x' * 300}.png", "dots": "box/../../../escaped.png", "empty": "box//empty.png",
           "folder": "box/object_0.png/inner.png", "spaces": "box/my café é.png"}
    client = s3_server.client()
    for key in odd.values():
        client.put_object(Bucket=s3_server.bucket, Key=f"keys/objects/{key}", Body=data)
    result = run_expand([source], backgrounds, tmp_path / "out", ExpandConfig.from_dict(CONFIG), workers=1)
    skipped = {skip["path"]: skip["reason"] for skip in result.manifest["skipped"]}
    for name in ("long", "dots", "empty", "folder"):
        assert "cannot be mirrored to a local file" in skipped.get(f"{source}/{odd[name]}", ""), (name, skipped)
    assert f"{source}/{odd['spaces']}" not in skipped  # spaces and accents are ordinary names
    assert (stage(as_place(source)) / odd["spaces"]).read_bytes() == data
    assert not (cache.parent / "escaped.png").exists() and not list(tmp_path.rglob("escaped.png"))
