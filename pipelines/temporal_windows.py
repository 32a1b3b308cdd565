"""The temporal mode's look into windows (a mixin of pipelines/temporal.py's :class:`TemporalSearcher`):
windows cut around given centres, sampled so that the target appears upright at the template's size,
searched at the nearby scales in one batch, and scored (the siamese heat with its scale bias and
penalty, re-ranked by the online filter's gated response, blended with the motion prior) to the
:class:`~pipelines.temporal_track.Look` where each one peaks; and a window's point back in the frame.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from pipelines.temporal_refine import refine_peak
from pipelines.temporal_track import GRID, Look
from pipelines.window_geometry import crop_affine, sample_window, shift_map, turn_matrix


class WindowLooks:
    """Window search for :class:`pipelines.temporal.TemporalSearcher`, which sets what these methods
    read: ``config``, ``template_size``, ``window_side``, ``scales``, ``scale_bias``, ``height``,
    ``angle``, ``peak_offset``, ``net``, ``filter`` and ``_weighted_prior``."""

    def _zoom(self) -> float:
        """Frame → window magnification: the target at the template's size."""
        return self.template_size[0] / self.height

    def _sizes(self, scales: Sequence[float]) -> list[tuple[int, int]]:
        th, tw = self.template_size
        return [(max(8, round(th * s)), max(8, round(tw * s))) for s in scales]

    def _look(self, frame: np.ndarray, centers: Sequence[tuple[float, float]],
              heights: Sequence[float] | None = None, angles: Sequence[float] | None = None) -> list[Look]:
        """Windows around ``centers`` searched in one batch, each sampled so that a target of its
        height (default: the current one) turned by its angle (default: the current one) appears
        upright at the template's size: where each one's score peaks."""
        side = self.window_side
        heights = [self.height] * len(centers) if heights is None else list(heights)
        angles = [self.angle] * len(centers) if angles is None else list(angles)
        affines = [crop_affine(center, self.template_size[0] / height, side, side, angle)
                   for center, height, angle in zip(centers, heights, angles)]
        windows = [sample_window(frame, affine, side, side) for affine in affines]
        heats, features = self.net.heat_and_features_many(windows, self._sizes(self.scales))
        if self.scale_bias is None:
            # Smaller templates score higher on anything (less to match). On the first frame the
            # true scale is 1, so each scale's excess peak there is its bias, divided out after.
            peaks = heats[0].reshape(len(self.scales), -1).max(axis=1)
            self.scale_bias = (peaks[self.scales.index(1.0)] / np.maximum(peaks, 1e-6)).astype(np.float32)
        return [self._score(center, height, affine, heat, feature, angle=angle)
                for center, height, affine, heat, feature, angle in zip(centers, heights, affines, heats, features,
                                                                         angles)]

    def _score(self, center: tuple[float, float], height: float, affine: np.ndarray, heat: np.ndarray,
               feature: np.ndarray, prior: np.ndarray | None = None, angle: float | None = None) -> Look:
        """Where one window's score peaks (its S x side x side heat, its stride-8 features; the
        motion prior, default centred on the window)."""
        cfg = self.config
        side = self.window_side
        assert self.scale_bias is not None
        penalty = np.array([1.0 if s == 1.0 else cfg.scale_penalty for s in self.scales], np.float32)
        # (Products by factors that are all exactly 1 are skipped: x * 1 is x to the bit. The
        # blend below runs in place on arrays of its own, the same operations in the same order.)
        if not np.all(self.scale_bias == 1):
            heat = heat * self.scale_bias[:, None, None]
        # Centre each scale's heat on the object (its peak sits peak_offset off), so that it
        # agrees with the filter's response and the argmax is the object's centre.
        heat = np.stack([shift_map(h, -self.peak_offset * scale) for h, scale in zip(heat, self.scales)])
        appearance = heat if np.all(penalty == 1) else heat * penalty[:, None, None]
        response = raw = None
        if self.filter is not None and cfg.filter_weight > 0:
            raw = self.filter.response(feature)
            response = cv2.resize(raw, (side, side), interpolation=cv2.INTER_LINEAR)
            # The filter re-ranks what the siamese heat finds query-like (gated by the heat
            # relative to its peak): alone, it could hold on to a static background it learned.
            # (1 - w) * appearance + w * clip(response, 0, 1) * sqrt(heat / its peak)
            gate = heat / np.maximum(heat.max(axis=(1, 2), keepdims=True), 1e-6)
            np.sqrt(gate, out=gate)
            clipped = np.clip(response, 0, 1)
            clipped *= cfg.filter_weight
            gate *= clipped[None]
            appearance = (1 - cfg.filter_weight) * appearance
            appearance += gate
        else:
            appearance = appearance.copy()
        # (1 - window_influence) * appearance + window_influence * prior
        appearance *= 1 - cfg.window_influence
        appearance += self._weighted_prior if prior is None else cfg.window_influence * prior[None]
        score = appearance
        s, y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        fine = None if raw is None or cfg.refine_radius <= 0 else refine_peak(raw, y, x, cfg.refine_radius, GRID)
        shown = fine
        if fine is not None and cfg.refine_feedback:  # only where the heat agrees (refine_heat)
            fy, fx = (min(side - 1, max(0, round(v))) for v in fine)
            fine = fine if heat[s, fy, fx] >= cfg.refine_heat * heat[s, y, x] else None
        return Look(center, affine, heat, feature, int(s), int(y), int(x), float(heat[s, y, x]),
                    None if response is None else float(response[y, x]), height,
                    fine if cfg.refine_feedback else None, shown, self.angle if angle is None else angle)
    def _frame_point(self, look: Look, dx: float = 0.0, dy: float = 0.0,
                     point: tuple[float, float] | None = None) -> tuple[float, float]:
        """The frame point of ``look``'s window pixel ``point`` (default where it peaks,
        ``look.point``), less (dx, dy) window pixels."""
        half, zoom = self.window_side / 2, self.template_size[0] / look.height
        y, x = look.point if point is None else point
        if look.angle != 0.0:  # the window was turned back by the angle: turn the offset forward
            offset = turn_matrix(look.angle) @ np.array([x + 0.5 - dx - half, y + 0.5 - dy - half]) / zoom
            return look.center[0] + float(offset[0]), look.center[1] + float(offset[1])
        return (look.center[0] + (x + 0.5 - dx - half) / zoom,
                look.center[1] + (y + 0.5 - dy - half) / zoom)
