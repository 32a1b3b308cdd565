"""Geometric verification of search candidates: does the query's own pattern re-appear there?

The heat map says *where something like the query* is; it cannot tell the query from a look-alike
of the same kind (another coat, other jeans). Verification checks each candidate the way a person
would: local features of the query are matched to a window around the candidate, and a similarity
transform (rotation, uniform scale, shift) is fitted with RANSAC, for the query as given and
mirrored. A candidate is *verified* when enough matches agree on one plausible transform; the fit
then maps the query's silhouette into the medium, giving a box that follows the object itself.

Two feature sources, chosen by :attr:`VerifyConfig.features`:

- ``"sift"``: OpenCV SIFT (RootSIFT-normalised), Lowe's ratio test against the window's own
  keypoints only, so a look-alike elsewhere in the medium does not veto a match;
- ``"network"``: the search network's own stride-8 backbone features as dense descriptors, the
  query resized to the candidate's estimated size, mutual nearest neighbours between the query's
  cells and the window's. Candidates are checked highest heat first until one is verified
  (:attr:`VerifyConfig.enough_inliers`); the medium is encoded only around the windows checked
  (:mod:`pipelines.scene_cells`) where the search has not encoded it whole.

:meth:`Verifier.verify_scene` matches the query against a whole medium (no candidate): the
classical SIFT baseline of the benchmarks is this one function.

    verifier = Verifier()
    checks = verifier.verify(query_rgb, query_mask, medium_rgb, [det.box for det in detections])
    for check in checks:
        print(check.verified, check.inliers, check.box)

The fit's geometry (RANSAC similarity, silhouettes, mapped boxes) is :mod:`pipelines.verify_geometry`;
the overlay of a check, :func:`draw_matches`, is :mod:`pipelines.verify_draw` (re-exported here).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

from pipelines.local_features import (DenseMap, Keypoints, NetworkFeatures, SiftFeatures,
                                      mutual_matches, ratio_matches)
from pipelines.scene_cells import SceneCells
from pipelines.verify_draw import ANSWER_RGB, TRUTH_RGB, UNVERIFIED_RGB, VERIFIED_RGB, draw_matches  # noqa: F401
from pipelines.verify_geometry import Box, _shrink, _spread, _unshrink, fit_similarity, map_box, silhouette

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class VerifyConfig:
    """How candidates are checked; the defaults are the ones the benchmarks measured best."""

    features: str = "network"  # "network" or "sift" (see the module docstring)
    # SIFT
    ratio: float = 0.8  # Lowe's ratio test: best / second-best descriptor distance
    ransac_px: float = 4.0  # RANSAC inlier distance, pixels of the (shrunk) medium
    min_inliers: int = 8  # a candidate is verified with at least this many inliers
    sift_zoom: float = 1.0  # images resized by this before SIFT (see SiftFeatures)
    query_max_side: int = 512  # the query at most this many pixels (finer detail is noise)
    # Network features (one descriptor per 8 x 8 cell)
    dense_ransac_px: float = 8.0  # one cell
    dense_min_inliers: int = 16
    # Both
    min_inlier_ratio: float = 0.0  # verified only if inliers make at least this share of matches
    max_rotation: float = 45.0  # degrees; fits turning the query further are not the object
    scale_range: tuple[float, float] = (0.1, 4.0)  # object size / query size accepted from a fit
    window_margin: float = 0.5  # the candidate's box grown by this share of its side, each way
    max_candidates: int = 8  # candidates verified per medium (highest heat first)
    # Network features: a candidate verified with at least this many inliers ends the checks of
    # those with less heat (0: check them all; the default, dense_min_inliers, stops at the first
    # verified one). See Verifier.verify.
    enough_inliers: int = 16
    max_side: int = 1024  # media are matched at most this many pixels on their longer side

    def validate(self) -> None:
        checks = [
            (self.features in ("sift", "network"), "features must be 'sift' or 'network'"),
            (0.0 < self.ratio <= 1.0, "ratio must lie in (0, 1]"),
            (self.ransac_px > 0, "ransac_px must be positive"),
            (self.min_inliers >= 3 and self.dense_min_inliers >= 3, "min_inliers must be at least 3"),
            (self.dense_ransac_px > 0 and self.sift_zoom > 0, "dense_ransac_px and sift_zoom must be positive"),
            (0.0 < self.scale_range[0] < self.scale_range[1], "scale_range must be 0 < lo < hi"),
            (self.max_candidates >= 1, "max_candidates must be at least 1"),
            (self.enough_inliers >= 0, "enough_inliers must be 0 (check all) or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"verify config: {message}")


# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Verification:
    """What matching found for one candidate (or a whole medium).

    ``inliers`` agree on the best transform among ``matches`` tentative matches; ``box`` is the
    query's silhouette mapped by that transform (medium pixels), ``verified`` whether the evidence
    passed :class:`VerifyConfig`'s bar. ``query_points`` / ``medium_points`` are the inlier pairs
    (for overlays), ``spread`` how much of the query they cover (0-1: sqrt of their hull's area
    over the query's).
    """

    verified: bool
    inliers: int = 0
    matches: int = 0
    box: Box | None = None
    mirrored: bool = False
    scale: float = 0.0
    spread: float = 0.0
    query_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32),
                                     repr=False)
    medium_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32),
                                      repr=False)

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


NOT_VERIFIED = Verification(False)
QUERY_CACHE = 16  # query views kept (per query array: as given and mirrored, per size)
MIN_DENSE_SIDE = 16  # a query encoded for network features has at least two cells a side
RETRY_MIN_INLIERS = 4  # an unverified network-feature fit this strong gives a second try at its size


@dataclass
class QueryView:
    """The query as matched: as given or mirrored, at a working size, with its keypoints.

    ``scale`` converts its pixels back to the query's (query px = view px / scale), ``outline``
    is the object's silhouette (convex hull, view pixels) that a fit maps into the medium.
    """

    keypoints: Keypoints
    mirrored: bool
    scale: float
    outline: np.ndarray
    area: float


# ----------------------------------------------------------------------------------------------
# Verification


class Verifier:
    """Checks candidates geometrically; see the module docstring.

    Query features are computed once per query (as given and mirrored; for network features per
    size on a half-octave ladder) and kept for the last few queries, so a video or a folder of
    media matches one query's features many times.
    """

    def __init__(self, config: VerifyConfig | None = None,
                 network: NetworkFeatures | None = None) -> None:
        self.config = config or VerifyConfig()
        self.config.validate()
        if self.config.features == "network" and network is None:
            raise ValueError("verify config: features='network' needs a NetworkFeatures")
        self.sift = SiftFeatures(self.config.sift_zoom)
        self.network = network
        self._cache: OrderedDict[tuple[int, int, object], tuple[object, object, list[QueryView]]] = OrderedDict()
        # Frames may be verified side by side (pipelines/search_workers.py): the cache's reordering
        # and eviction must not interleave.
        self._cache_lock = threading.Lock()

    # -- the query ----------------------------------------------------------------------------------

    def _cached(self, rgb: np.ndarray, mask: np.ndarray | None, key: object,
                make: Callable[[], list[QueryView]]) -> list[QueryView]:
        """Views of one query array, kept while the array is (its id cannot be reused then)."""
        full = (id(rgb), id(mask), key)
        with self._cache_lock:
            hit = self._cache.get(full)
            if hit is not None and hit[0] is rgb and hit[1] is mask:
                self._cache.move_to_end(full)
                return hit[2]
            views = make()
            self._cache[full] = (rgb, mask, views)
            while len(self._cache) > QUERY_CACHE:
                self._cache.popitem(last=False)
            return views

    def sift_views(self, rgb: np.ndarray, mask: np.ndarray | None) -> list[QueryView]:
        """SIFT keypoints of the query as given and mirrored, at most ``query_max_side`` px."""
        def make() -> list[QueryView]:
            small, factor = _shrink(rgb, self.config.query_max_side)
            small_mask = None if mask is None else _resize_mask(mask, small.shape[:2])
            pairs = _as_given_and_mirrored(small, small_mask)
            return [_view(self.sift.detect(image, m), image, m, factor, mirrored)
                    for (image, m), mirrored in zip(pairs, (False, True))]

        return self._cached(rgb, mask, "sift", make)

    def network_views(self, rgb: np.ndarray, mask: np.ndarray | None, zoom: float) -> list[QueryView]:
        """Network cells of the query resized by ``zoom`` rounded to a power of two (the
        features tolerate the remaining factor of up to 1.4, and nearby candidate sizes share
        one encoding), as given and mirrored, encoded as one batch."""
        assert self.network is not None
        zoom = 2.0 ** round(math.log2(max(zoom, 1e-3)))
        h, w = rgb.shape[:2]
        grow = max(1.0, MIN_DENSE_SIDE / (min(h, w) * zoom))  # at least two cells a side
        size = (max(1, round(h * zoom * grow)), max(1, round(w * zoom * grow)))

        def make() -> list[QueryView]:
            assert self.network is not None
            small = cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
            small_mask = None if mask is None else _resize_mask(mask, size)
            pairs = _as_given_and_mirrored(small, small_mask)
            found = self.network.detect_many([p[0] for p in pairs], [p[1] for p in pairs])
            return [_view(keypoints, image, m, size[1] / w, mirrored)
                    for keypoints, (image, m), mirrored in zip(found, pairs, (False, True))]

        return self._cached(rgb, mask, ("network", size), make)

    # -- candidates ---------------------------------------------------------------------------------

    def verify(self, query_rgb: np.ndarray, query_mask: np.ndarray | None, medium: np.ndarray,
               candidates: Sequence[Box], dense: DenseMap | None = None) -> list[Verification | None]:
        """One :class:`Verification` per candidate box (medium pixels, highest heat first), in
        order; None for those not checked.

        Network features: candidates are checked in order until one is verified with at least
        ``enough_inliers`` inliers; those after it are left unchecked (their heat-map detections
        stand), which on a photo holding the object spares most of the matching and, with the
        medium encoded only around the windows checked (:class:`SceneCells`), most of its
        encoding. ``dense``: the medium's network features if already computed (the search's
        own), else they are computed here where needed.
        """
        if not candidates:
            return []
        size = medium.shape[:2]
        if self.config.features == "network":
            assert self.network is not None
            if dense is None:
                small, factor = _shrink(medium, self.config.max_side)
                scene = SceneCells(self.network, small)
            else:
                scene, factor = SceneCells(self.network, None, dense.features), dense.factor
            windows = [self.window(box, size, factor) for box in candidates]
            enough = self.config.enough_inliers
            # The top candidate's window alone first where it may settle it, else all at once.
            scene.prepare(windows[:1] if enough else windows)
            checks: list[Verification | None] = [None] * len(candidates)
            for i, box in enumerate(candidates):
                if i == 1:
                    scene.prepare(windows[1:])
                checks[i] = check = self._dense_check(query_rgb, query_mask, box, scene, factor, size)
                if enough and check.verified and check.inliers >= enough:
                    break
            return checks
        views = self.sift_views(query_rgb, query_mask)
        if all(len(v.keypoints) < self.config.min_inliers for v in views):
            return [NOT_VERIFIED] * len(candidates)  # a flat query: nothing to check with
        small, factor = _shrink(medium, self.config.max_side)
        windows = [self.window(box, size, factor) for box in candidates]
        scene = self._sift_region(small, windows)
        return [self._best_fit(views, scene.inside(window), factor, size, self._ratio,
                               self.config.ransac_px, self.config.min_inliers) for window in windows]

    def verify_scene(self, query_rgb: np.ndarray, query_mask: np.ndarray | None,
                     medium: np.ndarray) -> Verification:
        """SIFT against the whole medium as one window: the classical baseline."""
        small, factor = _shrink(medium, self.config.max_side)
        return self._best_fit(self.sift_views(query_rgb, query_mask), self.sift.detect(small), factor,
                              medium.shape[:2], self._ratio, self.config.ransac_px,
                              self.config.min_inliers)

    def _dense_check(self, query_rgb: np.ndarray, query_mask: np.ndarray | None, box: Box,
                     scene: SceneCells, factor: float, size: tuple[int, int]) -> Verification:
        """Network features in the window of ``box``, the query at the box's size; where that
        misjudged the size (the heat map's estimate can be off by 2x and more), a fit that found
        the object anyway gives its size and place for a second try."""
        qh, qw = query_rgb.shape[:2]
        zoom = math.sqrt(max(1.0, (box[2] - box[0]) * (box[3] - box[1])) / (qh * qw))
        check = NOT_VERIFIED
        for attempt in range(2):
            views = self.network_views(query_rgb, query_mask, zoom * factor)
            found = self._best_fit(views, scene.inside(self.window(box, size, factor)),
                                   factor, size, mutual_matches, self.config.dense_ransac_px,
                                   self.config.dense_min_inliers)
            if (found.verified, found.inliers) > (check.verified, check.inliers):
                check = found
            # No second try at a size no verified fit may have: on noise frames such fits asked
            # for the query at 16x (a 36864-cell view), most of the search's time for nothing.
            if (attempt or check.verified or check.box is None
                    or check.inliers < RETRY_MIN_INLIERS
                    or abs(math.log2(check.scale / zoom)) < 0.5
                    or not self.config.scale_range[0] <= check.scale <= self.config.scale_range[1]):
                break
            box, zoom = check.box, check.scale
        return check

    def window(self, box: Sequence[float], size: tuple[int, int], factor: float = 1.0) -> Box:
        """The region matched around a candidate: its box grown by ``window_margin`` each way,
        in the pixels of the medium shrunk by ``factor``."""
        x0, y0, x1, y1 = (v * factor for v in box)
        mx, my = (x1 - x0) * self.config.window_margin, (y1 - y0) * self.config.window_margin
        h, w = round(size[0] * factor), round(size[1] * factor)
        return (max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)),
                min(w, math.ceil(x1 + mx)), min(h, math.ceil(y1 + my)))

    def _ratio(self, query: Keypoints, medium: Keypoints) -> tuple[np.ndarray, np.ndarray]:
        return ratio_matches(query, medium, self.config.ratio)

    def _sift_region(self, medium: np.ndarray, windows: list[Box]) -> Keypoints:
        """SIFT over the region spanning the windows (one detection pass for all candidates)."""
        x0, y0 = min(b[0] for b in windows), min(b[1] for b in windows)
        x1, y1 = max(b[2] for b in windows), max(b[3] for b in windows)
        found = self.sift.detect(medium[y0:y1, x0:x1])
        return Keypoints(found.points + np.float32([x0, y0]), found.descriptors)

    def _best_fit(self, views: list[QueryView], scene: Keypoints, factor: float,
                  size: tuple[int, int], match: Callable[[Keypoints, Keypoints], tuple[np.ndarray, np.ndarray]],
                  threshold: float, min_inliers: int) -> Verification:
        """The better of the as-given and mirrored fits (verified first, then more inliers)."""
        best = NOT_VERIFIED
        for view in views:
            q, m = match(view.keypoints, scene)
            found = self._fit(view, view.keypoints.points[q], scene.points[m], factor, size,
                              threshold, min_inliers)
            if (found.verified, found.inliers) > (best.verified, best.inliers):
                best = found
        return best

    def _fit(self, view: QueryView, src: np.ndarray, dst: np.ndarray, factor: float,
             size: tuple[int, int], threshold: float, min_inliers: int) -> Verification:
        """Fit src (view px) -> dst (shrunk medium px); report in the medium's own pixels."""
        c = self.config
        matrix, inliers = fit_similarity(src, dst, threshold)
        if matrix is None:
            return Verification(False, 0, len(src))
        count = int(inliers.sum())
        matrix = _unshrink(matrix, factor)
        scale = float(math.hypot(matrix[0, 0], matrix[1, 0]))
        angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
        relative = scale * view.scale  # object size / query size (view px = query px * view.scale)
        box = map_box(matrix, view.outline, size)
        spread = _spread(src[inliers], view.area)
        plausible = (c.scale_range[0] <= relative <= c.scale_range[1]
                     and abs(angle) <= c.max_rotation and box is not None)
        verified = bool(plausible and count >= min_inliers and count >= c.min_inlier_ratio * len(src))
        return Verification(verified, count, len(src), box, view.mirrored, relative, spread,
                            ((src[inliers] + 0.5) / view.scale - 0.5).astype(np.float32),
                            ((dst[inliers] + 0.5) / factor - 0.5).astype(np.float32))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.float32), size[::-1], interpolation=cv2.INTER_LINEAR)


def _as_given_and_mirrored(rgb: np.ndarray, mask: np.ndarray | None
                           ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    flipped = None if mask is None else np.ascontiguousarray(mask[:, ::-1])
    return [(rgb, mask), (np.ascontiguousarray(rgb[:, ::-1]), flipped)]


def _view(keypoints: Keypoints, rgb: np.ndarray, mask: np.ndarray | None, factor: float,
          mirrored: bool) -> QueryView:
    """A query view from its (possibly mirrored) pixels, resized by ``factor``, and features."""
    area = float((mask >= 0.5).sum()) if mask is not None else float(rgb.shape[0] * rgb.shape[1])
    return QueryView(keypoints, mirrored, factor, silhouette(mask, rgb.shape[:2]), area)
