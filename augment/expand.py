"""`synth expand`: sources → cutouts → composites → Parquet shards.

Row ``i`` is generated from ``SeedSequence([seed, i])`` alone and shards hold fixed
row ranges, so the same seed gives byte-identical shards whatever the number of
workers. Work is split in row groups across processes; the main process writes each
shard to a temporary file and renames it when complete, so a killed run leaves no
half-written shard and a rerun redoes only the shards that are not finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augment.composite import BackgroundStore, Scene, compose_scene
from augment.config import ExpandConfig
from augment.cutouts import Cutout, build_objects_table, load_cutouts
from augment.imageio import InputError, atomic_write_text, encode_jpeg, encode_png, list_images, read_image
from augment.schema import COMPOSITE_SCHEMA, MANIFEST_FILE, shard_name
from augment.system import tune_malloc
from augment.sources import Skip

log = logging.getLogger(__name__)

RUN_HASH_KEY = b"synth_run_hash"
# JPEG and PNG bytes do not compress further: zstd only where it pays (objects, params).
SHARD_COMPRESSION = {name: ("none" if name in ("image", "mask") else "zstd") for name in COMPOSITE_SCHEMA.names}
# Conservative bytes per pixel of a JPEG q90 composite plus its PNG mask, to size shards by bytes.
ESTIMATED_BYTES_PER_PIXEL = 1.2


@dataclass(frozen=True)
class ShardPlan:
    index: int
    name: str
    start: int  # first row index (inclusive)
    stop: int  # last row index (exclusive)


@dataclass
class ExpandResult:
    out_dir: Path
    manifest: dict[str, Any]
    rows_written: int
    shards_skipped_as_done: int
    seconds: float
    skips: list[Skip] = field(default_factory=list)


def row_seed(seed: int, index: int) -> int:
    """The seed of row ``index``: independent streams for every (run seed, row)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def plan_shards(config: ExpandConfig) -> list[ShardPlan]:
    output, composition = config.output, config.composition
    row_bytes = composition.width * composition.height * ESTIMATED_BYTES_PER_PIXEL
    rows_per_shard = max(1, min(output.shard_rows, int(output.shard_bytes // row_bytes)))
    return [
        ShardPlan(k, shard_name(output.split, k), start, min(start + rows_per_shard, config.num))
        for k, start in enumerate(range(0, config.num, rows_per_shard))
    ]


# ----------------------------------------------------------------- per-process state
# Set in the parent before forking the worker pool, so workers share it copy-on-write.
_STATE: dict[str, Any] = {}


def _init_state(cutouts: list[Cutout], background_paths: list[Path], config: ExpandConfig, config_hash: str) -> None:
    max_side = int(max(config.composition.width, config.composition.height) / config.composition.background_crop[0])
    provenance = {c.cutout_id: c.provenance for c in cutouts if c.provenance}
    _STATE.update(cutouts=cutouts, backgrounds=BackgroundStore(background_paths, max_side), config=config, config_hash=config_hash,
                  provenance=provenance)


def render_row(index: int) -> dict[str, Any]:
    """Make and encode composite ``index`` (uses the per-process state)."""
    config: ExpandConfig = _STATE["config"]
    seed = row_seed(config.seed, index)
    scene = compose_scene(_STATE["cutouts"], _STATE["backgrounds"], config.composition, config.distortions, rng=np.random.default_rng(seed))
    return scene_to_row(scene, index, seed, config, _STATE["config_hash"], _STATE["provenance"])


def scene_to_row(scene: Scene, index: int, seed: int, config: ExpandConfig, config_hash: str,
                 provenance: dict[str, dict] | None = None) -> dict[str, Any]:
    """A shard row; ``provenance`` (cutout id -> provenance of automatic cutouts) is carried into its objects."""
    provenance = provenance or {}
    row_id = f"{config.output.split}-{index:08d}"
    return {
        "id": row_id,
        "image": {"bytes": encode_jpeg(scene.image, config.output.jpeg_quality), "path": f"{row_id}.jpg"},
        "mask": {"bytes": encode_png(scene.instances, 1), "path": f"{row_id}.png"},
        "width": int(scene.image.shape[1]),
        "height": int(scene.image.shape[0]),
        "objects": [
            {
                "instance_id": o.instance_id,
                "cutout_id": o.cutout_id,
                "category": o.category,
                "box": list(o.box),
                "visible_fraction": o.visible_fraction,
                "provenance": provenance.get(o.cutout_id),
            }
            for o in scene.objects
        ],
        "params": json.dumps(scene.params, separators=(",", ":")),
        "seed": seed,
        "config_hash": config_hash,
    }


def _render_range(bounds: tuple[int, int]) -> tuple[int, list[dict[str, Any]]]:
    start, stop = bounds
    return start, [render_row(i) for i in range(start, stop)]


# ----------------------------------------------------------------- inputs
def _check_background(path: Path) -> str | None:
    try:
        image = read_image(path, "rgb")
    except InputError as error:
        return str(error)
    if min(image.shape[:2]) < 16:
        return f"{path}: too small to use as a background ({image.shape[1]}x{image.shape[0]})"
    return None


def collect_backgrounds(folder: Path, workers: int) -> tuple[list[Path], list[Skip]]:
    images, others = list_images(Path(folder))
    skips = [Skip(str(p), "not an image file") for p in others]
    if workers > 1 and len(images) > 32:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            problems = pool.map(_check_background, images, chunksize=16)
    else:
        problems = [_check_background(p) for p in images]
    good = []
    for path, problem in zip(images, problems):
        if problem:
            skips.append(Skip(str(path), problem))
        else:
            good.append(path)
    if not good:
        raise InputError(f"{folder}: no usable background images ({len(skips)} files skipped)")
    return good, skips


def _run_hash(config_hash: str, cutouts: list[Cutout], backgrounds: list[Path]) -> str:
    digest = hashlib.sha256(config_hash.encode())
    for cutout in cutouts:
        digest.update(cutout.cutout_id.encode())
    for path in backgrounds:
        digest.update(f"{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _shard_is_done(path: Path, plan: ShardPlan, run_hash: str) -> bool:
    if not path.exists():
        return False
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowException, OSError):
        return False
    return meta.num_rows == plan.stop - plan.start and (meta.metadata or {}).get(RUN_HASH_KEY, b"").decode() == run_hash


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("synth", "numpy", "opencv-python-headless", "albumentations", "scikit-image", "pyarrow", "pillow", "pycocotools"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


# ----------------------------------------------------------------- the run
def run_expand(
    sources: list[Path],
    backgrounds: Path,
    out_dir: Path,
    config: ExpandConfig,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> ExpandResult:
    """Expand ``sources`` into ``config.num`` composites under ``out_dir``.

    ``progress(stage, done, total)`` is called as cutouts and rows are finished.
    """
    started = time.perf_counter()
    tune_malloc()
    out_dir = Path(out_dir)
    sources = [Path(s) for s in sources]
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or directory")
    if not Path(backgrounds).exists():
        raise InputError(f"{backgrounds}: no such directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # left by a killed run
        stale.unlink()

    objects_path, skips, _ = build_objects_table(
        sources, config.sources, out_dir, workers, (lambda d, t: progress("cutouts", d, t)) if progress else None
    )
    cutouts = load_cutouts(objects_path)
    background_paths, background_skips = collect_backgrounds(Path(backgrounds), workers)
    skips = skips + background_skips
    for skip in background_skips:
        log.info("skipped background %s: %s", skip.path, skip.reason)

    config_hash = config.content_hash()
    run_hash = _run_hash(config_hash, cutouts, background_paths)
    plans = plan_shards(config)
    pending = [p for p in plans if not _shard_is_done(out_dir / p.name, p, run_hash)]
    done_already = len(plans) - len(pending)
    if done_already:
        log.info("%d of %d shards already finished; resuming with the rest", done_already, len(plans))

    _init_state(cutouts, background_paths, config, config_hash)
    schema = COMPOSITE_SCHEMA.with_metadata({**COMPOSITE_SCHEMA.metadata, RUN_HASH_KEY: run_hash.encode()})
    rows_total = sum(p.stop - p.start for p in pending)
    rows_written = 0
    if progress:
        progress("composites", 0, rows_total)
    for plan, groups in _rendered_shards(pending, config.output.row_group_rows, workers):
        for rows in _write_shard(out_dir / plan.name, groups, schema, config.output.row_group_rows):
            rows_written += rows
            if progress:
                progress("composites", rows_written, rows_total)

    manifest = {
        "shards": [
            {"name": p.name, "rows": p.stop - p.start, "first_row": p.start, "bytes": (out_dir / p.name).stat().st_size} for p in plans
        ],
        "num_rows": config.num,
        "objects": {"file": objects_path.name, "cutouts": len(cutouts)},
        "backgrounds": {"folder": str(backgrounds), "count": len(background_paths)},
        "sources": [str(s) for s in sources],
        "skipped": [{"path": s.path, "reason": s.reason} for s in skips],
        "config": config.to_dict(),
        "config_hash": config_hash,
        "run_hash": run_hash,
        "versions": _package_versions(),
    }
    atomic_write_text(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2))
    return ExpandResult(out_dir, manifest, rows_written, done_already, time.perf_counter() - started, skips)


def _rendered_shards(plans: list[ShardPlan], group_rows: int, workers: int) -> Iterator[tuple[ShardPlan, Iterator[list[dict]]]]:
    """Yield each shard with an iterator over its rendered row groups, in order."""
    units = [(p, (s, min(s + group_rows, p.stop))) for p in plans for s in range(p.start, p.stop, group_rows)]
    if workers > 1 and units:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap(_render_range, [bounds for _, bounds in units])  # ordered: deterministic output
    else:
        pool, results = None, map(_render_range, [bounds for _, bounds in units])
    try:
        for plan in plans:
            count = sum(1 for p, _ in units if p is plan)

            def groups(count: int = count) -> Iterator[list[dict]]:
                for _ in range(count):
                    yield next(results)[1]

            yield plan, groups()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _write_shard(path: Path, groups: Iterator[list[dict]], schema: pa.Schema, group_rows: int) -> Iterator[int]:
    """Write the row groups to a temporary file, yielding each group's row count; rename when complete."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(temporary, schema, compression=SHARD_COMPRESSION, write_statistics=["id", "width", "height", "seed"]) as writer:
            for rows in groups:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=group_rows)
                yield len(rows)
        temporary.replace(path)
    finally:
        if temporary.exists():
            temporary.unlink()
