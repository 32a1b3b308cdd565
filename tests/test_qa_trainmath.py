"""The training maths checked against independent reference computations on tiny tensors: resume with
dropout, the losses' parameters, ..."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from augment.config import SourceConfig
from augment.photo_shards import write_photo_shards
from segment_factory import make_scene_photos, tiny_train_values
from train.config import TrainConfig
from train.data import make_loader
from train.loop import train


class _Numbers(IterableDataset):
    seed = 3

    def __iter__(self):
        return iter(range(4))


def test_a_loaders_new_iterator_leaves_torchs_global_generator_alone():
    """Each new loader iterator (an epoch, a resumed run's first batch) drew its workers' base seed from
    torch's global generator, the one dropout draws from."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for workers in (0, 1):
        iter(make_loader(_Numbers(), 2, workers))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainmath")
    folder = root / "photos"
    write_photo_shards([make_scene_photos(root / "labeled", count=6)], folder, SourceConfig(), short_side=64)
    return folder


def test_a_segment_run_with_dropout_resumes_exactly(photos, tmp_path):
    """The segmenter's default dropout (0.1): a resumed run's masks were drawn from a global generator one
    number on from the uninterrupted run's (its loader's first iterator took one), so its losses differed."""
    values = {"model": {"pretrained": False, "decoder_channels": 8, "dropout": 0.1}, "decay_steps": 4}
    full = train(TrainConfig(**tiny_train_values(steps=4, **values)), [photos], tmp_path / "full", show_progress=False)
    train(TrainConfig(**tiny_train_values(steps=2, **values)), [photos], tmp_path / "split", show_progress=False)
    second = train(TrainConfig(**tiny_train_values(steps=4, **values)), [photos], tmp_path / "split", resume=True,
                   show_progress=False)
    assert np.isfinite(full.losses).all()
    np.testing.assert_array_equal(second.losses, full.losses[2:])


@pytest.mark.parametrize("name, params, key", [
    ("double_margin", {"border_px": 1.5}, "border_px"),  # max_pool2d's TypeError at the first step
    ("double_margin", {"border_px": -1}, "border_px"),
    ("double_margin", {"high": 0.1, "low": 0.9}, "low"),  # no gradient between the margins, without a word
    ("double_margin", {"high": 1.5}, "high"),
    ("double_margin", {"border_px": 2, "border_high": 0.3, "border_low": 0.5}, "border_low"),
    ("dice", {"smooth": -1.0}, "smooth"),
])
def test_loss_parameters_out_of_their_range_are_one_line_naming_the_key(name, params, key):
    from augment.imageio import InputError

    with pytest.raises(InputError, match=f"loss: .*{key}"):
        TrainConfig(loss=name, loss_params=params)


def test_double_margin_with_relaxed_borders_matches_its_formula():
    """Reference: a pixel is in the border band when its (2 border_px + 1) square, clipped to the image,
    holds both object and background; there the margins are border_high / border_low."""
    from train.losses import build_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 7, 9, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(2, 1, 7, 9, dtype=torch.float64)
    target[0, 0, 2:5, 3:7] = 1.0
    target[1, 0, :, :2] = 1.0
    weight = (torch.rand(2, 1, 7, 9) > 0.3).double()
    r = 1
    band = torch.zeros_like(target, dtype=torch.bool)
    for n in range(2):
        for y in range(7):
            for x in range(9):
                window = target[n, 0, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
                band[n, 0, y, x] = bool(window.max() > 0.5) and bool(window.min() < 0.5)
    high = torch.where(band, 0.7, 0.95).double()
    low = torch.where(band, 0.3, 0.05).double()
    d = torch.sigmoid(logits)
    per_pixel = target * (high - d).clamp_min(0) ** 2 + (1 - target) * (d - low).clamp_min(0) ** 2
    expected = (per_pixel * weight).sum() / weight.sum()
    loss = build_loss("double_margin", high=0.95, low=0.05, border_px=r, border_high=0.7, border_low=0.3)
    torch.testing.assert_close(loss(logits, target, weight), expected)
    assert torch.autograd.gradcheck(lambda x: loss(x, target, weight), (logits,))
