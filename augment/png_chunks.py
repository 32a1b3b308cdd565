"""What a PNG file's chunks say that OpenCV's decoder does not: a file cut short or a damaged chunk,
named in one line (libpng printed ``libpng error: IDAT: invalid code lengths set`` on the terminal
before the decoder gave up), and the transparent grey of a greyscale PNG's ``tRNS`` chunk (OpenCV
drops it: a cutout or query saved so came back with no alpha at all)."""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY = 0  # the IHDR colour type of a greyscale PNG without an alpha channel


def png_chunks(data: bytes, check_crc: bool = True) -> Iterator[tuple[bytes, int, int, bool]]:
    """Each chunk of a PNG as (type, offset of its data, its length, whether its CRC matches: always
    True without ``check_crc``), up to IEND or the end of the bytes (a chunk cut short ends the walk;
    the caller's truncation check says so)."""
    view = memoryview(data)  # the checksums read the chunks in place: a slice copied the whole IDAT
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 8 + length
        if end + 4 > len(data):
            return
        crc = struct.unpack(">I", data[end : end + 4])[0]
        yield kind, offset + 8, length, not check_crc or zlib.crc32(view[offset + 4 : end]) == crc
        if kind == b"IEND":
            return
        offset = end + 4


def png_damage(data: bytes) -> str | None:
    """What keeps a PNG from holding its whole picture: ``truncated PNG (no IEND chunk)`` (cut short:
    its chunks stop before IEND), ``corrupt PNG (its IDAT chunk fails its checksum)`` for a critical
    chunk (IHDR, PLTE, IDAT, IEND: an upper-case first letter) whose CRC does not match; None when whole.
    Data past IEND is not read, as libpng does not; an ancillary chunk's bad CRC is left to libpng,
    which drops that chunk and decodes the pixels."""
    for kind, _, _, ok in png_chunks(data):
        if not ok and kind[:1].isupper():
            return f"corrupt PNG (its {kind.decode('latin-1')} chunk fails its checksum)"
        if kind == b"IEND":
            return None
    return "truncated PNG (no IEND chunk)"


def grey_transparent_value(data: bytes) -> int | None:
    """The grey value a greyscale PNG's ``tRNS`` chunk makes transparent, scaled as OpenCV decodes the
    pixels (1, 2 and 4 bit depths stretched to 0-255, 16 bit kept), or None (another colour type, no
    ``tRNS``)."""
    if len(data) < 29 or data[25] != PNG_GREY:
        return None
    depth = data[24]
    for kind, start, length, _ in png_chunks(data, check_crc=False):
        if kind == b"IDAT":  # tRNS comes before the pixels
            return None
        if kind == b"tRNS" and length >= 2:
            value = struct.unpack(">H", data[start : start + 2])[0]
            return value * (255 // ((1 << depth) - 1)) if depth < 8 else value
    return None


def with_grey_transparency(image: np.ndarray, value: int) -> np.ndarray:
    """A decoded greyscale image (H×W) as grey + alpha in RGBA form, as OpenCV gives a grey + alpha PNG:
    alpha 0 where the pixel is ``value``, full elsewhere."""
    full = np.iinfo(image.dtype).max
    alpha = np.where(image == value, 0, full).astype(image.dtype)
    return np.dstack([image, image, image, alpha])
