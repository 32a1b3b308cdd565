"""Media searched side by side on CPU worker threads (pipelines/search_workers.py): the same
results as searched one at a time, in input order, with torch's thread count given back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from augment.imageio import save_image
from pipelines.search import Searcher
from pipelines.search_commands import SearchJob, run_search
from pipelines.search_workers import SearchWorkers


def _scenes() -> tuple[np.ndarray, list[np.ndarray]]:
    """A query cut from the astronaut photo and scenes of three sizes, two of which hold it."""
    astronaut = data.astronaut()
    query = cv2.resize(astronaut[30:190, 150:310], (48, 48), interpolation=cv2.INTER_AREA)
    coffee, chelsea = data.coffee(), data.chelsea()
    scenes = []
    for k, (background, size) in enumerate([(coffee, (200, 150)), (chelsea, (160, 120)),
                                            (coffee, (240, 160)), (chelsea, (200, 150))]):
        scene = cv2.resize(background, size, interpolation=cv2.INTER_AREA).copy()
        if k % 2 == 0:
            y, x = 20 + 10 * k, 30 + 15 * k
            scene[y:y + 48, x:x + 48] = query
        scenes.append(scene)
    return query, scenes


def test_side_by_side_results_equal_one_at_a_time_in_input_order():
    query, scenes = _scenes()
    searcher = Searcher(device="cpu", untrained=True)
    prepared = searcher.prepare(query)
    threads = torch.get_num_threads()
    alone = [searcher.find_many(prepared, [scene], sources=[f"s{k}"])[0] for k, scene in enumerate(scenes)]
    with SearchWorkers(searcher, workers=2) as workers:
        together = workers.find_each(prepared, scenes, sources=[f"s{k}" for k in range(len(scenes))])
    assert torch.get_num_threads() == threads
    assert [r.source for r in together] == ["s0", "s1", "s2", "s3"]
    for a, b in zip(alone, together):
        assert a.heatmap.shape == b.heatmap.shape
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
        assert a.to_json()["best"]["box"] == b.to_json()["best"]["box"]
        assert [d["box"] for d in a.to_json()["detections"]] == [d["box"] for d in b.to_json()["detections"]]
    # The pasted query is found where it was pasted, in both scenes that hold it.
    for k in (0, 2):
        x0, y0, x1, y1 = together[k].to_json()["best"]["box"]
        y, x = 20 + 10 * k, 30 + 15 * k
        assert abs((x0 + x1) / 2 - (x + 24)) < 12 and abs((y0 + y1) / 2 - (y + 24)) < 12


def test_one_worker_searches_one_size_as_one_batch_and_mixed_sizes_alone():
    query, scenes = _scenes()
    # The batches are the point, not what is found: one size, no verification.
    searcher = Searcher(device="cpu", untrained=True, verify=False, query_scales=(1.0,))
    calls = []
    original = searcher.find_many
    searcher.find_many = lambda q, media, **kw: calls.append(len(media)) or original(q, media, **kw)
    with SearchWorkers(searcher, workers=1) as workers:
        assert len(workers.find_each(query, [scenes[0], scenes[3]])) == 2  # one size: one batch
        assert len(workers.find_each(query, scenes[:3])) == 3  # three sizes: one at a time
    assert calls == [2, 1, 1, 1]
    with pytest.raises(ValueError, match="workers"):
        SearchWorkers(searcher, workers=0)


def test_a_folder_of_mixed_sizes_gives_the_same_lines_with_two_workers_or_one(tmp_path: Path):
    query, scenes = _scenes()
    save_image(tmp_path / "query.png", query)
    for k, scene in enumerate(scenes):
        save_image(tmp_path / f"s{k}.png", scene)
    jobs = [SearchJob(tmp_path / "query.png", tmp_path / f"s{k}.png") for k in range(len(scenes))]
    jobs.insert(2, SearchJob(tmp_path / "query.png", tmp_path / "missing.png"))
    # One size (the pasted query's): the lines' order and equality are the point; the test above compares
    # every default size side by side.
    searcher = Searcher(device="cpu", untrained=True, query_scales=(1.0,))
    outputs = {}
    for workers in (1, 2):
        summary = run_search(searcher, jobs, tmp_path / f"out{workers}", workers=workers)
        assert summary.images == 4 and len(summary.errors) == 1
        outputs[workers] = [json.loads(line) for line in
                            (tmp_path / f"out{workers}" / "detections.jsonl").read_text().splitlines()]
        assert (tmp_path / f"out{workers}" / "s3.highlight.jpg").is_file()
    names = [Path(line["source"]).name if line.get("source") else None for line in outputs[2]]
    assert names == ["s0.png", "s1.png", "missing.png", "s2.png", "s3.png"] and "error" in outputs[2][2]
    for one, two in zip(outputs[1], outputs[2]):
        assert one.get("best", {}).get("box") == two.get("best", {}).get("box")
        assert [d["box"] for d in one.get("detections", [])] == [d["box"] for d in two.get("detections", [])]


def test_a_negative_worker_count_is_one_error_line(tmp_path: Path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    query, scenes = _scenes()
    save_image(tmp_path / "query.png", query)
    save_image(tmp_path / "scene.png", scenes[0])
    result = CliRunner().invoke(app, ["search", str(tmp_path / "query.png"), str(tmp_path / "scene.png"),
                                      "--out", str(tmp_path / "out"), "--workers", "-1"])
    assert result.exit_code != 0 and "--workers must be between 0 (one per CPU thread) and 32" in result.output
    assert not (tmp_path / "out").exists()


def test_map_keeps_input_order_shares_the_threads_out_and_raises_the_first_error():
    searcher = Searcher(device="cpu", untrained=True)
    threads = torch.get_num_threads()
    with SearchWorkers(searcher, workers=2) as workers:
        seen = workers.map(lambda k: (k, torch.get_num_threads()), range(6))
        assert workers.threads_each == max(1, threads // 2)  # one each on a 2-core machine
        assert [k for k, _ in seen] == list(range(6)) and {n for _, n in seen} == {workers.threads_each}
        assert torch.get_num_threads() == threads

        def fails(k: int) -> int:
            if k == 3:
                raise ValueError("case 3 is bad")
            return k

        with pytest.raises(ValueError, match="case 3"):
            workers.map(fails, range(6))
    assert torch.get_num_threads() == threads
