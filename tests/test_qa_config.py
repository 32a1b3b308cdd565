"""QA of configuration values and environment settings: YAML that PyYAML takes without a word but that
cannot mean what its writer meant (a key given twice, aliases expanding to billions of values), values
whose size the run cannot take, and settings read from the environment. One test per defect found."""

from __future__ import annotations

import time

import pytest
import yaml

from augment.config import ExpandConfig, read_yaml_mapping
from augment.imageio import InputError
from augment.object_lock import lease_ttl
from cli_checks import assert_one_line_error, run_cli
from object_store import cache, s3_server  # noqa: F401  (a private cache; an S3 server on loopback)
from pipelines import selftune_config
from segment_factory import tiny_selftune_config, tiny_train_values
from shard_factory import make_shards
from test_hardening_expand import inputs  # noqa: F401  (the same tiny expansion inputs)
from train.config import TrainConfig

# Seven levels of nine aliases: 9**7 strings once expanded, in a few lines.
_LAUGHS = "seed: [&a [x,x,x,x,x,x,x,x,x]" + "".join(
    f", &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg")) + "]\n"


@pytest.mark.parametrize("text, key, lines", [("num: 4\nseed: 1\nnum: 5000\n", "num", "lines 1 and 3"),
                                              ("composition: {width: 64, width: 96}\n", "width", "lines 1 and 1")])
def test_a_key_given_twice_is_one_line_in_expand_and_train(inputs, tmp_path, text, key, lines):
    objects, backgrounds, _ = inputs
    config = tmp_path / "twice.yaml"
    config.write_text(text)
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-w", 1)
    assert_one_line_error(result, 2, str(config), f"key {key!r} given twice ({lines})")
    assert not (tmp_path / "out").exists()
    config.write_text("steps: 10\nbatch_size: 2\nsteps: 20\n")
    with pytest.raises(InputError, match=rf"{config}: .*key 'steps' given twice \(lines 1 and 3\)"):
        TrainConfig.from_yaml(config)


def test_merge_keys_still_take_the_keys_written_beside_them(tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text("base: &base {width: 64, height: 48}\nsized: {<<: *base, width: 96}\n")
    assert read_yaml_mapping(config)["sized"] == {"width": 96, "height": 48}


def test_aliases_that_expand_past_any_config_are_one_line_at_once(inputs, tmp_path):
    objects, backgrounds, _ = inputs
    config = tmp_path / "laughs.yaml"
    config.write_text(_LAUGHS)
    started = time.monotonic()
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-w", 1)
    line = assert_one_line_error(result, 2, str(config), "aliases")
    assert len(line) < 300 and time.monotonic() - started < 5  # was the 24-MB repr of the whole expansion
    config.write_text("a: &a [*a]\n")  # an alias inside its own value
    with pytest.raises(InputError, match="nested too deep"):
        TrainConfig.from_yaml(config)


def test_a_config_nested_thousands_deep_is_one_line(inputs, tmp_path):
    """seed: [[[...]]] 50000 deep was PyYAML's RecursionError traceback in expand and train."""
    objects, backgrounds, _ = inputs
    config = tmp_path / "deep.yaml"
    config.write_text("seed: " + "[" * 50_000 + "]" * 50_000 + "\n")
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-w", 1)
    assert_one_line_error(result, 2, str(config), "not valid YAML (nested too deep)")
    result = run_cli("train", "--shards", tmp_path / "shards", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), "not valid YAML (nested too deep)")


