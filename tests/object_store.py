"""A real S3-compatible server on loopback for the object-store tests: moto's server mode, in a thread.

The code under test talks to it over HTTP exactly as it would to S3 (pyarrow's S3 client for the
data, boto3 for the lock's conditional writes): nothing on the client side is mocked.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "synth-test"


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def upload_folder(self, folder: Path, prefix: str) -> str:
        """Copy a local folder's files under ``prefix``; returns its URI."""
        client = self.client()
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                client.upload_file(str(path), self.bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return self.uri(prefix)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A private SYNTH_CACHE_DIR per test (object-store sources are mirrored there); autouse in every
    test module that imports it."""
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    moto_server = pytest.importorskip("moto.server", reason='moto[server] not installed (pip install -e ".[test]")')
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log is not the CLI's output
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = dict(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                    AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")  # never ask a cloud's metadata service
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    info = S3Server(f"http://{host}:{port}", BUCKET)
    info.client().create_bucket(Bucket=BUCKET)
    try:
        yield info
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
