"""How much the tracked target grew or shrank between frames: a 1-D scale filter (DSST).

The siamese heat is a poor judge of size (a smaller template matches anything a little better),
so the temporal mode borrows the discriminative scale space tracker's answer (Danelljan et al.,
BMVC 2014): around the found centre, patches of the target's size times a^n (n = -S/2 .. S/2)
are resampled to one small shape and described by gradient-orientation cells (HOG-like); a
correlation filter along the scale axis, learned with a Gaussian peaked at n = 0, responds
where the patch matches the target's learned appearance at its learned size.

Two departures from the paper, both measured:
- Each feature's mean over the scales is taken off the samples (DC removal). Neighbouring scales'
  patches look alike, so most of the description is common to all of them; times the scale
  window, that common part correlates into a response shaped like the window, peaked at "no
  change" whatever the frame: without the removal the filter answered 1.0 for a frame rescaled by
  1.2 (VOT_bag, Skating1's first frames), and the box kept its first size.
- The change per frame is clamped to ``max_change``. A centre off the target biases the estimate
  upward (a larger patch dilutes the misalignment: on a 48 px object, 6-8 px off, about +2-4% a
  frame), and a box much larger than its object (a first size guessed wrong) puts the centre off
  more, so the box could grow without end; the clamp bounds that runaway's rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.online_filter import weighted_terms
from pipelines.window_geometry import turn_matrix


@dataclass(frozen=True)
class ScaleConfig:
    # DSST's scale space: 33 sizes 2% apart (17 sizes 5% apart: Skating1 + VOT_bag, each started at
    # 4 frames, success AUC 0.62 vs 0.645, and the moving-query clip's box grew past its object).
    scales: int = 33
    step: float = 1.02
    # Pixels of the patch every scale sample is resampled to (its aspect is the target's).
    model_pixels: int = 512
    cell: int = 4
    orientations: int = 9
    sigma_factor: float = 0.25
    regularisation: float = 0.01
    learning_rate: float = 0.025
    # Largest size change accepted per frame (factor; None: any the scales reach). See the module
    # docstring; 1.06 and 1.2 did worse on Skating1 + VOT_bag than 1.1.
    max_change: float | None = 1.1

    def __post_init__(self) -> None:
        if self.scales < 3 or self.step <= 1.0:
            raise ValueError("need scales >= 3 and step > 1")
        if self.max_change is not None and self.max_change < 1.0:
            raise ValueError(f"max_change must be >= 1 (or None), not {self.max_change}")


def gradient_cells(patches: np.ndarray, cell: int, orientations: int) -> np.ndarray:
    """HOG-like description of grey patches (S x H x W): per ``cell`` x ``cell`` block, the
    gradient magnitude in each of ``orientations`` unsigned orientation bins (linearly shared
    between the two nearest), plus the mean intensity; each patch's vector has unit norm. S x D."""
    count = patches.shape[0]
    gx, gy, grey = cell_gradients(patches, cell)
    hh, ww = grey.shape[1:]
    ch, cw = hh // cell, ww // cell
    magnitude = np.hypot(gx, gy)
    position = _modulo_pi(np.arctan2(gy, gx)) / math.pi * orientations
    low = np.floor(position)
    high_weight = position - low
    low = low.astype(np.int64)
    low[low == orientations] = 0  # % orientations: the position reaches `orientations` at most
    # Pooled by one weighted count per (patch, channel, cell) instead of S x channels x H x W
    # one-hot maps (3x faster, the same sums); channel ``orientations`` is the intensity. The
    # index arrays depend only on the shape, so they are built once per shape (same counts, same
    # summation order: bit-identical to building them every call).
    first_cells, grey_index, length = _pool_indices(count, hh, ww, cell, orientations)
    cells_per_patch = ch * cw
    low_index = first_cells + low * cells_per_patch
    # The upper bin is the next channel, wrapping from the last orientation back to the first.
    high_index = low_index + np.where(low == orientations - 1, (1 - orientations) * cells_per_patch,
                                      cells_per_patch)
    pooled = (np.bincount(low_index.ravel(), (magnitude * (1 - high_weight)).ravel(), length)
              + np.bincount(high_index.ravel(), (magnitude * high_weight).ravel(), length)
              + np.bincount(grey_index, grey.ravel(), length)) / (cell * cell)
    flat = pooled.reshape(count, -1)
    return (flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-6)).astype(np.float32)


