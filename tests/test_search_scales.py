"""Query scales and the search's second pass (pipelines/search_levels.py, pipelines/search.py,
pipelines/search_tiles.py): automatic, default and given scales, and the probe and up-sampled level
searched where the default scales find nothing. Generated scenes from skimage's samples, CPU only."""

from __future__ import annotations

import cv2
import numpy as np
from skimage import data

from pipelines.detections import box_iou
from pipelines.search import Searcher


def test_automatic_scales_extend_down_for_a_query_large_against_the_medium():
    from pipelines.search_levels import AUTO_MAX_LEVELS, DEFAULT_QUERY_SCALES, auto_scales

    # A query under a quarter of the medium's shorter side: the base range alone.
    assert auto_scales((96, 96), (480, 640)) == DEFAULT_QUERY_SCALES
    # ... less 0.5 where that object would be under 1/16 of the medium's shorter side (20 < 30 px).
    assert auto_scales((40, 20), (480, 640)) == (1.0, 2.0)
    assert auto_scales((20, 10), (480, 640)) == (1.0, 2.0)  # the query's own size is always searched
    # A 300-px query in a 640x480 medium: octaves down to an object of 480/16 = 30 px (0.125 x 300 = 37 px).
    assert auto_scales((300, 200), (480, 640)) == (0.125, 0.25, 0.5, 1.0)  # 2x would not fit
    # A query larger than the medium: only sizes at which the object fits, down to 1/16 of it.
    huge = auto_scales((2000, 1500), (480, 640))
    assert max(huge) * 2000 <= 480 and min(huge) * 2000 >= 480 / 16 * 0.99 and len(huge) <= AUTO_MAX_LEVELS
    assert auto_scales((600, 400), (416, 832), min_fraction=1 / 64, max_levels=4) == (0.0625, 0.125, 0.25, 0.5)


def _large_query_scene() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """A 300x240 px query (the astronaut's face and suit) appearing 6x smaller (50x40 px) in a
    640x480 coffee scene."""
    query = np.ascontiguousarray(data.astronaut()[20:320, 140:380])
    scene = cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    x, y = 430, 150
    scene[y:y + 50, x:x + 40] = cv2.resize(query, (40, 50), interpolation=cv2.INTER_AREA)
    return query, scene, (x, y, x + 40, y + 50)


def test_a_large_query_6x_smaller_in_the_scene_is_found_with_automatic_scales():
    query, scene, truth = _large_query_scene()
    searcher = Searcher(device="cpu", untrained=True, verify=False, query_scales=None)
    assert searcher.auto_scales
    prepared = searcher.prepare(query)
    assert min(searcher.network.scales(prepared, 480, 640)) <= 1 / 6  # 6x smaller is covered
    best = searcher.find(prepared, scene).best
    assert best is not None
    cx, cy = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
    assert abs(cx - 450) <= 20 and abs(cy - 175) <= 20, best


def test_explicit_scales_are_searched_as_given():
    query, _, _ = _large_query_scene()
    searcher = Searcher(device="cpu", untrained=True, verify=False, query_scales=(0.5, 1.0))
    assert not searcher.auto_scales
    prepared = searcher.prepare(query)
    assert searcher.network.scales(prepared, 480, 640) == (0.5, 1.0)
    assert [level.scale for level in searcher.network.levels(prepared, 480, 640)] == [0.5, 1.0]
    assert searcher.network.level_prior(0.125) == 1.0  # no prior on levels the user asked for
    cheaper = Searcher(device="cpu", untrained=True, verify=False, query_scales=None, min_object_fraction=1 / 4)
    assert cheaper.network.scales(prepared, 480, 640) == (0.5, 1.0)  # 120 px objects at the least
    auto = Searcher(device="cpu", untrained=True, verify=False, query_scales=None)
    assert auto.network.level_prior(0.5) == 1.0 and auto.network.level_prior(0.125) < auto.network.level_prior(0.25) < 1.0


def test_scales_option_parses_auto_and_lists():
    from pipelines.search_commands import parse_scales

    assert parse_scales("auto") is None and parse_scales(" AUTO ") is None
    assert parse_scales("0.25,0.5,1") == (0.25, 0.5, 1.0)
    assert Searcher(device="cpu", untrained=True, verify=False).query_scales == (0.5, 1.0, 2.0)


