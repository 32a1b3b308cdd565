"""Writing one composite shard so that it lands whole or not at all, locally or in an object store.

Every engine of `synth expand` writes its shards here: the row groups go to a temporary file of its
own (beside the shard for a local folder, in the machine's temporary folder for an object store,
named after its writer so that the next write there removes a killed writer's),
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

from augment.atomic_files import naming_errors, remove_made, remove_orphaned_temporaries, temporary_beside
from augment.imageio import InputError
from augment.schema import COMPOSITE_SCHEMA, RUN_HASH_KEY
from augment.shards import verify_shard
from augment.storage import Place, is_remote
from augment.store_writes import commit_file

# JPEG and PNG bytes do not compress further: zstd only where it pays (objects, params).
SHARD_COMPRESSION = {name: ("none" if name in ("image", "mask", "background_labels") else "zstd")
                     for name in COMPOSITE_SCHEMA.names}
STATISTICS_COLUMNS = ["id", "width", "height", "seed"]


def scratch_folder() -> Path:
    """Where shards bound for an object store are written first: ``$SYNTH_SCRATCH_DIR``, else the
    system's temporary folder. A SYNTH_SCRATCH_DIR that is no folder is one line naming it
    (:class:`InputError`): the run failed at its first shard naming the hidden temporary it could not
    make there (".train-00000.parquet.<writer>.x1y2z3w4.tmp: No such file or directory")."""
    chosen = os.environ.get("SYNTH_SCRATCH_DIR")
    if chosen and not os.path.isdir(chosen):
        raise InputError(f"SYNTH_SCRATCH_DIR={chosen}: no such folder (shards bound for an object store are "
                         "written there first); make it, or unset SYNTH_SCRATCH_DIR to use the temporary folder")
    return Path(chosen or tempfile.gettempdir())


def _scratch_file(name: str, made: list[Path] | None = None) -> Path:
    """A temporary local file for a shard bound for an object store, readable by this user alone.

    It is named after its writer as the temporaries beside local outputs are
    (:func:`augment.atomic_files.temporary_beside`): a writer killed before its ``finally`` ran (SIGKILL,
    the OOM killer) left a whole shard in the scratch folder for good, and nothing of the next run
    looks there. So each new scratch file first removes those whose writer is gone
    (:func:`augment.atomic_files.remove_orphaned_temporaries`: one listing, only this format with this
    machine's token and a dead pid; a live writer's, another machine's or any other file stays).
    """
    folder = scratch_folder()
    remove_orphaned_temporaries(folder)
    path = temporary_beside(folder / name, made=made)
    os.chmod(path, 0o600)  # a shared /tmp: the shard's pixels are not everyone's to read
    return path


def write_shard(target: Place, groups: Iterable[pa.Table], schema: pa.Schema, group_rows: int,
                expected_ids: list[str]) -> Iterator[int]:
    """Write the row groups (tables of ``schema``) as shard ``target``, yielding each group's row count.

    The shard is committed after the last group, once it reads back as ``expected_ids`` with the
    run hash of ``schema``'s metadata; anything else raises and leaves ``target`` as it was.
    """
    made: list[Path] = []  # its name before the file is made: a stop as it is made leaves none (temporary_beside)
    try:
        temporary = _scratch_file(target.name, made) if is_remote(target) else temporary_beside(target, made=made)
        with naming_errors(target), pq.ParquetWriter(temporary, schema, compression=SHARD_COMPRESSION,
                                                     write_statistics=STATISTICS_COLUMNS) as writer:
            for table in groups:
                writer.write_table(table, row_group_size=group_rows)
                yield table.num_rows
        problem = verify_shard(temporary, expected_ids, schema.metadata[RUN_HASH_KEY].decode())
        if problem is not None:
            raise RuntimeError(f"{target}: the shard just written {problem}; not committed")
        commit_file(temporary, target)
    finally:
        remove_made(made)