def cell_gradients(patches: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences along x and y of S x H x W patches (zero at the borders) and the patches
    themselves, each cropped to whole ``cell`` x ``cell`` blocks."""
    _, h, w = patches.shape
    gx = np.zeros_like(patches)
    gy = np.zeros_like(patches)
    gx[:, :, 1:-1] = patches[:, :, 2:] - patches[:, :, :-2]
    gy[:, 1:-1] = patches[:, 2:] - patches[:, :-2]
    hh, ww = h // cell * cell, w // cell * cell
    return gx[:, :hh, :ww], gy[:, :hh, :ww], patches[:, :hh, :ww]


def _modulo_pi(angles: np.ndarray) -> np.ndarray:
    """``angles % math.pi`` for arctan2's angles (|a| <= pi as the array's float type rounds it), the
    same bits as numpy's remainder (fmod, then the divisor added where the signs differ; an exact
    zero where the angle is +-pi) at a sixth of its cost on float32 (whose fmod is slow)."""
    divisor = angles.dtype.type(math.pi)
    result = angles + angles.dtype.type(0)  # -0.0 becomes +0.0, as remainder makes it
    np.add(result, divisor, where=angles < 0, out=result)
    result[angles == divisor] = 0
    return result


@functools.lru_cache(maxsize=8)
def _pool_indices(count: int, hh: int, ww: int, cell: int, orientations: int) -> tuple[np.ndarray, np.ndarray, int]:
    """For gradient_cells' pooling of S x hh x ww maps: each pixel's (patch, channel 0, cell) bin,
    the intensity channel's bins (flat), and the number of bins. Read-only (cached)."""
    ch, cw = hh // cell, ww // cell
    cells = (np.arange(hh)[:, None] // cell * cw + np.arange(ww)[None] // cell)[None]
    first = np.arange(count)[:, None, None] * (orientations + 1) * (ch * cw)
    first_cells = first + cells
    grey_index = (first_cells + orientations * (ch * cw)).ravel()
    first_cells.setflags(write=False)
    grey_index.setflags(write=False)
    return first_cells, grey_index, count * (orientations + 1) * ch * cw


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
        # The last estimate's response peak: how sure the filter was (TemporalConfig.band_trust).
        self.peak: float | None = None
        self._last: tuple[np.ndarray, tuple, np.ndarray] | None = None  # (frame, place, spectrum)

    def _samples(self, image: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float],
                 angle: float = 0.0) -> np.ndarray:
        """D x S: each scale's patch described, less each feature's mean over the scales, times the
        scale window, along the scale axis. ``angle``: the target's turn (degrees), undone in
        every patch (pipelines/window_geometry.py's convention).
        ``image``: an RGB uint8 frame (only the part the samples cover is made grey) or a grey
        float image in [0, 1]."""
        turned = angle != 0.0
        largest = size_wh[0] * self.factors[-1], size_wh[1] * self.factors[-1]
        if turned:  # a turned patch reaches as far as its half diagonal, any way
            largest = (math.hypot(*largest),) * 2
        x0 = max(0, int(center[0] - largest[0] / 2) - 1)
        y0 = max(0, int(center[1] - largest[1] / 2) - 1)
        x1 = min(image.shape[1], int(math.ceil(center[0] + largest[0] / 2)) + 2)
        y1 = min(image.shape[0], int(math.ceil(center[1] + largest[1] / 2)) + 2)
        if x1 - x0 < 2 or y1 - y0 < 2:  # the target left the frame: nothing to describe
            return np.zeros((self._dimensions(), len(self.factors)), np.float32)
        region = image[y0:y1, x0:x1]
        if region.ndim == 3:
            region = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        # Every scale's affine at once (the same float64 arithmetic per scale, then float32), each
        # patch resampled straight into its slot of the stack.
        w, h = size_wh[0] * self.factors, size_wh[1] * self.factors
        sx, sy = self.model_wh[0] / w, self.model_wh[1] / h
        left, top = center[0] - w / 2 - x0, center[1] - h / 2 - y0
        affines = np.zeros((len(self.factors), 2, 3), np.float32)
        if turned:  # patch = S R(-turn) (region + 0.5 - centre) + model / 2 - 0.5, S per scale
            undo = turn_matrix(-angle)
            linear = np.stack([sx, sy], axis=1)[:, :, None] * undo[None]  # S x 2 x 2
            affines[:, :, :2] = linear
            offset = np.array([center[0] - x0 - 0.5, center[1] - y0 - 0.5])
            affines[:, :, 2] = np.array([self.model_wh[0] / 2 - 0.5, self.model_wh[1] / 2 - 0.5]) - linear @ offset
        else:
            affines[:, 0, 0], affines[:, 0, 2] = sx, -sx * left
            affines[:, 1, 1], affines[:, 1, 2] = sy, -sy * top
        patches = np.empty((len(self.factors), self.model_wh[1], self.model_wh[0]), region.dtype)
        for affine, patch in zip(affines, patches):
            done = cv2.warpAffine(region, affine, self.model_wh, dst=patch, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            if not np.shares_memory(done, patch):  # a type OpenCV returns anew (float64 stays float64)
                patch[...] = done
        columns = gradient_cells(patches, self.config.cell, self.config.orientations).T
        # DC removal (see the module docstring): only how each feature changes with scale counts.
        return (columns - columns.mean(axis=1, keepdims=True)) * self.window[None]

    def _dimensions(self) -> int:
        w, h = self.model_wh
        return (self.config.orientations + 1) * (h // self.config.cell) * (w // self.config.cell)

    def _spectrum(self, image: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float],
                  angle: float = 0.0) -> np.ndarray:
        """The samples' Fourier transform along the scale axis; the last one is kept, since an
        update at the size the estimate kept (the usual case) describes the same patches."""
        key = (tuple(center), tuple(size_wh), angle)
        if self._last is None or self._last[0] is not image or self._last[1] != key:
            self._last = (image, key, np.fft.fft(self._samples(image, center, size_wh, angle), axis=1))
        return self._last[2]

    def update(self, image: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float],
               angle: float = 0.0) -> None:
        """Learn the target's appearance across scales at ``center`` with size ``size_wh`` (turned
        by ``angle``)."""
        spectrum = self._spectrum(image, center, size_wh, angle)
        numerator = self.label_f[None] * np.conj(spectrum)
        denominator = (spectrum * np.conj(spectrum)).real.sum(axis=0)
        if self.numerator is None or self.denominator is None:
            self.numerator, self.denominator = numerator, denominator
            return
        rate = self.config.learning_rate
        self.numerator = (1 - rate) * self.numerator + rate * numerator
        self.denominator = (1 - rate) * self.denominator + rate * denominator

    def initialise(self, images: list[np.ndarray], center: tuple[float, float], size_wh: tuple[float, float],
                   weights: list[float] | None = None) -> None:
        """Set the filter from several same-place images at once (the first frame and photometric
        views of it, pipelines/first_views.py): the numerator and denominator are their
        (weighted) means."""
        weights = [1.0] * len(images) if weights is None else list(weights)
        if not images or len(weights) != len(images):
            raise ValueError("initialise needs at least one image, and one weight per image")
        spectra = [self._spectrum(image, center, size_wh) for image in images]
        self.numerator, self.denominator = weighted_terms(
            [(self.label_f[None] * np.conj(spectrum), (spectrum * np.conj(spectrum)).real.sum(axis=0))
             for spectrum in spectra], weights)

    def estimate(self, image: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float],
                 angle: float = 0.0) -> float:
        """The size change (factor) at which the target at ``center`` (turned by ``angle``) best
        matches what was learned."""
        if self.numerator is None or self.denominator is None:
            return 1.0
        spectrum = self._spectrum(image, center, size_wh, angle)
        joint = (self.numerator * spectrum).sum(axis=0) / (self.denominator + self.config.regularisation)
        response = np.fft.ifft(joint).real
        best = int(np.argmax(response))
        self.peak = float(response[best])
        factor = float(self.factors[best])
        limit = self.config.max_change
        return factor if limit is None else float(np.clip(factor, 1.0 / limit, limit))
