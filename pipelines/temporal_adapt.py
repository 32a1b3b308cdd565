"""What the temporal mode (pipelines/temporal.py) learns as it holds the target: the box's size
from the scale filter, the online filter's model of the target, and the optional running template.
A mixin of :class:`pipelines.temporal.TemporalSearcher`, which sets the attributes named here."""

from __future__ import annotations

from collections import deque
from typing import Any

import cv2
import numpy as np

from pipelines.online_filter import CorrelationFilter
from pipelines.scale_filter import ScaleFilter
from pipelines.temporal_track import GRID

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
    net: Any
    anchor_rgb: np.ndarray
    mask: np.ndarray | None
    filter: CorrelationFilter | None
    sizer: ScaleFilter | None
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
        else:
            self.height *= self.sizer.estimate(frame, self.center, (self.height * self.aspect, self.height))
            self._scale_sure = self._sure_of_scale()
            if self.reference is None or peak < cfg.filter_update_ratio * self.reference:
                return
            if self.sizer.peak is not None:
                self._scale_peaks.append(self.sizer.peak)
        self.sizer.update(frame, self.center, (self.height * self.aspect, self.height))

    def _sure_of_scale(self) -> bool:
        """Whether the scale filter's last response peak reaches ``band_trust`` of its reference
        (the median peak of the confident frames so far; at least SCALE_WARMUP of them)."""
        trust = self.config.band_trust
        if trust <= 0 or self.sizer is None or self.sizer.peak is None or len(self._scale_peaks) < SCALE_WARMUP:
            return False
        return self.sizer.peak >= trust * float(np.median(self._scale_peaks))

    def _teach(self, features: np.ndarray, y: float, x: float, confident: bool) -> None:
        """Teach the online filter the target at cell (y, x) of this window's features: at once on
        the first windowed frame (the target given or just found), then on confident frames only."""
        cfg = self.config
        if cfg.filter_weight <= 0:
            return
        if self.filter is None:
            th, tw = self.template_size
            self.filter = CorrelationFilter(features.shape[1:], (th / GRID, tw / GRID), cfg.online_filter)
        elif not confident:
            return
        self.filter.update(features, (y, x))

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
