"""QA of expand's transforms and compositing: each does what its name and recorded params say.

Masks and label maps stay under the pixels they label after every resize (pillar box, resolution
loss, a labelled background's crop, segmentation crops) and blur (motion); cutouts bring no fringe of
their transparent pixels' colour and are feathered on their box's edges; superpixel occlusion covers
the drawn fraction; a rerun after a rendering change makes its outputs again. Small generated pictures,
measured by their centroids.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from augment.composite import BackgroundStore, _blend_alpha, _fit_inside, compose_scene
from augment.config import CompositionConfig, ExpandConfig, OutputConfig
from augment.cutouts import Cutout, cutout_id
from augment.distortions import REGISTRY, DistortionConfig, SuperpixelOcclusion
from augment.labelled_backgrounds import LabelledBackground
from augment.resizing import resize_labels
from augment.scene_distortions import MotionBlur, PillarBox, ResolutionLoss

OFF = DistortionConfig.from_dict({name: {"p": 0.0} for name in REGISTRY})


def _centroid(weights: np.ndarray) -> np.ndarray:
    weights = weights.astype(np.float64)
    rows, cols = np.indices(weights.shape)
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def _block_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 97x131 black picture with a white 31x51 block, and the block's mask."""
    image = np.zeros((97, 131, 3), np.uint8)
    mask = np.zeros((97, 131), np.uint8)
    image[30:61, 40:91] = 255
    mask[30:61, 40:91] = 1
    return image, mask


@pytest.mark.parametrize("orientation, content", [("pillar", 0.7), ("letterbox", 0.83)])
def test_pillar_box_keeps_the_mask_under_its_pixels(orientation, content):
    image, mask = _block_scene()
    params = {"orientation": orientation, "content": content, "color": [0, 0, 0]}
    out, out_mask = PillarBox().apply(image, mask, params)
    # cv2.INTER_NEAREST took each mask pixel from the top-left corner of its source area: the mask lay
    # half a pixel right of (pillar) or below (letterbox) the squeezed block
    assert np.abs(_centroid(out[:, :, 0]) - _centroid(out_mask)).max() < 0.1


def test_resolution_loss_nearest_upscale_keeps_the_picture_on_its_mask():
    image, mask = _block_scene()
    out, out_mask = ResolutionLoss().apply(image, mask, {"scale": 0.4, "interpolation": "nearest", "jpeg_quality": 0})
    assert np.array_equal(out_mask, mask)
    assert np.abs(_centroid(out[:, :, 0]) - _centroid(mask)).max() < 0.15  # was 0.4-0.5 px down and right


def test_resize_labels_samples_pixel_centres_and_keeps_the_dtype():
    labels = np.zeros((40, 60), np.uint16)
    labels[10:30, 20:50] = 300
    picture = labels.astype(np.float32)
    for height, width in [(17, 23), (100, 150), (40, 59)]:
        small = resize_labels(labels, height, width)
        assert small.dtype == np.uint16 and small.shape == (height, width)
        area = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA if height < 40 else cv2.INTER_LINEAR)
        assert np.abs(_centroid(small) - _centroid(area)).max() < 0.1
    assert resize_labels(labels.astype(np.int64), 20, 30).dtype == np.int32


def test_a_labelled_backgrounds_labels_lie_under_its_pixels(tmp_path):
    photo = np.zeros((120, 80, 3), np.uint8)
    values = np.zeros((120, 80), np.uint8)
    photo[37:83, 21:60] = 255
    values[37:83, 21:60] = 1
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    cv2.imwrite(str(tmp_path / "labels.png"), values)
    background = LabelledBackground(tmp_path / "photo.png", tmp_path / "labels.png", {2: "coat"})
    store = BackgroundStore([background], max_shorter_side=60)  # shrunk on loading, then cropped and enlarged
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :, 3] = 255
    cutout = Cutout(cutout_id(rgba, "x"), "x", rgba, np.zeros((8, 8), np.int32), 64)
    config = CompositionConfig(width=96, height=160, min_objects=1, max_objects=1, object_scale=(0.05, 0.05))
    offsets = []
    for seed in range(6):  # random crops: each label edge is off by under half a pixel, either way
        scene = compose_scene([cutout], store, config, OFF, rng=np.random.default_rng(seed))
        shown = scene.instances == 0
        coat = (scene.background_labels == 2) & shown
        white = np.where(shown, scene.image[:, :, 0], 0)
        assert coat.any()
        offsets.append(_centroid(white) - _centroid(coat))
    # labels resized with cv2.INTER_NEAREST (on loading, then the crop) lay 0.8-1.4 px right of and below
    # the white block on average
    assert np.abs(np.mean(offsets, axis=0)).max() < 0.35


