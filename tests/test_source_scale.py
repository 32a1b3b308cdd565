"""composition.object_scale_mode source: objects keep their size relative to the photo they were cut from.

A cutout a quarter of its photo's width is pasted at a quarter of the composite's width times the
jitter drawn from source_scale_jitter (the box, not the possibly shrunk crop, gives its size); replay
gives the same scene; bad values and objects tables without source sizes are one-line errors.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from augment.composite import BackgroundStore, check_source_sizes, compose_scene
from augment.config import BackgroundConfig, CompositionConfig, ExpandConfig
from augment.cutouts import Cutout, cutout_id, load_cutouts
from augment.distortions import REGISTRY, DistortionConfig
from augment.expand import run_expand
from augment.imageio import InputError
from augment.labelled_backgrounds import collect_labelled_backgrounds
from augment.superpixels import compute_superpixels
from sources_factory import make_street_photos

W, H = 64, 96  # the composite; the source photos below are 200x300 (same aspect)


def _cutout(box_width: int, box_height: int, shrink: int = 2) -> Cutout:
    """A cutout whose box in a 200x300 photo is box_width x box_height; its crop stored ``shrink`` times smaller
    (as max_cutout_side does), so a size taken from the crop instead of the box would be wrong."""
    rgba = np.zeros((box_height // shrink, box_width // shrink, 4), np.uint8)
    rgba[:, :, :3] = (30, 200, 60)
    rgba[:, :, 3] = 255
    return Cutout(cutout_id(rgba, "shoe"), "shoe", rgba, compute_superpixels(rgba), rgba.shape[0] * rgba.shape[1],
                  box=(10, 20, 10 + box_width, 20 + box_height), source_size=(200, 300))


def _no_distortions() -> DistortionConfig:
    return DistortionConfig.from_dict({name: {"p": 0.0} for name in REGISTRY})


def _composition(**overrides) -> CompositionConfig:
    return CompositionConfig(**{"width": W, "height": H, "blend": "hard", "min_objects": 1, "max_objects": 1,
                                "min_visible": 0.0, "object_scale": (0.5, 0.9), "object_scale_mode": "source",
                                **overrides})


@pytest.fixture()
def store(tmp_path) -> BackgroundStore:
    source = make_street_photos(tmp_path / "street", count=2)
    backgrounds, _ = collect_labelled_backgrounds(source, BackgroundConfig(format="label_map"))
    return BackgroundStore(backgrounds, max_shorter_side=1000)


def test_quarter_of_its_photo_is_a_quarter_of_the_composite_times_the_jitter(store):
    cutout = _cutout(50, 80)  # a quarter of the photo's width, 80/300 of its height
    exact = compose_scene([cutout], store, _composition(source_scale_jitter=(1.0, 1.0)), _no_distortions(),
                          rng=np.random.default_rng(0))
    assert exact.params["objects"][0]["size"] == [W // 4, round(80 * W / 200)]
    ratios = []
    for seed in range(20):
        scene = compose_scene([cutout], store, _composition(source_scale_jitter=(0.8, 1.25)), _no_distortions(),
                              rng=np.random.default_rng(seed))
        entry = scene.params["objects"][0]
        assert 0.8 <= entry["scale"] <= 1.25
        assert abs(entry["size"][0] - W / 4 * entry["scale"]) <= 0.5  # rounding only
        assert int(np.count_nonzero(scene.instances == 1)) == entry["size"][0] * entry["size"][1]  # pasted at that size
        ratios.append(entry["size"][0] / (W / 4))
    assert min(ratios) < 0.95 and max(ratios) > 1.1  # the jitter is drawn, not fixed


def test_output_mode_ignores_the_source_size(store):
    small, large = _cutout(20, 40), _cutout(100, 200)
    for cutout in (small, large):  # object_scale alone sets the longer side, whatever the object's real size
        scene = compose_scene([cutout], store, _composition(object_scale_mode="output", object_scale=(0.5, 0.5)),
                              _no_distortions(), rng=np.random.default_rng(3))
        assert max(scene.params["objects"][0]["size"]) == round(0.5 * W)


def test_replay_is_identical(store):
    cutouts = [_cutout(50, 80), _cutout(120, 160)]
    distortions = DistortionConfig.from_dict({name: {"p": 1.0} for name in REGISTRY})
    config = _composition(max_objects=3)
    for seed in range(4):
        scene = compose_scene(cutouts, store, config, distortions, rng=np.random.default_rng(seed))
        params = json.loads(json.dumps(scene.params))
        again = compose_scene(cutouts, store, config, distortions, params=params)
        np.testing.assert_array_equal(again.image, scene.image)
        np.testing.assert_array_equal(again.instances, scene.instances)
        assert json.loads(json.dumps(again.params)) == params


@pytest.mark.parametrize("composition, key", [
    ({"object_scale_mode": "relative"}, "object_scale_mode"),
    ({"source_scale_jitter": [0.0, 1.0]}, "source_scale_jitter"),
    ({"source_scale_jitter": [1.25, 0.8]}, "source_scale_jitter"),
    ({"source_scale_jitter": [0.8, 20]}, "source_scale_jitter"),
    ({"source_scale_jitter": 1.0}, "source_scale_jitter"),
])
def test_bad_values_are_one_line_errors(composition, key):
    with pytest.raises(InputError, match=key) as error:
        ExpandConfig.from_dict({"composition": composition})
    assert "\n" not in str(error.value)


def test_hashes_of_configs_without_the_mode_are_unchanged():
    assert ExpandConfig().content_hash() == "7f06db4e4873c828"  # as on main 78a596c
    explicit = ExpandConfig.from_dict({"composition": {"object_scale_mode": "output"}})
    assert explicit.content_hash() == ExpandConfig().content_hash()
    source = ExpandConfig.from_dict({"composition": {"object_scale_mode": "source"}})
    wider = ExpandConfig.from_dict({"composition": {"object_scale_mode": "source", "source_scale_jitter": [0.1, 2.0]}})
    assert len({source.content_hash(), wider.content_hash(), ExpandConfig().content_hash()}) == 3


def test_cutouts_without_source_sizes_are_refused_in_source_mode():
    cutout = _cutout(50, 80)
    cutout.source_size = None  # an objects table written before the column
    recorded = [(cutout.box, cutout.source_size)]
    check_source_sizes(recorded, _composition(object_scale_mode="output"))
    with pytest.raises(InputError, match="1 of 1 cutouts") as error:
        check_source_sizes(recorded, _composition())
    assert "\n" not in str(error.value)


def test_expand_records_source_sizes_and_pastes_at_the_photos_scale(tmp_path):
    source = make_street_photos(tmp_path / "street")  # 100x160 photos
    config = ExpandConfig.from_dict({
        "num": 6, "backgrounds": {"format": "label_map"},
        "sources": {"min_area": 50, "superpixel_max_side": 32, "max_cutout_side": 32},  # crops shrunk: the box counts
        "composition": {"width": 50, "height": 80, "max_objects": 2, "object_scale_mode": "source",
                        "source_scale_jitter": [1.0, 1.0]},
        "distortions": {name: {"p": 0.0} for name in REGISTRY}})
    run_expand([source], source, tmp_path / "out", config)
    cutouts = {c.cutout_id: c for c in load_cutouts(tmp_path / "out" / "objects.parquet")}
    assert cutouts and all(c.source_size == (100, 160) for c in cutouts.values())
    rows = pq.read_table(tmp_path / "out" / "train-00000.parquet").to_pylist()
    checked = 0
    for row in rows:
        for entry in json.loads(row["params"])["objects"]:
            x0, y0, x1, y1 = cutouts[entry["cutout_id"]].box
            assert abs(max(entry["size"]) - max(x1 - x0, y1 - y0) * 50 / 100) <= 1.0  # half the photo's scale
            checked += 1
    assert checked >= 6
