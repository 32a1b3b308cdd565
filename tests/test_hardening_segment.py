"""User mistakes in the segmentation commands' configs and inputs: one line naming the key or file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from augment.imageio import InputError
from pipelines.cli import app
from segment_factory import CLASSES, make_scene_photos, make_unlabeled, save_untrained_segmenter, tiny_train_values
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


@pytest.fixture(scope="module")
def segmenter_checkpoint(tmp_path_factory) -> Path:
    return save_untrained_segmenter(tmp_path_factory.mktemp("segmenter") / "checkpoint.pt")


def _extract(*args: str) -> Result:
    return CliRunner().invoke(app, ["extract", *args, "--device", "cpu"])


def test_extract_unknown_cut_class_names_the_config_and_keeps_the_earlier_output(segmenter_checkpoint, tmp_path):
    photos = make_unlabeled(tmp_path / "photos", count=2)
    out = tmp_path / "objects"
    first = _extract(str(photos), "--checkpoint", str(segmenter_checkpoint), "--out", str(out))
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    config = tmp_path / "extract.yaml"
    config.write_text("cut_classes: [nosuch]\n")
    result = _extract(str(photos), "--checkpoint", str(segmenter_checkpoint), "--out", str(out), "--config", str(config))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{config}: cut_classes: nosuch not among the checkpoint's classes" in " ".join(result.output.split())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing removed


def test_extract_missing_photo_or_out_a_file_is_one_line_and_writes_nothing(segmenter_checkpoint, tmp_path):
    missing = tmp_path / "typo.jpg"
    result = _extract(str(missing), "--checkpoint", str(segmenter_checkpoint), "--out", str(tmp_path / "new"))
    assert result.exit_code == 2 and f"{missing}: no such file" in result.output, result.output
    assert not (tmp_path / "new").exists()
    photos = make_unlabeled(tmp_path / "photos", count=1)
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    result = _extract(str(photos), "--checkpoint", str(segmenter_checkpoint), "--out", str(taken))
    assert result.exit_code == 2 and "--out must be a folder" in result.output and "File exists" not in result.output


def test_segment_into_a_file_is_one_line(segmenter_checkpoint, tmp_path):
    photos = make_unlabeled(tmp_path / "photos", count=1)
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    result = CliRunner().invoke(app, ["segment", str(photos), "--checkpoint", str(segmenter_checkpoint),
                                      "--out", str(taken), "--device", "cpu"])
    assert result.exit_code == 2 and "--out must be a folder" in result.output, result.output


def test_photo_shards_and_selftune_into_a_file_are_one_line_naming_the_option(tmp_path):
    labeled = make_scene_photos(tmp_path / "labeled", count=1)
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    result = CliRunner().invoke(app, ["photo-shards", str(labeled), "--out", str(taken)])
    assert result.exit_code == 2 and f"{taken}: --out must be a folder" in result.output, result.output
    result = CliRunner().invoke(app, ["selftune", "--state", str(taken), "--labeled", str(labeled), "--unlabeled",
                                      str(make_unlabeled(tmp_path / "u", count=1)), "--backgrounds", str(tmp_path)])
    assert result.exit_code == 2 and f"{taken}: --state must be a folder" in result.output, result.output
    assert taken.read_text() == "a file"


def test_extract_unknown_config_key_is_named_with_the_known_ones(segmenter_checkpoint, tmp_path):
    photos = make_unlabeled(tmp_path / "photos", count=1)
    config = tmp_path / "extract.yaml"
    config.write_text("min_area: 0.01\nbogus: 3\n")
    result = _extract(str(photos), "--checkpoint", str(segmenter_checkpoint), "--out", str(tmp_path / "o"),
                      "--config", str(config))
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert f"{config}: unknown key(s) bogus (known: min_area," in said, said
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["segment", "extract"])
def test_a_photo_named_twice_is_one_line_not_segmented_or_extracted_twice(segmenter_checkpoint, tmp_path, command):
    """A folder and one of its photos, or a photo by two spellings: it was segmented twice (NAME and NAME-2),
    or its masks and pseudo-labelled photo extracted twice (duplicate training rows)."""
    photos = make_unlabeled(tmp_path / "photos", count=2)
    photo = photos / "unlabeled001.png"
    for named in ([photos, photo], [photo, photos / ".." / "photos" / photo.name]):
        out = tmp_path / f"out-{command}"
        result = CliRunner().invoke(app, [command, *map(str, named), "--checkpoint", str(segmenter_checkpoint),
                                          "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        said = " ".join(result.output.split())
        assert f"{named[1]}: named twice" in said and "name each image or folder once" in said, said
        assert not out.exists()
