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