def test_default_scales_leave_out_implausibly_small_objects():
    """The default searches 0.5x, 1x and 2x the query's size, less the sizes at which the object
    would be under 1/16 of the medium's shorter side and smaller than the query: a 40-px query in a
    640 x 480 frame is not also searched at 20 px; given scales stay exactly as given."""
    import pytest

    from augment.imageio import InputError
    from pipelines.search_commands import parse_scales

    searcher = Searcher(device="cpu", untrained=True, verify=False)
    assert searcher.network.default_scales and not searcher.auto_scales
    small = searcher.prepare(np.zeros((40, 32, 3), np.uint8))
    assert searcher.network.scales(small, 480, 640) == (1.0, 2.0)  # 20 px < 480 / 16 = 30 px
    assert [level.scale for level in searcher.network.levels(small, 480, 640)] == [1.0, 2.0]
    larger = searcher.prepare(np.zeros((80, 64, 3), np.uint8))
    assert searcher.network.scales(larger, 480, 640) == (0.5, 1.0, 2.0)  # 40 px: plausible
    given = Searcher(device="cpu", untrained=True, verify=False, query_scales=(0.5, 1.0, 2.0))
    assert given.network.scales(small, 480, 640) == (0.5, 1.0, 2.0)
    assert parse_scales("default") == parse_scales(" Default ") == "default"
    with pytest.raises(InputError, match="not 'often'"):
        Searcher(device="cpu", untrained=True, verify=False, query_scales="often")


def test_second_pass_scale_is_two_octaves_below_the_default_for_a_query_large_against_the_medium():
    from pipelines.search_levels import smaller_scales

    # A 300-px query in a 640x480 medium: 0.125x (37 px), two octaves below 0.5x.
    assert smaller_scales((300, 200), (480, 640)) == (0.125,)
    assert smaller_scales((130, 80), (480, 640)) == (0.125,)  # 16 px: over 480/32 = 15 px
    # A query cut as small as the medium's objects: none (0.125 x 100 px is under 15 px) ...
    assert smaller_scales((60, 40), (480, 640)) == ()
    assert smaller_scales((100, 80), (480, 640)) == ()
    assert smaller_scales((50, 17), (240, 360)) == ()  # ... nor the Crossing pedestrian, tracked whole
    assert smaller_scales((84, 34), (360, 640)) == ()  # ... nor the Skating1 skater
    assert smaller_scales((480, 200), (480, 640), octaves=3) == (0.0625,)


def _spy_levels(searcher: Searcher, monkeypatch) -> list[list[float]]:
    """The (scale, zoom) of the levels of each pass of ``searcher``'s network (one list per pass)."""
    calls: list[list[float]] = []
    network = searcher.network
    search = network._search

    def spy(query, batch, levels, *args, **kwargs):
        calls.append([(level.scale, level.zoom) for level in levels])
        return search(query, batch, levels, *args, **kwargs)

    monkeypatch.setattr(network, "_search", spy)
    return calls


def test_default_search_looks_smaller_where_its_scales_find_nothing(monkeypatch):
    """A 300x240 query 6x smaller in the scene: the default scales (0.5x-1x) match it weakly, so the
    frame is probed for an object 8x smaller than the query in the medium as it is, then searched for
    it in the medium up-sampled and the instance is found; without the second pass, or where the
    probe does not score, it is not."""
    query, scene, truth = _large_query_scene()
    searcher = Searcher(device="cpu", untrained=True, verify=False)
    calls = _spy_levels(searcher, monkeypatch)
    result = searcher.find(query, scene)
    assert [[scale for scale, _ in call] for call in calls] == [[0.5, 1.0], [0.125], [0.125]]
    assert calls[1][0][1] == 1.0 and calls[2][0][1] > 1.0  # the probe, then the up-sampled level
    assert result.best is not None and box_iou(result.best.box, truth) >= 0.3, result.best
    first_pass = Searcher(device="cpu", untrained=True, verify=False, extend_heat=None)
    best = first_pass.find(query, scene).best
    assert best is None or box_iou(best.box, truth) < 0.3, best
    strict = Searcher(device="cpu", untrained=True, verify=False, extend_probe_ratio=10.0)
    calls = _spy_levels(strict, monkeypatch)
    best = strict.find(query, scene).best
    assert len(calls) == 2 and (best is None or box_iou(best.box, truth) < 0.3), best


