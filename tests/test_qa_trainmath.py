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
