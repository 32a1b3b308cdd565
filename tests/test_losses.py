"""Hand-computed checks of train/losses.py on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import (bce_loss, border_relaxed_margins, box_loss, build_loss, dice_loss,
                          double_margin_loss, l2_loss)

# logit 0 -> d = 0.5; logit ln(3) -> d = 0.75; logit -ln(3) -> d = 0.25.
LN3 = math.log(3.0)


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, 1, -1)


def test_l2_loss_by_hand() -> None:
    logits, target = _t([0.0, LN3, -LN3]), _t([1.0, 1.0, 0.0])
    # (0.5-1)^2 = 0.25, (0.75-1)^2 = 0.0625, (0.25-0)^2 = 0.0625 -> mean 0.375 / 3 = 0.125
    assert l2_loss(logits, target).item() == pytest.approx(0.125)
    # weight [1, 0, 1]: (0.25 + 0.0625) / 2 = 0.15625
    assert l2_loss(logits, target, _t([1.0, 0.0, 1.0])).item() == pytest.approx(0.15625)


def test_double_margin_scalar_thresholds_by_hand() -> None:
    logits, target = _t([0.0, LN3, -LN3, LN3]), _t([1.0, 1.0, 0.0, 0.0])
    # H = 0.7, L = 0.3:
    #  y=1, d=0.5 : (0.7-0.5)^2 = 0.04
    #  y=1, d=0.75: max(0.7-0.75, 0)^2 = 0
    #  y=0, d=0.25: max(0.25-0.3, 0)^2 = 0
    #  y=0, d=0.75: (0.75-0.3)^2 = 0.2025
    # mean = 0.2425 / 4 = 0.060625
    assert double_margin_loss(logits, target, 0.7, 0.3).item() == pytest.approx(0.060625)


def test_double_margin_per_pixel_thresholds_by_hand() -> None:
    logits, target = _t([0.0, 0.0]), _t([1.0, 0.0])
    high, low = _t([0.6, 0.9]), _t([0.1, 0.4])
    # pixel 0 (y=1): (0.6-0.5)^2 = 0.01; pixel 1 (y=0): (0.5-0.4)^2 = 0.01 -> mean 0.01
    assert double_margin_loss(logits, target, high, low).item() == pytest.approx(0.01)


def test_double_margin_zero_when_beyond_margins() -> None:
    target = _t([1.0, 0.0, 1.0])
    logits = torch.where(target > 0.5, 5.0, -5.0)  # d = 0.993 / 0.007
    assert double_margin_loss(logits, target, 0.9, 0.1).item() == 0.0


def test_border_relaxed_margins_band() -> None:
    target = torch.zeros(1, 1, 9, 9)
    target[..., 3:6, 3:6] = 1.0
    high, low = border_relaxed_margins(target, high=0.9, low=0.1, border_px=1,
                                       border_high=0.6, border_low=0.4)
    # 3x3 square: dilation by 1 covers rows/cols 2..6, erosion leaves only (4, 4).
    band = torch.zeros(9, 9, dtype=torch.bool)
    band[2:7, 2:7] = True
    band[4, 4] = False
    assert torch.equal(high[0, 0] == 0.6, band) and torch.equal(low[0, 0] == 0.4, band)
    assert torch.all(high[0, 0][~band] == 0.9) and torch.all(low[0, 0][~band] == 0.1)


def test_bce_by_hand() -> None:
    logits, target = _t([0.0, LN3]), _t([1.0, 0.0])
    # -ln(0.5) = ln 2; -ln(1 - 0.75) = ln 4 -> mean (ln 2 + ln 4) / 2 = 1.5 ln 2
    assert bce_loss(logits, target).item() == pytest.approx(1.5 * math.log(2.0))


def test_dice_by_hand() -> None:
    logits, target = _t([LN3, -LN3]), _t([1.0, 0.0])
    # p = [0.75, 0.25]: inter = 0.75, sum p + sum y = 1 + 1 = 2
    # smooth=1: 1 - (1.5 + 1) / (2 + 1) = 1/6
    assert dice_loss(logits, target).item() == pytest.approx(1.0 / 6.0)
    assert dice_loss(logits, target, smooth=0.0).item() == pytest.approx(0.25)  # 1 - 1.5/2


def test_perfect_predictions_give_near_zero() -> None:
    target = _t([1.0, 0.0, 1.0, 0.0])
    logits = (target * 2 - 1) * 30.0
    for name in ("l2", "bce", "dice", "bce+dice", "double_margin"):
        assert build_loss(name)(logits, target).item() == pytest.approx(0.0, abs=1e-6), name


def test_box_loss_only_positives() -> None:
    pred = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[0.1, 0.1, 0.7, 0.5], [0.9, 0.9, 0.1, 0.1]])
    # sample 0: one coordinate off by 0.2 > beta=0.05 -> 0.2 - 0.025 = 0.175, mean over 4 = 0.04375
    # sample 1 is negative and ignored.
    loss = box_loss(pred, target, torch.tensor([True, False]), beta=0.05)
    assert loss.item() == pytest.approx(0.04375)
    assert box_loss(pred, target, torch.tensor([False, False])).item() == 0.0


@pytest.mark.parametrize("name", ["l2", "bce", "dice", "bce+dice", "double_margin"])
def test_gradient_signs(name: str) -> None:
    logits = torch.zeros(1, 1, 1, 2, requires_grad=True)
    target = _t([1.0, 0.0]).float()
    build_loss(name)(logits, target).backward()
    # Descent must raise the object pixel's logit and lower the background's.
    assert logits.grad[0, 0, 0, 0] < 0 and logits.grad[0, 0, 0, 1] > 0


def test_build_loss_double_margin_border_and_errors() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1.0
    logits = torch.zeros(1, 1, 8, 8)
    relaxed = build_loss("double_margin", border_px=1)(logits, target)
    strict = build_loss("double_margin")(logits, target)
    assert relaxed < strict
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal")
    with pytest.raises(ValueError):
        build_loss("l2", high=0.5)
