"""The largest image synth reads, in megapixels, checked from the file's header before any pixel
is decoded.

Searching a medium takes about :data:`SEARCH_BYTES_PER_PIXEL` bytes of memory per pixel (the decoded
image, heat and object-size maps at full size, the highlight), so an image just under OpenCV's own
decode limit (2**30 pixels) needed ~30 GB and was killed by the kernel without a word. Every image
file a command reads (:func:`augment.imageio.image_from_bytes`, :func:`augment.mask_files.read_mask`)
is held to :func:`max_megapixels`: over it, the read is one :class:`InputError` line naming the
file, its size and how to proceed; ``expand`` and ``extract`` count such a file as a skip. So are a
video's frames, from its header and first frame (:mod:`pipelines.video`), and the numpy arrays and
PIL images given to the Python API (:func:`check_array_pixels`: ``Searcher``, ``Segmenter``,
``TemporalSearcher``), before they are copied or converted. The error is a :class:`PixelLimitError`:
an InputError for the command line, a ValueError for a caller of the API. Its estimate of the memory
the image would take is the search's, or, within :func:`pixel_work` (``synth segment``, ``synth
extract``, :class:`pipelines.segmenter.Segmenter`), that of the work named there.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from augment.imageio import InputError, image_format
from augment.validation import positive_setting

if TYPE_CHECKING:
    import PIL.Image

LIMIT_VARIABLE = "SYNTH_MAX_MEGAPIXELS"
# ~3 GB to search at most; a 108-megapixel phone photo (12000x9000) passes.
DEFAULT_MAX_MEGAPIXELS = 120.0
SEARCH_BYTES_PER_PIXEL = 27  # measured: peak memory per pixel of a default search of 12, 48 and 100 MP photos (21-27)
# measured: peak memory per pixel of `synth segment` from 3 to 12 MP photos, 3 and 12 classes (61-63): the class
# probabilities at the photo's size and the overlay's arithmetic
SEGMENT_BYTES_PER_PIXEL = 62
# measured: peak memory per pixel of `synth expand` (one worker) of 6, 24 and 48 MP photos and backgrounds
# (5-7), and of `synth photo-shards` (5.4): the photo decoded, its mask and a crop or a smaller copy
EXPAND_BYTES_PER_PIXEL = 7


@dataclass(frozen=True)
class PixelWork:
    """What an image is read for, as the pixel limit's message names it, and its peak memory per pixel."""

    name: str
    bytes_per_pixel: int


SEARCH_WORK = PixelWork("a search", SEARCH_BYTES_PER_PIXEL)
SEGMENT_WORK = PixelWork("a segmentation", SEGMENT_BYTES_PER_PIXEL)
EXPAND_WORK = PixelWork("an expansion", EXPAND_BYTES_PER_PIXEL)
PHOTO_SHARDS_WORK = PixelWork("a photo shard", EXPAND_BYTES_PER_PIXEL)
_WORK: ContextVar[PixelWork] = ContextVar("pixel_work", default=SEARCH_WORK)


@contextmanager
def pixel_work(work: PixelWork) -> Iterator[None]:
    """Within it, images over the limit are told what ``work`` would take of them, not a search's
    memory (this thread only: a reading thread started within enters it itself)."""
    token = _WORK.set(work)
    try:
        yield
    finally:
        _WORK.reset(token)


def max_megapixels() -> float:
    """The limit: ``SYNTH_MAX_MEGAPIXELS`` if set, else :data:`DEFAULT_MAX_MEGAPIXELS`; a value that is
    not a positive number is an InputError naming the variable."""
    return positive_setting(LIMIT_VARIABLE, DEFAULT_MAX_MEGAPIXELS, "megapixels")


