"""Still images and video frames searched side by side on the CPU: one medium per worker thread,
the CPU's torch threads shared out among the workers (one each on a 2-core machine), instead of
one medium at a time on all of them.

Why: on a 2-core CPU the backbone's large convolutions use a second thread well (about 1.6-1.8x
one thread), the rest of the search does not (the zoomed media's smaller encodings, the
correlations, the verification windows, OpenCV and numpy between them), so the default search
took 1.9x the backbone's time at two threads against 1.35x at one. Two media at once, one thread
each, keep both cores busy through all of it (`python benchmarks/search.py --photos 20`,
benchmarks/RESULTS.md "Speed at two threads, stop 23"). Each medium's result is the one it gets
searched alone (up to float rounding between thread counts; tests/test_search_workers.py: the
same detections.jsonl), whichever worker takes it. On CUDA, or with one worker, media go to
:meth:`pipelines.search.Searcher.find_many` as one batch, as before.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch

from augment.system import usable_cpus
from pipelines.search_outputs import MAX_WORKERS

_local = threading.local()
T = TypeVar("T")
R = TypeVar("R")


# Default workers at most: each holds a search's memory (~0.3 GB at 1024 px), and past a few the
# threads are better spent inside each search (many cores: 4 workers of cores / 4 threads).
MAX_DEFAULT_WORKERS = 4


def default_workers(device: torch.device) -> int:
    """Side-by-side media on the CPU: one per torch thread (its default: one per core) and usable CPU
    (a container's CPU quota, which torch does not read), at most :data:`MAX_DEFAULT_WORKERS`; one on CUDA."""
    return min(MAX_DEFAULT_WORKERS, usable_cpus(), max(1, torch.get_num_threads())) if device.type == "cpu" else 1


def _worker_threads(threads: int) -> None:
    """Set once per worker thread: torch's intra-op thread count is per thread once it has run."""
    if getattr(_local, "threads", None) != threads:
        torch.set_num_threads(threads)
        _local.threads = threads


class SearchWorkers:
    """Searches lists of media with ``workers`` threads (``threads_each`` torch threads each);
    results in input order.

    ``searcher`` is a :class:`pipelines.search.Searcher`. Use as a context manager (or call
    :meth:`close`) so the threads end with the job.
    """

    def __init__(self, searcher: Any, workers: int | None = None) -> None:
        if workers is not None and not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, not {workers}")
        self.searcher = searcher
        self.workers = default_workers(searcher.device) if workers is None else workers
        self._pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="search")
                      if self.workers > 1 else None)
        self._threads = torch.get_num_threads()
        # torch's threads shared out among the workers (one each on a 2-core machine). A container's
        # quota is already in torch's count (augment sets OMP_NUM_THREADS to it before torch loads), and
        # a count the user set (OMP_NUM_THREADS, torch.set_num_threads) is theirs to keep.
        self.threads_each = max(1, self._threads // self.workers)

    def find_each(self, query: Any, media: Sequence[np.ndarray],
                  sources: Sequence[str | None] | None = None,
                  frames: Sequence[int | None] | None = None) -> list[Any]:
        """One query searched in each of ``media`` (any sizes), as
        :meth:`pipelines.search.Searcher.find_many` would one at a time; results in input order."""
        prepared = self.searcher.prepare(query)
        return self.find_pairs([prepared] * len(media), media, sources, frames)

    def find_pairs(self, queries: Sequence[Any], media: Sequence[np.ndarray],
                   sources: Sequence[str | None] | None = None,
                   frames: Sequence[int | None] | None = None) -> list[Any]:
        """``queries[i]`` searched in ``media[i]``. With one worker, consecutive media of one
        query and one size are one batch of ``find_many``."""
        if len(queries) != len(media):
            raise ValueError(f"{len(queries)} queries for {len(media)} media")
        if self._pool is None or len(media) < 2:
            return [result for run in _runs(queries, media)
                    for result in self._find(queries[run.start], media, sources, frames, run)]
        return self.map(lambda i: self._find(queries[i], media, sources, frames, range(i, i + 1))[0],
                        range(len(media)))

    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``function`` of each item, on the workers (``threads_each`` torch threads each; in this
        thread with one worker); results in input order, the first error raised."""
        if self._pool is None:
            return [function(item) for item in items]

        def run(item: T) -> R:
            _worker_threads(self.threads_each)
            with torch.inference_mode():
                return function(item)

        futures = [self._pool.submit(run, item) for item in items]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()
            # A worker's first torch call set the process-wide count to 1; this thread keeps its own.
            torch.set_num_threads(self._threads)

    def _find(self, query: Any, media: Sequence[np.ndarray], sources: Sequence[str | None] | None,
              frames: Sequence[int | None] | None, run: range) -> list[Any]:
        return self.searcher.find_many(query, [media[i] for i in run],
                                       sources=[sources[i] for i in run] if sources else None,
                                       frames=[frames[i] for i in run] if frames else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "SearchWorkers":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _runs(queries: Sequence[Any], media: Sequence[np.ndarray]) -> list[range]:
    """Index ranges of consecutive media sharing one query (the same object) and one size."""
    runs: list[range] = []
    start = 0
    for i in range(1, len(media) + 1):
        if i == len(media) or queries[i] is not queries[start] or media[i].shape != media[start].shape:
            runs.append(range(start, i))
            start = i
    return runs
