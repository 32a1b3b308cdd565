"""Straight (unassociated) alpha: colour not multiplied by its alpha, as synth keeps every cutout.

:func:`premultiply` and :func:`unpremultiply` serve the cutouts' warps (:mod:`augment.object_distortions`)
and :func:`tiff_alpha_as_stored`, which undoes what OpenCV does to a TIFF saved with straight alpha.
"""

from __future__ import annotations

import contextlib

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

TIFF_EXTRA_SAMPLES = 338  # the tag saying what a TIFF's samples past the colour ones are
TIFF_STRAIGHT_ALPHA = 2  # EXTRASAMPLE_UNASSALPHA (Pillow, GIMP, Photoshop write it)
TIFF_PREMULTIPLIED_ALPHA = 1  # EXTRASAMPLE_ASSOCALPHA (compositing tools: colour stored multiplied by alpha)


def _alpha_planes(image: np.ndarray) -> np.ndarray:
    """RGBA-shaped array (alpha, alpha, alpha, 255): one cv2 call then scales all four channels.
    (Grey to BGRA gives exactly that, its alpha 255; about 3x faster than merging four planes.)"""
    return cv2.cvtColor(cv2.extractChannel(image, 3), cv2.COLOR_GRAY2BGRA)


def premultiply(image: np.ndarray) -> np.ndarray:
    """RGBA with colour multiplied by alpha, so interpolation never bleeds the colour of transparent pixels.

    Exact for opaque pixels (x·255/255 = x), so an unpremultiply restores them bit for bit.
    """
    return cv2.multiply(image, _alpha_planes(image), scale=1.0 / 255.0)


def unpremultiply(image: np.ndarray) -> np.ndarray:
    """8-bit premultiplied RGBA back to straight alpha (cv2.divide yields 0 where alpha is 0: fully
    transparent pixels become transparent black)."""
    return cv2.divide(image, _alpha_planes(image), scale=255.0)


def tiff_alpha_as_stored(image: np.ndarray, data: bytes, header: "PIL.Image.Image | None" = None) -> np.ndarray:
    """A TIFF decoded by OpenCV with the alpha and colour its file stores. For an 8-bit RGBA file that
    says its alpha is straight (ExtraSamples 2), libtiff's RGBA reader, which OpenCV uses for 8 bits,
    multiplies the colour by alpha: a cutout's half-transparent edge came back darkened (200 at alpha
    150 read as 118); one that says its colour is premultiplied (ExtraSamples 1) is stored so, and comes
    back straight too. Of an 8-bit grey + alpha file OpenCV gives the grey alone: its alpha (Pillow's
    reading of it) comes back beside it, as RGBA, as OpenCV gives a grey + alpha PNG. Other arrays come
    back as they are. ``header``: the file's Pillow header, already open (read here, not closed)."""
    rgba = image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4
    if not (rgba or (image.dtype == np.uint8 and image.ndim == 2)):
        return image
    from augment.pixel_limit import open_header  # (it imports augment.imageio, which imports this)

    try:
        with contextlib.nullcontext(header) if header is not None else open_header(data) as tiff:
            extra = tiff.tag_v2.get(TIFF_EXTRA_SAMPLES)
            alpha = np.array(tiff.getchannel("A")) if not rgba and tiff.mode in ("LA", "La") else None
            premultiplied = tiff.mode == "La"
    except Exception as error:  # noqa: BLE001 - a best effort: OpenCV has decoded the pixels
        logger.debug("TIFF header unreadable (%s); alpha taken as decoded", error)
        return image
    if alpha is not None and alpha.shape == image.shape:
        grey_alpha = np.dstack([image, image, image, alpha])
        return unpremultiply(grey_alpha) if premultiplied else grey_alpha
    first = extra[0] if isinstance(extra, tuple) and extra else extra
    # Both come out of libtiff's reader multiplied by alpha: the straight one multiplied by it, the
    # premultiplied one as stored (its half-transparent edge was taken as straight colour, darkened)
    return unpremultiply(image) if rgba and first in (TIFF_STRAIGHT_ALPHA, TIFF_PREMULTIPLIED_ALPHA) else image