def open_header(data: bytes) -> "PIL.Image.Image":
    """``data`` opened by Pillow, its header read and no pixel decoded. JPEG, PNG, TIFF and BMP are
    opened by their format's own class: ``Image.open`` would also apply Pillow's own limit (a
    warning on stderr past 89 megapixels, an error past 179), which :func:`max_megapixels` replaces."""
    from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

    readers = {"JPEG": JpegImagePlugin.JpegImageFile, "PNG": PngImagePlugin.PngImageFile,
               "TIFF": TiffImagePlugin.TiffImageFile, "BMP": BmpImagePlugin.BmpImageFile}
    reader = readers.get(image_format(data) or "")
    if reader is not None:
        return reader(io.BytesIO(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


HEADER_FORMATS = ("JPEG", "PNG", "TIFF", "BMP")  # those open_header opens by their own class


def opened_header(data: bytes) -> "PIL.Image.Image | None":
    """``data``'s header opened once (:func:`open_header`), for the pixel limit, the EXIF orientation and
    a palette's indices to share; None for other formats, or a header Pillow cannot read (each check
    then reads ``data`` as it would alone). The caller closes it."""
    if image_format(data) not in HEADER_FORMATS:
        return None
    try:
        return open_header(data)
    except Exception:  # noqa: BLE001 - a damaged header: OpenCV's decoder reports the file
        return None


def image_dimensions(data: bytes, header: "PIL.Image.Image | None" = None) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, GIF, BMP, WebP or TIFF; None when the header
    cannot be read (the decoder then has the last word on the file). ``header``: :func:`opened_header`'s."""
    if header is not None:
        return int(header.size[0]), int(header.size[1])
    kind = image_format(data)
    try:
        if kind == "GIF":  # the logical screen, which frames fill (Pillow's GIF reader applies its limit)
            width, height = struct.unpack("<HH", data[6:10])
        elif kind == "WebP":  # likewise
            return _webp_dimensions(data)
        elif kind == "PNG" and data[12:16] == b"IHDR":  # the first chunk, at a fixed place
            width, height = struct.unpack(">II", data[16:24])
        elif kind == "JPEG" and (size := _jpeg_dimensions(data)) is not None:
            return size
        elif kind is not None:
            with open_header(data) as image:
                width, height = image.size
        else:
            return None
    except Exception:  # noqa: BLE001 - a damaged header: OpenCV's decoder reports the file
        return None
    return int(width), int(height)


# JPEG markers of a frame header (SOF0-SOF15 less DHT, JPG and DAC, which share the range)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """The frame size of a JPEG from its SOF segment, the segments before it (tables, EXIF) stepped
    over by their lengths: Pillow's reader (which :func:`image_dimensions` used for every JPEG, ~80 us
    a call: a quarter of reading a small composite row) parses each of them. None where no SOF comes
    before the scan or the segments do not chain (Pillow then reads the header as before)."""
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte before a marker
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        if not 0xC0 <= marker <= 0xFE or marker == 0xD8:
            # FF 00 or a reserved marker: libjpeg scans on byte by byte where a length read here would jump
            # (a comment hiding a small frame header past the real one passed the pixel limit): Pillow's word
            return None
        if marker in _SOF_MARKERS:
            if at + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if length < 2:
            return None
        at += 2 + length
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    """The canvas of a WebP: extended (VP8X), lossless (VP8L) or lossy (VP8) bitstream header."""
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


class PixelLimitError(InputError, ValueError):
    """An image, video frame or array over :func:`max_megapixels`: one line on the command line (an
    InputError), a ValueError (a bad argument) to a caller of the Python API."""


def check_pixel_limit(data: bytes, name: str, header: "PIL.Image.Image | None" = None) -> None:
    """A PixelLimitError naming ``name`` when the image's header says it is over :func:`max_megapixels`
    (``header``: :func:`opened_header`'s, not opened again)."""
    size = image_dimensions(data, header)
    if size is not None:
        check_size(size[0], size[1], name)


def check_size(width: int, height: int, name: str, what: str = "an image") -> None:
    """A PixelLimitError naming ``name`` and its size when ``width`` x ``height`` is over
    :func:`max_megapixels`; ``what`` it is ("an image", "a video frame") completes the message."""
    limit = max_megapixels()
    if width * height <= limit * 1e6:
        return
    megapixels = width * height / 1e6
    # One decimal, as the limit is usually set; below 0.05 (a test's tiny limit) two figures, not "0.0".
    shown = f"{megapixels:.1f}" if megapixels >= 0.05 else f"{megapixels:.2g}"
    work = _WORK.get()
    raise PixelLimitError(f"{name}: {width}x{height} px ({shown} megapixels) is over the limit of {limit:g} "
                          f"megapixels on {what} ({work.name} takes ~{work.bytes_per_pixel} bytes of memory per "
                          f"pixel, {megapixels * work.bytes_per_pixel / 1e3:.2g} GB for this one); shrink it, "
                          f"or set {LIMIT_VARIABLE}={math.ceil(megapixels)} where the memory allows")


def check_array_pixels(image: object, name: str) -> None:
    """A PixelLimitError naming the argument ``name`` when ``image``, a numpy array (H x W [x C]) or a
    PIL image given to the Python API, is over :func:`max_megapixels`. Checked from its shape or
    size alone, before it is copied or converted (a PIL image opened lazily is not decoded);
    anything else is left to the caller's own checks."""
    size = getattr(image, "size", None)
    shape = getattr(image, "shape", None)
    if isinstance(size, tuple) and len(size) == 2 and shape is None:  # PIL: (width, height)
        width, height = size
    elif isinstance(shape, tuple) and len(shape) >= 2:
        height, width = shape[:2]
    else:
        return
    check_size(int(width), int(height), name)