@pytest.mark.parametrize("num, config_text", [(10**23, ""), (100_001, "output: {shard_rows: 1}\n")])
def test_a_num_past_the_shards_a_run_can_name_is_one_line_at_once(inputs, tmp_path, num, config_text):
    """--num 10**23 planned 10**20 shards in memory (the command hung, then filled the memory); 100001
    one-row shards named the last train-100000.parquet, which no reader takes for a shard (5 digits)."""
    objects, backgrounds, _ = inputs
    config = tmp_path / "sizes.yaml"
    config.write_text(config_text + f"num: {num}\n")  # checked first: without the check the CLI would hang
    with pytest.raises(InputError, match=f"{config}: num {num} makes"):
        ExpandConfig.from_yaml(config)
    config.write_text(config_text or "seed: 0\n")
    started = time.monotonic()
    result = run_cli("expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config, "-n", num, "-w", 1)
    assert_one_line_error(result, 2, f"--num: num {num} makes", "at most 100000")
    assert time.monotonic() - started < 5 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("ttl", ["a minute", "0", "-5", "nan", "inf"])
def test_a_bad_lock_ttl_is_one_line_naming_it(inputs, s3_server, monkeypatch, tmp_path, ttl):
    """SYNTH_LOCK_TTL (the object-store lock's lease) was float()'d as it came: a word was a ValueError
    traceback, 0 or a negative took every live holder for dead (two writers in one folder)."""
    objects, backgrounds, config = inputs
    monkeypatch.setenv("SYNTH_LOCK_TTL", ttl)
    with pytest.raises(InputError, match=f"SYNTH_LOCK_TTL must be a number of seconds above 0, not '{ttl}'"):
        lease_ttl()
    if ttl == "a minute":
        out = s3_server.uri(f"ttl-{tmp_path.name}")
        result = run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-w", 1)
        assert_one_line_error(result, 2, "SYNTH_LOCK_TTL")
        assert not s3_server.keys(f"ttl-{tmp_path.name}")
    monkeypatch.setenv("SYNTH_LOCK_TTL", " 90 ")
    assert lease_ttl() == 90.0


@pytest.mark.parametrize("task, model, fragment", [
    ("query_search", {"conversion_width": "x"}, "model: conversion_width: expected a whole number, got 'x'"),
    ("query_search", {"conversion_width": -1}, "model: conversion_width must lie in [1, 4096], got -1"),
    ("query_search", {"skip_channels": 0}, "model: skip_channels must lie in [1, 4096], got 0"),
    ("query_search", {"conversion_layers": 0}, "model: conversion_layers must lie in [1, 4096], got 0"),
    ("query_search", {"readout_gain": float("nan")}, "model: readout_gain: expected a number, got nan"),
    ("query_search", {"pretrained": 3}, "model: pretrained: expected true or false, got 3"),
    ("query_search", {"trainable_blocks": -2}, "model: trainable_blocks must lie in [0, 4096], got -2"),
    ("query_search", {"scale_pairs": [[0.0, 1.0]]}, "model: scale_pairs: expected a list of pairs of numbers above 0"),
    ("segment", {"decoder_channels": "wide"}, "model: decoder_channels: expected a whole number, got 'wide'"),
    ("segment", {"dropout": float("nan")}, "model: dropout: expected a number, got nan"),
])
def test_model_keys_of_the_wrong_type_or_range_are_one_line_naming_the_key(tmp_path, task, model, fragment):
    """A model key was taken as it came: "x" or -1 was torch's traceback as the network was built, a
    readout_gain of nan trained to nan, pretrained: 3 and conversion_layers: 0 were taken without a word."""
    config = tmp_path / "model.yaml"
    segment = ("segment: {classes: {background: [background], top: [top]}}\n" if task == "segment" else "")
    config.write_text(yaml.safe_dump({"task": task, "model": model}) + segment)
    result = run_cli("train", "--shards", tmp_path / "shards", "--out", tmp_path / "run", "--config", config)
    line = assert_one_line_error(result, 2, str(config))
    assert fragment in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, fragment", [
    ({"photo_look_alike": 1.5}, "photo settings: photo_look_alike must lie in [0, 1]"),
    ({"photo_per_scene": [3, 2]}, "photo settings: photo_per_scene must be whole numbers 1 <= lo <= hi <= 16"),
    ({"photo_medium": [192.9, 384.5]}, "photo_medium: expected two whole numbers, got [192.9, 384.5]"),
    ({"photo_medium": [100000, 100000]}, "photo_medium sides in [32, 4096]"),
    ({"photo_min_area": -5}, "photo_min_area must be at least 1, got -5"),
])
def test_photo_keys_out_of_range_are_named_as_the_config_names_them(tmp_path, values, fragment):
    """The real-media keys were checked only once the photos were read, under the photo pairs' own names
    ('photo pairs: look_alike_probability must lie in [0, 1]', a key no train config has); a fractional
    photo_medium was cut down and photo_min_area -5 taken without a word."""
    config = tmp_path / "photos.yaml"
    config.write_text(yaml.safe_dump({"model": {"pretrained": False}, **values}))
    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(config)
    assert str(error.value).startswith(f"{config}: ") and fragment in str(error.value)
    assert TrainConfig.from_yaml(config.write_text("photo_medium: [192.0, 384]\n") and config).photo_medium == (192, 384)