def test_second_pass_only_for_frames_whose_default_scales_find_nothing(monkeypatch):
    """In a batch of two frames, the one holding the query at its own size is not searched again;
    the one holding it 6x smaller is (alone)."""
    query, small_scene, truth = _large_query_scene()
    scene = cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    scene[100:400, 200:440] = query
    searcher = Searcher(device="cpu", untrained=True, verify=False)
    sizes: list[int] = []
    network = searcher.network
    search = network._search

    def spy(query, batch, levels, *args, **kwargs):
        sizes.append(len(batch))
        return search(query, batch, levels, *args, **kwargs)

    monkeypatch.setattr(network, "_search", spy)
    large, small = searcher.find_many(query, [scene, small_scene])
    assert sizes == [2, 1, 1]  # the probe and the second pass searched one frame
    assert large.best is not None and box_iou(large.best.box, (200, 100, 440, 400)) >= 0.5
    assert small.best is not None and box_iou(small.best.box, truth) >= 0.3
    assert large.heatmap.max() >= searcher.network.extend_heat


def test_given_and_small_queries_get_no_second_pass(monkeypatch):
    query, scene, _ = _large_query_scene()
    given = Searcher(device="cpu", untrained=True, verify=False, query_scales=(0.5, 1.0))
    calls = _spy_levels(given, monkeypatch)
    given.find(query, scene)
    assert [[scale for scale, _ in call] for call in calls] == [[0.5, 1.0]]
    default = Searcher(device="cpu", untrained=True, verify=False)
    small = default.prepare(np.ascontiguousarray(query[::5, ::5]))  # 60 x 48: 0.25x would be 15 x 12 px
    assert default.network.smaller_levels(small, 480, 640) == []


def test_the_probe_reads_the_first_passs_encoding_of_the_medium_as_it_is(monkeypatch):
    """A 160x128 query in a scene without it: the first pass searches a level at zoom 1, the frame
    stays weak, and the second pass's probe (zoom 1) reuses that encoding instead of a second one."""
    query = cv2.resize(np.ascontiguousarray(data.astronaut()[20:320, 140:380]), (128, 160),
                       interpolation=cv2.INTER_AREA)
    scene = cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    searcher = Searcher(device="cpu", untrained=True, verify=False)
    calls = _spy_levels(searcher, monkeypatch)
    encoded: list[tuple[int, ...]] = []
    encode = searcher.model.encode_medium
    monkeypatch.setattr(searcher.model, "encode_medium", lambda m: encoded.append(tuple(m.shape)) or encode(m))
    result = searcher.find(query, scene)
    assert result.heatmap.max() < searcher.network.extend_heat
    assert (1.0, 1.0) in [(scale, zoom) for scale, zoom in calls[0]] and calls[1] == [(0.125, 1.0)]
    assert encoded.count((1, 3, 480, 640)) == 1, encoded


def test_verification_reads_the_probes_cells_where_the_first_pass_had_none(monkeypatch):
    """The 300x240 query 6x smaller: the first pass searches the medium shrunk only, the probe
    encodes it as it is; verification matches candidates in those cells instead of encoding them."""
    import pipelines.scene_cells as scene_cells

    query, scene, truth = _large_query_scene()
    searcher = Searcher(device="cpu", untrained=True)
    calls = _spy_levels(searcher, monkeypatch)
    encoded: list[tuple[int, int, int, int]] = []
    encode = scene_cells.SceneCells._encode
    monkeypatch.setattr(scene_cells.SceneCells, "_encode",
                        lambda cells, region: encoded.append(region) or encode(cells, region))
    result = searcher.find(query, scene)
    assert all(zoom < 1.0 for _, zoom in calls[0]) and calls[1] == [(0.125, 1.0)]
    assert encoded == [] and result.best is not None and box_iou(result.best.box, truth) >= 0.3


