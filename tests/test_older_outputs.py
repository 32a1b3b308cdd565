"""Outputs of older synth versions read or continued by today's code: each works, or is one line
saying what is too old and what to do, never a traceback or a silent mix."""

from __future__ import annotations

import pyarrow.parquet as pq

from augment.expand import run_expand
from augment.schema import COMPOSITE_SCHEMA
from sources_factory import make_backgrounds, make_rgba_source
from test_expand import small_config

# Columns added after the first releases: shards of those versions lack them.
ADDED_COLUMNS = ["background_labels", "background_categories"]


def as_older_version(shard) -> None:
    """Rewrite ``shard`` as a version before :data:`ADDED_COLUMNS` wrote it: the same rows and run hash."""
    table = pq.read_table(shard)
    metadata = table.schema.metadata
    pq.write_table(table.drop_columns(ADDED_COLUMNS).replace_schema_metadata(metadata), shard)


def test_an_older_versions_shards_are_remade_so_an_extended_run_has_one_schema(tmp_path):
    objects, backgrounds = make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds")
    out, clean = tmp_path / "out", tmp_path / "clean"
    run_expand([objects], backgrounds, out, small_config(num=16), workers=1)
    as_older_version(out / "train-00000.parquet")
    assert pq.read_schema(out / "train-00000.parquet").names != COMPOSITE_SCHEMA.names

    result = run_expand([objects], backgrounds, out, small_config(num=24), workers=1)
    assert result.shards_skipped_as_done == 1  # train-00001 (today's); train-00000 is redone
    run_expand([objects], backgrounds, clean, small_config(num=24), workers=1)
    for name in ("train-00000.parquet", "train-00001.parquet", "train-00002.parquet"):
        assert pq.read_schema(out / name).equals(COMPOSITE_SCHEMA, check_metadata=False), name
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name


def test_segment_into_an_older_segments_unrecorded_output_replaces_it_not_writes_beside_it(tmp_path):
    from pipelines.segment_outputs import run_segment
    from pipelines.segmenter import Segmenter
    from segment_factory import make_unlabeled, save_untrained_segmenter

    photos = sorted(make_unlabeled(tmp_path / "photos", count=2).iterdir())
    segmenter = Segmenter(save_untrained_segmenter(tmp_path / "segment.pt"), "cpu")
    out = tmp_path / "labelled"
    run_segment(segmenter, photos, out)
    # As a synth before 2026-12-06 left it: the same files, no record of them, and one more photo's.
    for hidden in out.glob(".synth-segment-*"):
        hidden.unlink()
    for suffix in (".png", ".confidence.png", ".overlay.jpg"):
        (out / f"gone{suffix}").write_bytes((out / f"{photos[0].stem}{suffix}").read_bytes())
    (out / "notes.txt").write_text("mine")
    (out / f"{photos[0].stem}.png").write_bytes(b"an older run's map")

    run_segment(segmenter, photos, out)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == sorted(["classes.json", "notes.txt", *(f"{p.stem}{s}" for p in photos
                                                           for s in (".png", ".confidence.png", ".overlay.jpg"))])
    assert (out / f"{photos[0].stem}.png").read_bytes() != b"an older run's map"


def test_search_into_an_older_searchs_unrecorded_output_clears_its_media_outputs(tmp_path):
    from pipelines.output_record import OutputRecord
    from pipelines.search_jobs import SEARCH_OUTPUTS

    out = tmp_path / "found"
    out.mkdir()
    older = ["brick.heat.png", "brick.highlight.jpg", "street.heat.png", "street.highlight.jpg", "detections.jsonl"]
    for name in [*older, "street.jpg", "brick.notes.png"]:
        (out / name).write_bytes(b"x")
    with OutputRecord(out, SEARCH_OUTPUTS, [out / "street.jpg"]) as record:
        record.add("street")
    assert sorted(p.name for p in out.iterdir()) == [".synth-search-outputs", "brick.notes.png", "street.jpg"]


