"""`synth expand`: sources → cutouts → composites → Parquet shards.

Row ``i`` is generated from ``SeedSequence([seed, i])`` alone and shards hold fixed
row ranges, so the same seed gives byte-identical shards whatever the number of
workers or the engine. Work is split in row groups: across local processes (the ``local``
engine, here) or across a Ray cluster (the ``ray`` engine, :mod:`augment.engines.ray_engine`).
Each shard is written to a temporary file of its own, checked, and renamed or copied into place
when complete (:mod:`augment.shard_writer`), so a killed run leaves no half-written shard and a
rerun redoes only the shards that are not finished (each kept shard is read back first: readable,
the planned rows, this run's hash).

Sources, backgrounds and the output folder may be local paths or object-store URIs
(:mod:`augment.storage`): remote sources are mirrored to a local cache to cut the objects out,
remote backgrounds are read where they are needed, and shards are committed to the store.

The output folder is locked for the whole run (a second run into it stops at once with
:class:`augment.locking.BusyError`; an object-store folder by :mod:`augment.object_lock`); a folder holding another run's shards is refused unless
``overwrite``; ``manifest.json`` is removed when the run starts changing the folder and written
when it finishes, and it is the list of shards readers use (:mod:`augment.shards`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing.pool
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Protocol

from augment.composite import check_source_sizes
from augment.config import BackgroundConfig, ExpandConfig, SourceConfig
from augment.cutouts import Cutout, load_cutouts, read_objects, recorded_sizes, write_objects
from augment.excluded_folders import excluding
from augment.imageio import InputError
from augment.label_names import check_label_names
from augment.labelled_backgrounds import MIN_SIDE, LabelledBackground, collect_labelled_backgrounds
from augment.object_lock import claim_output
from augment.outputs import check_not_an_input, check_output_folder, inside
from augment.pixel_limit import EXPAND_WORK, pixel_work
from augment.render_rows import RenderJob
from augment.schema import (COMPOSITE_SCHEMA, CONFIG_HASH_KEY, OBJECTS_FILE, RENDERING_VERSION, RUN_HASH_KEY, row_id,
                            shard_name)
from augment.shard_writer import scratch_folder
from augment.shards import check_other_run, clear_for_run, write_manifest
from augment.sources import Skip, limited, skipped_summary
from augment.storage import Location, Place, as_place, file_size, list_images, read_image
from augment.store_writes import cache_root, publish_file, remove_temporaries, stage
from augment.system import OPENCV_DISTRIBUTIONS, fork_pool, missing_modules, package_versions, tune_malloc

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")

@dataclass(frozen=True)
class ShardPlan:
    index: int
    name: str
    start: int  # first row index (inclusive)
    stop: int  # last row index (exclusive)


@dataclass
class ExpandResult:
    out_dir: Place
    manifest: dict[str, Any]
    rows_written: int
    shards_skipped_as_done: int
    seconds: float
    skips: list[Skip] = field(default_factory=list)
    engine_stats: dict[str, Any] = field(default_factory=dict)  # what the engine reports (tasks, transfers)


class Engine(Protocol):
    """How the shards of a run are checked and made: local processes or a Ray cluster."""

    def unfinished(self, plans: list[ShardPlan], out_dir: Place, split: str, run_hash: str) -> list[ShardPlan]: ...

    def write(self, plans: list[ShardPlan], out_dir: Place, job: RenderJob,
              progress: Callable[[str, int, int], None] | None) -> int: ...


def plan_shards(config: ExpandConfig) -> list[ShardPlan]:
    rows_per_shard = config.rows_per_shard()
    return [
        ShardPlan(k, shard_name(config.output.split, k), start, min(start + rows_per_shard, config.num))
        for k, start in enumerate(range(0, config.num, rows_per_shard))
    ]


# ----------------------------------------------------------------- inputs
def _check_background(path: Place) -> str | None:
    try:
        with pixel_work(EXPAND_WORK):  # here too: a thread of a pool has a context of its own
            image = read_image(path, "rgb")
    except InputError as error:
        return str(error)
    if min(image.shape[:2]) < MIN_SIDE:
        return f"{path}: too small to use as a background ({image.shape[1]}x{image.shape[0]})"
    return None


def collect_backgrounds(folder: Place, workers: int, config: BackgroundConfig | None = None,
                        progress: Callable[[int, int], None] | None = None
                        ) -> tuple[list[Place | LabelledBackground], list[Skip]]:
    """The usable backgrounds under ``folder`` (local or an object-store prefix) and the skips.

    ``config`` picks them (include/exclude/limit) and says whether they are plain images or labelled
    photos (a local ``label_map`` or ``mask_pairs`` source, :mod:`augment.labelled_backgrounds`).
    ``progress(done, total)`` is called as plain images are checked (each is decoded).
    """
    folder = as_place(folder)
    config = config or BackgroundConfig()
    if config.labelled:
        if isinstance(folder, Location):
            raise InputError(f"{folder}: labelled backgrounds are read from a local folder (backgrounds.format {config.format})")
        return collect_labelled_backgrounds(folder, config)  # type: ignore[return-value]
    images, others = list_images(folder)
    if config.include or config.exclude or config.limit:
        images = [p for _, p in limited([(Path(p.name), p) for p in images],
                                        SourceConfig(include=config.include, exclude=config.exclude, limit=config.limit))]
    skips = [Skip(str(p), "not an image file") for p in others]
    if isinstance(folder, Location) and len(images) > 1:  # network-bound: threads, many requests in flight
        with multiprocessing.pool.ThreadPool(min(32, 4 * max(1, workers))) as pool:
            problems = _counted(pool.imap(_check_background, images, chunksize=4), len(images), progress)
    elif workers > 1 and len(images) > 32:
        with fork_pool(min(workers, -(-len(images) // 16))) as pool:  # a process per chunk at most
            problems = _counted(pool.imap(_check_background, images, chunksize=16), len(images), progress)
    else:
        problems = _counted(map(_check_background, images), len(images), progress)
    good = []
    for path, problem in zip(images, problems):
        if problem:
            skips.append(Skip.of(problem, path))
        else:
            good.append(path)
    if not good:
        picked = "backgrounds.include/exclude" if config.include or config.exclude else ""
        raise InputError(f"{folder}: no usable background images ({skipped_summary(skips, 'file', picked)})")
    return good, skips


def _counted(results: Iterable[str | None], total: int, progress: Callable[[int, int], None] | None) -> list[str | None]:
    """``results`` in a list, ``progress(done, total)`` called as each comes."""
    problems = []
    for problem in results:
        problems.append(problem)
        if progress:
            progress(len(problems), total)
    return problems


def _check_not_an_input(out_dir: Path, sources: list[Place], backgrounds: Place) -> None:
    """``out_dir`` is not a source or the backgrounds folder: a rerun would read this run's
    ``objects.parquet`` as the source's objects (and its changed masks never), or list its files
    among the backgrounds."""
    check_not_an_input(out_dir, [*((s, "source") for s in sources), (backgrounds, "--backgrounds")],
                       "a rerun would read this run's output as its input")


def _check_remote_out(out_dir: Location, sources: list[Place], backgrounds: Place) -> None:
    """An object-store ``out_dir`` is a prefix of its own: not an existing object (the shards would
    land under ``KEY/`` beside it), nor a source or the backgrounds prefix or inside one (a rerun would
    mirror this run's shards with the source and read its ``objects.parquet`` as the source's
    objects, or list the shards among the backgrounds)."""
    if out_dir.is_file():
        raise InputError(f"{out_dir}: --out must be a prefix (a folder), but an object of that name exists")
    for place, option in [*((s, "source") for s in sources), (backgrounds, "--backgrounds")]:
        if isinstance(place, Location) and out_dir.is_relative_to(place):
            where = "is also" if out_dir == place else "is inside"
            raise InputError(f"{out_dir}: --out {where} the {option} prefix {place} (a rerun would read this run's "
                             "output as its input); choose another --out")


def _run_hash(config_hash: str, cutouts: list[Cutout], backgrounds: list[Place | LabelledBackground]) -> str:
    digest = hashlib.sha256(f"{config_hash}:rendering {RENDERING_VERSION}".encode())
    for cutout in cutouts:
        digest.update(cutout.cutout_id.encode())
    for path in backgrounds:  # names and sizes: the same files give the same hash from a disk or a bucket
        if isinstance(path, LabelledBackground):
            digest.update(f"{path.image.name}:{file_size(path.image)}:{path.labels.name}:{file_size(path.labels)}\n".encode())
        else:
            digest.update(f"{path.name}:{file_size(path)}\n".encode())
    return digest.hexdigest()[:16]


def planned_ids(plan: ShardPlan, split: str) -> list[str]:
    return [row_id(split, i) for i in range(plan.start, plan.stop)]


def _package_versions() -> dict[str, str]:
    names = ("synth", "numpy", *OPENCV_DISTRIBUTIONS, "scikit-image", "scipy", "pyarrow", "pillow", "pycocotools")
    found = {name: version for name, version in package_versions(names).items() if version is not None}
    return {"python": platform.python_version(), **found}


# ----------------------------------------------------------------- the run
@pixel_work(EXPAND_WORK)  # an image over the limit is told an expansion's memory, not a search's
def run_expand(
    sources: list[Place | str],
    backgrounds: Place | str,
    out_dir: Place | str,
    config: ExpandConfig,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    overwrite: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
) -> ExpandResult:
    """Expand ``sources`` into ``config.num`` composites under ``out_dir``.

    ``progress(stage, done, total)`` is called as backgrounds are checked (``backgrounds``), objects read
    from the sources (``sources``: total 0, not known ahead), cutouts' superpixels computed (``cutouts``)
    and rows finished (``composites``). ``overwrite``
    replaces another run's shards in ``out_dir`` instead of refusing to mix them in. ``engine``:
    ``local`` (``workers`` processes) or ``ray`` (the cluster at ``ray_address``, else a local Ray
    with ``workers`` CPUs). Paths may be object-store URIs (``s3://``, ``gs://``).
    """
    started = time.perf_counter()
    tune_malloc()
    out_dir, backgrounds = as_place(out_dir), as_place(backgrounds)
    sources = [as_place(s) for s in sources]
    config.validate()
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    # Every input and the output place are checked (an unreachable store is one line) before anything is written.
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or directory")
    if not backgrounds.is_dir():
        raise InputError(f"{backgrounds}: " + ("--backgrounds must be a folder of images, not a file" if backgrounds.exists()
                                              else "no such directory"))
    if isinstance(out_dir, Location):
        out_dir.check_bucket()
        _check_remote_out(out_dir, sources, backgrounds)
        if engine == "local":
            scratch_folder()  # where its shards are staged: a missing SYNTH_SCRATCH_DIR is one line now
    else:
        check_output_folder(out_dir)
        _check_not_an_input(out_dir, sources, backgrounds)
    with open_engine(engine, workers, ray_address) as runner, claim_output(out_dir, "synth expand") as guard, \
            (excluding(out_dir) if not isinstance(out_dir, Location) else contextlib.nullcontext()):
        # (an --out inside a source or the backgrounds: not listed as input, nor in the sources' fingerprint)
        remove_temporaries(out_dir)  # left by a killed run: only the lock holder writes here
        config_hash = config.content_hash()
        plans = plan_shards(config)
        for plan in plans:
            inside(out_dir, out_dir / plan.name)
        others = check_other_run(out_dir, config_hash, overwrite)
        mirror_skips: list[Skip] = []  # objects whose keys no local file can be named after
        local_sources = [stage(source, skipped=mirror_skips) for source in sources]  # object-store sources: a local mirror
        check_label_names(local_sources, config.sources)  # a misspelt keep_labels name: before any work
        background_paths, background_skips = collect_backgrounds(
            backgrounds, workers, config.backgrounds, (lambda d, t: progress("backgrounds", d, t)) if progress else None)
        # Sources that give no object (an undetectable format, every photo skipped) stop the run here,
        # before the folder changes: an earlier run's manifest and shards stay readable.
        found = read_objects(local_sources, config.sources, work_folder(out_dir),
                             lambda path: _remote_path(path, local_sources, sources),
                             (lambda d: progress("sources", d, 0)) if progress else None)
        if progress:  # read, or an up-to-date table's: the count is known now
            progress("sources", found.count, found.count)
        check_source_sizes(recorded_sizes(found), config.composition)  # an older table: refused before any change
        clear_for_run(out_dir, others, [p.name for p in plans])  # the first change to the folder
        objects_path, skips, _ = write_objects(
            found, config.sources, workers, (lambda d, t: progress("cutouts", d, t)) if progress else None
        )
        publish_file(objects_path, out_dir / OBJECTS_FILE)
        del found  # its rows (every cutout's PNGs), not held while the composites are rendered
        cutouts = load_cutouts(objects_path)
        skips = mirror_skips + [_remote_name(skip, local_sources, sources) for skip in skips] + background_skips
        for skip in background_skips:
            log.info("skipped background %s: %s", skip.path, skip.reason)

        run_hash = _run_hash(config_hash, cutouts, background_paths)
        pending = runner.unfinished(plans, out_dir, config.output.split, run_hash)
        done_already = len(plans) - len(pending)
        if done_already:
            log.info("%d of %d shards already finished; resuming with the rest", done_already, len(plans))
        schema = COMPOSITE_SCHEMA.with_metadata(
            {**COMPOSITE_SCHEMA.metadata, RUN_HASH_KEY: run_hash.encode(), CONFIG_HASH_KEY: config_hash.encode()})
        job = RenderJob(cutouts, background_paths, config, config_hash, schema)
        guard.check()
        rows_written = runner.write(pending, out_dir, job, progress)
        guard.check()

        manifest = {
            "shards": [
                {"name": p.name, "rows": p.stop - p.start, "first_row": p.start, "bytes": file_size(out_dir / p.name)}
                for p in plans
            ],
            "num_rows": config.num,
            "objects": {"file": OBJECTS_FILE, "cutouts": len(cutouts)},
            "backgrounds": {"folder": str(backgrounds), "count": len(background_paths), "format": config.backgrounds.format},
            "sources": [str(s) for s in sources],
            "skipped": [{"path": s.path, "reason": s.reason} for s in skips],
            "config": config.to_dict(),
            "config_hash": config_hash,
            "run_hash": run_hash,
            "rendering": RENDERING_VERSION,  # which code's pixels the rows' params replay to
            "versions": _package_versions(),
        }
        write_manifest(out_dir, manifest)
    return ExpandResult(out_dir, manifest, rows_written, done_already, time.perf_counter() - started, skips,
                        getattr(runner, "stats", {}))


def open_engine(engine: str, workers: int, ray_address: str | None) -> ContextManager[Engine]:
    """The engine, started (a Ray engine connects here: an unreachable cluster fails before any write)."""
    if engine == "ray":
        if missing_modules(("ray",)):  # Ray is an optional extra, imported only when asked for
            raise InputError('--engine ray needs Ray: pip install "synth[ray]"')
        from augment.engines.ray_engine import RayEngine

        return RayEngine(ray_address, workers)
    if ray_address:
        raise InputError("--ray-address needs --engine ray")
    from augment.engines.local_engine import LocalEngine  # imports this module's worker functions

    return contextlib.nullcontext(LocalEngine(workers))


def work_folder(out_dir: Place) -> Path:
    """Where the objects table is built: ``out_dir`` itself, or a local cache folder for an object store."""
    if isinstance(out_dir, Location):
        folder = cache_root() / "expand" / hashlib.sha256(out_dir.uri.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return out_dir


def _remote_path(path: str, local_sources: list[Path], sources: list[Place]) -> str:
    """A path in a mirrored source, named by its object-store URI rather than the cache path;
    any other path (a local source's file) as it is."""
    for local, source in zip(local_sources, sources):
        if isinstance(source, Location) and (path == str(local) or path.startswith(f"{local}/")):
            return str(source) + path[len(str(local)):]
    return path


def _remote_name(skip: Skip, local_sources: list[Path], sources: list[Place]) -> Skip:
    """A skip in a mirrored source, named by its object-store URI rather than the cache path."""
    return Skip(_remote_path(skip.path, local_sources, sources), skip.reason)


def unfinished_plans(plans: list[ShardPlan], problems: list[str | None]) -> list[ShardPlan]:
    """The plans whose shard is not a finished shard of this run (``problems[k]``: why not, or None)."""
    pending = []
    for plan, problem in zip(plans, problems):
        if problem is not None:
            if problem != "missing":
                log.info("%s: %s; making it again", plan.name, problem)
            pending.append(plan)
    return pending


def present_shards(out_dir: Place) -> set[str]:
    """Names of the files in ``out_dir`` (one listing, not a request per planned shard)."""
    return {p.name for p in out_dir.iterdir()} if out_dir.exists() else set()
