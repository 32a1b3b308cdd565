"""Image reading and encoding shared by every stage (atomic writes: :mod:`augment.atomic_files`; a
folder's files and names: :mod:`augment.image_files`; what bytes are: :mod:`augment.image_kinds`, both
re-exported here).

All readers turn a user's bad file into :class:`InputError` with a one-line
message naming the file, so the CLI can print it instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from augment.atomic_files import atomic_write_bytes
# Listing folders and telling files' kinds are modules of their own; their names are this module's too.
from augment.image_files import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_path, is_utf8,  # noqa: F401
                                 list_images, name_fix, opencv_path, shown_name, walk_files)
from augment.image_kinds import (check_complete, describe_unreadable, empty_or_text, image_format,  # noqa: F401
                                 looks_like_text, video_container)
from augment.input_error import InputError  # noqa: F401
from augment.orientation import apply_orientation, exif_orientation
from augment.png_chunks import grey_transparent_value, with_grey_transparency
from augment.straight_alpha import tiff_alpha_as_stored

# OpenCV decodes in its own threads; the pipelines parallelise across processes instead.
cv2.setNumThreads(1)
# A damaged file is one InputError line naming it; OpenCV's own log added '[ERROR:0@2.3] global
# loadsave.cpp:1412 imdecode_ ...' lines on the terminal. OPENCV_LOG_LEVEL, if set, still rules.
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

logger = logging.getLogger(__name__)


def decode_image(data: bytes, flags: int = cv2.IMREAD_UNCHANGED, name: str = "<bytes>",
                 header: "PIL.Image.Image | None" = None) -> np.ndarray:
    """Decode encoded image bytes; colour images come back as RGB or RGBA. Bytes over the pixel limit by
    their header are not decoded, a shard's row as a file's (a 600 KB PNG row took `synth show` 3.8 GB);
    ``header``: :func:`augment.pixel_limit.opened_header`'s, read for the limit, not opened again."""
    from augment.pixel_limit import check_pixel_limit  # (it imports this module)
    check_pixel_limit(data, name, header)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, flags) if buffer.size else None
    except cv2.error as error:  # past OpenCV's pixel limit (a 40000x30000 PNG), or out of memory
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", f"{2 ** 30:,}")
            raise InputError(f"{name}: image too large to decode (over OpenCV's limit of {limit} pixels, "
                             "OPENCV_IO_MAX_IMAGE_PIXELS)") from None
        raise InputError(f"{name}: cannot decode this image ({str(error).strip().splitlines()[-1][:80]})") from None
    if image is None:
        raise InputError(describe_unreadable(data, name))
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def check_plain_file(path: Path | str, expected: str) -> None:
    """An InputError naming ``path`` where it exists and is no plain file nor folder: a FIFO's first read
    waits for a writer forever (SIGTERM did not end it), a device's never ends."""
    if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        raise InputError(f"{path}: is no plain file (a FIFO, a device or a socket), expected {expected}")


def read_file_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    check_plain_file(path, "an image file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None


def read_image(path: Path | str, mode: str = "rgb") -> np.ndarray:
    """Read an image file, upright as its EXIF orientation shows it (:func:`image_from_bytes`).

    mode: ``rgb`` (H×W×3), ``rgba`` (H×W×4, alpha 255 where the file has none),
    ``unchanged`` (as stored: grey, RGB or RGBA, 8 or 16 bit), ``gray``.
    """
    path = Path(path)
    return image_from_bytes(read_file_bytes(path), str(path), mode)


def check_before_decoding(data: bytes, name: str, header: "PIL.Image.Image | None" = None) -> None:
    """What every image file's bytes pass before a decoder sees them: complete, and within the pixel
    limit by their header (an image too large to search is never decoded)."""
    from augment.pixel_limit import check_pixel_limit  # (it imports this module)

    check_complete(data, name)
    check_pixel_limit(data, name, header)


def pixels_as_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit pixels of a decoded image or an array given to the API, one rule for both
    (:mod:`augment.picture_arrays`): uint16 as 16-bit (0-65535), floats in [0, 1], or 0-255 where any
    value is above 1 (astype alone made [0, 1] black), booleans as black and white, other integers
    clipped to 0-255. uint8 comes back as it is, no copy."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * np.uint8(255)
    if image.dtype == np.uint16:  # clipping to 255 made a 16-bit image white
        return (image / 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):  # a float TIFF, a float array
        scale = 255.0 if np.nanmax(image, initial=0.0) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(image) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_from_bytes(data: bytes, name: str, mode: str = "rgb") -> np.ndarray:
    """Decode the bytes of an image file named ``name`` (for messages); ``mode`` as in :func:`read_image`.

    A photo whose EXIF orientation says it is stored turned (a phone's) comes back upright, as viewers
    and labelling tools show it, in every mode: its masks, drawn on what the user saw, line up with it.
    """
    from augment.pixel_limit import opened_header  # (it imports this module)

    check_complete(data, name)  # the pixel limit: in decode_image
    # Pillow's header opened once, for the pixel limit and the EXIF orientation (each opened it itself)
    header = opened_header(data)
    try:
        return _from_bytes(data, name, mode, header)
    finally:
        if header is not None:
            header.close()


def _from_bytes(data: bytes, name: str, mode: str, header: "PIL.Image.Image | None") -> np.ndarray:
    if mode == "gray":  # OpenCV would turn it by itself in this mode only: one rule for all modes below
        image = decode_image(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION, name, header)
    else:
        image = decode_image(data, cv2.IMREAD_UNCHANGED, name, header)
        if image.ndim == 2 and (grey := grey_transparent_value(data)) is not None:  # OpenCV drops it
            image = with_grey_transparency(image, grey)
        elif image_format(data) == "TIFF":
            image = tiff_alpha_as_stored(image, data, header)
    if image_format(data) != "TIFF":  # OpenCV turns a TIFF upright itself, whatever the flags: not twice
        image = apply_orientation(image, exif_orientation(data, header))
    if mode not in ("gray", "unchanged"):
        image = pixels_as_uint8(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if mode == "rgb" and image.shape[2] == 4:
            image = image[:, :, :3].copy()
        elif mode == "rgba" and image.shape[2] == 3:
            image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    return image


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


def encode_label_png(labels: np.ndarray) -> bytes:
    """PNG of a 2-D map of ids or label values. 8-bit: long runs of one value and no gradients, so no row
    filter and run-length deflate; on expand's instance masks about 3x faster than libpng's adaptive
    filters and 40% smaller, the same pixels read back. 16-bit maps (label values past 255) keep
    encode_png: their byte pairs break the runs, and the filters do better there."""
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_label_png takes a 2-D uint8 or uint16 map, not a {labels.dtype} array of shape {labels.shape}")
    if labels.dtype == np.uint16:
        return encode_png(labels, 1)
    ok, buffer = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
                                               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def save_image(path: Path | str, image: np.ndarray, quality: int = 90) -> None:
    """Atomically save an RGB/RGBA/grey image; the format follows the suffix."""
    path = Path(path)
    data = encode_jpeg(image, quality) if path.suffix.lower() in {".jpg", ".jpeg"} else encode_png(image, 3)
    atomic_write_bytes(path, data)