def test_feathering_softens_an_edge_on_the_cutouts_border():
    """A cutout is cropped to its object's box, so the object touches every side of its array."""
    rgba = np.full((40, 60, 4), 200, np.uint8)
    rgba[:, :, 3] = 255
    mask = np.ones((40, 60), np.uint8)
    alpha = _blend_alpha(rgba, mask, CompositionConfig(blend="feather", feather_px=2))
    padded = _blend_alpha(np.pad(rgba, ((3, 3), (3, 3), (0, 0))), np.pad(mask, 3), CompositionConfig(feather_px=2))
    assert np.allclose(alpha, padded[3:-3, 3:-3])  # the same object, with or without transparent margin
    assert alpha[0, 30] < 0.8 and alpha[20, 0] < 0.8 and alpha[39, 59] < 0.6  # reflected: 1.0, a hard edge
    assert alpha[20, 30] == 1.0
    assert (_blend_alpha(rgba, mask, CompositionConfig(blend="hard")) == 1.0).all()


def _green_backed_disc(side: int) -> np.ndarray:
    """A red disc whose transparent pixels are green, as a PNG editor may keep them (or a photo its grass)."""
    rows, cols = np.mgrid[:side, :side]
    disc = (rows - side / 2 + 0.5) ** 2 + (cols - side / 2 + 0.5) ** 2 < (side / 2 - 1) ** 2
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[:, :, 1] = 255
    rgba[disc] = (255, 0, 0, 255)
    return rgba


@pytest.mark.parametrize("blend", ["hard", "feather"])
def test_a_shrunk_cutout_brings_no_fringe_of_its_transparent_pixels_colour(tmp_path, blend):
    rgba = _green_backed_disc(300)
    area = int(np.count_nonzero(rgba[:, :, 3]))
    cutout = Cutout(cutout_id(rgba, "x"), "x", rgba, np.zeros((300, 300), np.int32), area)
    cv2.imwrite(str(tmp_path / "blue.png"), np.full((64, 64, 3), (255, 0, 0), np.uint8))  # BGR: blue
    config = CompositionConfig(min_objects=1, max_objects=1, object_scale=(0.2, 0.2), blend=blend)
    store = BackgroundStore([tmp_path / "blue.png"], 512)
    scene = compose_scene([cutout], store, config, OFF, rng=np.random.default_rng(1))
    assert scene.objects and (scene.image[:, :, 2] > 200).any()
    assert scene.image[:, :, 1].max() <= 3  # resized as straight alpha: up to 64 of green on ~140 edge pixels


def test_an_object_shrunk_to_fit_the_frame_brings_no_fringe_either():
    rgba = _green_backed_disc(300)
    mask = (rgba[:, :, 3] >= 128).astype(np.uint8)
    small, small_mask = _fit_inside(rgba, mask, CompositionConfig(width=64, height=64))
    assert small.shape[:2] == small_mask.shape == (64, 64)
    assert small[small[:, :, 3] > 0, 1].max() == 0


def test_motion_blur_streaks_are_centred_and_a_length_of_one_or_less_is_none():
    for length in np.linspace(0.0, 14.0, 29):
        for angle in (0.0, 10.0, 30.0, 45.0, 60.0, 90.0, 135.0, 170.0):
            kernel = MotionBlur.kernel(float(length), angle)
            middle = kernel.shape[0] // 2
            assert abs(kernel.sum() - 1.0) < 1e-5
            # the AA line of cv2.line put the mass up to 0.7 px off the middle (even lengths, most angles):
            # the blurred picture moved off its mask
            assert np.abs(_centroid(kernel) - middle).max() < 1e-4, (length, angle)
            if length <= 1.0:  # length 0 was a 2-px streak beside the centre, blurring more than length 1
                assert kernel[middle, middle] == 1.0
    image, mask = _block_scene()
    out, _ = MotionBlur().apply(image, mask, {"length": 6.0, "angle": 30.0})
    assert np.abs(_centroid(out[:, :, 0]) - _centroid(mask)).max() < 0.02


