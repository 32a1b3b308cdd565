"""Where data lives: local paths, or object-store URIs (``s3://bucket/key``, ``gs://bucket/key``).

Object stores are reached through ``pyarrow.fs`` (S3FileSystem, GcsFileSystem): pyarrow is a core
dependency already, its Parquet reader and writer take these file systems directly (a row group is
read with ranged GETs, not by downloading the shard), and it needs no second HTTP stack.
Credentials come from the environment as the cloud SDKs read them (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` / an instance role; ``GOOGLE_APPLICATION_CREDENTIALS``);
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points ``s3://`` at another S3-compatible
server (MinIO, Ceph, a test server on loopback).

A :class:`Location` is an object-store URI that answers the part of the :class:`pathlib.Path` API
the shard code uses (``/``, ``name``, ``exists``, ``is_file``, ``iterdir``, ``read_text``,
``unlink``...), so readers and writers handle a local folder and a bucket prefix alike; local paths
stay :class:`pathlib.Path`. Every storage failure becomes a :class:`StorageError` of one line that
names the URI (an unreachable endpoint, a missing bucket, denied credentials).
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Iterator, Union
from urllib.parse import urlparse

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augment.imageio import IMAGE_EXTENSIONS, InputError, image_from_bytes
from augment.imageio import list_images as list_local_images
from augment.imageio import read_image as read_local_image

URI = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)")
SCHEMES = ("s3", "gs")  # gcs:// is read as gs://
GCS_RETRY_SECONDS = 20  # how long a failing GCS request is retried before it is reported


class StorageError(InputError):
    """An object store could not be reached or refused a request (one line naming the URI)."""


def is_uri(text: object) -> bool:
    return isinstance(text, str) and URI.fullmatch(text) is not None


# ----------------------------------------------------------------- file systems
def s3_endpoint() -> str | None:
    """The S3 endpoint URL from the environment (as the AWS SDKs read it), or None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _make_filesystem(scheme: str) -> pafs.FileSystem:
    if scheme == "s3":
        options: dict = {"connect_timeout": 10.0, "request_timeout": 120.0,
                         # Three tries, not the SDK's ten: an unreachable endpoint is reported in about a second.
                         "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
        endpoint = s3_endpoint()
        if endpoint:
            parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            options["region"] = region
        return pafs.S3FileSystem(**options)
    # The GCS client retries a failing request for 15 minutes by default: with no network or no
    # credentials `synth eval --shards gs://...` sat silent that long. Transient errors still get retries.
    retries = {"retry_time_limit": datetime.timedelta(seconds=GCS_RETRY_SECONDS)}
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")  # the GCS clients' convention for a local server
    if emulator:
        parsed = urlparse(emulator if "://" in emulator else f"http://{emulator}")
        return pafs.GcsFileSystem(endpoint_override=parsed.netloc, scheme=parsed.scheme, anonymous=True, **retries)
    return pafs.GcsFileSystem(**retries)


_FILESYSTEMS: dict[tuple, pafs.FileSystem] = {}
_SETTINGS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "STORAGE_EMULATOR_HOST")


def filesystem(scheme: str) -> pafs.FileSystem:
    """One file system per scheme, settings and process (made after a fork, not inherited: the SDKs'
    clients hold threads and connections that a child process cannot use)."""
    key = (os.getpid(), scheme, *(os.environ.get(name) for name in _SETTINGS))
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = _make_filesystem(scheme)
    return _FILESYSTEMS[key]


def endpoint_of(scheme: str) -> str:
    """The server a scheme's requests go to, for messages: the S3 endpoint, or GCS's (an emulator's)."""
    if scheme == "gs":
        return os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
    return s3_endpoint() or "the default endpoint"


def describe_failure(error: BaseException, scheme: str = "s3") -> str:
    """What went wrong with a storage request, in a few words (the SDKs' messages span lines)."""
    text = " ".join(str(error).split())
    if ("NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text or "Couldn't connect" in text
            or "Could not resolve" in text or "CURL error" in text):
        endpoint = endpoint_of(scheme)
        return f"cannot reach the object store at {endpoint} ({text.rsplit(': ', 1)[-1][:120]})"
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return "access denied (check the credentials in the environment)"
    if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
        return "no such bucket"
    return text[:300]


