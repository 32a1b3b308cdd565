"""Compositing: masks aligned with pixels, occlusion bookkeeping, multiple instances, exact replay."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from augment.composite import BackgroundStore, compose_scene
from augment.config import CompositionConfig
from augment.cutouts import Cutout, cutout_id
from augment.distortions import REGISTRY, DistortionConfig
from augment.superpixels import compute_superpixels

SIZE = 128


def make_cutout(colour: tuple[int, int, int], height: int, width: int, ellipse: bool = False) -> Cutout:
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[:, :, :3] = colour
    rgba[::4, :, :3] = np.array(colour, np.uint8) // 2  # some texture for the superpixels (never averages to grey 128)
    if ellipse:
        alpha = np.zeros((height, width), np.uint8)
        cv2.ellipse(alpha, (width // 2, height // 2), (width // 2 - 1, height // 2 - 1), 0, 0, 360, 255, -1)
        rgba[:, :, 3] = alpha
    else:
        rgba[:, :, 3] = 255
    return Cutout(cutout_id(rgba, "thing"), "thing", rgba, compute_superpixels(rgba), int(np.count_nonzero(rgba[:, :, 3])))


@pytest.fixture()
def backgrounds(tmp_path) -> BackgroundStore:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.full((SIZE * 2, SIZE * 2, 3), 128, np.uint8))
    return BackgroundStore([path], max_shorter_side=SIZE * 4)


@pytest.fixture()
def cutouts() -> list[Cutout]:
    return [
        make_cutout((220, 20, 20), 40, 40),
        make_cutout((20, 200, 30), 50, 30, ellipse=True),
        make_cutout((30, 40, 230), 36, 60, ellipse=True),
    ]


def no_distortions() -> DistortionConfig:
    return DistortionConfig.from_dict({name: {"p": 0.0} for name in REGISTRY})


def all_distortions() -> DistortionConfig:
    return DistortionConfig.from_dict({name: {"p": 1.0} for name in REGISTRY})


def composition(**overrides) -> CompositionConfig:
    return CompositionConfig(**{"width": SIZE, "height": SIZE, "blend": "hard", "min_visible": 0.0, **overrides})


def test_visible_mask_is_exactly_where_pixels_changed(cutouts, backgrounds):
    config = composition(min_objects=2, max_objects=5, max_overlap=0.6)
    for seed in range(20):
        scene = compose_scene(cutouts, backgrounds, config, no_distortions(), rng=np.random.default_rng(seed))
        changed = (scene.image != 128).any(axis=2)
        np.testing.assert_array_equal(changed, scene.instances > 0, err_msg=f"seed {seed}")
        for obj in scene.objects:  # each box is the tight box of the instance's visible pixels
            ys, xs = np.nonzero(scene.instances == obj.instance_id)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_blending_changes_pixels_only_inside_the_labels(cutouts, backgrounds, blend):
    # Feathered edges soften only the inside of the mask; Poisson blending copies back only mask pixels.
    config = composition(min_objects=2, max_objects=3, blend=blend, feather_px=3, max_overlap=0.0)
    for seed in range(6):
        scene = compose_scene(cutouts, backgrounds, config, no_distortions(), rng=np.random.default_rng(seed))
        changed = (scene.image != 128).any(axis=2)
        assert not (changed & (scene.instances == 0)).any()
        assert changed[scene.instances > 0].mean() > 0.5  # the objects did get pasted


def scene_params(placements: list[tuple[str, list[int]]]) -> dict:
    scale = 40 / SIZE  # a 40x40 cutout stays 40x40
    return {
        "background": {"index": 0, "crop": [0, 0, SIZE, SIZE]},
        "objects": [{"cutout_id": cid, "scale": scale, "steps": [], "position": pos} for cid, pos in placements],
        "scene": [],
        "dropped": [],
    }


def test_occlusion_bookkeeping_visible_fractions_and_dropping(cutouts, backgrounds):
    square = cutouts[0].cutout_id
    params = scene_params([(square, [10, 10]), (square, [30, 30])])  # the second hides 20x20 of the first
    scene = compose_scene(cutouts, backgrounds, composition(), no_distortions(), params=params)
    assert [(o.instance_id, o.box) for o in scene.objects] == [(1, (10, 10, 50, 50)), (2, (30, 30, 70, 70))]
    assert scene.objects[0].visible_fraction == pytest.approx(1 - 400 / 1600)
    assert scene.objects[1].visible_fraction == 1.0
    assert np.count_nonzero(scene.instances == 1) == 1200

    # Hidden beyond the threshold: the first object leaves the labels, the second becomes instance 1.
    scene = compose_scene(cutouts, backgrounds, composition(min_visible=0.8), no_distortions(), params=params)
    assert [(o.instance_id, o.box) for o in scene.objects] == [(1, (30, 30, 70, 70))]
    assert set(np.unique(scene.instances)) == {0, 1}
    assert scene.params["dropped"] == [1]


def test_the_same_cutout_can_appear_several_times(cutouts, backgrounds):
    square = cutouts[0].cutout_id
    params = scene_params([(square, [0, 0]), (square, [60, 70]), (cutouts[1].cutout_id, [80, 5])])
    scene = compose_scene(cutouts, backgrounds, composition(), no_distortions(), params=params)
    assert [o.cutout_id for o in scene.objects] == [square, square, cutouts[1].cutout_id]
    assert len(np.unique(scene.instances)) == 4


def test_no_overlap_allowed_keeps_every_object_whole(cutouts, backgrounds):
    config = composition(min_objects=4, max_objects=4, max_overlap=0.0)
    for seed in range(10):
        scene = compose_scene(cutouts, backgrounds, config, no_distortions(), rng=np.random.default_rng(seed))
        assert all(o.visible_fraction == 1.0 for o in scene.objects)
        placed = [p for p in scene.params["objects"] if p["position"] is not None]
        assert len(placed) == len(scene.objects)


def test_repeats_are_sampled(cutouts, backgrounds):
    config = composition(min_objects=4, max_objects=4, repeat_probability=1.0)
    scene = compose_scene(cutouts, backgrounds, config, no_distortions(), rng=np.random.default_rng(3))
    assert len({p["cutout_id"] for p in scene.params["objects"]}) == 1


@pytest.mark.parametrize("distortions", [DistortionConfig(), all_distortions()], ids=["defaults", "all-on"])
def test_recorded_params_replay_the_row_exactly(cutouts, backgrounds, distortions):
    config = composition(min_objects=2, max_objects=4, blend="feather", min_visible=0.3)
    for seed in range(8):
        scene = compose_scene(cutouts, backgrounds, config, distortions, rng=np.random.default_rng(seed))
        params = json.loads(json.dumps(scene.params))  # what is stored in the row
        again = compose_scene(cutouts, backgrounds, config, distortions, params=params)
        np.testing.assert_array_equal(scene.image, again.image)
        np.testing.assert_array_equal(scene.instances, again.instances)
        assert scene.objects == again.objects


def test_all_distortions_keep_labels_consistent(cutouts, backgrounds):
    config = composition(min_objects=3, max_objects=5, blend="feather")
    for seed in range(8):
        scene = compose_scene(cutouts, backgrounds, config, all_distortions(), rng=np.random.default_rng(seed))
        ids = set(np.unique(scene.instances)) - {0}
        assert ids == {o.instance_id for o in scene.objects}
        assert scene.image.shape == (SIZE, SIZE, 3) and scene.instances.shape == (SIZE, SIZE)


def test_a_replay_with_another_background_list_is_refused_not_another_picture(cutouts, tmp_path):
    """The recorded background is found by its index; a replay given another list (a file added before it)
    took that index's picture and recorded its name without a word. The name must match, the index exist."""
    for name, value in (("a.png", 40), ("b.png", 200)):
        cv2.imwrite(str(tmp_path / name), np.full((SIZE * 2, SIZE * 2, 3), value, np.uint8))
    run = BackgroundStore([tmp_path / "b.png"], max_shorter_side=SIZE * 4)
    scene = compose_scene(cutouts, run, composition(), no_distortions(), rng=np.random.default_rng(0))
    params = json.loads(json.dumps(scene.params))
    again = compose_scene(cutouts, BackgroundStore([tmp_path / "b.png", tmp_path / "a.png"], SIZE * 4), composition(),
                          no_distortions(), params=params)
    np.testing.assert_array_equal(scene.image, again.image)
    for paths in ([tmp_path / "a.png", tmp_path / "b.png"], [tmp_path / "a.png"]):
        with pytest.raises(ValueError, match="b.png"):
            compose_scene(cutouts, BackgroundStore(paths, SIZE * 4), composition(), no_distortions(), params=params)
    del params["background"]["name"]  # a scene recorded without its background's name: said, not '(None)'
    with pytest.raises(ValueError, match=r"background 1 \(no name recorded\) of the recorded scene is not among"):
        compose_scene(cutouts, BackgroundStore([tmp_path / "a.png"], SIZE * 4), composition(), no_distortions(),
                      params={**params, "background": {**params["background"], "index": 1}})


def test_sample_or_replay_not_both(cutouts, backgrounds):
    with pytest.raises(ValueError):
        compose_scene(cutouts, backgrounds, composition(), no_distortions())