def test_selftune_goes_on_in_a_state_folder_whose_config_predates_keys_added_to_expand(tmp_path):
    """A stop-20 state's config.json lacks expand keys added since (at defaults keeping its behaviour):
    the same config file was refused as 'made with another config (expand.backgrounds None -> ...)'."""
    import json

    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app
    from segment_factory import make_noise_backgrounds, make_scene_photos, make_unlabeled, tiny_selftune_config

    labeled = make_scene_photos(tmp_path / "labeled", count=8)
    unlabeled = make_unlabeled(tmp_path / "unlabeled", count=2)
    backgrounds = make_noise_backgrounds(tmp_path / "backgrounds")
    config, state = tmp_path / "selftune.yaml", tmp_path / "state"
    config.write_text(yaml.safe_dump(tiny_selftune_config(max_rounds=1)))
    args = ["selftune", "--state", str(state), "--labeled", str(labeled), "--unlabeled", str(unlabeled),
            "--backgrounds", str(backgrounds), "--config", str(config)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    stored = json.loads((state / "config.json").read_text())
    del stored["expand"]["backgrounds"]
    for key in ("object_scale_mode", "source_scale_jitter"):
        del stored["expand"]["composition"][key]
    (state / "config.json").write_text(json.dumps(stored))

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "another config" not in again.output


def test_an_older_objects_table_refused_in_source_mode_leaves_the_earlier_run_readable(tmp_path):
    """Refused only after the earlier run's manifest was removed (and a new --out made): the folder was
    left unreadable ('no manifest.json') by a run that did nothing."""
    import pytest

    from augment.config import ExpandConfig
    from augment.imageio import InputError
    from augment.shards import manifest_shards

    objects, backgrounds = make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds")
    out, older = tmp_path / "out", tmp_path / "older"
    run_expand([objects], backgrounds, out, small_config(num=8), workers=1)
    older.mkdir()  # an `objects` source written before cutouts recorded their photo's size
    pq.write_table(pq.read_table(out / "objects.parquet").drop_columns(["source_size"]), older / "objects.parquet")
    source_mode = ExpandConfig.from_dict({**small_config(num=8).to_dict(), "composition": {
        **small_config().to_dict()["composition"], "object_scale_mode": "source"}})
    for target in (out, tmp_path / "new"):
        with pytest.raises(InputError, match="do not record their source image's size"):
            run_expand([older], backgrounds, target, source_mode, workers=1, overwrite=True)
    assert len(manifest_shards(out)) == 1
    assert not (tmp_path / "new").exists()


def test_photo_shards_keeps_a_killed_runs_shard_only_when_its_schema_is_todays(tmp_path, monkeypatch):
    import augment.photo_shards as photo_shards
    from augment.config import SourceConfig
    from segment_factory import make_scene_photos

    source = make_scene_photos(tmp_path / "labelled", count=5)
    monkeypatch.setattr(photo_shards, "PHOTO_ROWS_PER_SHARD", 2)
    photo_shards.write_photo_shards([source], tmp_path / "whole", SourceConfig())
    out = tmp_path / "out"
    photo_shards.write_photo_shards([source], out, SourceConfig())
    (out / "manifest.json").unlink()  # as a run killed after its first shards, by an older synth
    as_older_version(out / "photos-00000.parquet")
    photo_shards.write_photo_shards([source], out, SourceConfig())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in (tmp_path / "whole").iterdir()}


def test_show_over_an_older_synths_unmarked_sheet_says_why_it_is_not_replaced(tmp_path):
    """A sheet of a synth before sheets were marked was refused as 'not a contact sheet of `synth show`'
    alone, which its user knew to be false; the line says older sheets carry no mark."""
    import numpy as np

    from augment.imageio import encode_png
    from cli_checks import assert_one_line_error, run_cli
    from shard_factory import make_shards

    shards = make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4).folder
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))  # as an older show wrote it: no mark
    result = run_cli("show", shards, "--out", sheet)
    assert_one_line_error(result, 2, str(sheet), "a sheet of a synth before 2026-12-07 carries no mark")