@pytest.mark.parametrize("share", [float("inf"), True])
def test_a_segment_mix_share_that_is_no_finite_number_is_one_line(tmp_path, share):
    """segment.mix {photos: .inf} passed the check (inf >= 0) and was an OverflowError traceback as the
    row groups were listed (round(inf)); true was taken as a share of 1."""
    config = tmp_path / "segment.yaml"
    config.write_text(yaml.safe_dump({"task": "segment", "model": {"pretrained": False}, "segment": {
        "classes": [{"name": "background"}, {"name": "top", "source_labels": ["top"]}],
        "mix": {"photos": share, "composites": 0.5}}}))
    result = run_cli("train", "--shards", tmp_path / "shards", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), "segment: mix shares must be finite numbers")


@pytest.mark.parametrize("overrides, fragment", [
    ({"train_config": 5}, "train_config must be the path of a training YAML, got 5"),
    ({"held_out": {"source": ["a", "b"], "include": ["photo00[6-7]"]}},
     "held_out.source: expected a folder of labelled photos or null, got ['a', 'b']"),
])
def test_selftune_paths_that_are_no_paths_are_one_line(tmp_path, overrides, fragment):
    """train_config: 5 was Path(5)'s TypeError traceback; held_out.source: [a, b] was taken and a
    TypeError traceback once round 0 had trained and came to score its held-out photos."""
    config = tmp_path / "selftune.yaml"
    config.write_text(yaml.safe_dump(tiny_selftune_config(**overrides)))
    with pytest.raises(InputError) as error:
        selftune_config.load(config)
    assert str(error.value).startswith(str(config)) and fragment in str(error.value)


@pytest.mark.parametrize("key, value", [("short_side", 200_000), ("crop_size", 100_000), ("store_short_side", 50_000),
                                        ("eval_size", [48, 100_000])])
def test_segment_sizes_past_any_photo_are_one_line_as_the_config_loads(tmp_path, key, value):
    """segment.short_side 200000 passed (at least 32) and the first photo asked OpenCV for 110 GB: a
    cv2.error traceback, or the run killed for its memory."""
    config = tmp_path / "segment.yaml"
    values = tiny_train_values()
    values["segment"][key] = value
    config.write_text(yaml.safe_dump(values))
    result = run_cli("train", "--shards", tmp_path / "shards", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), "segment: ", key, "4096")


@pytest.mark.parametrize("settings, fragment", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE must be a whole number at least 0, not 'abc'"),
    ({"RANK": "first"}, "RANK must be a whole number at least 0, not 'first'"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 without RANK, MASTER_ADDR, MASTER_PORT: start the ranks with torchrun"),
])
def test_torchrun_settings_that_torchrun_would_not_set_are_one_line(tmp_path, monkeypatch, settings, fragment):
    """int(os.environ['WORLD_SIZE']) was a ValueError traceback for a word; WORLD_SIZE=2 exported in a
    shell without torchrun was torch's rendezvous traceback ('environment variable RANK expected')."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    make_shards(tmp_path / "shards")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": {"pretrained": False}, "steps": 1, "num_workers": 0, "device": "cpu"}))
    result = run_cli("train", "--shards", tmp_path / "shards", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, says", [("1: x\nfoo: y\n", 'key 1 on line 1 is not a name (quote it if it is one: "1")'),
                                        ("segment:\n  no: 3\n  foo: y\n", "key False on line 2 is not a name")])
def test_a_key_that_is_no_name_is_one_line(tmp_path, text, says):
    """YAML reads 1: as a number and no: as false: train sorted its keys with the names, a TypeError
    traceback ('<' not supported between 'str' and 'int'), or that sentence as the segment section's error."""
    config = tmp_path / "keys.yaml"
    config.write_text(text)
    result = run_cli("train", "--shards", tmp_path / "shards", "--out", tmp_path / "run", "--config", config)
    assert_one_line_error(result, 2, str(config), says)
