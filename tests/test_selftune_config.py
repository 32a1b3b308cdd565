"""selftune's config checks at load time (pipelines/selftune_config.py), before any round runs."""

from __future__ import annotations

import pytest

from augment.imageio import InputError
from pipelines import selftune_config


def test_a_continued_schedule_inside_the_warm_up_is_refused_at_load_naming_its_keys():
    """finetune_schedule continue decays over train.steps + finetune_steps: with those under the warm-up,
    round 1's training failed mid-run on a decay_steps the user never wrote; now one line at load."""
    from segment_factory import tiny_selftune_config, tiny_train_values

    values = tiny_selftune_config(finetune_schedule="continue",
                                  train={**tiny_train_values(), "steps": 4, "warmup_steps": 10})
    with pytest.raises(InputError, match=r"train.steps \+ finetune_steps \(4 \+ 4\).*train.warmup_steps \(10\)"):
        selftune_config.resolve(values)
    selftune_config.resolve(tiny_selftune_config(finetune_schedule="continue",
                                                 train={**tiny_train_values(), "steps": 4, "warmup_steps": 7}))
