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


@pytest.mark.parametrize("steps", ["10", [5]])
def test_a_finetune_steps_of_another_type_is_its_own_line_under_a_continued_schedule(steps):
    """The continue-schedule check added finetune_steps to train.steps before its type was checked: a
    TypeError traceback, where 'finetune_steps must be an integer >= 0' was the line."""
    from segment_factory import tiny_selftune_config

    with pytest.raises(InputError, match="finetune_steps must be an integer >= 0"):
        selftune_config.resolve(tiny_selftune_config(finetune_schedule="continue", finetune_steps=steps))
