"""`synth expand`'s default engine: row groups rendered by a pool of forked local processes (the
per-process state and ``render_row`` of :mod:`augment.render_rows`), shards written in order by the
parent, so a run's output is the same whatever the number of workers.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Callable, Iterator

import pyarrow as pa

from augment.expand import ShardPlan, planned_ids, present_shards, unfinished_plans
from augment.render_rows import GROUPS_IN_FLIGHT_PER_CPU, RenderJob, render_range
from augment.shard_writer import write_shard
from augment.shards import verify_shard
from augment.storage import Place
from augment.system import fork_pool


class LocalEngine:
    """Row groups rendered by a pool of forked processes; shards written by this process in order."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.stats: dict[str, Any] = {"engine": "local", "workers": workers}

    def unfinished(self, plans: list[ShardPlan], out_dir: Place, split: str, run_hash: str) -> list[ShardPlan]:
        present = present_shards(out_dir)
        return unfinished_plans(plans, [verify_shard(out_dir / p.name, planned_ids(p, split), run_hash)
                                        if p.name in present else "missing" for p in plans])

    def write(self, plans: list[ShardPlan], out_dir: Place, job: RenderJob,
              progress: Callable[[str, int, int], None] | None) -> int:
        job.activate()  # before forking: the workers share the state copy-on-write
        config = job.config
        rows_total = sum(p.stop - p.start for p in plans)
        rows_written = 0
        if progress:
            progress("composites", 0, rows_total)
        for plan, groups in _rendered_shards(plans, config.output.row_group_rows, self.workers):
            tables = (pa.Table.from_pylist(rows, schema=job.schema) for rows in groups)
            for rows in write_shard(out_dir / plan.name, tables, job.schema, config.output.row_group_rows,
                                    planned_ids(plan, config.output.split)):
                rows_written += rows
                if progress:
                    progress("composites", rows_written, rows_total)
        return rows_written


def _rendered_shards(plans: list[ShardPlan], group_rows: int, workers: int) -> Iterator[tuple[ShardPlan, Iterator[list[dict]]]]:
    """Yield each shard with an iterator over its rendered row groups, in order."""
    units = [(p, (s, min(s + group_rows, p.stop))) for p in plans for s in range(p.start, p.stop, group_rows)]
    if workers > 1 and units:
        processes = min(workers, len(units))
        pool = fork_pool(processes)  # no idle processes: --workers 100000 forked 100000
        results = _in_order(pool, [bounds for _, bounds in units], GROUPS_IN_FLIGHT_PER_CPU * processes)
    else:
        pool, results = None, map(render_range, [bounds for _, bounds in units])
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


def _in_order(pool: Any, bounds: list[tuple[int, int]], window: int) -> Iterator[tuple[int, list[dict]]]:
    """``render_range`` of each of ``bounds`` on ``pool``, in order (deterministic output), at most
    ``window`` groups ahead of the one taken: ``Pool.imap`` sent them all at once, and rendered groups
    piled up in this process while it wrote and verified the shards (O(rows) with a writer slower than
    the workers)."""
    pending: collections.deque = collections.deque()
    queued = iter(bounds)
    for unit in itertools.islice(queued, window):
        pending.append(pool.apply_async(render_range, (unit,)))
    while pending:
        done = pending.popleft().get()
        for unit in itertools.islice(queued, 1):  # the next one in before this one is written
            pending.append(pool.apply_async(render_range, (unit,)))
        yield done
