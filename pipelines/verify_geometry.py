"""Geometry of geometric verification (:mod:`pipelines.verify`): the RANSAC similarity fit, the
query's silhouette and its box once mapped into the medium, the working size of an image."""

from __future__ import annotations

import math

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    factor = min(1.0, max_side / max(image.shape[:2]))
    if factor >= 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


# Coordinates follow OpenCV's keypoints: pixel (i, j)'s centre is the point (i, j), so an image
# spans [-0.5, w - 0.5]; boxes are pixel edges (x1/y1 exclusive), i.e. those points + 0.5.
_PIXEL_CORNERS = np.float32([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def silhouette(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The object's outline in a query of ``shape``: the corners of the pixels on its convex hull
    (x/y, pixel-centre coordinates), or the query's corners without a mask."""
    h, w = shape
    if mask is not None:
        points = cv2.findNonZero((mask >= 0.5).astype(np.uint8))
        if points is not None:
            hull = cv2.convexHull(points).reshape(-1, 1, 2).astype(np.float32)
            return (hull + _PIXEL_CORNERS[None]).reshape(-1, 2)
    return np.float32([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def map_box(matrix: np.ndarray, outline: np.ndarray, size: tuple[int, int]) -> Box | None:
    """The box (pixel edges) of ``outline`` mapped by a 2 x 3 transform, clipped to a medium of
    ``size`` (h, w)."""
    mapped = outline @ matrix[:, :2].T + matrix[:, 2] + 0.5
    x0, y0 = np.round(mapped.min(axis=0))
    x1, y1 = np.round(mapped.max(axis=0))
    h, w = size
    box = (max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1)))
    return box if box[2] > box[0] and box[3] > box[1] else None


def _unshrink(matrix: np.ndarray, factor: float) -> np.ndarray:
    """A transform into a medium shrunk by ``factor`` as one into the medium itself."""
    out = matrix / factor
    out[:, 2] += 0.5 / factor - 0.5
    return out


def fit_similarity(src: np.ndarray, dst: np.ndarray,
                   threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC similarity (rotation, uniform scale, shift) from ``src`` to ``dst`` points.

    OpenCV's RANSAC seeds its own generator per call, so the fit is the same run to run.
    """
    if len(src) < 3:
        return None, np.zeros(len(src), bool)
    matrix, inliers = cv2.estimateAffinePartial2D(
        src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC,
        ransacReprojThreshold=threshold, maxIters=2000, confidence=0.995, refineIters=10)
    if matrix is None or inliers is None:
        return None, np.zeros(len(src), bool)
    return matrix, inliers.ravel().astype(bool)


def _spread(points: np.ndarray, area: float) -> float:
    if len(points) < 3 or area <= 0:
        return 0.0
    hull = cv2.convexHull(points.astype(np.float32))
    return float(min(1.0, math.sqrt(cv2.contourArea(hull) / area)))
