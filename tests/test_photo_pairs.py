"""Catalogue shots and catalogue → scene cases from labelled photos (augment.catalogue, augment.photo_pairs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augment.catalogue import CatalogueConfig, CatalogueTransform, place_mask, tile_photos
from augment.config import SourceConfig
from augment.imageio import InputError
from augment.photo_pairs import PhotoIndex, PhotoPairConfig, PhotoPairSampler, make_cases
from augment.photo_objects import LabelledPhoto, read_labelled_photos
from sources_factory import make_coco, make_label_map, make_mask_pairs, make_rgba_source, make_street_photos, textured


def test_catalogue_shot_keeps_the_object_and_replays_from_its_params():
    image = textured(200, 160, (120, 80, 40), 0)
    mask = np.zeros((200, 160), bool)
    mask[40:160, 50:110] = True  # 120 x 60 object
    transform = CatalogueTransform(CatalogueConfig(rotation=0.0, hue_shift=0.0, brightness=(1, 1), saturation=(1, 1)))
    shot, params = transform(image, mask, np.random.default_rng(3))
    assert shot.shape[2] == 4 and params["mirror"] is True
    height, width = shot.shape[:2]
    assert abs(height - 120 * params["scale"]) <= 2 and abs(width - 60 * params["scale"]) <= 2
    assert (shot[..., 3] >= 128).mean() > 0.95  # cropped to the object
    np.testing.assert_array_equal(transform.apply(image, mask, params), shot)  # pure in its params
    rotated = CatalogueTransform(CatalogueConfig(rotation=10.0))
    shot2, params2 = rotated(image, mask, np.random.default_rng(5))
    assert shot2[..., 3].max() == 255 and (shot2[shot2[..., 3] == 0, :3] == 255).all()  # plain white around it


def test_tiling_moves_masks_with_the_photos():
    a, b = textured(100, 80, (200, 0, 0), 1), textured(50, 60, (0, 200, 0), 2)
    scene, placements = tile_photos([a, b], 100)
    assert scene.shape == (100, 80 + 120, 3)
    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:40] = True
    placed = place_mask(mask, placements[1], scene.shape[:2])
    ys, xs = np.nonzero(placed)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 39, 80 + 60, 80 + 79)


@pytest.mark.parametrize("make", [make_label_map, make_mask_pairs, make_coco])
def test_labelled_photos_from_every_format_with_masks(tmp_path, make):
    source = make(tmp_path / "src")
    photos = [p for p in read_labelled_photos(source, SourceConfig(min_area=50)) if isinstance(p, LabelledPhoto)]
    assert photos and all(m.shape == p.image.shape[:2] and m.any() for p in photos for _, m in p.objects)
    if make is make_label_map:  # a label's regions stay one object
        assert [c for c, _ in photos[0].objects] == ["jacket", "skirt"]


def test_rgba_cutouts_are_not_photos(tmp_path):
    with pytest.raises(InputError, match="hold cutouts, not labelled photos"):
        list(read_labelled_photos(make_rgba_source(tmp_path / "rgba"), SourceConfig()))


def test_cases_are_deterministic_and_their_targets_right(tmp_path):
    index = PhotoIndex.from_sources([make_street_photos(tmp_path / "ccp")], SourceConfig(min_area=50))
    sampler = PhotoPairSampler(index, PhotoPairConfig(scene_height=80, photos_per_scene=(3, 3),
                                                      query_categories=("skirt",)))
    cases = make_cases(sampler, 4, 3, seed=7)
    again = make_cases(sampler, 4, 3, seed=7)
    for case, same in zip(cases, again):
        np.testing.assert_array_equal(case.query, same.query)
        np.testing.assert_array_equal(case.scene, same.scene)
        assert case.params == same.params
    for case in cases[:4]:
        assert case.positive and case.category == "skirt" and len(case.boxes) == 1
        assert case.scene.shape[0] == 80 and len(case.params["scene_photos"]) == 3
        x0, y0, x1, y1 = case.boxes[0]
        assert 0.5 * 80 <= y0 and y1 <= 0.95 * 80  # the skirt's rows (100-150 of 160) at half size
    for case in cases[4:]:
        assert not case.positive and case.boxes == []
        assert case.params["query_photo"] not in case.params["scene_photos"]
        holders = {str(index.records[p].path) for p in index.photos_with("skirt")}
        assert holders & set(case.params["scene_photos"])  # a hard negative: another skirt is there


def test_hard_negative_plan_keeps_the_query_and_drops_its_photo(tmp_path):
    index = PhotoIndex.from_sources([make_street_photos(tmp_path / "ccp")], SourceConfig(min_area=50))
    sampler = PhotoPairSampler(index, PhotoPairConfig(scene_height=80, photos_per_scene=(3, 3),
                                                      query_categories=("skirt",)))
    rng = np.random.default_rng(3)
    plan = sampler.plan(rng, positive=True)
    negative = sampler.hard_negative_plan(rng, plan)
    positive_case, negative_case = sampler.render(plan), sampler.render(negative)
    np.testing.assert_array_equal(positive_case.query, negative_case.query)  # the same catalogue shot
    assert positive_case.positive and not negative_case.positive
    assert len(negative.tiles) == len(plan.tiles) and plan.photo not in negative.tiles
    assert set(negative.tiles) & set(index.photos_with("skirt"))  # another skirt is there
