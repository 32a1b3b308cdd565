"""An objects table (objects.parquet, the cutouts beside the shards) whose footer reads but whose pages
do not: train (in its DataLoader worker), eval and calibrate ended in pyarrow's OSError traceback; expand
said it on two lines. One line naming the file now (augment.objects_table.read_objects_table, one reader)."""

from __future__ import annotations

import pytest

from cli_checks import assert_one_line_error, run_cli
from shard_factory import damage_pages, make_shards

TRAIN = """\
steps: 1
batch_size: 2
medium_size: 64
query_size: 32
num_workers: 1
eval_every: 0
shuffle_buffer: 4
model: {pretrained: false}
"""


@pytest.fixture()
def damaged(tmp_path):
    folder = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder
    damage_pages(folder / "objects.parquet")
    return folder


def test_train_in_a_loader_worker_says_it_in_one_line(damaged, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN)
    result = run_cli("train", "--shards", damaged, "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, f"{damaged / 'objects.parquet'}: not a readable objects table")


@pytest.mark.parametrize("command", ["calibrate", "expand"])
def test_calibrate_and_expand_say_it_in_one_line(command, damaged, tmp_path):
    args = {"calibrate": ["calibrate", "--shards", damaged, "--untrained", "--cases", 2, "--no-verify",
                          "--out", tmp_path / "c.json"],
            "expand": ["expand", damaged, "-b", damaged.parent / "none", "-o", tmp_path / "x", "--num", 2]}[command]
    if command == "expand":
        from sources_factory import make_backgrounds

        args[3] = make_backgrounds(tmp_path / "backgrounds", 1)
    assert_one_line_error(run_cli(*args), 2, f"{damaged / 'objects.parquet'}: not a readable objects table")


def test_an_input_error_from_a_loader_worker_is_its_own_line():
    from augment.imageio import InputError
    from pipelines.command_errors import user_line

    wrapped = InputError("Caught InputError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\naugment.imageio.InputError: a.parquet: broken (x: y)\n")
    assert user_line(wrapped) == "a.parquet: broken (x: y)"
    assert user_line(InputError("b: plain")) == "b: plain"
