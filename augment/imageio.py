"""Image reading, encoding and atomic writes shared by every stage.

All readers turn a user's bad file into :class:`InputError` with a one-line
message naming the file, so the CLI can print it instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"})

# OpenCV decodes in its own threads; the pipelines parallelise across processes instead.
cv2.setNumThreads(1)


class InputError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files in ``folder`` (sorted, recursive) and the other files found there."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such file or directory")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    images, others = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        (images if is_image_path(path) else others).append(path)
    return images, others


def decode_image(data: bytes, flags: int = cv2.IMREAD_UNCHANGED, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes; colour images come back as RGB or RGBA."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, flags) if buffer.size else None
    if image is None:
        raise InputError(f"{name}: not a readable image (corrupt, truncated or unknown format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None


def _check_complete(data: bytes, path: Path) -> None:
    # libjpeg happily decodes a truncated JPEG into a grey-padded image; catch it here.
    if path.suffix.lower() in {".jpg", ".jpeg"} and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker)")
    if path.suffix.lower() == ".png" and b"IEND" not in data[-32:]:
        raise InputError(f"{path}: truncated PNG (no IEND chunk)")


def read_image(path: Path | str, mode: str = "rgb") -> np.ndarray:
    """Read an image file.

    mode: ``rgb`` (H×W×3), ``rgba`` (H×W×4, alpha 255 where the file has none),
    ``unchanged`` (as stored: grey, RGB or RGBA, 8 or 16 bit), ``gray``.
    """
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(data, path)
    if mode == "gray":
        image = decode_image(data, cv2.IMREAD_GRAYSCALE, str(path))
    elif mode == "unchanged":
        image = decode_image(data, cv2.IMREAD_UNCHANGED, str(path))
    else:
        image = decode_image(data, cv2.IMREAD_UNCHANGED, str(path))
        if image.dtype != np.uint8:
            image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if mode == "rgb" and image.shape[2] == 4:
            image = image[:, :, :3].copy()
        elif mode == "rgba" and image.shape[2] == 3:
            image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    return image


def read_mask(path: Path | str) -> np.ndarray:
    """Read a single-channel mask or label map (8 or 16 bit) as stored."""
    path = Path(path)
    mask = read_image(path, mode="unchanged")
    if mask.ndim == 3:
        channels = mask[:, :, :3]
        if not (np.array_equal(channels[:, :, 0], channels[:, :, 1]) and np.array_equal(channels[:, :, 0], channels[:, :, 2])):
            raise InputError(f"{path}: mask has colour channels that differ; expected a single-channel mask")
        mask = channels[:, :, 0].copy()
    return mask


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing) and bilinear when enlarging."""
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def encode_png(image: np.ndarray, compression: int = 1) -> bytes:
    """PNG of a grey, RGB or RGBA array (8 or 16 bit); colour is taken as RGB(A)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


@contextlib.contextmanager
def atomic_path(final_path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place only on success."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.replace(temporary_path, final_path)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_image(path: Path | str, image: np.ndarray, quality: int = 90) -> None:
    """Atomically save an RGB/RGBA/grey image; the format follows the suffix."""
    path = Path(path)
    data = encode_jpeg(image, quality) if path.suffix.lower() in {".jpg", ".jpeg"} else encode_png(image, 3)
    atomic_write_bytes(path, data)