def test_superpixel_occlusion_affects_the_drawn_fraction_of_the_object():
    rgba = np.full((60, 80, 4), 120, np.uint8)
    rgba[:, :, 3] = 255
    mask = np.ones((60, 80), np.uint8)
    flat = np.ones((60, 80), np.int32)  # a flat object's mean shift: one superpixel
    for seed in range(5):
        params = {"fraction": 0.3, "remove_ratio": 1.0, "darken": 0.5, "seed": seed}
        out, out_mask = SuperpixelOcclusion().apply(rgba, mask, params, flat)
        assert out_mask.all()  # nothing removed: its one superpixel overshoots 0.3 further than none does
    cells_of_ten = (np.indices((60, 80)) // 10)
    many = (cells_of_ten[0] * 8 + cells_of_ten[1] + 1).astype(np.int32)
    none = {"fraction": 0.0, "remove_ratio": 1.0, "darken": 0.5, "seed": 0}
    assert SuperpixelOcclusion.choose(many, mask, none) == ([], [])  # a range [0, 0] removed one of them
    uneven = np.ones((60, 80), np.int32)  # 80%, 10% and 10% of the object
    uneven[:, 64:72], uneven[:, 72:] = 2, 3
    for labels, allowed in [(uneven, 0.1), (many, 0.5 / 48)]:  # many: 48 equal superpixels
        for seed in range(20):
            params = {"fraction": 0.1, "remove_ratio": 0.5, "darken": 0.5, "seed": seed}
            removed, darkened = SuperpixelOcclusion.choose(labels, mask, params)
            affected = np.isin(labels, removed + darkened).mean()
            assert abs(affected - 0.1) <= allowed + 1e-9  # uneven: 80% of the object where the big one came first


def test_a_rerun_after_a_rendering_change_makes_the_shards_again(tmp_path, monkeypatch):
    """An older synth's finished shards of the same config rendered rows otherwise: kept beside new ones
    they made one run of two renderings, whose older rows no longer replay from their params."""
    import augment.expand as expand
    from sources_factory import make_backgrounds, make_rgba_source

    source, backgrounds = make_rgba_source(tmp_path / "rgba", 2), make_backgrounds(tmp_path / "backgrounds", 1)
    config = ExpandConfig(num=4, composition=CompositionConfig(width=64, height=64),
                          output=OutputConfig(shard_rows=2))
    monkeypatch.setattr(expand, "RENDERING_VERSION", 1, raising=False)  # as an older synth rendered them
    first = expand.run_expand([source], backgrounds, tmp_path / "out", config)
    monkeypatch.setattr(expand, "RENDERING_VERSION", 2, raising=False)
    again = expand.run_expand([source], backgrounds, tmp_path / "out", config)
    assert first.manifest["run_hash"] != again.manifest["run_hash"]
    assert again.shards_skipped_as_done == 0 and again.rows_written == 4
    same = expand.run_expand([source], backgrounds, tmp_path / "out", config)  # today's shards are kept
    assert same.shards_skipped_as_done == 2 and same.rows_written == 0


def test_segmentation_targets_lie_under_their_pixels():
    """Training crops and evaluation resizes of a (photo, class map) pair (train.segment_data)."""
    from train.segment_config import SegmentConfig
    from train.segment_data import SegmentAugment

    image = np.zeros((300, 437, 3), np.uint8)
    target = np.zeros((300, 437), np.uint8)
    image[90:211, 130:301] = 255
    target[90:211, 130:301] = 1
    params = {"scale": 0.9, "crop": (0.5, 0.5), "flip": False, "colour": [1.0, 1.0, 1.0], "hue": 0.0,
              "grey": False, "blur": 0.0}
    out, out_target = SegmentAugment(SegmentConfig(short_side=64, crop_size=48)).apply(image, target, params)
    assert (out_target == 1).any()
    # cv2.INTER_NEAREST laid the class map ~half a pixel right of and below the photo's white block
    assert np.abs(_centroid(out[:, :, 0]) - _centroid(out_target == 1)).max() < 0.1


def test_photo_shards_after_a_rendering_change_are_made_again(tmp_path, monkeypatch):
    """photo-shards took an older synth's output of the same photos as up to date (labels resized otherwise)."""
    import augment.photo_shards as photo_shards
    from augment.config import SourceConfig
    from sources_factory import make_label_map

    source = make_label_map(tmp_path / "labelled")
    monkeypatch.setattr(photo_shards, "RENDERING_VERSION", 1, raising=False)
    first = photo_shards.write_photo_shards([source], tmp_path / "out", SourceConfig(), short_side=32)
    monkeypatch.setattr(photo_shards, "RENDERING_VERSION", 2, raising=False)
    again = photo_shards.write_photo_shards([source], tmp_path / "out", SourceConfig(), short_side=32)
    assert again["fingerprint"] != first["fingerprint"] and again["num_rows"] == first["num_rows"]
    assert photo_shards.write_photo_shards([source], tmp_path / "out", SourceConfig(), short_side=32) == again


def test_an_extract_runs_key_names_the_rendering(tmp_path, monkeypatch):
    """extract resumed an older synth's chunks (pseudo-labels resized otherwise) beside new ones."""
    import pipelines.extract_parts as extract_parts
    from augment.config import SourceConfig

    monkeypatch.setattr(extract_parts, "RENDERING_VERSION", 1, raising=False)
    older = extract_parts.run_key("model", None, SourceConfig(), 0, [], 8)
    monkeypatch.setattr(extract_parts, "RENDERING_VERSION", 2, raising=False)
    assert extract_parts.run_key("model", None, SourceConfig(), 0, [], 8) != older


def test_the_objects_tables_fingerprint_names_the_rendering(tmp_path, monkeypatch):
    """The cached objects table holds superpixels made by the rendering's code: an upgrade that renders
    otherwise remade the shards (the run hash) but reused the old table's superpixels."""
    import augment.cutouts as cutouts
    from augment.config import SourceConfig

    (tmp_path / "a.png").write_bytes(b"")
    before = cutouts.sources_fingerprint([tmp_path], SourceConfig())
    monkeypatch.setattr(cutouts, "RENDERING_VERSION", cutouts.RENDERING_VERSION + 1)
    assert cutouts.sources_fingerprint([tmp_path], SourceConfig()) != before


def test_an_affine_canvas_past_the_pixel_limit_is_drawn_to_the_limit(monkeypatch):
    """scale 20 and shear 80 (both in their ranges) made a canvas of ~2.5 GB per cutout, which the composite
    then shrank to its frame; the canvas now stops at MAX_CANVAS_PIXELS (a constant: replays alike on every
    machine, whatever SYNTH_MAX_MEGAPIXELS says), the object's shape kept."""
    from augment import object_distortions
    from augment.object_distortions import Affine

    monkeypatch.setattr(object_distortions, "MAX_CANVAS_PIXELS", 1_000_000)
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "0.5")  # not the canvas's bound
    image = np.zeros((40, 40, 4), np.uint8)
    image[8:32, 8:32] = 255
    mask = (image[:, :, 3] > 0).astype(np.uint8)
    params = {"angle": 0.0, "scale": 20.0, "shear": 80.0, "hflip": False, "vflip": False}
    warped, warped_mask = Affine().apply(image, mask, params)
    height, width = warped_mask.shape
    assert height * width <= 1_000_000 and warped.shape[:2] == (height, width)
    assert 5.5 < width / height < 7.5  # the sheared shape: (1 + tan 80°) : 1 of a square, not cut off
    assert warped_mask.sum() > 0.04 * height * width  # the object drawn, not a blank canvas
    small = {**params, "scale": 1.0, "shear": 10.0}  # a documented draw: as it was
    assert Affine().apply(image, mask, small)[1].shape == (40, 48)
