"""README's claims checked as a user relies on them (an audit of the data, training and segmentation side).

A user error is exit code 2, "one line naming the file, key or option; nothing written" (README, Exit
codes): a run that stops on its inputs must leave an earlier run's output in ``--out`` as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli_checks import assert_one_line_error
from pipelines.cli import app
from segment_factory import make_scene_photos, make_unlabeled, save_untrained_segmenter
from sources_factory import make_backgrounds, make_rgba_source

SMALL_EXPAND = "composition: {width: 64, height: 64, max_objects: 2}\noutput: {shard_rows: 4, row_group_rows: 2}\n" \
               "sources: {min_area: 20, superpixel_max_side: 32}\n"


def _cli(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_expand_with_a_source_of_no_known_format_keeps_the_earlier_run(tmp_path):
    """`synth expand` into a finished folder with a source whose format cannot be told stops with one line
    (exit 2) before any work: the earlier run's manifest.json and shards stay, so `train` still reads them."""
    sources, backgrounds = make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds")
    config = tmp_path / "expand.yaml"
    config.write_text(SMALL_EXPAND)
    out = tmp_path / "out"
    common = ["-b", backgrounds, "-o", out, "-w", "1", "-c", config]
    first = _cli("expand", sources, "-n", 8, *common)
    assert first.exit_code == 0, first.output
    before = _files(out)
    assert "manifest.json" in before and "train-00001.parquet" in before
    unknown = tmp_path / "notes"
    unknown.mkdir()
    (unknown / "readme.txt").write_text("not a source")
    # a smaller --num too: the shard past it must not be removed by a run that stops on its sources
    assert_one_line_error(_cli("expand", unknown, "-n", 4, *common), 2, str(unknown), "cannot tell the source format")
    assert _files(out) == before


def test_expand_with_sources_that_give_no_object_keeps_the_earlier_run(tmp_path):
    sources, backgrounds = make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds")
    config = tmp_path / "expand.yaml"
    config.write_text(SMALL_EXPAND)
    out = tmp_path / "out"
    common = ["-b", backgrounds, "-o", out, "-w", "1", "-c", config, "-n", 8]
    assert _cli("expand", sources, *common).exit_code == 0
    before = _files(out)
    for path in sources.rglob("*.png"):  # the same source, every cutout now unreadable
        path.write_bytes(b"")
    assert_one_line_error(_cli("expand", sources, *common), 2, "no usable objects found")
    assert _files(out) == before


@pytest.mark.parametrize("mistake", ["missing", "no_format", "no_match"])
def test_photo_shards_user_error_keeps_the_earlier_output(tmp_path, mistake):
    photos = make_scene_photos(tmp_path / "photos", count=3)
    out = tmp_path / "shards"
    first = _cli("photo-shards", photos, "--out", out)
    assert first.exit_code == 0, first.output
    before = _files(out)
    assert "manifest.json" in before and "photos-00000.parquet" in before
    if mistake == "missing":
        args, fragment = [tmp_path / "typo"], "no such file or directory"
    elif mistake == "no_format":
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "readme.txt").write_text("not a source")
        args, fragment = [tmp_path / "notes"], "cannot tell the source format"
    else:
        args, fragment = [photos, "--include", "nosuch*"], "no labelled photos found"
    assert_one_line_error(_cli("photo-shards", *args, "--out", out), 2, fragment)
    assert _files(out) == before


def test_extract_of_no_readable_photo_keeps_the_earlier_output(tmp_path):
    checkpoint = save_untrained_segmenter(tmp_path / "checkpoint.pt")
    photos = make_unlabeled(tmp_path / "photos", count=2)
    out = tmp_path / "auto"
    common = ["--checkpoint", checkpoint, "--out", out, "--device", "cpu"]
    first = _cli("extract", photos, *common)
    assert first.exit_code == 0, first.output
    before = _files(out)
    assert "extract.json" in before
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    result = _cli("extract", broken, *common)
    assert result.exit_code == 2, result.output
    assert "no readable photo" in " ".join(result.output.split())
    assert _files(out) == before
    assert (out / "previews").is_dir()


@pytest.mark.parametrize("where", ["option", "config"])
def test_train_zero_steps_is_one_line_not_a_run_without_a_checkpoint(tmp_path, where):
    """`synth train --steps 0` (or `steps: 0`) ended with exit 0, no checkpoint.pt and a warning about a
    checkpoint that did not exist; README: a run always ends with its checkpoint, numeric options are
    range-checked. It is now one line, before anything is written."""
    from shard_factory import make_shards

    shards = make_shards(tmp_path / "shards").folder
    config = tmp_path / "train.yaml"
    config.write_text("batch_size: 2\nquery_size: 32\nmedium_size: 64\nnum_workers: 0\ndevice: cpu\n"
                      + ("steps: 0\n" if where == "config" else ""))
    out = tmp_path / "run"
    args = ["train", "--shards", shards, "--out", out, "--config", config] + (["--steps", 0] if where == "option" else [])
    line = assert_one_line_error(_cli(*args), 2, "steps must be at least 1")
    assert (str(config) in line) == (where == "config")
    assert not out.exists()


