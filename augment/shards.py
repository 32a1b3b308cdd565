"""The composite shards of a `synth expand` output folder: listing, checking and reading them.

``manifest.json`` is the list of a folder's shards. A run removes it before it changes anything
and writes it last, so readers (``train``, ``eval``, ``export``, ``show``, ``calibrate``) never
read a run that is still going, was killed, or left shards of an older run beside its own. A
folder without a manifest is refused; a shard file named explicitly is read as it is.

Folders may be local paths or object-store prefixes (:class:`augment.storage.Location`, which
answers the same path methods); Parquet files are opened through :func:`augment.storage.open_parquet`.

Writers (every engine of `synth expand`) use :func:`check_other_run` / :func:`clear_for_run` (does
the folder hold another run?), :func:`verify_shard` (is this file a finished shard of this run?) and
:func:`write_manifest` (the last write of a run), under :func:`augment.locking.claim_output_folder`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from augment.imageio import InputError, check_plain_file, looks_like_text
from augment.outputs import inside, is_safe_name
from augment.schema import COMPOSITE_SCHEMA, CONFIG_HASH_KEY, MANIFEST_FILE, OBJECTS_FILE, RUN_HASH_KEY, SHARD_NAME
from augment.storage import Location, Place, as_place, is_remote, open_parquet, read_head
from augment.store_writes import write_text_atomic
from augment.textfiles import loads_json

log = logging.getLogger(__name__)

def one_line(error: BaseException) -> str:
    """An error's text on one line (Arrow's messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def check_plain(path: Place, expected: str) -> None:
    """:func:`augment.imageio.check_plain_file` for a local ``path`` (an object store's has no FIFOs)."""
    if not isinstance(path, Location):
        check_plain_file(path, expected)


# Columns without which a Parquet file is not a composite shard.
COMPOSITE_COLUMNS = ("id", "image", "mask", "objects")


