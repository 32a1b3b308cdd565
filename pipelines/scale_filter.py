"""How much the tracked target grew or shrank between frames: a 1-D scale filter (DSST).

The siamese heat is a poor judge of size (a smaller template matches anything a little better),
so the temporal mode borrows the discriminative scale space tracker's answer (Danelljan et al.,
BMVC 2014): around the found centre, patches of the target's size times a^n (n = -S/2 .. S/2)
are resampled to one small shape and described by gradient-orientation cells (HOG-like); a
correlation filter along the scale axis, learned with a Gaussian peaked at n = 0, responds
where the patch matches the target's learned appearance at its learned size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ScaleConfig:
    scales: int = 17
    step: float = 1.05
    # Pixels of the patch every scale sample is resampled to (its aspect is the target's).
    model_pixels: int = 512
    cell: int = 4
    orientations: int = 9
    sigma_factor: float = 0.25
    regularisation: float = 0.01
    learning_rate: float = 0.025


def gradient_cells(patches: np.ndarray, cell: int, orientations: int) -> np.ndarray:
    """HOG-like description of grey patches (S x H x W): per ``cell`` x ``cell`` block, the
    gradient magnitude in each of ``orientations`` unsigned orientation bins (linearly shared
    between the two nearest), plus the mean intensity; each patch's vector has unit norm. S x D."""
    count, h, w = patches.shape
    gx = np.zeros_like(patches)
    gy = np.zeros_like(patches)
    gx[:, :, 1:-1] = patches[:, :, 2:] - patches[:, :, :-2]
    gy[:, 1:-1] = patches[:, 2:] - patches[:, :-2]
    magnitude = np.hypot(gx, gy)
    position = (np.arctan2(gy, gx) % math.pi) / math.pi * orientations
    low = np.floor(position)
    high_weight = position - low
    low = low.astype(np.int32) % orientations
    bins = np.arange(orientations).reshape(1, -1, 1, 1)
    channels = (magnitude[:, None] * ((low[:, None] == bins) * (1 - high_weight[:, None])
                                      + ((low[:, None] + 1) % orientations == bins) * high_weight[:, None]))
    channels = np.concatenate([channels, patches[:, None]], axis=1)
    ch, cw = h // cell, w // cell
    pooled = channels[:, :, :ch * cell, :cw * cell].reshape(count, orientations + 1, ch, cell, cw, cell).mean(axis=(3, 5))
    flat = pooled.reshape(count, -1)
    return flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-6)


class ScaleFilter:
    """Estimates the target's relative size change each frame; see the module docstring."""

    def __init__(self, target_wh: tuple[float, float], config: ScaleConfig | None = None) -> None:
        self.config = cfg = config or ScaleConfig()
        offsets = np.arange(cfg.scales) - (cfg.scales - 1) / 2
        self.factors = cfg.step ** offsets
        sigma = cfg.scales / math.sqrt(33) * cfg.sigma_factor
        self.label_f = np.fft.fft(np.exp(-0.5 * (offsets / sigma) ** 2)).astype(np.complex64)
        self.window = np.hanning(cfg.scales).astype(np.float32)
        # The learned shape: the target's aspect, about model_pixels in all.
        w, h = target_wh
        shrink = min(1.0, math.sqrt(cfg.model_pixels / max(w * h, 1.0)))
        self.model_wh = (max(cfg.cell * 2, round(w * shrink)), max(cfg.cell * 2, round(h * shrink)))
        self.numerator: np.ndarray | None = None
        self.denominator: np.ndarray | None = None
        self._last: tuple[np.ndarray, tuple, np.ndarray] | None = None  # (frame, place, spectrum)

    def _samples(self, gray: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float]) -> np.ndarray:
        """D x S: each scale's patch described, times the scale window, along the scale axis."""
        patches = []
        frame_h, frame_w = gray.shape
        for factor in self.factors:
            w, h = size_wh[0] * factor, size_wh[1] * factor
            x0, y0 = center[0] - w / 2, center[1] - h / 2
            sx, sy = self.model_wh[0] / w, self.model_wh[1] / h
            # Only the patch's part of the frame is resampled to the model shape.
            cx0, cy0 = max(0, int(x0) - 1), max(0, int(y0) - 1)
            cx1, cy1 = min(frame_w, int(math.ceil(x0 + w)) + 1), min(frame_h, int(math.ceil(y0 + h)) + 1)
            if cx1 - cx0 < 2 or cy1 - cy0 < 2:
                patches.append(np.zeros(self.model_wh[::-1], np.float32))
                continue
            affine = np.array([[sx, 0, -sx * (x0 - cx0)], [0, sy, -sy * (y0 - cy0)]], np.float32)
            patches.append(cv2.warpAffine(gray[cy0:cy1, cx0:cx1], affine, self.model_wh,
                                          flags=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE))
        columns = gradient_cells(np.stack(patches), self.config.cell, self.config.orientations)
        return columns.T * self.window[None]

    def _spectrum(self, gray: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float]) -> np.ndarray:
        """The samples' Fourier transform along the scale axis; the last one is kept, since an
        update at the size the estimate kept (the usual case) describes the same patches."""
        key = (tuple(center), tuple(size_wh))
        if self._last is None or self._last[0] is not gray or self._last[1] != key:
            self._last = (gray, key, np.fft.fft(self._samples(gray, center, size_wh), axis=1))
        return self._last[2]

    def update(self, gray: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float]) -> None:
        """Learn the target's appearance across scales at ``center`` with size ``size_wh``."""
        spectrum = self._spectrum(gray, center, size_wh)
        numerator = self.label_f[None] * np.conj(spectrum)
        denominator = (spectrum * np.conj(spectrum)).real.sum(axis=0)
        if self.numerator is None or self.denominator is None:
            self.numerator, self.denominator = numerator, denominator
            return
        rate = self.config.learning_rate
        self.numerator = (1 - rate) * self.numerator + rate * numerator
        self.denominator = (1 - rate) * self.denominator + rate * denominator

    def estimate(self, gray: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float]) -> float:
        """The size change (factor) at which the target at ``center`` best matches what was learned."""
        if self.numerator is None or self.denominator is None:
            return 1.0
        spectrum = self._spectrum(gray, center, size_wh)
        joint = (self.numerator * spectrum).sum(axis=0) / (self.denominator + self.config.regularisation)
        response = np.fft.ifft(joint).real
        return float(self.factors[int(np.argmax(response))])
