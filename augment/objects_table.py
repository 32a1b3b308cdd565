"""The objects table (``objects.parquet``: the cutouts beside the shards of `synth expand`, or an extract's)
read whole, a row group at a time, or its columns only; a file that cannot be read (not Parquet, damaged
pages, a column missing) is one InputError naming it on one line."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from augment.imageio import InputError
from augment.shards import check_plain, one_line
from augment.storage import Location, Place

_OBJECTS_TABLE_ERRORS = (pa.ArrowException, OSError, KeyError)


def read_objects_table(path: Place, columns: list[str] | None = None, memory_map: bool = False) -> pa.Table:
    """``columns`` of the objects table (cutouts) at ``path``, local or in an object store; a file that
    cannot be read (not Parquet, damaged pages, a column missing) is one InputError naming it on one line."""
    check_plain(path, "an objects table")
    try:
        if isinstance(path, Location):
            return pq.read_table(path.path, columns=columns, filesystem=path.fs)
        return pq.read_table(path, columns=columns, memory_map=memory_map)
    except _OBJECTS_TABLE_ERRORS as error:
        raise _unreadable_objects_table(path, error) from None


def iter_objects_table(path: Place, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """:func:`read_objects_table` a row group at a time (a reader that turns the rows into Python objects
    holds them and one group, not them and the whole table beside them); the same one-line errors."""
    check_plain(path, "an objects table")
    try:
        parquet = pq.ParquetFile(path.path, filesystem=path.fs) if isinstance(path, Location) else pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group, columns=columns)
    except _OBJECTS_TABLE_ERRORS as error:
        raise _unreadable_objects_table(path, error) from None


def objects_table_columns(path: Place) -> list[str]:
    """The column names of the objects table at ``path``, with :func:`read_objects_table`'s one-line errors."""
    check_plain(path, "an objects table")
    try:
        if isinstance(path, Location):
            return pq.read_schema(path.path, filesystem=path.fs).names
        return pq.read_schema(path).names
    except _OBJECTS_TABLE_ERRORS as error:
        raise _unreadable_objects_table(path, error) from None


def _unreadable_objects_table(path: Place, error: BaseException) -> InputError:
    return InputError(f"{path}: not a readable objects table ({one_line(error)})")
