"""Pyramid levels with zoom (pipelines/search_levels.py, pipelines/search_maps.py), detections from heat maps
(pipelines/detections.py) and highlights (pipelines/highlight.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from skimage import data
from typer.testing import CliRunner

from augment.imageio import save_image
from pipelines.cli import app
from pipelines.detections import box_iou, detect, find_peaks
from pipelines.highlight import GUESS_RGB, highlight
from pipelines.search import Searcher
from pipelines.search_levels import plan_levels, share_zooms
from pipelines.search_tiles import tiles


def test_levels_zoom_in_for_small_queries_and_out_for_large_ones():
    small = plan_levels((40, 20), (480, 640), (1.0,))
    assert small[0].zoom > 2 and min(small[0].query_size) >= 40  # 20 px wide: the medium is up-sampled
    large = plan_levels((600, 300), (416, 832), (0.5, 1.0))
    assert all(level.zoom < 1 for level in large)
    assert all(np.sqrt(l.query_size[0] * l.query_size[1]) <= 110 for l in large)  # the kernel stays small
    usual = plan_levels((96, 96), (480, 640), (0.5, 1.0, 2.0))
    assert [(l.query_size, l.zoom) for l in usual] == [((48, 48), 1.0), ((96, 96), 1.0), ((96, 96), 0.5)]
    # Asking for more cells across zooms a 48 px object in by the nearest quarter octave.
    (zoomed,) = plan_levels((96, 96), (480, 640), (0.5,), min_side=72)
    assert zoomed.zoom == 2 ** 0.5 and zoomed.query_size == (68, 68)


def test_a_level_zoomed_out_shares_a_finer_zoom_within_half_an_octave():
    """A 156 x 99 query in a 416 x 823 scene: its 1x level (a 124-px kernel mean) would be searched
    at 0.84x, a second encoding of the medium; it moves to the 0.5x level's zoom 1 with the
    object's own size as the kernel. The 2x level (0.42x) has no zoom within half an octave."""
    planned = plan_levels((156, 99), (416, 823), (0.5, 1.0, 2.0))
    assert [round(l.zoom, 2) for l in planned] == [1.0, 0.84, 0.42]
    shared = share_zooms(planned, (156, 99), (416, 823))
    assert [(l.scale, l.query_size, round(l.zoom, 2)) for l in shared] == [
        (0.5, (78, 50), 1.0), (1.0, (156, 99), 1.0), (2.0, (131, 83), 0.42)]
    assert share_zooms(planned, (156, 99), (416, 823), octaves=0.0) == planned
    # Zooms further apart than half an octave keep their own encodings.
    apart = plan_levels((293, 201), (416, 828), (0.5, 1.0))
    assert share_zooms(apart, (293, 201), (416, 828)) == apart


def test_compact_queries_get_a_larger_kernel_than_thin_ones():
    # A compact 20 x 20 garment: its mean side (the shorter one too) is zoomed to about 72 px
    # (3.36x, the nearest quarter octave to 3.6x), more than the 48-px shorter side alone asks.
    (square,) = plan_levels((20, 20), (480, 640), (1.0,))
    assert square.zoom == 2 ** 1.75 and square.query_size == (67, 67)
    (square_48,) = plan_levels((20, 20), (480, 640), (1.0,), min_mean=48)
    assert square_48.zoom == 2 ** 1.25
    # A thin 50 x 17 pedestrian (the Crossing sequence) keeps the zoom of its 48-px shorter side:
    # its mean side is then 82 px, past the 72-px minimum; zoomed further it is lost.
    (thin,) = plan_levels((50, 17), (240, 360), (1.0,))
    assert thin.zoom == 2 ** 1.5 and thin.query_size == (141, 48)
    assert thin == plan_levels((50, 17), (240, 360), (1.0,), min_mean=48)[0]
    # Between them the mean binds up to an aspect of (72 / 48)^2 = 2.25: a 36 x 24 one is zoomed more.
    (mid,) = plan_levels((36, 24), (480, 640), (1.0,))
    assert mid.zoom == 2 ** 1.25 and plan_levels((36, 24), (480, 640), (1.0,), min_mean=48)[0].zoom == 2.0
    # A query larger than the mean-side minimum is not held to it: shrunk to 40 x 40 (scale 0.5),
    # it keeps the 48-px shorter side (a sharp query against a blurred, up-sampled medium heats less).
    (large_query,) = plan_levels((80, 80), (240, 320), (0.5,))
    assert large_query.query_size == (48, 48) and large_query.zoom == 2 ** 0.25


