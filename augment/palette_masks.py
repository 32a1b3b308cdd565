"""Indexed-colour (palette) masks and label maps, as Pascal VOC and PNG-8 optimisers save them: their
indices are their values (the palette only colours them for viewing), VOC's "void" border is no
object, and a black-and-white drawing whose black is no index 0 is read by its drawing.
"""

from __future__ import annotations

import numpy as np

from augment.imageio import InputError, check_before_decoding, check_complete, describe_unreadable, image_format
from augment.orientation import apply_orientation, exif_orientation

PNG_PALETTE = 3  # the IHDR colour type of an indexed PNG


def is_palette_png(data: bytes) -> bool:
    """Whether ``data`` is an indexed (palette) PNG: its pixels are indices into a colour table."""
    return image_format(data) == "PNG" and len(data) > 25 and data[25] == PNG_PALETTE


def palette_indices(data: bytes, name: str, check: bool = False) -> tuple[np.ndarray, list[int] | None]:
    """The pixel indices (H×W uint8) of an indexed PNG, not the colours its palette gives them, and its
    palette (flat R, G, B, ...); ``check``: :func:`augment.imageio.check_before_decoding`'s checks first,
    the limit on the same opened header (opened once)."""
    from augment.pixel_limit import open_header  # (it imports augment.imageio)

    try:
        image = open_header(data)
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a damaged file
        if check:
            check_complete(data, name)  # a truncated file said as such, as check_before_decoding says it
        raise InputError(describe_unreadable(data, name)) from None
    with image:
        if check:  # on this header, not one opened again
            check_before_decoding(data, name, image)
        try:
            drawn = image.convert("P") if image.mode == "PA" else image
            indices, palette = np.array(drawn), drawn.getpalette()
        except Exception:  # noqa: BLE001 - PIL raises many kinds for a damaged file
            raise InputError(describe_unreadable(data, name)) from None
        orientation = exif_orientation(data, image)
    if indices.ndim != 2:
        raise InputError(f"{name}: not a readable image (an indexed PNG of mode {indices.shape})")
    return apply_orientation(indices.astype(np.uint8), orientation), palette


VOC_VOID_INDEX = 255  # Pascal VOC's palette masks: object borders and unsure pixels


def palette_values(indices: np.ndarray, palette: list[int] | None = None) -> np.ndarray:
    """A palette mask's indices as mask values: its index 255 beside other indices is VOC's "void"
    border, not an object (0; a ring-shaped cutout round every object otherwise); 0 and 255 alone
    stay a binary mask's object. A mask drawn in black and white alone whose black is no index 0 (a
    PNG-8 optimiser's or an editor's palette: white first) is read by its drawing, black 0 and white
    255: by its indices the black background was the object, the white object the background."""
    drawing = _black_and_white_drawing(indices, palette)
    if drawing is not None:
        return drawing
    void = indices == VOC_VOID_INDEX
    if void.any() and np.any((indices != 0) & ~void):
        indices = np.where(void, 0, indices).astype(indices.dtype)
    return indices


def _black_and_white_drawing(indices: np.ndarray, palette: list[int] | None) -> np.ndarray | None:
    """0 where black, 255 where white, for a palette mask of black and white pixels (both) alone whose
    black is no index 0; None for any other (its indices are its values)."""
    if not palette:
        return None
    colours = np.zeros((256, 3), np.int32)
    table = np.asarray(palette[:768], np.int32).reshape(-1, 3)
    colours[: len(table)] = table
    used = np.unique(indices)
    black = used[(colours[used] == 0).all(axis=1)]
    white = used[(colours[used] == 255).all(axis=1)]
    if len(black) + len(white) != len(used) or not len(black) or not len(white) or 0 in black:
        return None
    return np.where(np.isin(indices, white), 255, 0).astype(np.uint8)
