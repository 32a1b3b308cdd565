"""Segmentation-style losses for query search logits (N x 1 x H x W) and the box head.

All pixel losses take raw logits and a target mask in [0, 1] of the same shape and return a
scalar mean. ``weight`` (broadcastable to the logits) rescales pixels, e.g. to ignore padding.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[..., torch.Tensor]


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.expand_as(values).to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def l2_loss(logits: torch.Tensor, target: torch.Tensor,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise mean of (sigmoid(logits) - target)^2."""
    return _weighted_mean((torch.sigmoid(logits) - target).square(), weight)


def double_margin_loss(logits: torch.Tensor, target: torch.Tensor,
                       high: float | torch.Tensor = 0.9, low: float | torch.Tensor = 0.1,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of y * max(H - d, 0)^2 + (1 - y) * max(d - L, 0)^2 with d = sigmoid(logits).

    Object pixels are only pushed up until they reach H and background pixels only down until
    they fall below L, so confident pixels stop contributing. ``high``/``low`` are scalars or
    per-pixel tensors (see :func:`border_relaxed_margins`).
    """
    d = torch.sigmoid(logits)
    pos = target * (high - d).clamp_min(0.0).square()
    neg = (1.0 - target) * (d - low).clamp_min(0.0).square()
    return _weighted_mean(pos + neg, weight)


def border_relaxed_margins(target: torch.Tensor, high: float = 0.9, low: float = 0.1,
                           border_px: int = 3, border_high: float = 0.6,
                           border_low: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel (high, low) thresholds, looser within ``border_px`` of the mask's boundary.

    The band is dilation minus erosion of the binarised target (max-pooling with a
    (2 * border_px + 1) square window), because labels there are the least certain.
    """
    binary = (target > 0.5).to(target.dtype)
    k = 2 * border_px + 1
    dilated = F.max_pool2d(binary, k, stride=1, padding=border_px)
    eroded = 1.0 - F.max_pool2d(1.0 - binary, k, stride=1, padding=border_px)
    band = (dilated - eroded) > 0
    high_map = torch.where(band, border_high, high).to(target.dtype)
    low_map = torch.where(band, border_low, low).to(target.dtype)
    return high_map, low_map


def bce_loss(logits: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise binary cross-entropy on logits (numerically stable)."""
    return _weighted_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"),
                          weight)


def dice_loss(logits: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor | None = None, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss on sigmoid(logits), computed per sample then averaged.

    1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth); ``smooth`` keeps empty targets
    (negatives, where the query is absent) defined and rewards predicting nothing there.
    """
    p = torch.sigmoid(logits)
    if weight is not None:
        weight = weight.expand_as(p).to(p.dtype)
        p, target = p * weight, target * weight
    inter = (p * target).flatten(1).sum(1)
    total = p.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of :func:`bce_loss` and :func:`dice_loss`."""
    return bce_loss(logits, target, weight) + dice_loss(logits, target, weight)


def box_loss(pred: torch.Tensor, target: torch.Tensor, positive: torch.Tensor,
             beta: float = 0.05) -> torch.Tensor:
    """Smooth-L1 between normalised boxes (N x 4), averaged over positive samples only.

    ``positive`` (N, bool or 0/1) marks samples where the query is present; with none the loss
    is 0 (still differentiable, so it can be summed unconditionally).
    """
    per_sample = F.smooth_l1_loss(pred, target, beta=beta, reduction="none").mean(dim=1)
    positive = positive.to(per_sample.dtype)
    return (per_sample * positive).sum() / positive.sum().clamp_min(1.0)


def _double_margin_from_kwargs(high: float = 0.9, low: float = 0.1,
                               border_px: int = 0, border_high: float = 0.6,
                               border_low: float = 0.4) -> LossFn:
    # Checked where the loss is built (the config's check): a border_px of 1.5 was max_pool2d's
    # TypeError at the first step; low >= high gave no gradient to any pixel in between, without a word.
    if not (isinstance(border_px, int) and not isinstance(border_px, bool) and border_px >= 0):
        raise ValueError(f"border_px must be a whole number of pixels, at least 0, not {border_px!r}")
    pairs = [("low", low, "high", high)] + ([("border_low", border_low, "border_high", border_high)]
                                            if border_px > 0 else [])
    for low_name, low_value, high_name, high_value in pairs:
        if not 0.0 <= low_value < high_value <= 1.0:
            raise ValueError(f"double_margin needs 0 <= {low_name} < {high_name} <= 1 (sigmoid outputs), "
                             f"not {low_name} {low_value!r} and {high_name} {high_value!r}")

    def loss(logits: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        if border_px > 0:
            hi, lo = border_relaxed_margins(target, high, low, border_px, border_high, border_low)
            return double_margin_loss(logits, target, hi, lo, weight)
        return double_margin_loss(logits, target, high, low, weight)

    return loss


def build_loss(name: str, **kwargs: float) -> LossFn:
    """Pixel loss ``fn(logits, target, weight=None)`` by name.

    Names: "l2", "bce", "dice", "bce+dice" (no kwargs; dice accepts ``smooth``) and
    "double_margin" (kwargs ``high``, ``low``, and ``border_px`` > 0 to relax thresholds near
    mask borders to ``border_high``/``border_low``).
    """
    if name == "double_margin":
        return _double_margin_from_kwargs(**kwargs)
    if name == "dice":
        smooth = kwargs.pop("smooth", 1.0)
        if not smooth >= 0.0:  # a negative one divides by ~0 where the prediction's sum nears it
            raise ValueError(f"dice's smooth must be at least 0, not {smooth!r}")
        if kwargs:
            raise ValueError(f"unexpected arguments for dice: {sorted(kwargs)}")
        return lambda logits, target, weight=None: dice_loss(logits, target, weight, smooth)
    simple: dict[str, LossFn] = {"l2": l2_loss, "bce": bce_loss, "bce+dice": bce_dice_loss}
    if name not in simple:
        raise ValueError(f"unknown loss {name!r}; choose from "
                         f"{sorted([*simple, 'dice', 'double_margin'])}")
    if kwargs:
        raise ValueError(f"unexpected arguments for {name}: {sorted(kwargs)}")
    return simple[name]
