"""Scale and system limits: thousands of inputs, long runs, what a run holds in memory as it goes."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import torch

from augment.imageio import save_image
from pipelines.search_jobs import SearchJob
from pipelines.search_outputs import PREPARED_QUERIES, run_search


class _Prepared:
    def __init__(self, name: str) -> None:
        self.name = name
        self.features = bytearray(1024)


class _Result:
    detections: list = []

    def heat_png(self) -> np.ndarray:
        return np.zeros((8, 8), np.uint8)

    def highlight(self) -> np.ndarray:
        return np.zeros((8, 8, 3), np.uint8)

    def to_json(self) -> dict:
        return {"detections": []}


class _CountingSearcher:
    """Prepares a query per path and counts how many prepared queries are alive at each search."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.network = type("Network", (), {"use_onnx": lambda self: None})()
        self.alive: weakref.WeakSet = weakref.WeakSet()
        self.prepared = 0
        self.most_alive = 0

    def prepare(self, query, mask=None):
        if isinstance(query, _Prepared):
            return query
        if "bad" in Path(query).name:
            from augment.imageio import InputError

            raise InputError(f"{query}: not an image")
        self.prepared += 1
        prepared = _Prepared(str(query))
        self.alive.add(prepared)
        return prepared

    def find_many(self, query, media, sources=None, frames=None):
        self.most_alive = max(self.most_alive, len(self.alive))
        return [_Result() for _ in media]


def test_a_pairs_run_of_thousands_of_queries_holds_a_bounded_number_of_prepared_queries(tmp_path):
    """--pairs with a distinct query per line kept every prepared query (pixels and features, ~10 MB
    each) until the run's end: 200 pairs of 200 queries peaked at 2.6 GB, 2,000 would need ~20 GB."""
    image = tmp_path / "m.png"
    save_image(image, np.zeros((16, 16, 3), np.uint8))
    queries = [tmp_path / f"q{i:04d}.png" for i in range(300)]
    jobs = [SearchJob(q, image) for q in queries]
    # A query used again after others keeps working; a bad query repeated is one error per pair.
    jobs += [SearchJob(queries[0], image), SearchJob(tmp_path / "bad.png", image),
             SearchJob(tmp_path / "bad.png", image)]
    searcher = _CountingSearcher()
    summary = run_search(searcher, jobs, tmp_path / "out", workers=1, batch=4)
    assert summary.images == 301 and len(summary.errors) == 2
    assert searcher.most_alive <= PREPARED_QUERIES + 4  # the cache and one batch of pending media
    assert searcher.prepared == 301  # each query once while it is used (the first again after 299 others)
    lines = (tmp_path / "out" / "detections.jsonl").read_text().splitlines()
    assert len(lines) == 303
