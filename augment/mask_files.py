"""Reading mask files and label maps: single-channel masks (8 or 16 bit), indexed (palette) PNGs read
as their indices (Pascal VOC's void border as background), and black-and-white JPEG masks; the
image files themselves are read by :mod:`augment.imageio`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augment.imageio import (InputError, _read_bytes, check_before_decoding, describe_unreadable, image_format,
                             image_from_bytes)
from augment.orientation import apply_orientation, exif_orientation


PNG_PALETTE = 3  # the IHDR colour type of an indexed PNG


def is_palette_png(data: bytes) -> bool:
    """Whether ``data`` is an indexed (palette) PNG: its pixels are indices into a colour table."""
    return image_format(data) == "PNG" and len(data) > 25 and data[25] == PNG_PALETTE


def palette_indices(data: bytes, name: str) -> np.ndarray:
    """The pixel indices (H×W uint8) of an indexed PNG, not the colours its palette gives them."""
    from augment.pixel_limit import open_header

    try:
        with open_header(data) as image:
            indices = np.array(image.convert("P") if image.mode == "PA" else image)
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a damaged file
        raise InputError(describe_unreadable(data, name)) from None
    if indices.ndim != 2:
        raise InputError(f"{name}: not a readable image (an indexed PNG of mode {indices.shape})")
    return apply_orientation(indices.astype(np.uint8), exif_orientation(data))


VOC_VOID_INDEX = 255  # Pascal VOC's palette masks: object borders and unsure pixels


def palette_values(indices: np.ndarray) -> np.ndarray:
    """A palette mask's indices as mask values: its index 255 beside other indices is VOC's "void"
    border, not an object (0; a ring-shaped cutout round every object otherwise); 0 and 255 alone
    stay a binary mask's object."""
    void = indices == VOC_VOID_INDEX
    if void.any() and np.any((indices != 0) & ~void):
        indices = np.where(void, 0, indices).astype(indices.dtype)
    return indices


def read_mask(path: Path | str) -> np.ndarray:
    """Read a single-channel mask or label map (8 or 16 bit), upright as :func:`image_from_bytes` reads
    photos (a mask drawn on the photo as shown lines up with it); an indexed (palette) PNG, as
    Pascal VOC's label maps are, gives its indices (the palette only colours them for viewing); its
    index 255 beside other indices is VOC's "void" border, not an object (read as 0: a ring-shaped
    cutout around every object otherwise)."""
    path = Path(path)
    data = _read_bytes(path)
    if is_palette_png(data):
        check_before_decoding(data, str(path))
        return palette_values(palette_indices(data, str(path)))
    if image_format(data) == "JPEG":
        return _jpeg_mask(data, str(path))
    return mask_plane(image_from_bytes(data, str(path), "unchanged"), str(path))


def mask_plane(mask: np.ndarray, name: str) -> np.ndarray:
    """A decoded mask's one channel (H x W x C, channels last): the grey of grey (+ alpha), the equal
    colours of RGB(A), alpha left aside; colours that differ are an InputError naming ``name``. One rule
    for mask files (:func:`read_mask`) and mask arrays given to the API."""
    if mask.ndim == 2:
        return mask
    colours = range(1, 1 if mask.shape[2] == 2 else min(mask.shape[2], 3))  # grey + alpha: the grey
    if any(not np.array_equal(mask[:, :, 0], mask[:, :, c]) for c in colours):
        raise InputError(f"{name}: mask has colour channels that differ; expected a single-channel mask")
    return mask[:, :, 0].copy()


JPEG_MASK_CLEAR = 0.98  # share of a black-and-white JPEG mask's pixels that stay near 0 or 255 despite compression


def _jpeg_mask(data: bytes, name: str) -> np.ndarray:
    """A mask saved as JPEG: lossy compression blurs its values, so only a black-and-white one can be
    read (as 0 and 255, split at 128); ids or label values would come back as specks of other values."""
    grey = image_from_bytes(data, name, "gray")
    clear = np.count_nonzero((grey < 32) | (grey > 223)) / max(grey.size, 1)
    if clear < JPEG_MASK_CLEAR or 0 < grey.max() < 128:  # the latter: small ids or label values, all "black"
        raise InputError(f"{name}: a JPEG mask whose values are not just black and white (lossy compression "
                         "changes ids and label values; save the mask as PNG)")
    return np.where(grey >= 128, 255, 0).astype(np.uint8)
