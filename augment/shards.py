"""Finding and reading the composite shards that `synth expand` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from augment.imageio import InputError
from augment.schema import OBJECTS_FILE


def find_shards(paths: list[Path] | Path) -> list[Path]:
    """Composite shard files named by ``paths`` (folders are searched, objects.parquet excluded)."""
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    shards: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            shards.extend(sorted(p for p in path.glob("*.parquet") if p.name != OBJECTS_FILE and not p.name.startswith(".")))
        elif path.is_file() and path.suffix == ".parquet":
            shards.append(path)
        elif not path.exists():
            raise InputError(f"{path}: no such file or directory")
        else:
            raise InputError(f"{path}: not a Parquet shard or a folder of shards")
    if not shards:
        raise InputError(f"{', '.join(map(str, paths))}: no composite shards (*.parquet) found")
    return shards


def open_shard(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None


def iter_rows(shards: list[Path], columns: list[str] | None = None) -> Iterator[tuple[Path, dict]]:
    """Every row of the shards, in order, one row group in memory at a time."""
    for path in shards:
        parquet = open_shard(path)
        for group in range(parquet.num_row_groups):
            for row in parquet.read_row_group(group, columns=columns).to_pylist():
                yield path, row
