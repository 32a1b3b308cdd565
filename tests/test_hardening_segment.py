"""User mistakes in the segmentation commands' configs and inputs: one line naming the key or file."""

from __future__ import annotations

import pytest

from augment.imageio import InputError
from segment_factory import CLASSES, tiny_train_values
from train.config import TrainConfig


@pytest.mark.parametrize("key, value, expected", [
    ("short_side", "big", "short_side: expected a whole number, got 'big'"),
    ("crop_size", 1.5, "crop_size: expected a whole number, got 1.5"),
    ("store_short_side", [], "store_short_side: expected a whole number, got []"),
    ("scale_range", "x", "scale_range: expected a pair of numbers [low, high], got 'x'"),
    ("eval_size", 5, "eval_size: expected [height, width] in whole numbers, got 5"),
    ("mix", 3, "mix: expected a mapping of kind -> share, got 3"),
    ("hflip", "maybe", "hflip: expected true or false, got 'maybe'"),
    ("colour_jitter", "lots", "colour_jitter: expected a number, got 'lots'"),
    ("eval_fraction", None, "eval_fraction: expected a number, got None"),
])
def test_segment_keys_of_the_wrong_type_name_the_key(key, value, expected):
    with pytest.raises(InputError) as error:
        TrainConfig(**tiny_train_values(segment={"classes": CLASSES, key: value}))
    assert f"segment: {expected}" in str(error.value)
