"""Reading mask files and label maps: single-channel masks (8 or 16 bit), indexed (palette) PNGs read
as their indices (Pascal VOC's void border as background), and black-and-white JPEG masks; the
image files themselves are read by :mod:`augment.imageio`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augment.imageio import InputError, read_file_bytes, image_format, image_from_bytes
from augment.palette_masks import is_palette_png, palette_indices, palette_values


def read_mask(path: Path | str, named: bool = False) -> np.ndarray:
    """Read a single-channel mask or label map (8 or 16 bit), upright as :func:`image_from_bytes` reads
    photos (a mask drawn on the photo as shown lines up with it); an indexed (palette) PNG, as
    Pascal VOC's label maps are, gives its indices (the palette only colours them for viewing); its
    index 255 beside other indices is VOC's "void" border, not an object (read as 0: a ring-shaped
    cutout around every object otherwise). ``named``: its values are ids a label list or categories.json
    names (a palette PNG's indices then, never read by its black-and-white drawing)."""
    path = Path(path)
    data = read_file_bytes(path)
    if is_palette_png(data):
        indices, palette = palette_indices(data, str(path), check=True)
        # Values a label list or categories.json names are the indices, whatever colours they are shown in
        return palette_values(indices, None if named else palette)
    if image_format(data) == "JPEG":
        return _jpeg_mask(data, str(path))
    return mask_plane(image_from_bytes(data, str(path), "unchanged"), str(path))


def mask_plane(mask: np.ndarray, name: str) -> np.ndarray:
    """A decoded mask's one channel (H x W x C, channels last): the grey of grey (+ alpha), the equal
    colours of RGB(A), alpha left aside; colours that differ are an InputError naming ``name``. A mask
    drawn in its alpha alone (one colour everywhere, as an editor saves a layer painted on transparency,
    its transparent pixels white or black) is its alpha: its colour read the whole picture as the object,
    or none of it. One rule for mask files (:func:`read_mask`) and mask arrays given to the API."""
    if mask.ndim == 2:
        return mask
    colours = range(1, 1 if mask.shape[2] == 2 else min(mask.shape[2], 3))  # grey + alpha: the grey
    if any(not np.array_equal(mask[:, :, 0], mask[:, :, c]) for c in colours):
        raise InputError(f"{name}: mask has colour channels that differ; expected a single-channel mask")
    if mask.shape[2] in (2, 4) and _one_value(mask[:, :, 0]) and not _one_value(mask[:, :, -1]):
        return mask[:, :, -1].copy()
    return mask[:, :, 0].copy()


def _one_value(plane: np.ndarray) -> bool:
    return bool((plane == plane.flat[0]).all())


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