def test_tiles_cover_the_frame_and_line_up_with_the_grid():
    windows = tiles(480, 640, zoom=4.0, overlap=40, max_pixels=800 * 800)
    assert len(windows) > 1
    covered = np.zeros((480, 640), bool)
    for y0, y1, x0, x1 in windows:
        assert y0 % 8 == 0 and x0 % 8 == 0 and (y1 - y0) * (x1 - x0) * 16 <= 800 * 800 * 1.1
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tiles(480, 640, zoom=1.0, overlap=40) == [(0, 480, 0, 640)]


def _small_object_scene() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """A 20x40 px patch of the astronaut's face in a 640x480 coffee-and-rocket scene."""
    scene = cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    scene[250:450, 30:230] = cv2.resize(data.rocket(), (200, 200), interpolation=cv2.INTER_AREA)
    patch = cv2.resize(data.astronaut()[40:200, 170:250], (20, 40), interpolation=cv2.INTER_AREA)
    x, y = 412, 203
    scene[y:y + 40, x:x + 20] = patch
    return scene, patch, (x, y, x + 20, y + 40)


def test_a_20x40_object_in_a_640x480_scene_is_found_by_zooming_in():
    scene, patch, truth = _small_object_scene()
    searcher = Searcher(device="cpu", untrained=True, query_scales=(1.0,))
    levels = searcher.network.levels(searcher.prepare(patch), 480, 640)
    assert levels[0].zoom > 1  # the medium is searched up-sampled
    best = searcher.find(patch, scene).best
    assert best is not None and box_iou(best.box, truth) >= 0.5, best


def test_tiled_search_matches_the_whole_search():
    scene, patch, truth = _small_object_scene()
    whole = Searcher(device="cpu", untrained=True, query_scales=(1.0,))
    # The zoomed 640x480 frame (about 1500x1150) is searched in tiles of at most 900x900.
    tiled = Searcher(device="cpu", untrained=True, query_scales=(1.0,), max_tile_pixels=900 * 900)
    query = whole.prepare(patch)
    zoom = tiled.network.levels(query, 480, 640)[0].zoom
    assert len(tiles(480, 640, zoom, 40, max_pixels=900 * 900)) > 1
    heat_tiled = tiled.maps(query, [scene]).heat[0]
    heat_whole = whole.maps(query, [scene]).heat[0]
    y, x = np.unravel_index(heat_tiled.argmax(), heat_tiled.shape)
    assert truth[0] <= x < truth[2] and truth[1] <= y < truth[3]
    assert np.abs(heat_tiled - heat_whole)[truth[1]:truth[3], truth[0]:truth[2]].max() < 0.15


def test_an_object_across_the_tiles_borders_is_found_as_one_inside_a_tile(monkeypatch):
    """The zoomed medium is searched in tiles, each writing its owned part (halfway into each overlap):
    an object lying across the borders of four tiles' owned parts is still seen whole by the tile that
    writes its centre, so it is found, and its heat is the whole search's."""
    import pipelines.search_zoom as search_zoom
    from pipelines.search_tiles import owned_span

    scene, patch, (x0, y0, x1, y1) = _small_object_scene()
    # the object only where it straddles the borders: the scene's own copy is painted over
    scene[y0:y1, x0:x1] = cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)[y0:y1, x0:x1]
    options = dict(device="cpu", untrained=True, query_scales=(1.0,), mirror=False, verify=False)
    whole, tiled = Searcher(**options), Searcher(**options, max_tile_pixels=900 * 900)
    query = whole.prepare(patch)
    laid_out = []  # the tiles the search lays out, as it lays them out
    monkeypatch.setattr(search_zoom, "tiles", lambda *args, **kwargs: laid_out.append(tiles(*args, **kwargs))
                        or laid_out[-1])
    tiled.maps(query, [scene])
    rows, cols = sorted({p[:2] for p in laid_out[0]}), sorted({p[2:] for p in laid_out[0]})
    assert len(rows) > 1 and len(cols) > 1
    # where the first tile's owned part ends, down and across: the object straddles both borders
    border_y, border_x = owned_span(*rows[0], 480, rows)[1], owned_span(*cols[0], 640, cols)[1]
    x, y = border_x - 8, border_y - 22
    scene[y:y + 40, x:x + 20] = patch
    truth = (x, y, x + 20, y + 40)
    heat_tiled = tiled.maps(query, [scene]).heat[0]
    heat_whole = whole.maps(query, [scene]).heat[0]
    peak_y, peak_x = np.unravel_index(heat_tiled.argmax(), heat_tiled.shape)
    assert truth[0] <= peak_x < truth[2] and truth[1] <= peak_y < truth[3]
    assert np.abs(heat_tiled - heat_whole)[y:y + 40, x:x + 20].max() < 0.15
    best = tiled.find(patch, scene).best
    assert best is not None and box_iou(best.box, truth) >= 0.5, best


