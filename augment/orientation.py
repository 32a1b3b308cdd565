"""A photo's EXIF orientation, and its pixels turned as viewers show them (read by
:func:`augment.imageio.image_from_bytes` for every image file, by :mod:`augment.picture_arrays` for PIL
images).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


EXIF_ORIENTATION_TAG = 0x0112
EXIF_SCAN_BYTES = 1 << 16  # a JPEG's APP1 and a PNG's eXIf chunk come before the pixels


def exif_orientation(data: bytes, header: "PIL.Image.Image | None" = None) -> int:
    """The EXIF orientation (1..8) of an encoded image; 1 (upright) when it has none or it is unreadable.
    ``header``: ``data`` already opened by :func:`augment.pixel_limit.open_header` (not opened again)."""
    from augment.imageio import image_format  # (it imports this module)

    head, kind = data[:EXIF_SCAN_BYTES], image_format(data)
    # A WebP's EXIF chunk ("EXIF", often after the pixels) is flagged in its VP8X header (bit 3)
    webp_exif = kind == "WebP" and data[12:16] == b"VP8X" and len(data) > 20 and bool(data[20] & 0x08)
    if b"Exif" not in head and b"eXIf" not in head and kind != "TIFF" and not webp_exif:
        return 1  # the common case, without parsing anything
    from augment.pixel_limit import open_header  # (it imports augment.imageio, which imports this)

    try:
        if header is not None:
            value = header.getexif().get(EXIF_ORIENTATION_TAG, 1)
        else:
            with open_header(data) as image:  # not Image.open: its own pixel limit would warn or refuse
                value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception as error:  # noqa: BLE001 - metadata is a best effort: the pixels are decoded (and checked) by OpenCV
        logger.debug("EXIF block unreadable (%s); orientation taken as stored", error)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` (stored pixels, H×W[×C]) turned as its EXIF ``orientation`` asks, i.e. as viewers show it."""
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation == 5:
        image = image.swapaxes(0, 1)
    elif orientation == 6:
        image = np.rot90(image, -1)
    elif orientation == 7:
        image = image[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        image = np.rot90(image, 1)
    else:
        return image
    return np.ascontiguousarray(image)
