"""QA of the data and training side as a new user meets it: unusual-but-legitimate inputs (EXIF-rotated
photos, palette masks, nested folders), bad inputs (configs that are not text, broken COCO entries), and
re-runs that must not take an older run's output for the new one's. One test per defect found."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_backgrounds, make_rgba_source

TINY = "sources: {min_area: 50}\ncomposition: {width: 64, height: 64}\noutput: {shard_rows: 10, row_group_rows: 5}\n"


@pytest.fixture()
def inputs(tmp_path) -> tuple[Path, Path, Path]:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    return make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds"), config


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize("content", [b"sources:\n  min_area: 50  # caf\xe9 (Latin-1)\n", b"\x7fELF\x02\x01\x01\x00\xd0\xff"])
def test_a_config_that_is_not_utf8_text_is_one_line_in_expand_and_train(inputs, tmp_path, content):
    objects, backgrounds, _ = inputs
    config = tmp_path / "latin1.yaml"
    config.write_bytes(content)
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, str(config), "not UTF-8")
    assert not (tmp_path / "out").exists()
    result = run_cli("train", "--shards", tmp_path / "none", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), "not UTF-8")


def test_a_config_that_is_a_folder_is_named_a_folder_and_a_pipe_is_read(inputs, tmp_path):
    objects, backgrounds, config = inputs
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", objects, "-n", 2)
    assert_one_line_error(result, 2, str(objects), "is a folder")
    fifo = tmp_path / "config.fifo"  # what `--config <(...)` hands over
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(config.read_text()))
    writer.start()
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", fifo, "-n", 2, "-w", 1)
    writer.join()
    assert result.exit_code == 0, result.output


def test_distortions_given_as_a_list_is_one_line_naming_the_key(inputs, tmp_path):
    objects, backgrounds, _ = inputs
    config = tmp_path / "list.yaml"
    config.write_text("distortions: [affine]\n")
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-n", 2)
    assert_one_line_error(result, 2, str(config), "distortions: expected a mapping")
