"""Resizing what goes with a picture as the picture itself is resized (:func:`augment.imageio.resize_image`):
its label maps (:func:`resize_labels`) and straight-alpha cutouts (:func:`resize_rgba`)."""

from __future__ import annotations

import cv2
import numpy as np

from augment.imageio import resize_image
from augment.straight_alpha import premultiply, unpremultiply


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """A straight-alpha RGBA cutout (uint8) resized as :func:`resize_image` resizes a picture, its colour
    averaged weighted by alpha (premultiplied): resized as it is, the colour of its transparent pixels
    (black in synth's cutouts) bled into its edge, a white object showing a grey outline on white."""
    if rgba.shape[:2] == (height, width):
        return rgba
    return unpremultiply(resize_image(premultiply(rgba), width, height))


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A label map (class, instance or superpixel ids; never interpolated) resized to height x width as
    :func:`resize_image` resizes its picture: each pixel takes the source pixel under its centre.
    (cv2.INTER_NEAREST takes the one under its top-left corner: labels moved right and down against their
    picture by up to half a pixel, a shift each resize of a photo, its shard and its sample added to.)
    uint8, uint16, int16 and int32 maps keep their type; others are resized as int32 (ids past 2**31 - 1
    would wrap: no synth map holds such ids). A map already of that size comes back as it is."""
    if labels.shape == (height, width):
        return labels
    if labels.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
        labels = labels.astype(np.int32)
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
