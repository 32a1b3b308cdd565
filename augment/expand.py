"""`synth expand`: sources → cutouts → composites → Parquet shards.

Row ``i`` is generated from ``SeedSequence([seed, i])`` alone and shards hold fixed
row ranges, so the same seed gives byte-identical shards whatever the number of
workers. Work is split in row groups across processes; the main process writes each
shard to a temporary file of its own and renames it when complete, so a killed run leaves no
half-written shard and a rerun redoes only the shards that are not finished (each kept shard is
read back first: readable, the planned rows, this run's hash).

The output folder is locked for the whole run (a second run into it stops at once with
:class:`augment.locking.BusyError`); a folder holding another run's shards is refused unless
``overwrite``; ``manifest.json`` is removed when the run starts changing the folder and written
when it finishes, and it is the list of shards readers use (:mod:`augment.shards`).
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
from augment.imageio import InputError, encode_jpeg, encode_png, list_images, read_image, temporary_beside
from augment.locking import claim_output_folder
from augment.outputs import inside
from augment.schema import COMPOSITE_SCHEMA, CONFIG_HASH_KEY, RUN_HASH_KEY, row_id, shard_name
from augment.shards import check_other_run, clear_for_run, verify_shard, write_manifest
from augment.sources import Skip
from augment.system import ignore_interrupts, tune_malloc

log = logging.getLogger(__name__)

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
    _STATE.update(cutouts=cutouts, backgrounds=BackgroundStore(background_paths, max_side), config=config, config_hash=config_hash)


def render_row(index: int) -> dict[str, Any]:
    """Make and encode composite ``index`` (uses the per-process state)."""
    config: ExpandConfig = _STATE["config"]
    seed = row_seed(config.seed, index)
    scene = compose_scene(_STATE["cutouts"], _STATE["backgrounds"], config.composition, config.distortions, rng=np.random.default_rng(seed))
    return scene_to_row(scene, index, seed, config, _STATE["config_hash"])


def scene_to_row(scene: Scene, index: int, seed: int, config: ExpandConfig, config_hash: str) -> dict[str, Any]:
    name = row_id(config.output.split, index)
    return {
        "id": name,
        "image": {"bytes": encode_jpeg(scene.image, config.output.jpeg_quality), "path": f"{name}.jpg"},
        "mask": {"bytes": encode_png(scene.instances, 1), "path": f"{name}.png"},
        "width": int(scene.image.shape[1]),
        "height": int(scene.image.shape[0]),
        "objects": [
            {
                "instance_id": o.instance_id,
                "cutout_id": o.cutout_id,
                "category": o.category,
                "box": list(o.box),
                "visible_fraction": o.visible_fraction,
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
        with multiprocessing.get_context("fork").Pool(workers, initializer=ignore_interrupts) as pool:
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


def planned_ids(plan: ShardPlan, split: str) -> list[str]:
    return [row_id(split, i) for i in range(plan.start, plan.stop)]


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
    overwrite: bool = False,
) -> ExpandResult:
    """Expand ``sources`` into ``config.num`` composites under ``out_dir``.

    ``progress(stage, done, total)`` is called as cutouts and rows are finished. ``overwrite``
    replaces another run's shards in ``out_dir`` instead of refusing to mix them in.
    """
    started = time.perf_counter()
    tune_malloc()
    out_dir = Path(out_dir)
    sources = [Path(s) for s in sources]
    config.validate()
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or directory")
    if not Path(backgrounds).is_dir():
        raise InputError(f"{backgrounds}: no such directory")
    with claim_output_folder(out_dir, "synth expand"):
        for stale in out_dir.glob(".*.tmp"):  # left by a killed run: only the lock holder writes here
            stale.unlink()
        config_hash = config.content_hash()
        plans = plan_shards(config)
        for plan in plans:
            inside(out_dir, out_dir / plan.name)
        others = check_other_run(out_dir, config_hash, overwrite)
        background_paths, background_skips = collect_backgrounds(Path(backgrounds), workers)
        clear_for_run(out_dir, others, [p.name for p in plans])  # the first change to the folder
        objects_path, skips, _ = build_objects_table(
            sources, config.sources, out_dir, workers, (lambda d, t: progress("cutouts", d, t)) if progress else None
        )
        cutouts = load_cutouts(objects_path)
        skips = skips + background_skips
        for skip in background_skips:
            log.info("skipped background %s: %s", skip.path, skip.reason)

        run_hash = _run_hash(config_hash, cutouts, background_paths)
        pending = []
        for plan in plans:
            problem = verify_shard(out_dir / plan.name, planned_ids(plan, config.output.split), run_hash)
            if problem is not None:
                if problem != "missing":
                    log.info("%s: %s; making it again", plan.name, problem)
                pending.append(plan)
        done_already = len(plans) - len(pending)
        if done_already:
            log.info("%d of %d shards already finished; resuming with the rest", done_already, len(plans))

        _init_state(cutouts, background_paths, config, config_hash)
        schema = COMPOSITE_SCHEMA.with_metadata(
            {**COMPOSITE_SCHEMA.metadata, RUN_HASH_KEY: run_hash.encode(), CONFIG_HASH_KEY: config_hash.encode()})
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
                {"name": p.name, "rows": p.stop - p.start, "first_row": p.start, "bytes": (out_dir / p.name).stat().st_size}
                for p in plans
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
        write_manifest(out_dir, manifest)
    return ExpandResult(out_dir, manifest, rows_written, done_already, time.perf_counter() - started, skips)


def _rendered_shards(plans: list[ShardPlan], group_rows: int, workers: int) -> Iterator[tuple[ShardPlan, Iterator[list[dict]]]]:
    """Yield each shard with an iterator over its rendered row groups, in order."""
    units = [(p, (s, min(s + group_rows, p.stop))) for p in plans for s in range(p.start, p.stop, group_rows)]
    if workers > 1 and units:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=ignore_interrupts)
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
    """Write the row groups to a temporary file, yielding each group's row count; rename when complete.

    The temporary's name is unique (``mkstemp``), so no two writers ever share one.
    """
    temporary = temporary_beside(path)
    try:
        with pq.ParquetWriter(temporary, schema, compression=SHARD_COMPRESSION, write_statistics=["id", "width", "height", "seed"]) as writer:
            for rows in groups:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=group_rows)
                yield len(rows)
        temporary.replace(path)
    finally:
        if temporary.exists():
            temporary.unlink()