def test_hot_windows_grow_each_hot_place_by_a_kernel_and_merge_those_that_overlap():
    from pipelines.search_tiles import hot_windows

    hot = np.zeros((480, 640), bool)
    hot[100:110, 100:120] = True  # one place: its core is grown by the reach, its window by the context
    [(window, core)] = hot_windows(hot, reach=(30, 20), context=36)
    assert core == (70, 140, 80, 140)
    assert window[0] % 8 == 0 and window[2] % 8 == 0 and (480 - window[1]) % 8 == 0 and (640 - window[3]) % 8 == 0
    assert window[0] <= 70 - 36 and window[1] == 140 + 36 and window[2] <= 80 - 36 and window[3] == 140 + 36
    # Aligned to 32 px: its origin a multiple, its size the medium's modulo 32 (the grids line up).
    [(aligned, _)] = hot_windows(hot, reach=(30, 20), context=36, align=32)
    assert aligned[0] % 32 == 0 and aligned[2] % 32 == 0 and aligned[0] <= window[0] and aligned[2] <= window[2]
    assert (480 - aligned[1]) % 32 == 0 and (640 - aligned[3]) % 32 == 0
    hot[400:410, 600:610] = True  # a second place far away: a second window
    assert len(hot_windows(hot, reach=(30, 20), context=36)) == 2
    hot[150:160, 150:160] = True  # one near the first: the two become one window over both cores
    windows = hot_windows(hot, reach=(30, 20), context=36)
    assert len(windows) == 2 and (70, 190, 80, 180) in [core for _, core in windows]
    assert hot_windows(np.zeros((480, 640), bool), (30, 20), 36) is None  # nothing hot
    assert hot_windows(np.ones((480, 640), bool), (30, 20), 36) is None  # as good as the whole medium


def test_the_up_sampled_level_is_searched_only_around_the_probes_best_places(monkeypatch):
    """The 300x240 query 6x smaller: the up-sampled level encodes windows around the places where
    the probe scores (not the whole medium up-sampled), still finds the instance, and outside its
    windows the heat map is the first pass's own."""
    query, scene, truth = _large_query_scene()
    searcher = Searcher(device="cpu", untrained=True, verify=False)
    whole = Searcher(device="cpu", untrained=True, verify=False, extend_window_ratio=None)
    first_pass = Searcher(device="cpu", untrained=True, verify=False, extend_heat=None)
    encoded: dict[str, list[tuple[int, ...]]] = {"windows": [], "whole": []}
    for name, s in (("windows", searcher), ("whole", whole)):
        encode = s.model.encode_medium
        monkeypatch.setattr(s.model, "encode_medium",
                            lambda m, encode=encode, name=name: encoded[name].append(tuple(m.shape)) or encode(m))
    found: list = []
    windows = searcher.network._windows
    monkeypatch.setattr(searcher.network, "_windows", lambda *a: found.append(windows(*a)) or found[-1])
    windowed = searcher.find(query, scene)
    reference = whole.find(query, scene)
    zoom = max(shape[2] / 480 for shape in encoded["whole"])
    assert zoom > 1 and (1, 3, round(480 * zoom), round(640 * zoom)) in encoded["whole"]
    upsampled = [shape for shape in encoded["windows"] if shape[2] * shape[3] > 480 * 640]
    assert sum(h * w for _, _, h, w in upsampled) < 0.6 * 480 * 640 * zoom * zoom  # windows, not the whole
    for result in (windowed, reference):
        assert result.best is not None and box_iou(result.best.box, truth) >= 0.3, result.best
    [cores] = [[core for _, core in w] for w in found]
    assert any(y0 <= truth[1] and y1 >= truth[3] and x0 <= truth[0] and x1 >= truth[2] for y0, y1, x0, x1 in cores)
    inside = np.zeros((480, 640), bool)
    for y0, y1, x0, x1 in cores:
        inside[y0:y1, x0:x1] = True
    assert inside.mean() < 0.6
    first = first_pass.find(query, scene).heatmap
    changed = windowed.heatmap != first  # the up-sampled level's heat merged in: only in the cores
    assert changed.any() and not (changed & ~inside).any()
