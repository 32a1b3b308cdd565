"""Straight (unassociated) alpha: colour not multiplied by its alpha, as synth keeps every cutout.

:func:`premultiply` and :func:`unpremultiply` serve the cutouts' warps (:mod:`augment.object_distortions`)
and :func:`tiff_alpha_as_stored`, which undoes what OpenCV does to a TIFF saved with straight alpha.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

TIFF_EXTRA_SAMPLES = 338  # the tag saying what a TIFF's samples past the colour ones are
TIFF_STRAIGHT_ALPHA = 2  # EXTRASAMPLE_UNASSALPHA (Pillow, GIMP, Photoshop write it)


def _alpha_planes(image: np.ndarray) -> np.ndarray:
    """RGBA-shaped array (alpha, alpha, alpha, 255): one cv2 call then scales all four channels."""
    alpha = image[:, :, 3]
    return cv2.merge([alpha, alpha, alpha, np.full_like(alpha, 255)])


def premultiply(image: np.ndarray) -> np.ndarray:
    """RGBA with colour multiplied by alpha, so interpolation never bleeds the colour of transparent pixels.

    Exact for opaque pixels (x·255/255 = x), so an unpremultiply restores them bit for bit.
    """
    return cv2.multiply(image, _alpha_planes(image), scale=1.0 / 255.0)


def unpremultiply(image: np.ndarray) -> np.ndarray:
    """8-bit premultiplied RGBA back to straight alpha (cv2.divide yields 0 where alpha is 0: fully
    transparent pixels become transparent black)."""
    return cv2.divide(image, _alpha_planes(image), scale=255.0)


def tiff_alpha_as_stored(image: np.ndarray, data: bytes) -> np.ndarray:
    """An 8-bit RGBA TIFF decoded by OpenCV with the colour its file stores. For a file that says its
    alpha is straight (ExtraSamples 2) libtiff's RGBA reader, which OpenCV uses for 8 bits, multiplies
    the colour by alpha: a cutout's half-transparent edge came back darkened (200 at alpha 150 read
    as 118). Other arrays come back as they are."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 4:
        return image
    from augment.pixel_limit import open_header  # (it imports augment.imageio, which imports this)

    try:
        with open_header(data) as tiff:
            extra = tiff.tag_v2.get(TIFF_EXTRA_SAMPLES)
    except Exception as error:  # noqa: BLE001 - a best effort: OpenCV has decoded the pixels
        logger.debug("TIFF header unreadable (%s); alpha taken as decoded", error)
        return image
    first = extra[0] if isinstance(extra, tuple) and extra else extra
    return unpremultiply(image) if first == TIFF_STRAIGHT_ALPHA else image
