"""README's command sequences run as a newcomer runs them, where the step before can end in an
ordinary, non-erroneous state that the step after must take."""

from __future__ import annotations

import json
from pathlib import Path

from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_backgrounds, make_rgba_source

SMALL_EXPAND = "composition: {width: 64, height: 64, max_objects: 2}\noutput: {shard_rows: 4, row_group_rows: 2}\n" \
               "sources: {min_area: 20, superpixel_max_side: 32}\n"


def _extract_that_accepted_nothing(folder: Path) -> Path:
    """What `synth extract` leaves when every mask was rejected ('0 cutouts -> auto'): an empty objects table."""
    from augment.cutouts import write_objects_table

    folder.mkdir(parents=True)
    write_objects_table([], folder / "objects.parquet")
    return folder


def test_expand_with_hand_made_cutouts_and_an_extract_that_accepted_nothing(tmp_path):
    """README: `synth extract unlabeled/ ... --out auto/`, then `synth expand ../shared/data/ccp auto/ ...`.
    An extract whose filters accepted no mask (common in early rounds: '0 cutouts -> auto') made that
    expand stop with exit 2 ('auto/objects.parquet: the objects table is empty') though the hand-made
    cutouts were there; it is now a counted, listed skip of that source."""
    objects, auto = make_rgba_source(tmp_path / "objects"), _extract_that_accepted_nothing(tmp_path / "auto")
    config = tmp_path / "expand.yaml"
    config.write_text(SMALL_EXPAND)
    out = tmp_path / "grown"
    result = run_cli("expand", objects, auto, "-b", make_backgrounds(tmp_path / "bg"), "-o", out, "-n", 4,
                     "-w", 1, "-c", config)
    assert result.exit_code == 0, result.output
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert [entry["path"] for entry in skipped] == [str(auto / "objects.parquet")], skipped
    assert "no cutouts" in skipped[0]["reason"]


def test_expand_of_only_an_extract_that_accepted_nothing_is_one_line(tmp_path):
    auto = _extract_that_accepted_nothing(tmp_path / "auto")
    out = tmp_path / "grown"
    assert_one_line_error(run_cli("expand", auto, "-b", make_backgrounds(tmp_path / "bg"), "-o", out, "-n", 4,
                                  "-w", 1), 2, "no usable objects found", "no cutouts")
    assert not out.exists()


def test_calibrate_with_a_misspelt_category_is_one_line_naming_the_known_ones(tmp_path, caplog):
    """README: `synth calibrate --photos ... --categories coat,dress,skirt`. A misspelt name ('coatt')
    matched no object without a word, so the threshold was calibrated on the other categories alone;
    it is now one line naming the known labels, as a misspelt `keep_labels` is (augment.label_names);
    a misspelt --drop-labels name is a warning, as `drop_labels`' is."""
    from pipelines.calibration import photo_cases
    from sources_factory import make_street_photos

    photos = make_street_photos(tmp_path / "street")
    with caplog.at_level("WARNING", logger="augment.label_names"):
        assert photo_cases([photos], 2, categories=["coat"], drop_labels=["skinn"], min_area=50)
    assert "--drop-labels: 'skinn' not a label of the sources" in caplog.text
    out = tmp_path / "threshold.json"
    result = run_cli("calibrate", "--photos", photos, "--out", out, "--untrained", "--no-verify", "--cases", 2,
                     "--min-area", 50, "--device", "cpu", "--categories", "coatt,skirt")
    assert_one_line_error(result, 2, "--categories: 'coatt' not a label of the sources (known: coat, null, skirt)")
    assert not out.exists()
    # a category also dropped: its objects were left out (dropped wins) and the rest calibrated, without a word
    result = run_cli("calibrate", "--photos", photos, "--out", out, "--untrained", "--no-verify", "--cases", 2,
                     "--min-area", 50, "--device", "cpu", "--categories", "coat,skirt", "--drop-labels", "skin,coat")
    assert_one_line_error(result, 2, "--categories and --drop-labels both name 'coat'")
    assert not out.exists()


def test_training_on_photos_with_a_misspelt_query_category_is_one_line(tmp_path):
    """The same for `synth train`'s photo_query_categories (README: real media): 'coatt' left the coats
    out of the queries without a word."""
    import pytest

    from augment.imageio import InputError
    from sources_factory import make_street_photos
    from train.data import PairConfig
    from train.photo_data import PhotoMediaConfig, PhotoPairs

    photos = str(make_street_photos(tmp_path / "street"))
    config = PhotoMediaConfig(sources=(photos,), min_area=50, query_categories=("coatt", "skirt"))
    with pytest.raises(InputError, match=r"^photo_query_categories: 'coatt' not a label of the sources \(known: "):
        PhotoPairs(config, PairConfig())
