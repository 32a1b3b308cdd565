"""Cutouts: objects cut from the sources, written once to ``objects.parquet``.

Composites refer to cutouts by id (a content hash), so the clean object can be
fetched later, e.g. as a training query. Mean-shift superpixels are costly, so each
cutout's are computed here once and stored beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augment.atomic_files import atomic_path
from augment.byte_cache import ByteLRU
from augment.config import SourceConfig
from augment.coco_source import coco_image_roots
from augment.imageio import InputError, decode_image, encode_png, is_image_path, walk_files
from augment.labelme_source import labelme_source_files, looks_like_labelme
from augment.schema import OBJECTS_FILE, OBJECTS_SCHEMA, RENDERING_VERSION
from augment.objects_table import iter_objects_table, objects_table_columns, read_objects_table
from augment.sources import Skip, SourceObject, read_each, read_source, skipped_summary
from augment.superpixels import compute_superpixels
from augment.system import ignore_interrupts, usable_cpus, usable_memory
from augment.textfiles import loads_json

log = logging.getLogger(__name__)

INPUTS_HASH_KEY = b"synth_inputs_hash"
SKIPS_FILE = ".objects-skips.json"  # the skipped inputs of the table beside it, for a rerun that reuses it


@dataclass
class Cutout:
    """A cutout in memory, ready for compositing."""

    cutout_id: str
    category: str
    rgba: np.ndarray  # H×W×4 uint8
    superpixels: np.ndarray  # int32 labels at reduced size, 0 = outside the object
    area: int
    provenance: dict | None = None  # automatic cutouts: source, model_id, round, confidence, stability
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in its source image (object_scale_mode source)
    source_size: tuple[int, int] | None = None  # width, height of that image; None when the table predates it


def _cutout_cache_bytes() -> int:
    """A quarter of the memory this process may use (its cgroup's limit, else the machine's), shared among
    its CPUs' worker processes and itself, at least 512 MB. A bank that fits (3,200 CCP cutouts, ~2 GB, on
    24 GB and 2 CPUs) is decoded once before the workers fork and shared by them, as it was when every
    cutout was held; a larger one is decoded again on a miss (~1-3 ms a cutout), each worker keeping its
    share, so all of them together hold at most about a quarter of the memory."""
    return max(512 << 20, usable_memory() // (4 * (usable_cpus() + 1)))


CUTOUT_CACHE_BYTES = _cutout_cache_bytes()  # decoded cutouts (RGBA + superpixels) kept per process by load_cutouts


def cutout_cache_bytes() -> int:
    """:data:`CUTOUT_CACHE_BYTES` of the process that asks: a Ray worker's cache is its own machine's
    (its memory and CPUs), not the driver's that loaded the cutouts and sent them."""
    return CUTOUT_CACHE_BYTES


def _decoded_bytes(entry: tuple[np.ndarray, np.ndarray]) -> int:
    return entry[0].nbytes + entry[1].nbytes


