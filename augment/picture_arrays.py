"""Pictures given to the Python API as numpy arrays, PIL images or paths, read as image files of that
kind are: one reader for every API that takes images (``Searcher``, ``TemporalSearcher``,
``Segmenter``), so an array means the same picture to each of them.

Grey (H x W or H x W x 1), RGB or RGBA, channels last; uint8, uint16 as 16-bit, floats in [0, 1]
(0-255 where any value is above 1), booleans as black and white; a CMYK or palette PIL image in its
colours, a PIL image upright as its EXIF orientation shows it (as its file is read). Anything else
(channels first, a batch, no pixels) is an :class:`ArrayInputError` naming the
argument and its shape; one over the pixel limit a PixelLimitError, from its shape before any copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

from augment.imageio import InputError, pixels_as_uint8, read_image
from augment.mask_files import mask_plane
from augment.palette_masks import palette_values
from augment.orientation import EXIF_ORIENTATION_TAG, apply_orientation
from augment.pixel_limit import check_array_pixels

ImageLike = Union[str, Path, np.ndarray]


class ArrayInputError(InputError, ValueError):
    """An array or PIL image given to the Python API that is not a picture (its shape or dtype): one
    line naming the argument; a ValueError (a bad argument) to the caller, as a PixelLimitError is."""


# PIL modes whose numbers are not grey, RGB or RGBA values: converted by PIL, as a file of that kind
# is decoded (a CMYK photo's four channels are not RGBA; a palette image's are indices).
_PIL_CONVERT = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                "HSV": "RGB", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}


def _as_array(value: Any, name: str, what: str) -> np.ndarray:
    """``np.asarray(value)``, or an ArrayInputError naming ``name``: a ragged list, a torch tensor that
    requires grad (torch's RuntimeError: call .detach()) or lives on a GPU (.cpu())."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ArrayInputError(f"{name}: not {what} array ({str(error).strip().splitlines()[0]})") from None


def picture_array(image: Any, name: str) -> np.ndarray:
    """uint8 H x W x 3 (RGB) or H x W x 4 (RGBA) from an array or PIL image given to the API.

    Grey (H x W or H x W x 1) becomes RGB, grey + alpha (H x W x 2) RGBA. Values are read as an image
    file's are (:func:`augment.imageio.image_from_bytes`): uint16 as 16-bit (0-65535), floats as [0, 1],
    or as 0-255 where any is above 1, booleans as black and white. Anything else (channels first, a
    batch, one row of numbers, no pixels) is an :class:`ArrayInputError` naming ``name`` and its shape;
    one over the pixel limit a PixelLimitError, from its shape before any copy."""
    check_array_pixels(image, name)  # before the copies below: a huge array fails here, not in memory
    mode = getattr(image, "mode", None)
    orientation = 1
    if isinstance(mode, str) and not isinstance(image, np.ndarray) and hasattr(image, "convert"):
        orientation = pil_orientation(image)
        target = _PIL_CONVERT.get(mode)
        if mode == "P" and "transparency" in getattr(image, "info", {}):
            target = "RGBA"
        if target is not None:
            image = image.convert(target)
    array = _as_array(image, name, "an image")
    if array.ndim == 3 and array.shape[2] in (1, 2):  # grey, grey + alpha
        grey = array[:, :, 0]
        array = np.dstack([grey] * 3 + ([array[:, :, 1]] if array.shape[2] == 2 else []))
    elif array.ndim == 2:
        array = np.dstack([array] * 3)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise ArrayInputError(f"{name}: an array of shape {tuple(array.shape)} is not an image; expected "
                              "H x W (grey) or H x W x 3 / H x W x 4 (RGB / RGBA, channels last)")
    return apply_orientation(_as_uint8(array, name), orientation)


def pil_orientation(image: Any) -> int:
    """The EXIF orientation of a PIL image (``Image.open`` of a phone's photo keeps it stored turned),
    so it is read upright as its file is; 1 without one (``ImageOps.exif_transpose`` removes it)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - metadata is a best effort, as for files
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_numbers(image: np.ndarray, name: str) -> None:
    """An array of anything but numbers (objects, strings, complex) is an ArrayInputError naming ``name``."""
    if not (image.dtype == np.bool_ or np.issubdtype(image.dtype, np.integer)
            or np.issubdtype(image.dtype, np.floating)):
        raise ArrayInputError(f"{name}: an array of {image.dtype} is not an image; expected numbers "
                              "(uint8 0-255, uint16, or floats in [0, 1])")


def _as_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """The values as an image file's are read (:func:`augment.imageio.pixels_as_uint8`); an array of
    anything but numbers (objects, strings, complex) is an ArrayInputError naming ``name``."""
    _check_numbers(image, name)
    return pixels_as_uint8(image)


def mask_array(mask: Any, name: str) -> np.ndarray:
    """H x W mask values from an array or PIL image given to the API, read as a mask file of that kind
    is (:func:`augment.mask_files.mask_plane`): grey as it is, a black-and-white RGB or RGBA mask by its
    colour (its alpha left aside: an opaque mask's alpha is all 255; one drawn in its alpha alone, on
    one colour, by its alpha), a palette image by its indices.
    Another shape or dtype is an :class:`ArrayInputError` naming ``name``; one over the pixel limit a
    PixelLimitError. The values keep their dtype (the caller decides what counts as the object). A PIL
    image is turned upright by its EXIF orientation, as :func:`picture_array` turns its query."""
    check_array_pixels(mask, name)
    mode = getattr(mask, "mode", None)
    orientation = 1
    if isinstance(mode, str) and not isinstance(mask, np.ndarray) and hasattr(mask, "convert"):
        orientation = pil_orientation(mask)
        target = _PIL_CONVERT.get(mode)
        if target is not None and mode not in ("P", "PA"):  # a palette mask's indices are its values, as read_mask reads them
            mask = mask.convert(target)
    array = _as_array(mask, name, "a mask")
    if not (array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[2] <= 4)) or 0 in array.shape:
        raise ArrayInputError(f"{name}: an array of shape {tuple(array.shape)} is not a mask; expected H x W "
                              "(or H x W x 1-4 channels last, black and white)")
    _check_numbers(array, name)
    try:
        plane = mask_plane(array, name)
        # a PIL palette mask as its file is read: VOC's "void" 255 is no object
        plane = palette_values(plane, mask.getpalette()) if mode in ("P", "PA") else plane
        return apply_orientation(plane, orientation)
    except InputError as error:
        raise ArrayInputError(str(error)) from None


def load_rgb(image: ImageLike, name: str = "image") -> np.ndarray:
    """RGB uint8 H x W x 3 from a path (upright as its EXIF orientation shows it), an array or a PIL
    image (see :func:`picture_array`: grey, RGB or RGBA; uint16 as 16-bit, floats in [0, 1]). A file
    or array over the pixel limit (``SYNTH_MAX_MEGAPIXELS``) is a
    :class:`augment.pixel_limit.PixelLimitError` naming the file, or the argument ``name``; an array
    that is not a picture an :class:`ArrayInputError` naming ``name``."""
    if isinstance(image, (str, Path)):
        return read_image(image, "rgb")
    return picture_array(image, name)[..., :3]
