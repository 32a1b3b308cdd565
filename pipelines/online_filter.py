"""An online discriminative filter on the network's feature maps (a multi-channel correlation filter).

The siamese heat scores how much a place looks like the query; among look-alikes (teammates in
the same kit, skaters in similar costume) it cannot tell the target from its neighbours. A
correlation filter learned on the window's own features, with the target's cell as the positive
and every other place in the window (the look-alikes included) as the negatives, can: it is the
classical trackers' strength (MOSSE, DSST, KCF, CSRT), here on the backbone's stride-8 features
instead of hand-crafted ones, so it costs no extra forward pass.

Closed form per frame (DSST's multi-channel MOSSE): with F_c the Fourier transform of feature
channel c (cosine-windowed) and G that of a Gaussian label peaked on the target,
``A_c = G * conj(F_c)``, ``B = sum_c F_c * conj(F_c)``; both are running averages over the frames
the target was held with confidence; the response to new features Z is
``ifft2(sum_c A_c * Z_c / (B + lambda))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FilterConfig:
    # Width of the Gaussian label, in grid cells per unit of the target's mean side in cells.
    sigma_factor: float = 0.1
    # Regularisation, relative to the mean power of the first frame's features.
    regularisation: float = 0.01
    # Weight of each new frame in the running numerator and denominator (KCF/DSST use ~0.01-0.025).
    learning_rate: float = 0.02
    # Training features are weighted by a Gaussian around the target of this many target sides
    # (0 = unweighted): a static background then cannot anchor the filter, while the target's
    # near surroundings (a look-alike passing close) still teach it what to reject.
    focus: float = 0.0


class CorrelationFilter:
    """A filter over C x H x W feature maps whose target sits at a fixed place of the grid.

    ``center`` (y, x) is the target's centre in grid-cell coordinates (cell i spans [i, i + 1)),
    ``target_cells`` its (h, w) in cells (sets the label's width).
    """

    def __init__(self, grid: tuple[int, int], center: tuple[float, float],
                 target_cells: tuple[float, float], config: FilterConfig | None = None) -> None:
        self.config = cfg = config or FilterConfig()
        height, width = grid
        self.window = np.outer(np.hanning(height + 2)[1:-1], np.hanning(width + 2)[1:-1]).astype(np.float32)
        self.grid = grid
        self.target_cells = target_cells
        self.sigma = max(0.5, cfg.sigma_factor * float(np.sqrt(target_cells[0] * target_cells[1])) * 2)
        self.center = center
        self.numerator: np.ndarray | None = None
        self.denominator: np.ndarray | None = None
        self.lam = 0.0

    @property
    def trained(self) -> bool:
        return self.numerator is not None

    def _label(self, at: tuple[float, float]) -> np.ndarray:
        """Fourier transform of a Gaussian peaked at ``at`` (cells). The filter learns the pattern
        *relative* to the label's peak: trained with the target at ``at`` and the label there, it
        responds at ``center`` + shift to a window whose target sits shifted from ``center``."""
        ys = np.arange(self.grid[0], dtype=np.float32) + 0.5 - at[0]
        xs = np.arange(self.grid[1], dtype=np.float32) + 0.5 - at[1]
        label = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma ** 2))
        return np.fft.rfft2(label)

    def _focus(self, at: tuple[float, float]) -> np.ndarray:
        spread_y, spread_x = (max(1.0, self.config.focus * side) for side in self.target_cells)
        ys = (np.arange(self.grid[0], dtype=np.float32) + 0.5 - at[0]) / spread_y
        xs = (np.arange(self.grid[1], dtype=np.float32) + 0.5 - at[1]) / spread_x
        return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))

    def _spectrum(self, features: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(features.astype(np.float32) * self.window[None])

    def update(self, features: np.ndarray, at: tuple[float, float] | None = None,
               rate: float | None = None) -> None:
        """Learn from C x H x W features whose target sits at ``at`` (cells; default ``center``);
        the first call sets the filter, later ones blend in with ``rate`` (default: the config's)."""
        at = self.center if at is None else at
        if self.config.focus > 0:
            features = features * self._focus(at)[None]
        spectrum = self._spectrum(features)
        numerator = self._label(at)[None] * np.conj(spectrum)
        denominator = (spectrum * np.conj(spectrum)).real.sum(axis=0)
        if self.numerator is None or self.denominator is None:
            self.numerator, self.denominator = numerator, denominator
            self.lam = self.config.regularisation * float(denominator.mean())
            return
        rate = self.config.learning_rate if rate is None else rate
        self.numerator = (1 - rate) * self.numerator + rate * numerator
        self.denominator = (1 - rate) * self.denominator + rate * denominator

    def response(self, features: np.ndarray) -> np.ndarray:
        """H x W response to C x H x W features (about 1 where the target is, 0 elsewhere); a
        stack S x C x H x W gives S x H x W."""
        assert self.numerator is not None and self.denominator is not None
        spectrum = self._spectrum(features)
        joint = (self.numerator * spectrum).sum(axis=-3) / (self.denominator + self.lam)
        return np.fft.irfft2(joint, s=features.shape[-2:]).astype(np.float32)