class StoredCutout:
    """A cutout of an objects table held as its encoded PNGs, with a :class:`Cutout`'s attributes:
    ``rgba`` and ``superpixels`` are decoded on use and kept in ``cache`` (shared by the table's cutouts,
    bounded by bytes), so memory does not grow with the number of cutouts. A pickled one (a Ray job)
    carries its bytes, not what its cache holds."""

    def __init__(self, cutout_id: str, category: str, image_png: bytes, superpixels_png: bytes, area: int,
                 provenance: dict | None, box: tuple[int, int, int, int] | None,
                 source_size: tuple[int, int] | None, name: str, cache: ByteLRU) -> None:
        self.cutout_id, self.category, self.area = cutout_id, category, area
        self.provenance, self.box, self.source_size = provenance, box, source_size
        self.image_png, self.superpixels_png, self.name, self.cache = image_png, superpixels_png, name, cache

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rgba, superpixels)``, from the cache or decoded into it."""
        entry = self.cache.get(self)  # keyed by the object: an entry keeps it alive, so no key is reused
        if entry is None:
            entry = (decode_image(self.image_png, name=self.name),
                     decode_image(self.superpixels_png, name=self.name).astype(np.int32))
            self.cache.put(self, entry)
        return entry

    @property
    def rgba(self) -> np.ndarray:
        return self.decoded()[0]

    @property
    def superpixels(self) -> np.ndarray:
        return self.decoded()[1]



def cutout_id(rgba: np.ndarray, category: str) -> str:
    digest = hashlib.sha256()
    digest.update(category.encode())
    digest.update(np.asarray(rgba.shape, np.int64).tobytes())
    digest.update(np.ascontiguousarray(rgba).tobytes())
    return digest.hexdigest()[:16]


def _source_files(source: Path) -> list[Path]:
    """The files a source reads: those of its folder, a LabelMe file and its image, or a COCO file and
    the images where it finds them; not those of a run's output folder inside it (:mod:`augment.excluded_folders`), which would change
    with every run."""
    if not source.is_file():
        return [p for p in walk_files(source) if p.is_file()]
    if looks_like_labelme(source):
        return labelme_source_files(source)
    images = {p for root in coco_image_roots(source) if root.is_dir() for p in walk_files(root)
              if p.is_file() and is_image_path(p)}
    return [source, *sorted(images)]


def sources_fingerprint(sources: Iterable[Path], config: SourceConfig) -> str:
    """Changes when a source file is added, removed or modified, the source config changes (a COCO
    file's images included: one added after a run that skipped it as missing is cut out by the next) or
    the rendering does (:data:`augment.schema.RENDERING_VERSION`)."""
    # The rendering's version too: the table's superpixels are made by the code that renders with them.
    digest = hashlib.sha256(json.dumps({**config.__dict__, "rendering": RENDERING_VERSION}, sort_keys=True,
                                       default=list).encode())
    for source in sources:
        for path in _source_files(Path(source).resolve()):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _superpixels_png(args: tuple[bytes, int]) -> bytes:
    rgba_png, max_side = args
    rgba = decode_image(rgba_png)
    labels = compute_superpixels(rgba, max_side=max_side)
    return encode_png(labels.astype(np.uint16))


@dataclass
class ObjectsRead:
    """What :func:`read_objects` found: an up-to-date table to reuse (``rows`` None) or the rows of a new one."""

    path: Path
    fingerprint: str
    skips: list[Skip]
    rows: list[dict] | None  # None: the table at ``path`` is up to date
    count: int


def read_objects(sources: list[Path], config: SourceConfig, out_dir: Path,
                 source_name: Callable[[str], str] | None = None,
                 progress: Callable[[int], None] | None = None) -> ObjectsRead:
    """Read the cutouts of ``sources`` without writing anything, or find ``out_dir/objects.parquet``
    up to date with them. ``source_name`` maps the path an object was read from to the name its row
    records as its ``source`` (a mirrored object-store file: its URI); default, the path itself.
    ``progress(found)`` is called as objects are read (how many there will be is not known ahead).
    Raises :class:`InputError` when they give no usable object (an undetectable
    format, a missing label list, every photo skipped), so a caller can stop before it changes ``out_dir``.
    """
    out_path = Path(out_dir) / OBJECTS_FILE
    fingerprint = sources_fingerprint(sources, config)
    skips_path = Path(out_dir) / SKIPS_FILE
    if out_path.exists() and skips_path.exists():
        metadata = pq.read_schema(out_path).metadata or {}
        if metadata.get(INPUTS_HASH_KEY, b"").decode() == fingerprint:
            log.info("%s is up to date with the sources; reusing it", out_path)
            skips = [Skip(**s) for s in loads_json(skips_path.read_text())]
            return ObjectsRead(out_path, fingerprint, skips, None, pq.read_metadata(out_path).num_rows)

    skips: list[Skip] = []
    seen: set[str] = set()
    rows: list[dict] = []
    for item in read_each(sources, read_source, config, skips):
        row = object_row(item)
        if source_name is not None and row["source"]:
            row["source"] = source_name(row["source"])
        if row["cutout_id"] in seen:
            continue  # the same object twice (e.g. a duplicated file) adds nothing
        seen.add(row["cutout_id"])
        rows.append(row)
        if progress:
            progress(len(rows))
    if not rows:
        filters = "sources.include/exclude/limit, keep_labels/drop_labels or min_area"  # what leaves nothing, unsaid
        raise InputError(f"{', '.join(map(str, sources))}: no usable objects found "
                         f"({skipped_summary(skips, filters=filters)})")
    return ObjectsRead(out_path, fingerprint, skips, rows, len(rows))


def write_objects(found: ObjectsRead, config: SourceConfig, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> tuple[Path, list[Skip], int]:
    """Write what :func:`read_objects` read (superpixels added) to its ``objects.parquet``, unless it was
    up to date. Returns its path, the skipped inputs, and how many cutouts it holds."""
    if found.rows is None:
        return found.path, found.skips, found.count
    add_superpixels(found.rows, config.superpixel_max_side, workers, progress)
    skips_path = found.path.parent / SKIPS_FILE
    skips_path.unlink(missing_ok=True)  # an older table's: with the new table, a run killed here reuses neither
    write_objects_table(found.rows, found.path, found.fingerprint)
    with atomic_path(skips_path) as temporary:
        temporary.write_text(json.dumps([s.__dict__ for s in found.skips]))
    log.info("wrote %d cutouts to %s (%d inputs skipped)", found.count, found.path, len(found.skips))
    return found.path, found.skips, found.count


def build_objects_table(
    sources: list[Path],
    config: SourceConfig,
    out_dir: Path,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, list[Skip], int]:
    """Write ``out_dir/objects.parquet`` unless an up-to-date one is there.

    Returns its path, the skipped inputs, and how many cutouts it holds.
    """
    return write_objects(read_objects(sources, config, out_dir), config, workers, progress)


def object_row(item: SourceObject) -> dict:
    """The objects-table row of a cutout (superpixels added by :func:`add_superpixels` unless known)."""
    identity = cutout_id(item.rgba, item.category)
    row = {
        "cutout_id": identity,
        "category": item.category,
        "source": item.source,
        "box": list(item.box),
        "image": {"bytes": encode_png(item.rgba, 3), "path": f"{identity}.png"},
        "width": int(item.rgba.shape[1]),
        "height": int(item.rgba.shape[0]),
        "area": int(np.count_nonzero(item.rgba[:, :, 3])),
        "provenance": item.provenance,
        "source_size": list(item.source_size) if item.source_size else None,
    }
    if item.superpixels is not None:
        row["superpixels"] = {"bytes": item.superpixels, "path": f"{identity}.superpixels.png"}
    return row


def add_superpixels(rows: list[dict], max_side: int, workers: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Compute the superpixels of the rows that have none yet (in place), on ``workers`` processes."""
    todo = [row for row in rows if "superpixels" not in row]
    jobs = [(row["image"]["bytes"], max_side) for row in todo]
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(min(workers, -(-len(jobs) // 8)), initializer=ignore_interrupts)  # one per chunk at most
        try:
            results = pool.map(_superpixels_png, jobs, chunksize=8)
            for done, (row, png) in enumerate(zip(todo, results), 1):
                row["superpixels"] = {"bytes": png, "path": f"{row['cutout_id']}.superpixels.png"}
                if progress:
                    progress(done, len(jobs))
        finally:  # on Ctrl-C, drop the queued work instead of finishing it
            pool.shutdown(wait=True, cancel_futures=True)
        return
    for done, (row, job) in enumerate(zip(todo, jobs), 1):
        row["superpixels"] = {"bytes": _superpixels_png(job), "path": f"{row['cutout_id']}.superpixels.png"}
        if progress:
            progress(done, len(jobs))


OBJECTS_ROW_GROUP = 256  # rows of a row group of objects.parquet


def write_objects_table(rows: list[dict], path: Path, fingerprint: str = "") -> None:
    """Write ``objects.parquet`` atomically; ``fingerprint`` identifies the inputs it was made from. Written
    a row group at a time (the bytes ``pq.write_table`` of the whole table gives): made one Arrow table, every
    cutout's PNGs were held twice (the rows and the table) while it was written."""
    schema = OBJECTS_SCHEMA.with_metadata({**OBJECTS_SCHEMA.metadata, INPUTS_HASH_KEY: fingerprint.encode()})
    with atomic_path(path) as temporary, pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
        for start in range(0, max(len(rows), 1), OBJECTS_ROW_GROUP):  # an empty table: one empty group, as before
            group = pa.Table.from_pylist(rows[start:start + OBJECTS_ROW_GROUP], schema=schema)
            writer.write_table(group, row_group_size=OBJECTS_ROW_GROUP)


def load_cutouts(objects_path: Path, cache_bytes: int | None = None) -> list[Cutout]:
    """The cutouts of an objects table, in table order, kept encoded: each is decoded when first used, and
    at most ``cache_bytes`` (default :data:`CUTOUT_CACHE_BYTES`, of each process that uses them: a Ray worker's
    own) of decoded cutouts are kept (:class:`StoredCutout`); every cutout was decoded
    here and held for the whole run (~0.65 MB a 384-px cutout: 5,000 sources, 3.3 GB)."""
    objects_path = Path(objects_path)
    if not objects_path.exists():
        raise InputError(f"{objects_path}: objects table not found")
    columns = ["cutout_id", "category", "image", "superpixels", "area"]
    names = objects_table_columns(objects_path)
    # Tables written before these columns have none.
    columns += [name for name in ("provenance", "box", "source_size") if name in names]
    cache: ByteLRU[tuple[np.ndarray, np.ndarray]] = ByteLRU(
        cutout_cache_bytes if cache_bytes is None else cache_bytes, _decoded_bytes)  # (the caller's: everywhere)
    cutouts: list[Cutout] = []
    # A row group at a time: the whole table read, then made rows, held every PNG twice (4x the table at its peak).
    for row in (row for group in iter_objects_table(objects_path, columns) for row in group.to_pylist()):
        box, size = row.get("box"), row.get("source_size")
        cutouts.append(StoredCutout(row["cutout_id"], row["category"], row["image"]["bytes"],  # type: ignore[arg-type]
                                    row["superpixels"]["bytes"], int(row["area"]), row.get("provenance"),
                                    tuple(box) if box else None, tuple(size) if size else None,
                                    f"{objects_path}:{row['cutout_id']}", cache))
    return cutouts


def warm_cutouts(cutouts: list[Cutout]) -> None:
    """Decode the stored cutouts in order until their cache is full (before a pool of workers is forked:
    those decoded here are shared by every worker, as the whole bank was)."""
    for cutout in cutouts:
        if isinstance(cutout, StoredCutout):
            if cutout.cache.full():
                return
            cutout.decoded()


def recorded_sizes(found: ObjectsRead) -> list[tuple[Any, Any]]:
    """``(box, source_size)`` of each cutout :func:`read_objects` found (read from its up-to-date table,
    where a table written before these columns gives None), before anything is written."""
    if found.rows is not None:
        return [(row.get("box"), row.get("source_size")) for row in found.rows]
    names = pq.read_schema(found.path).names
    table = read_objects_table(found.path, [name for name in ("box", "source_size") if name in names] or ["cutout_id"])
    return [(row.get("box"), row.get("source_size")) for row in table.to_pylist()]


def default_workers() -> int:
    """One worker process per CPU this process may use (its affinity and its cgroup's CPU quota)."""
    return usable_cpus()