def test_selftune_stopped_in_round_0_takes_the_corrected_config(tmp_path):
    """A first selftune run whose labeled.include matched no photo stopped (exit 2) in round 0; the
    corrected config was then refused as 'made with another config', and --force-config did not help
    either (it waits for round 1, which round 0 never reached): the state folder had to be deleted by hand."""
    import yaml

    from segment_factory import make_noise_backgrounds, tiny_selftune_config

    labeled = make_scene_photos(tmp_path / "labeled", count=8)
    unlabeled = make_unlabeled(tmp_path / "unlabeled", count=2)
    backgrounds = make_noise_backgrounds(tmp_path / "backgrounds")
    typo, fixed = tmp_path / "typo.yaml", tmp_path / "fixed.yaml"
    typo.write_text(yaml.safe_dump(tiny_selftune_config(labeled={"include": ["foto00[0-5]"]}, max_rounds=1)))
    fixed.write_text(yaml.safe_dump(tiny_selftune_config(max_rounds=1)))
    state = tmp_path / "state"
    common = ["--state", state, "--labeled", labeled, "--unlabeled", unlabeled, "--backgrounds", backgrounds]
    first = _cli("selftune", *common, "--config", typo)
    assert first.exit_code == 2 and "no labelled photos found" in first.output, first.output
    second = _cli("selftune", *common, "--config", fixed)
    assert second.exit_code == 0, second.output
    saved = yaml.safe_load((state / "config.json").read_text())
    assert saved["labeled"]["include"] == ["photo00[0-5]"]
    assert (state / "metrics.jsonl").read_text().count("\n") == 1  # round 1 ran with the corrected config


def test_eval_out_is_strict_json_when_a_metric_has_nothing_to_measure(tmp_path):
    """`synth eval --out metrics.json` wrote `NaN` for a metric with nothing to measure (the false-alarm
    rate without negatives; a segmenter's IoU of a class neither present nor predicted): not JSON
    (JSON.parse, jq 1.6, json.loads with parse_constant rejecting it fail). It is null now."""
    import json

    from shard_factory import make_shards

    shards = make_shards(tmp_path / "shards").folder
    config = tmp_path / "train.yaml"
    config.write_text("negative_fraction: 0.0\nbatch_size: 2\nquery_size: 32\nmedium_size: 64\nnum_workers: 0\n"
                      "model: {pretrained: false}\n")
    out = tmp_path / "metrics.json"
    result = _cli("eval", "--untrained", "--config", config, "--shards", shards, "--split", "all", "--batches", 1,
                  "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    metrics = json.loads(out.read_text(), parse_constant=refuse)["metrics"]
    assert metrics["false_alarm"] is None
    assert isinstance(metrics["hit_rate"], float)


def test_selftune_metrics_lines_are_strict_json_when_a_class_iou_has_nothing_to_measure(tmp_path):
    """metrics.jsonl (and each round's score.json) wrote `NaN` for a class absent from the held-out
    photos and never predicted, as `synth eval --out` did: null now."""
    import json

    from pipelines.selftune_metrics import METRICS_FILE, record_metrics

    class Tune:  # the parts of SelfTune that record_metrics reads
        dir = tmp_path
        state = {"stop_reason": None}

        def round_score(self, round_index):
            return {"miou": 0.5, "pixel_accuracy": 0.9, "per_class_iou": {"background": 0.9, "hat": float("nan")},
                    "held_out_photos": 2}

        def round_miou(self, round_index):
            return 0.4

        def training_shards(self, round_index):
            return []

        def round_checkpoint(self, round_index):
            return tmp_path / f"round-{round_index:03d}" / "checkpoint.pt"

        def step_dir(self, round_index, step):
            return tmp_path / f"round-{round_index:03d}" / step

        def composites_dir(self, round_index):
            return tmp_path / f"round-{round_index:03d}" / "composites"

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    record_metrics(Tune(), 1, {"train": 1.0})
    line = json.loads((tmp_path / METRICS_FILE).read_text(), parse_constant=refuse)
    assert line["per_class_iou"] == {"background": 0.9, "hat": None}


@pytest.mark.parametrize("task", ["query_search", "segment"])
def test_an_unknown_model_key_is_one_line_naming_it_and_the_known_ones(tmp_path, task):
    """`model: {foo: 1}` said "SearchNetConfig.__init__() got an unexpected keyword argument 'foo'"."""
    from augment.imageio import InputError
    from train.config import TrainConfig

    config = tmp_path / "train.yaml"
    config.write_text(f"task: {task}\nmodel: {{foo: 1, pretrained: false}}\n")
    with pytest.raises(InputError) as refused:
        TrainConfig.from_yaml(config)
    message = str(refused.value)
    assert message.startswith(f"{config}: model: unknown key(s) foo for task {task} (known: ")
    assert "pretrained" in message and "__init__" not in message


def test_num_0_in_an_expand_or_selftune_config_is_one_line_naming_the_file_and_key(tmp_path):
    """`num: 0` passed the config's checks; expand then said "num must be at least 1" naming no file,
    and selftune failed only in round 1 ("manifest.json lists no shards")."""
    from augment.config import ExpandConfig
    from augment.imageio import InputError
    from pipelines import selftune_config

    config = tmp_path / "expand.yaml"
    config.write_text("num: 0\n")
    with pytest.raises(InputError, match=f"^{config}: num must be a positive integer, got 0$"):
        ExpandConfig.from_yaml(config)
    shipped = Path(__file__).resolve().parents[1] / "configs" / "ccp_selftune.yaml"
    selftune_config.load(shipped)  # valid as shipped
    with pytest.raises(InputError, match="expand: num must be a positive integer, got 0$"):
        selftune_config.load(shipped, {"expand": {"num": 0}})
