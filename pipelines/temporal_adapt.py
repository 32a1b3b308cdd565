"""What the temporal mode (pipelines/temporal.py) learns as it holds the target: the box's size
from the scale filter, the online filter's model of the target, and the optional running template.
A mixin of :class:`pipelines.temporal.TemporalSearcher`, which sets the attributes named here."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Any

import cv2
import numpy as np

from pipelines.first_views import first_views, photometric_views
from pipelines.online_filter import CorrelationFilter
from pipelines.scale_filter import ScaleFilter
from pipelines.temporal_track import GRID, Look

logger = logging.getLogger(__name__)

# band_trust: the scale filter's reference level is the median response peak of at most
# SCALE_MEMORY confident frames since the target was given (a long memory: a slow fall of the
# response is not followed), and counts once SCALE_WARMUP frames have set it.
SCALE_WARMUP, SCALE_MEMORY = 5, 1000


class Adaptation:
    """The size, filter and template updates of :class:`pipelines.temporal.TemporalSearcher`."""

    config: Any
    center: tuple[float, float] | None
    height: float
    aspect: float
    template_size: tuple[int, int]
    window_side: int
    net: Any
    anchor_rgb: np.ndarray
    mask: np.ndarray | None
    filter: CorrelationFilter | None
    sizer: ScaleFilter | None
    angle: float
    _scale_peaks: deque[float]
    _scale_sure: bool
    _running: np.ndarray | None
    _confident_frames: int
    reference: float | None  # TemporalSearcher's property

    def _rescale(self, frame: np.ndarray, peak: float, fresh: bool) -> None:
        """Follow the target's size with the scale filter; teach it on confident frames."""
        cfg = self.config
        if cfg.scale_filter is None:
            return
        assert self.center is not None
        self._scale_sure = False
        if self.sizer is None or fresh:
            self.sizer = ScaleFilter((self.height * self.aspect, self.height), cfg.scale_filter)
            self._scale_peaks.clear()
            if cfg.first_views.scale_views > 0:
                self._scale_views(frame)
                return
        else:
            self.height *= self.sizer.estimate(frame, self.center, (self.height * self.aspect, self.height), self.angle)
            self._scale_sure = self._sure_of_scale()
            if self.reference is None or peak < cfg.filter_update_ratio * self.reference:
                return
            if self.sizer.peak is not None:
                self._scale_peaks.append(self.sizer.peak)
        self.sizer.update(frame, self.center, (self.height * self.aspect, self.height), self.angle)

    def _scale_views(self, frame: np.ndarray) -> None:
        """Set the scale filter from the frame's region around the target and photometric views of
        it (``first_views.scale_filter``)."""
        assert self.sizer is not None and self.center is not None
        size = (self.height * self.aspect, self.height)
        # The region every scale sample reads (the largest scale's patch and a margin).
        reach = 0.5 * float(self.sizer.factors[-1]) + 0.05
        x0 = max(0, int(self.center[0] - reach * size[0]))
        y0 = max(0, int(self.center[1] - reach * size[1]))
        x1 = min(frame.shape[1], int(math.ceil(self.center[0] + reach * size[0])) + 1)
        y1 = min(frame.shape[0], int(math.ceil(self.center[1] + reach * size[1])) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            self.sizer.update(frame, self.center, size)
            return
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        views_config = self.config.first_views
        views = photometric_views(region, views_config.scale_views, views_config)
        self.sizer.initialise([region, *views], (self.center[0] - x0, self.center[1] - y0), size,
                              [1.0] + [views_config.view_weight] * len(views))

    def _sure_of_scale(self) -> bool:
        """Whether the scale filter's last response peak reaches ``band_trust`` of its reference
        (the median peak of the confident frames so far; at least SCALE_WARMUP of them)."""
        trust = self.config.band_trust
        if trust <= 0 or self.sizer is None or self.sizer.peak is None or len(self._scale_peaks) < SCALE_WARMUP:
            return False
        return self.sizer.peak >= trust * float(np.median(self._scale_peaks))

    def _teach(self, features: np.ndarray, y: float, x: float, confident: bool,
               first: tuple[np.ndarray, Look] | None = None) -> None:
        """Teach the online filter the target at cell (y, x) of this window's features: at once on
        the first windowed frame (the target given or just found), then on confident frames only.
        ``first`` (the frame and its look) lets the first teaching add synthetic views of the
        window (``TemporalConfig.first_views``)."""
        cfg = self.config
        if cfg.filter_weight <= 0:
            return
        if self.filter is None:
            th, tw = self.template_size
            self.filter = CorrelationFilter(features.shape[1:], (th / GRID, tw / GRID), cfg.online_filter)
            if cfg.first_views.count > 0 and first is not None:
                self._teach_views(features, y, x, *first)
                return
        elif not confident:
            return
        self.filter.update(features, (y, x))

    def _teach_views(self, features: np.ndarray, y: float, x: float, frame: np.ndarray, look: Look) -> None:
        """Set the filter from the first window and its distorted views (pipelines/first_views.py),
        encoded in one batch, each taught where its transform moved the target."""
        assert self.filter is not None
        start = time.perf_counter()
        th, tw = self.template_size
        side = self.window_side
        views, places = first_views(frame, look.center, th / look.height, side, (x * GRID, y * GRID),
                                    math.sqrt(th * tw), self.config.first_views)
        encoded = self.net.features_many(views)
        self.filter.initialise([features, *encoded], [(y, x), *((py / GRID, px / GRID) for px, py in places)],
                               [1.0] + [self.config.first_views.view_weight] * len(views))
        logger.info("online filter set from the first frame and %d views in %.0f ms", len(views),
                    1000 * (time.perf_counter() - start))

    # -- running template -----------------------------------------------------------------------

    def _update_template(self, frame: np.ndarray, box: tuple[int, int, int, int], peak: float) -> None:
        """Blend confident boxes' pixels into the template; the query keeps >= 1 - rate weight."""
        cfg = self.config
        if cfg.template_rate <= 0 or self.reference is None or peak < cfg.reacquire_ratio * self.reference:
            return
        x0, y0, x1, y1 = box
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        qh, qw = self.anchor_rgb.shape[:2]
        crop = cv2.resize(frame[y0:y1, x0:x1], (qw, qh), interpolation=cv2.INTER_AREA).astype(np.float32)
        self._running = crop if self._running is None else 0.8 * self._running + 0.2 * crop
        self._confident_frames += 1
        if self._confident_frames % cfg.template_every == 0:
            blend = (1 - cfg.template_rate) * self.anchor_rgb + cfg.template_rate * self._running
            self.net.set_template(np.clip(blend + 0.5, 0, 255).astype(np.uint8), self.mask)