# ----------------------------------------------------------------- reading
def open_shard(path: Place | str) -> pq.ParquetFile:
    """Open a Parquet file; anything unreadable is one line naming the file and what it is."""
    path = as_place(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a Parquet shard")
    check_plain(path, "a Parquet shard")
    try:
        return open_parquet(path)
    except (pa.ArrowException, OSError) as error:
        head = read_head(path, 4096)
        if not head:
            what = "an empty file (0 bytes), not a Parquet shard"
        elif head.startswith(b"PAR1"):
            what = f"a truncated or corrupt Parquet file ({one_line(error)})"
        elif looks_like_text(head):
            what = "a text file, not a Parquet shard"
        else:
            what = "not a Parquet file"
        raise InputError(f"{path}: {what}") from None


def read_manifest(folder: Place | str) -> dict[str, Any]:
    """``folder/manifest.json``, checked to list its shards as ``{"name", "rows"}`` entries."""
    folder = as_place(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{folder}: no {MANIFEST_FILE}, so not a finished output of `synth expand`, `photo-shards` or "
                         "`extract` (rerun the command that wrote it to finish it, or name shard files one by one)")
    try:
        manifest = loads_json(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise InputError(f"{path}: not a readable manifest ({one_line(error)})") from None
    entries = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and is_safe_name(e.get("name")) and isinstance(e.get("rows"), int) for e in entries):
        raise InputError(f'{path}: expected a "shards" list of {{"name": file, "rows": count}} entries')
    return manifest


def manifest_shards(folder: Place | str) -> list[Place]:
    """The shards ``folder``'s manifest lists, each checked to be there, readable, with the composite
    columns, of the listed size and (where the manifest names its run) written by that run."""
    return [path for path, _ in _opened_manifest_shards(folder)]


def _opened_manifest_shards(folder: Place | str) -> Iterator[tuple[Place, pq.ParquetFile]]:
    """:func:`manifest_shards` with each shard's open file (its footer read once), one at a time (every
    footer held at once grew with the rows: ~7 MB a 100,000-row shard)."""
    folder = as_place(folder)
    manifest = read_manifest(folder)
    run_hash = manifest.get("run_hash")
    if not manifest["shards"]:
        raise InputError(f"{folder}: {MANIFEST_FILE} lists no shards")
    for entry in manifest["shards"]:
        path = inside(folder, folder / entry["name"])
        parquet = open_shard(path)
        check_columns(parquet, path)
        metadata = parquet.metadata
        if metadata.num_rows != entry["rows"]:
            raise InputError(f"{path}: holds {metadata.num_rows} rows but {MANIFEST_FILE} lists {entry['rows']} "
                             "(changed after the run finished; rerun `synth expand`)")
        stored = (metadata.metadata or {}).get(RUN_HASH_KEY, b"").decode()
        if isinstance(run_hash, str) and stored != run_hash:  # e.g. another folder's shard copied over it
            raise InputError(f"{path}: written by run {stored or '(none)'}, not the run {MANIFEST_FILE} lists "
                             f"({run_hash}): changed after the run finished; rerun `synth expand`")
        yield path, parquet


def check_columns(parquet: pq.ParquetFile, path: Place) -> None:
    """One line naming ``path`` when the open shard lacks a composite column (a Parquet file of
    another kind, or of an older or hand-edited schema)."""
    names = set(parquet.schema_arrow.names)
    missing = [c for c in COMPOSITE_COLUMNS if c not in names]
    if missing:
        raise InputError(f"{path}: not a composite shard (no {', '.join(missing)} column)")
    for column in ("image", "mask"):  # a picture is a struct of its bytes (and path), as the schema has it
        kind = parquet.schema_arrow.field(column).type
        data = kind.field("bytes").type if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0 else None
        if not (data is not None and (pa.types.is_binary(data) or pa.types.is_large_binary(data))):
            raise InputError(f"{path}: not a composite shard (its {column} column is {kind}, not a struct of "
                             "bytes and path)")


def _opened_composite_shard(path: Place | str) -> tuple[Place, pq.ParquetFile]:
    """``path`` and its open file, after checking it is a readable Parquet file with the composite columns."""
    path = as_place(path)
    parquet = open_shard(path)
    check_columns(parquet, path)
    return path, parquet


def shard_run(path: Place, parquet: pq.ParquetFile | None = None) -> str:
    """The run that wrote shard ``path`` (``parquet``: the shard already open): the run hash in its footer
    (`synth expand`, `photo-shards`, `extract`), else (a shard written by another tool) its folder. Rows are
    identified by their run and id: two runs number their rows alike (``train-00000000`` each), so an id
    alone took a second run's rows for the first's ('id seen before': `synth export` kept one run of two)."""
    metadata = (parquet or open_shard(path)).metadata.metadata or {}
    stored = metadata.get(RUN_HASH_KEY, b"").decode(errors="replace")
    if stored:
        return f"run {stored}"
    return f"folder {path.parent if is_remote(path) else Path(path).resolve().parent}"


def find_shards(paths: list[Place | str] | Place | str) -> list[Place]:
    """Composite shards named by ``paths`` (:func:`find_shard_runs`, less their runs)."""
    return [shard for shard, _ in find_shard_runs(paths)]


def find_shard_runs(paths: list[Place | str] | Place | str) -> list[tuple[Place, str]]:
    """Composite shards named by ``paths``, each with its run (:func:`shard_run`): a folder (or object-store
    prefix) gives the shards its manifest lists, a file itself. A shard named twice (the folder and one of
    its files, a folder given twice, a run's copy in another folder: the same shard, rows and run) is read
    once, with a warning: `synth show` drew its rows twice on one sheet, a segmentation run read them twice
    an epoch, `synth export` skipped each row a second time ('id seen before'). Shards of other runs are
    all read, whatever their names. The run comes from the footer opened here to check the shard (`synth
    export` opened every shard again for it, beside its rows' reading: ~7 MB a 100,000-row shard)."""
    paths = paths if isinstance(paths, (list, tuple)) else [paths]
    shards: dict[Any, tuple[Place, int, str]] = {}  # the shard's run and name (its own file, where no run is stored) -> (the path it was named by, its rows, its run)
    for path in map(as_place, paths):
        if path.is_dir() or (is_remote(path) and not path.exists()):  # a missing prefix: "no manifest.json"
            found: Iterable[tuple[Place, pq.ParquetFile]] = _opened_manifest_shards(path)
        elif not path.exists():
            raise InputError(f"{path}: no such file or directory")
        elif path.name == OBJECTS_FILE:
            raise InputError(f"{path}: is the cutouts table, not a composite shard")
        else:
            found = [_opened_composite_shard(path)]
        for shard, parquet in found:  # (each footer read once: a 100,000-row shard's is 7 MB)
            run = shard_run(shard, parquet)
            rows = parquet.metadata.num_rows
            # A run's rows are the same whatever its --num (no part of the run hash): a shard of the same run
            # and name is a copy, or a longer run's, whose first rows are the shorter's: the longer is read.
            key = (run, shard.name) if run.startswith("run ") else _own_file(shard)
            if key not in shards:
                shards[key] = (shard, rows, run)
            elif _own_file(shards[key][0]) == _own_file(shard):
                log.warning("%s: named more than once among the shards (as %s too); read once", shards[key][0], shard)
            elif rows > shards[key][1]:
                log.warning("%s: the same shard of the same %s as %s with more rows (a longer run); read in its "
                            "place", shard, run, shards[key][0])
                shards[key] = (shard, rows, run)
            else:
                log.warning("%s: the same shard of the same %s as %s (a copy); read once", shard, run, shards[key][0])
    if not shards:
        raise InputError("no shards given")
    return [(shard, run) for shard, _, run in shards.values()]


def _own_file(shard: Place) -> Place:
    """The file ``shard`` names (a local one resolved: a folder named by two spellings, or through a link)."""
    return shard if is_remote(shard) else Path(shard).resolve()


def row_key(run: str, row_id: Any) -> tuple[str, Any]:
    """What tells a row from every other among several runs' shards: its run (:func:`shard_run`) and its
    id (compared without case where it is text, as the files named after it are on macOS and Windows)."""
    return run, row_id.lower() if isinstance(row_id, str) else row_id


def iter_rows(shards: list[Path], columns: list[str] | None = None) -> Iterator[tuple[Path, dict]]:
    """Every row of the shards, in order, one row group in memory at a time (only ``columns``, where
    given: one a shard lacks is an InputError naming it and the shard's columns; Arrow read it as
    no column, and every row came back an empty dict)."""
    for path in shards:
        parquet = open_shard(path)
        names = parquet.schema_arrow.names  # a nested field's path starts with its column's name
        unknown = [c for c in columns or () if c.split(".")[0] not in names]
        if unknown:
            raise InputError(f"{path}: no column {', '.join(map(repr, unknown))} "
                             f"(its columns: {', '.join(names)})")
        for group in range(parquet.num_row_groups):
            for row in read_row_group(path, group, columns, parquet).to_pylist():
                yield path, row


def read_row_group(path: Place, group: int, columns: list[str] | None = None,
                   parquet: pq.ParquetFile | None = None) -> pa.Table:
    """Row group ``group`` of shard ``path`` (``parquet``: the shard already open, its footer not read
    again); damaged pages (a footer that reads, pages that do not) are one InputError naming the file
    and the group."""
    try:
        return (parquet or open_shard(path)).read_row_group(group, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path}: row group {group} is unreadable ({one_line(error)})") from None


# ----------------------------------------------------------------- writing runs
def verify_shard(path: Place, expected_ids: list[str], run_hash: str) -> str | None:
    """Why ``path`` is not a finished shard of run ``run_hash`` holding rows ``expected_ids``; None if it is.

    Every page is read (the images are stored uncompressed, so this is a sequential read and cheap
    next to making the rows): a file whose footer is intact but whose pages are damaged is redone,
    not kept as done. So is a shard an older synth wrote with this run's hash but another schema (before
    a column was added): kept, it would leave one run's shards of two schemas.
    """
    if not path.is_file():
        return "missing"
    try:
        parquet = open_parquet(path)
        stored = (parquet.metadata.metadata or {}).get(RUN_HASH_KEY, b"").decode()
        if stored != run_hash:
            return "written by another run (other config or inputs)"
        if not same_schema(parquet.schema_arrow):
            return "written by an older synth (another schema)"
        if parquet.metadata.num_rows != len(expected_ids):
            return f"holds {parquet.metadata.num_rows} rows, not {len(expected_ids)}"
        ids: list[str] = []
        for batch in parquet.iter_batches(batch_size=256):
            ids.extend(batch.column("id").to_pylist())
    except (pa.ArrowException, OSError, KeyError) as error:
        return f"unreadable ({one_line(error)})"
    if ids != expected_ids:
        return "holds other rows than planned"
    return None


def same_schema(schema: pa.Schema) -> bool:
    """Whether a shard's ``schema`` is the one shards are written with today: the same columns and types
    and the same ``huggingface`` features (the run and config hashes aside)."""
    return (schema.equals(COMPOSITE_SCHEMA, check_metadata=False)
            and (schema.metadata or {}).get(b"huggingface") == COMPOSITE_SCHEMA.metadata[b"huggingface"])


def shard_config_hash(path: Place) -> str | None:
    """The config hash of the run that wrote shard ``path`` (None when unreadable or not a composite shard)."""
    try:
        parquet = open_parquet(path)
        stored = (parquet.metadata.metadata or {}).get(CONFIG_HASH_KEY)
        if stored:
            return stored.decode()
        if parquet.metadata.num_rows == 0 or "config_hash" not in parquet.schema_arrow.names:
            return None
        # Shards of older versions carry the hash only in their rows.
        return parquet.read_row_group(0, columns=["config_hash"]).column(0)[0].as_py()
    except (pa.ArrowException, OSError, IndexError):
        return None


def other_run_shards(folder: Place, config_hash: str) -> list[Place]:
    """Shard files in ``folder`` that a run of ``config_hash`` did not write (unreadable ones included),
    and all of them when the folder's manifest belongs to another config."""
    shards = sorted(p for p in folder.iterdir() if SHARD_NAME.fullmatch(p.name) and p.is_file())
    manifest_path = folder / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            manifest_hash = loads_json(manifest_path.read_text(encoding="utf-8")).get("config_hash")
        except (ValueError, OSError, AttributeError):
            manifest_hash = None
        if manifest_hash != config_hash:
            return shards or [manifest_path]
    return [p for p in shards if shard_config_hash(p) != config_hash]


MANIFEST_WRITERS = {"expand": "synth expand", "photos": "synth photo-shards", "pseudo": "synth extract"}


def manifest_kind(folder: Place) -> str | None:
    """Which command's output ``folder``'s ``manifest.json`` lists (a key of :data:`MANIFEST_WRITERS`:
    the manifest's ``kind``; an expansion's has none), or None (no readable manifest of one of them)."""
    try:
        manifest = loads_json((as_place(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    found = manifest.get("kind", "expand" if "config_hash" in manifest else None)
    return found if found in MANIFEST_WRITERS else None


def check_manifest_kind(folder: Path, kind: str) -> None:
    """A folder whose ``manifest.json`` another command wrote is one line: replacing that manifest would
    leave the other run's shards unlisted, unreadable to every reader, and mixed with these."""
    found = manifest_kind(folder)
    if found is not None and found != kind:
        raise InputError(f"{folder}: holds the output of `{MANIFEST_WRITERS[found]}` ({MANIFEST_FILE}); "
                         f"`{MANIFEST_WRITERS[kind]}` would leave its shards unlisted: choose another --out")


def check_other_run(folder: Place, config_hash: str, overwrite: bool = False) -> list[Place]:
    """Another run's shards in ``folder``: an :class:`InputError` (one line), or with ``overwrite``
    the list of files to remove (see :func:`clear_for_run`)."""
    others = other_run_shards(folder, config_hash)
    if others and not overwrite:
        writer = manifest_kind(folder) or "expand"
        run = ("another `synth expand` run (other seed or config; " if writer == "expand"
               else f"`{MANIFEST_WRITERS[writer]}` (")
        raise InputError(f"{folder}: holds the output of {run}{len(others)} file(s) such as {others[0].name}); "
                         "pass --overwrite to replace it, or choose another --out")
    return others


def footer_problem(path: Place, rows: int, run_hash: str | None) -> str | None:
    """What is wrong with a just-committed shard (or one a killed run finished) by its footer alone (a
    cheap read, also remote), or None. A shard of another schema (an older synth's) is not this run's."""
    parquet = open_parquet(path)
    metadata = parquet.metadata
    if metadata.num_rows != rows:
        return f"{metadata.num_rows} rows written, {rows} planned"
    if not same_schema(parquet.schema_arrow):
        return "written by an older synth (another schema)"
    stored = (metadata.metadata or {}).get(RUN_HASH_KEY, b"").decode()
    if run_hash is not None and stored != run_hash:
        return (f"written by run {stored or '(none)'}, not this run ({run_hash}): another writer was in this "
                "folder; rerun to redo it")
    return None


def write_manifest(folder: Place, manifest: dict[str, Any]) -> Place:
    """Write ``folder/manifest.json`` last, atomically, after checking every shard it lists is there
    with the listed rows and (when the manifest names one) its footer carries the run's hash: from
    then on readers read exactly these shards, and a shard another writer slipped in is caught here."""
    for entry in manifest["shards"]:
        problem = footer_problem(inside(folder, folder / entry["name"]), entry["rows"], manifest.get("run_hash"))
        if problem is not None:
            raise RuntimeError(f"{folder / entry['name']}: {problem}")
    path = folder / MANIFEST_FILE
    write_text_atomic(path, json.dumps(manifest, indent=2))
    return path


def clear_for_run(folder: Place, others: list[Place], planned: list[str]) -> None:
    """Remove ``others`` (another run's files), shards this run does not plan (left by a larger ``num``)
    and the manifest, which the run writes again when it finishes: until then readers refuse the folder."""
    surplus = [p for p in folder.iterdir() if SHARD_NAME.fullmatch(p.name) and p.name not in planned]
    for path in sorted(set(others) | set(surplus)):
        log.info("removing %s (%s)", path, "another run's" if path in others else "beyond this run's num")
        path.unlink(missing_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