def _blob_heat(centres: list[tuple[int, int]], size: tuple[int, int] = (480, 640), sigma: float = 6.0) -> np.ndarray:
    heat = np.zeros(size, np.float32)
    ys, xs = np.arange(size[0]), np.arange(size[1])
    for k, (x, y) in enumerate(centres):  # the Gaussian as the outer product of its two 1-D halves (4x faster)
        blob = np.outer(np.exp(-(ys - y) ** 2 / (2 * sigma**2)), np.exp(-(xs - x) ** 2 / (2 * sigma**2)))
        heat = np.maximum(heat, (0.9 - 0.001 * k) * blob)
    return heat.astype(np.float32)


def test_one_hundred_and_fifty_peaks_give_one_hundred_and_fifty_detections():
    centres = [(20 + 42 * (k % 15), 24 + 46 * (k // 15)) for k in range(150)]
    heat = _blob_heat(centres)
    heights = np.full(heat.shape, 20.0, np.float32)
    found, best = detect(heat, heights, aspect=1.0, threshold=0.5, peak_window=16)
    assert len(found) == 150 and best == found[0]
    peaks = {d.peak for d in found}
    assert all(any(abs(px - x) <= 2 and abs(py - y) <= 2 for px, py in peaks) for x, y in centres)
    ys, xs = find_peaks(np.zeros((40, 40), np.float32), 0.0, 8)
    assert len(ys) == 1  # a flat map is one peak, not 1600


def test_heat_region_boxes_are_tighter_than_scale_boxes():
    """A generated case: the heat covers the object's pixels (a 30x60 px figure) while the matched
    scale (the object-height map) overestimates its size by 60%."""
    truth = (300, 200, 330, 260)
    heat = np.zeros((480, 640), np.float32)
    heat[truth[1]:truth[3], truth[0]:truth[2]] = 0.8
    heat = cv2.GaussianBlur(heat, (0, 0), 2.0)
    heat[230, 315] = 0.85  # the peak
    heights = np.full(heat.shape, 96.0, np.float32)
    found, best = detect(heat, heights, aspect=0.5, threshold=0.5, peak_window=16)
    assert best.source == "heat"
    scale_box = (315 - 24, 230 - 48, 315 + 24, 230 + 48)
    assert box_iou(best.box, truth) >= 0.8 > box_iou(scale_box, truth) + 0.3
    # A blob much smaller than the matched scale is a correlation peak, not the object: scale box.
    dot = _blob_heat([(100, 100)], sigma=2.0)
    _, dot_best = detect(dot, heights, aspect=0.5, threshold=0.5, peak_window=16)
    assert dot_best.source == "scale" and dot_best.box[3] - dot_best.box[1] == 96


def test_highlight_keeps_the_heat_maps_pixels():
    image = np.full((100, 120, 3), 200, np.uint8)
    heat = np.zeros((100, 120), np.float32)
    heat[30:70, 40:60] = 0.9
    found, _ = detect(heat, np.full(heat.shape, 40.0, np.float32), 0.5, 0.5, 8)
    out = highlight(image, heat, found)
    assert (out[50, 50] == 200).all() and out[5, 5].max() < 100  # the object is kept, far pixels dimmed
    assert (out[50, 100] < 100).all()  # inside no box: dimmed even though the image is uniform


def test_highlight_without_detections_draws_the_best_guess():
    image = np.full((100, 120, 3), 200, np.uint8)
    heat = np.zeros((100, 120), np.float32)
    heat[30:70, 40:60] = 0.3
    found, best = detect(heat, np.full(heat.shape, 40.0, np.float32), 0.5, 0.5, 8)
    assert not found and best is not None
    dimmed = highlight(image, heat, found)
    assert (dimmed == 60).all()  # no best given: everything dimmed alike
    out = highlight(image, heat, found, best)
    x0, y0, x1, y1 = best.box
    assert tuple(out[y0, (x0 + x1) // 2]) == GUESS_RGB  # the box's top edge in the guess colour
    assert (out[(y0 + y1) // 2, (x0 + x1) // 2] == 60).all()  # its inside stays dimmed: not a detection


def test_best_is_on_every_line_also_without_detections(tmp_path: Path):
    scene = cv2.resize(data.coffee(), (160, 120), interpolation=cv2.INTER_AREA)
    save_image(tmp_path / "scene.jpg", scene, quality=95)
    save_image(tmp_path / "query.png", cv2.resize(data.astronaut()[30:190, 150:310], (48, 48)))
    for flags in (["--no-verify"], []):  # the heat map alone, and verified and fused (the default)
        out = tmp_path / ("plain" if flags else "fused")
        result = CliRunner().invoke(app, ["search", str(tmp_path / "query.png"), str(tmp_path / "scene.jpg"),
                                          "--out", str(out), "--device", "cpu", "--untrained", "--threshold", "0.99",
                                          *flags])
        assert result.exit_code == 0, result.output
        (line,) = [json.loads(l) for l in (out / "detections.jsonl").read_text().splitlines()]
        assert line["detections"] == [] and line["heat_threshold"] == 0.99 and len(line["best"]["box"]) == 4
        assert (line["best"]["score"] if flags else line["best"]["heat"]) < 0.99
        assert line["best"]["score"] < line["threshold"]  # the bar its score was held to


def test_still_images_of_one_size_are_searched_as_a_batch(tmp_path: Path):
    """With one worker (as on CUDA) consecutive stills of one size share a batch."""
    count = 3
    calls = []
    searcher = Searcher(device="cpu", untrained=True)
    original = searcher.find_many

    def spy(query, media, **kwargs):
        calls.append(len(media))
        return original(query, media, **kwargs)

    searcher.find_many = spy
    from pipelines.search_commands import SearchJob, run_search

    scene = cv2.resize(data.coffee(), (160, 120), interpolation=cv2.INTER_AREA)
    for k in range(count):
        save_image(tmp_path / f"s{k}.jpg", scene, quality=90)
    save_image(tmp_path / "odd.jpg", cv2.resize(scene, (100, 80)), quality=90)
    save_image(tmp_path / "query.png", cv2.resize(data.astronaut()[30:190, 150:310], (40, 40)))
    jobs = [SearchJob(tmp_path / "query.png", tmp_path / f"s{k}.jpg") for k in range(count)]
    jobs.insert(1, SearchJob(tmp_path / "query.png", tmp_path / "missing.jpg"))
    jobs.append(SearchJob(tmp_path / "query.png", tmp_path / "odd.jpg"))
    summary = run_search(searcher, jobs, tmp_path / "out", batch=4, workers=1)
    lines = [json.loads(l) for l in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert [Path(l["source"]).name if l["source"] else None for l in lines][0] == "s0.jpg"
    assert "error" in lines[1] and [Path(l["source"]).name for l in lines[2:]] == ["s1.jpg", "s2.jpg", "odd.jpg"]
    assert calls == [1, 2, 1] and summary.images == 4


def test_halving_the_medium_by_average_pool_equals_area_resizing():
    """NetworkSearch halves a medium with a 2 x 2 average pool where the area resize it replaces
    gives the same values."""
    import torch
    import torch.nn.functional as F

    batch = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    batch = batch.contiguous(memory_format=torch.channels_last)
    assert torch.equal(F.avg_pool2d(batch, 2), F.interpolate(batch, size=(24, 32), mode="area"))


def test_cpu_area_zoom_averages_whole_blocks_and_keeps_the_memory_format():
    """The OpenCV area resize the CPU search shrinks media with gives the block means where the
    factor is whole (1/3 here), partial-pixel weights otherwise, and the batch's memory format."""
    import torch
    import torch.nn.functional as F

    from pipelines.search_inputs import zoom_media

    batch = torch.rand(2, 3, 48, 63, generator=torch.Generator().manual_seed(0))
    for layout in (torch.channels_last, torch.contiguous_format):
        media = batch.contiguous(memory_format=layout)
        third = zoom_media(media, (48, 63), 1 / 3)
        assert third.shape == (2, 3, 16, 21) and third.is_contiguous(memory_format=layout)
        assert torch.allclose(third, F.avg_pool2d(batch, 3), atol=1e-6)
    # 63 -> 44 columns: each output column covers 1.43 input columns; the means stay in range and
    # the image's overall mean is kept (area weights sum to one per output pixel).
    shrunk = zoom_media(batch, (48, 63), 0.7)
    assert shrunk.shape == (2, 3, 34, 44)
    assert abs(float(shrunk.mean() - batch.mean())) < 0.01


def test_greedy_suppression_keeps_boxes_that_duplicate_no_earlier_kept_one():
    """first_unique (one overlap matrix) keeps what pairwise greedy checks keep."""
    from pipelines.detections import NMS_CONTAINMENT, NMS_IOU, first_unique, pairwise_overlaps

    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 100, (30, 2))
        boxes = np.hstack([xy, xy + rng.uniform(0, 40, (30, 2))])
        boxes[rng.integers(0, 30)] = [5, 5, 5, 9]  # an empty box duplicates nothing
        kept: list[int] = []
        for i, box in enumerate(boxes):
            iou, contained = pairwise_overlaps(box[None], boxes[kept].reshape(-1, 4))
            if not ((iou >= NMS_IOU) | (contained >= NMS_CONTAINMENT)).any():
                kept.append(i)
        assert first_unique(boxes) == kept and 1 < len(kept) < 30
