"""Writing one composite shard so that it lands whole or not at all, locally or in an object store.

Every engine of `synth expand` writes its shards here: the row groups go to a temporary file of its
own (beside the shard for a local folder, in the machine's temporary folder for an object store),
the finished file is read back and checked (this run's hash, the planned row ids, every page
readable), and only then is it renamed or copied into place (:func:`augment.store_writes.commit_file`).
A writer killed at any moment leaves no shard under the final name; a retried writer makes the same
bytes again, so a shard lands exactly once whatever the retries.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from augment.imageio import temporary_beside
from augment.schema import COMPOSITE_SCHEMA, RUN_HASH_KEY
from augment.shards import verify_shard
from augment.storage import Place, is_remote
from augment.store_writes import commit_file

# JPEG and PNG bytes do not compress further: zstd only where it pays (objects, params).
SHARD_COMPRESSION = {name: ("none" if name in ("image", "mask", "background_labels") else "zstd")
                     for name in COMPOSITE_SCHEMA.names}
STATISTICS_COLUMNS = ["id", "width", "height", "seed"]


def _scratch_file(name: str) -> Path:
    """A temporary local file for a shard bound for an object store."""
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=os.environ.get("SYNTH_SCRATCH_DIR"))
    os.close(handle)
    return Path(path)


def write_shard(target: Place, groups: Iterable[pa.Table], schema: pa.Schema, group_rows: int,
                expected_ids: list[str]) -> Iterator[int]:
    """Write the row groups (tables of ``schema``) as shard ``target``, yielding each group's row count.

    The shard is committed after the last group, once it reads back as ``expected_ids`` with the
    run hash of ``schema``'s metadata; anything else raises and leaves ``target`` as it was.
    """
    temporary = _scratch_file(target.name) if is_remote(target) else temporary_beside(target)
    try:
        with pq.ParquetWriter(temporary, schema, compression=SHARD_COMPRESSION,
                              write_statistics=STATISTICS_COLUMNS) as writer:
            for table in groups:
                writer.write_table(table, row_group_size=group_rows)
                yield table.num_rows
        problem = verify_shard(temporary, expected_ids, schema.metadata[RUN_HASH_KEY].decode())
        if problem is not None:
            raise RuntimeError(f"{target}: the shard just written {problem}; not committed")
        commit_file(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
