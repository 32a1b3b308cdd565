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
from typing import Sequence

import numpy as np

from pipelines.window_geometry import hann_window


@dataclass(frozen=True)
class FilterConfig:
    # Width of the Gaussian label, in grid cells per grid cell of the target's mean side.
    sigma_factor: float = 0.2
    # Regularisation, relative to the mean power of the first frame's features.
    regularisation: float = 0.01
    # Weight of each new frame in the running numerator and denominator (KCF/DSST use ~0.01-0.025).
    learning_rate: float = 0.02

    def __post_init__(self) -> None:
        if self.sigma_factor <= 0 or self.regularisation <= 0 or not 0.0 < self.learning_rate <= 1.0:
            raise ValueError("online filter: need sigma_factor > 0, regularisation > 0 and learning_rate "
                             f"in (0, 1], not {self.sigma_factor}, {self.regularisation}, {self.learning_rate}")


# Feature maps whose spectra are kept (a lost frame scores up to about 10 windows, one of which
# the filter may then learn from).
SPECTRA_KEPT = 12


class CorrelationFilter:
    """A filter over C x H x W feature maps (``grid`` = (H, W)) for a target of ``target_cells``
    (h, w) grid cells (which set the label's width). Places are in grid-cell coordinates: cell i
    spans [i, i + 1)."""

    def __init__(self, grid: tuple[int, int], target_cells: tuple[float, float],
                 config: FilterConfig | None = None) -> None:
        self.config = cfg = config or FilterConfig()
        self.grid = grid
        self.window = hann_window(*grid)
        self.sigma = max(0.5, cfg.sigma_factor * float(np.sqrt(target_cells[0] * target_cells[1])))
        self.numerator: np.ndarray | None = None
        self.denominator: np.ndarray | None = None
        self.lam = 0.0
        # The last feature maps transformed and their spectra: a window's response and the update
        # that teaches the filter on it (the same frame) share one transform.
        self._spectra: list[tuple[np.ndarray, np.ndarray]] = []

    def _label(self, at: tuple[float, float]) -> np.ndarray:
        """Fourier transform of a Gaussian peaked at ``at``. The filter learns the pattern relative
        to the label's peak: trained with the target at ``at``, it responds where the target sits in
        the next window."""
        ys = np.arange(self.grid[0], dtype=np.float32) + 0.5 - at[0]
        xs = np.arange(self.grid[1], dtype=np.float32) + 0.5 - at[1]
        label = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma ** 2))
        return np.fft.rfft2(label)

    def _spectrum(self, features: np.ndarray) -> np.ndarray:
        """The cosine-windowed features' 2-D transform; one of the last few maps given (the same
        array object: the search never writes into its feature maps) is not transformed again."""
        for seen, spectrum in self._spectra:
            if seen is features:
                return spectrum
        spectrum = np.fft.rfft2(features.astype(np.float32, copy=False) * self.window[None])
        self._spectra = [(features, spectrum), *self._spectra[:SPECTRA_KEPT - 1]]
        return spectrum

    def update(self, features: np.ndarray, at: tuple[float, float]) -> None:
        """Learn from C x H x W features whose target's centre sits at ``at``: the first call sets
        the filter, later ones blend in at the configured learning rate."""
        spectrum = self._spectrum(features)
        numerator = self._label(at)[None] * np.conj(spectrum)
        denominator = (spectrum * np.conj(spectrum)).real.sum(axis=0)
        if self.numerator is None or self.denominator is None:
            self.numerator, self.denominator = numerator, denominator
            self.lam = self.config.regularisation * float(denominator.mean())
            return
        rate = self.config.learning_rate
        self.numerator = (1 - rate) * self.numerator + rate * numerator
        self.denominator = (1 - rate) * self.denominator + rate * denominator

    def initialise(self, features: Sequence[np.ndarray], places: Sequence[tuple[float, float]],
                   weights: Sequence[float] | None = None) -> None:
        """Set the filter from several C x H x W feature maps at once (the first frame and its
        synthetic views, pipelines/first_views.py), each with its target's centre: the numerator
        and denominator are their (weighted) means (MOSSE's sum over perturbed first frames)."""
        weights = [1.0] * len(features) if weights is None else list(weights)
        if len(features) != len(places) or len(weights) != len(places) or not features:
            raise ValueError("initialise needs one place (and weight) per feature map, and at least one")
        spectra = [self._spectrum(feature) for feature in features]
        self.numerator, self.denominator = weighted_terms(
            [(self._label(at)[None] * np.conj(spectrum), (spectrum * np.conj(spectrum)).real.sum(axis=0))
             for spectrum, at in zip(spectra, places)], weights)
        self.lam = self.config.regularisation * float(self.denominator.mean())

    def response(self, features: np.ndarray) -> np.ndarray:
        """H x W response to C x H x W features (about 1 where the target is, 0 elsewhere)."""
        assert self.numerator is not None and self.denominator is not None, "update() first"
        spectrum = self._spectrum(features)
        joint = (self.numerator * spectrum).sum(axis=0) / (self.denominator + self.lam)
        return np.fft.irfft2(joint, s=features.shape[-2:]).astype(np.float32)


def weighted_terms(terms: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The weighted means of (numerator, denominator) pairs: a filter set from several samples at
    once (MOSSE's mean over perturbed first frames; the scale filter's too)."""
    total = float(sum(weights))
    numerator = sum(weight * num for (num, _), weight in zip(terms, weights)) / total
    denominator = sum(weight * den for (_, den), weight in zip(terms, weights)) / total
    return numerator, denominator
