"""Shards and outputs as a user of several machines meets them. Local outputs given an object-store URI: Path folds "s3://b/k" into "s3:/b/k", so `synth export`,
`show`, `train`, `eval`, `calibrate`, `search` ... wrote a local folder named "s3:" in the working folder
and said "wrote s3:/b/k" as if the bucket had it. One line now, before any work, nothing written."""

from __future__ import annotations

import pytest

from augment.imageio import InputError
from augment.outputs import check_output_file, check_output_folder, check_report_file
from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards


@pytest.mark.parametrize("uri", ["s3://bucket/out", "gs://bucket/deep/out.json", "gcs://b/x"])
def test_output_checks_refuse_a_uri_naming_it_as_typed(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for check in (check_output_folder, check_output_file, lambda p: check_report_file(p, "synth eval", ("x",))):
        with pytest.raises(InputError) as raised:
            check(uri)
        assert str(raised.value).startswith(f"{uri}: --out here is a local path")
    assert not list(tmp_path.iterdir())


def test_export_and_show_to_an_s3_uri_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    shards = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert_one_line_error(run_cli("export", shards, "--out", "s3://bucket/coco"), 2, "s3://bucket/coco", "local path")
    assert_one_line_error(run_cli("show", shards, "--out", "s3://bucket/sheet.png"), 2, "s3://bucket/sheet.png")
    assert_one_line_error(run_cli("train", "--shards", shards, "--out", "gs://bucket/run"), 2, "gs://bucket/run")
    assert not list(work.iterdir())  # no local "s3:" or "gs:" folder


def test_local_names_with_a_colon_are_still_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output_folder("run:1") == tmp_path.joinpath("run:1").relative_to(tmp_path)
    assert check_output_file("c:/x.json").name == "x.json"  # one letter: no scheme (a Windows-like drive)


def test_show_of_a_shard_with_damaged_pages_is_one_line_naming_it(tmp_path):
    """Its footer reads, its pages do not: show ended in pyarrow's OSError traceback ('Couldn't deserialize
    thrift'); export said it in one line (one reader now, augment.shards.read_row_group)."""
    from shard_factory import damage_pages

    made = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64)
    shard = sorted(made.folder.glob("train-*.parquet"))[0]
    damage_pages(shard)
    result = run_cli("show", shard, "--out", tmp_path / "sheet.png", "--rows", 2, "--columns", 2, "--tile", 32)
    assert_one_line_error(result, 2, str(shard), "row group 0 is unreadable")
    assert not (tmp_path / "sheet.png").exists()