class Location:
    """An object-store URI with the :class:`pathlib.Path` methods the shard code needs.

    Pickled as its URI, so it travels to other processes and machines, where the file system is
    made again from that machine's environment (credentials are never pickled).
    """

    __slots__ = ("uri", "scheme", "path", "size")

    def __init__(self, uri: str, size: int | None = None) -> None:
        match = URI.fullmatch(uri)
        if match is None:
            raise InputError(f"{uri}: not a URI (expected s3://bucket/key or gs://bucket/key)")
        scheme, rest = match.group(1), match.group(2).strip("/")
        scheme = "gs" if scheme == "gcs" else scheme
        if scheme not in SCHEMES:
            raise InputError(f"{uri}: unsupported scheme {scheme}:// (supported: s3://, gs://, local paths)")
        if not rest or rest.split("/")[0] in ("", ".", ".."):
            raise InputError(f"{uri}: no bucket named")
        if any(part in (".", "..") for part in rest.split("/")):
            raise InputError(f"{uri}: '.' and '..' are not allowed in object keys")
        self.scheme, self.path = scheme, re.sub("/+", "/", rest)
        self.uri = f"{scheme}://{self.path}"
        self.size = size  # known from a listing; saves a request

    # --- names
    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: "Location") -> bool:
        return self.uri < other.uri

    def __reduce__(self):
        return Location, (self.uri, self.size)

    def __truediv__(self, name: str) -> "Location":
        return Location(f"{self.uri}/{name}")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return Location(f"{self.scheme}://{self.path.rsplit('/', 1)[0]}") if "/" in self.path else self

    @property
    def bucket(self) -> str:
        return self.path.split("/")[0]

    @property
    def fs(self) -> pafs.FileSystem:
        return filesystem(self.scheme)

    def is_relative_to(self, other: "Location") -> bool:
        return self.uri == other.uri or self.uri.startswith(other.uri + "/")

    # --- queries
    def _call(self, action: str, function, *args):
        try:
            return function(*args)
        except OSError as error:
            raise StorageError(f"{self.uri}: {action} failed: {describe_failure(error, self.scheme)}") from None

    def info(self) -> pafs.FileInfo:
        return self._call("looking it up", self.fs.get_file_info, self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        # A size known from a listing means a file was there: no second request for it.
        return self.size is not None or self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def file_size(self) -> int:
        if self.size is None:
            self.size = self.info().size
        return self.size

    def listing(self, recursive: bool = False) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        return sorted(self._call("listing it", self.fs.get_file_info, selector), key=lambda i: i.path)

    def iterdir(self) -> Iterator["Location"]:
        for info in self.listing():
            yield Location(f"{self.scheme}://{info.path}", info.size if info.type == pafs.FileType.File else None)

    def check_bucket(self) -> None:
        """A one-line error now, before any work, when the endpoint or bucket cannot be reached."""
        info = self._call("reaching its bucket", self.fs.get_file_info, self.bucket)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{self.uri}: no such bucket {self.bucket!r}")

    # --- reading
    def open_input(self) -> pafs.NativeFile:
        return self._call("opening it", self.fs.open_input_file, self.path)

    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        info = self.info()
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{self.uri}: no such file")
        if info.type == pafs.FileType.Directory:
            raise InputError(f"{self.uri}: is a folder, expected a file")
        return self._call("reading it", read)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    # --- writing
    def write_bytes(self, data: bytes) -> None:
        """One PUT of the whole object: readers see the old object or the new one, never a part."""
        def write() -> None:
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
        self._call("writing it", write)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise InputError(f"{self.uri}: no such file") from None
        except OSError as error:
            raise StorageError(f"{self.uri}: deleting it failed: {describe_failure(error, self.scheme)}") from None

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object store's folders are the prefixes of its keys."""


Place = Union[Path, Location]


def as_place(value: str | Path | Location) -> Place:
    """A local path, or a :class:`Location` for an object-store URI (``file://`` gives a local path)."""
    if isinstance(value, (Path, Location)):
        return value
    if isinstance(value, str) and value.startswith("file://"):
        return Path(value[len("file://"):])
    return Location(value) if is_uri(value) else Path(value)


def is_remote(place: object) -> bool:
    return isinstance(place, Location)


# ----------------------------------------------------------------- one API for both kinds of place
def file_size(place: Place) -> int:
    return place.file_size() if isinstance(place, Location) else Path(place).stat().st_size


def open_parquet(place: Place) -> pq.ParquetFile:
    """A Parquet file opened for random access (object stores: ranged reads of the parts needed)."""
    if isinstance(place, Location):
        return pq.ParquetFile(place.open_input())
    return pq.ParquetFile(place)


def read_head(place: Place, size: int) -> bytes:
    if isinstance(place, Location):
        with place.open_input() as handle:
            return handle.read(size)
    with open(place, "rb") as handle:
        return handle.read(size)


def read_image(place: Place, mode: str = "rgb") -> np.ndarray:
    """An image from a local file or an object (same checks and messages as :func:`augment.imageio.read_image`)."""
    if isinstance(place, Location):
        return image_from_bytes(place.read_bytes(), str(place), mode)
    return read_local_image(place, mode)


def list_images(folder: Place) -> tuple[list[Place], list[Place]]:
    """Image files under ``folder`` (sorted, recursive, hidden ones left out) and the other files."""
    if not isinstance(folder, Location):
        return list_local_images(folder)
    info = folder.info()
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{folder}: no such folder")
    if info.type == pafs.FileType.File:
        raise InputError(f"{folder}: not a folder")
    images, others = [], []
    for entry in folder.listing(recursive=True):
        relative = entry.path[len(folder.path) + 1:]
        if entry.type != pafs.FileType.File or any(part.startswith(".") for part in relative.split("/")):
            continue
        place = Location(f"{folder.scheme}://{entry.path}", entry.size)
        (images if Path(entry.path).suffix.lower() in IMAGE_EXTENSIONS else others).append(place)
    return images, others
