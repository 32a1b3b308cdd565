"""Distortions: exact replay from recorded params and alignment of image and mask. Chains and config
handling are in test_distortion_chains.py, which imports this file's generated inputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from augment.distortions import (
    OBJECT_DISTORTIONS,
    REGISTRY,
    SCENE_DISTORTIONS,
    Affine,
    LensBlur,
    Lighting,
    MotionBlur,
    Noise,
    PillarBox,
    ResolutionLoss,
    SceneLighting,
    SuperpixelOcclusion,
    Tear,
    Transparency,
)
from augment.resizing import resize_labels
from augment.superpixels import compute_superpixels

ORANGE, BLUE = (220, 90, 30), (30, 150, 230)


def make_object(height: int = 90, width: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Textured ellipse with an off-centre blue square on a transparent canvas; mask = alpha > 0."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 4), np.uint8)
    cv2.ellipse(image, (width // 2, height // 2), (width // 2 - 4, height // 2 - 4), 0, 0, 360, (*ORANGE, 255), -1)
    cv2.rectangle(image, (width // 5, height // 4), (width // 2, height // 2), (*BLUE, 255), -1)
    texture = rng.integers(-15, 16, (height, width, 3))
    image[:, :, :3] = np.clip(image[:, :, :3] + texture, 0, 255) * (image[:, :, 3:] > 0)
    return image, (image[:, :, 3] > 0).astype(np.uint8)


def make_scene(size: int = 96, dtype: type = np.uint8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random RGB scene with three rectangular instances."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((size, size), dtype)
    mask[10:40, 10:50] = 1
    mask[50:90, 5:30] = 2
    mask[45:80, 55:90] = 3
    return image, mask


def inputs_for(distortion) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if distortion.level == "object":
        image, mask = make_object()
        return image, mask, compute_superpixels(image)
    image, mask = make_scene()
    return image, mask, None


def roundtrip(params: dict) -> dict:
    return json.loads(json.dumps(params))


ALL = [cls() for cls in OBJECT_DISTORTIONS + SCENE_DISTORTIONS] + [
    Noise(iso_p=0.0),
    Noise(iso_p=1.0),
    ResolutionLoss(jpeg_p=1.0),
    PillarBox(letterbox_p=1.0),
    Tear(rotate_p=1.0),
]


@pytest.mark.parametrize("distortion", ALL, ids=lambda d: repr(d))
def test_replay_is_exact_and_json_safe(distortion):
    image, mask, superpixels = inputs_for(distortion)
    original_image, original_mask = image.copy(), mask.copy()
    params = distortion.sample(np.random.default_rng(7), *mask.shape)
    assert roundtrip(params) == params

    first = distortion.apply(image, mask, params, superpixels)
    second = distortion.apply(image, mask, params, superpixels)
    replayed = type(distortion)().apply(image, mask, roundtrip(params), superpixels)
    for out in (second, replayed):
        assert np.array_equal(first[0], out[0]) and np.array_equal(first[1], out[1])
    # Inputs are never modified in place.
    assert np.array_equal(image, original_image) and np.array_equal(mask, original_mask)

    out_image, out_mask = first
    assert out_image.dtype == np.uint8 and out_mask.dtype == mask.dtype
    assert out_image.shape[:2] == out_mask.shape
    assert out_image.shape[2] == image.shape[2]
    if distortion.level == "scene":
        assert out_image.shape == image.shape


@pytest.mark.parametrize("seed", range(3))
def test_sampling_is_seeded(seed):
    for distortion in [cls() for cls in REGISTRY.values()]:
        a = distortion.sample(np.random.default_rng(seed), 64, 64)
        b = distortion.sample(np.random.default_rng(seed), 64, 64)
        assert a == b


# --------------------------------------------------------------------------- affine


def affine_params(angle=0.0, scale=1.0, shear=0.0, hflip=False, vflip=False) -> dict:
    return {"angle": angle, "scale": scale, "shear": shear, "hflip": hflip, "vflip": vflip}


def test_affine_flip_and_right_angle_are_exact():
    image, mask = make_object()
    out_image, out_mask = Affine().apply(image, mask, affine_params(hflip=True))
    assert np.array_equal(out_image, image[:, ::-1]) and np.array_equal(out_mask, mask[:, ::-1])

    out_image, out_mask = Affine().apply(image, mask, affine_params(vflip=True))
    assert np.array_equal(out_image, image[::-1]) and np.array_equal(out_mask, mask[::-1])

    # Positive angles turn counter-clockwise on screen, like np.rot90; the canvas becomes W×H.
    out_image, out_mask = Affine().apply(image, mask, affine_params(angle=90.0))
    assert np.array_equal(out_image, np.rot90(image)) and np.array_equal(out_mask, np.rot90(mask))


def test_affine_flip_moves_image_and_mask_together():
    image, mask = make_object()
    blue = np.all(image[:, :, :3].astype(int) - BLUE < 20, axis=2) & (mask > 0)
    out_image, out_mask = Affine().apply(image, mask, affine_params(hflip=True, angle=20.0))
    out_blue = np.all(np.abs(out_image[:, :, :3].astype(int) - BLUE) < 20, axis=2) & (out_mask > 0)
    # The blue square sat left of centre; mirrored (then turned a little) it sits right of centre.
    assert np.nonzero(blue)[1].mean() < image.shape[1] / 2
    assert np.nonzero(out_blue)[1].mean() > out_image.shape[1] / 2


def test_affine_keeps_mask_aligned_and_nothing_cut_off():
    image, mask = make_object()
    params = affine_params(angle=33.0, scale=1.2, shear=8.0)
    out_image, out_mask = Affine().apply(image, mask, params)
    assert out_image.shape[0] > image.shape[0] and out_image.shape[1] > image.shape[1]
    # Mask (nearest) and alpha (bilinear) may only disagree on the anti-aliased rim.
    disagree = (out_mask > 0) != (out_image[:, :, 3] > 127)
    rim = cv2.morphologyEx(out_mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    assert not (disagree & ~rim).any()
    assert disagree.sum() < 0.02 * out_mask.sum()
    # Nothing cut off: the area scales by scale² (shear preserves area).
    assert out_mask.sum() == pytest.approx(mask.sum() * 1.2**2, rel=0.03)
    # The border of the grown canvas is transparent and unlabelled.
    for edge in (out_image[0], out_image[-1], out_image[:, 0], out_image[:, -1]):
        assert not edge[:, 3].any()
    inner = cv2.erode(out_mask, np.ones((5, 5), np.uint8)) > 0
    assert (out_image[inner, 3] == 255).all()


def test_affine_does_not_darken_the_rim():
    # Transparent pixels are black; straight-alpha interpolation would mix that black into the rim.
    image = np.zeros((60, 80, 4), np.uint8)
    cv2.ellipse(image, (40, 30), (30, 20), 0, 0, 360, (*ORANGE, 255), -1)
    out_image, _ = Affine().apply(image, (image[:, :, 3] > 0).astype(np.uint8), affine_params(angle=25.0, scale=1.3))
    rim = (out_image[:, :, 3] > 40) & (out_image[:, :, 3] < 255)
    assert rim.sum() > 50
    # Only premultiplied 8-bit rounding remains: at most ~255/alpha/2 levels.
    assert np.abs(out_image[rim, :3].astype(int) - ORANGE).max() <= 8


# --------------------------------------------------------------------------- tear


def tear_params(rotate=0.0, gap=0.12, angle=30.0) -> dict:
    vertices = [0.0, 0.04, -0.05, 0.03, -0.02, 0.05, -0.04, 0.0]
    return {"angle": angle, "offset": 0.1, "vertices": vertices, "gap": gap, "rotate": rotate}


def test_tear_splits_object_with_a_gap():
    image, mask = make_object()
    out_image, out_mask = Tear().apply(image, mask, tear_params())
    assert out_image.shape[0] >= image.shape[0] and out_image.shape[1] >= image.shape[1]
    assert out_image.shape[:2] != image.shape[:2]
    count, _ = cv2.connectedComponents(out_mask, connectivity=8)
    assert count - 1 >= 2
    # Whole-pixel shifts: the pieces are exact copies, so area is preserved exactly and
    # alpha lies exactly where the mask is.
    assert out_mask.sum() == mask.sum()
    assert np.array_equal(out_mask > 0, out_image[:, :, 3] > 0)


def test_tear_with_rotated_piece_roughly_preserves_area():
    image, mask = make_object()
    out_image, out_mask = Tear().apply(image, mask, tear_params(rotate=7.0))
    count, _ = cv2.connectedComponents(out_mask, connectivity=8)
    assert count - 1 >= 2
    assert out_mask.sum() == pytest.approx(mask.sum(), rel=0.05)
    disagree = (out_mask > 0) != (out_image[:, :, 3] > 127)
    assert disagree.sum() < 0.03 * out_mask.sum()


# --------------------------------------------------------------------------- superpixel occlusion


def grid_labels(height: int, width: int, cell: int = 15) -> np.ndarray:
    rows, cols = np.indices((height, width)) // cell
    return (rows * (width // cell + 1) + cols + 1).astype(np.int32)


def test_superpixel_occlusion_removes_and_darkens_whole_superpixels():
    image, mask = make_object()
    labels = grid_labels(*mask.shape)
    params = None
    for seed in range(50):  # a seed that both removes and darkens something
        candidate = {"fraction": 0.4, "remove_ratio": 0.5, "darken": 0.5, "seed": seed}
        removed, darkened = SuperpixelOcclusion.choose(labels, mask, candidate)
        if removed and darkened:
            params = candidate
            break
    assert params is not None
    out_image, out_mask = SuperpixelOcclusion().apply(image, mask, params, labels)

    is_removed, is_darkened = np.isin(labels, removed), np.isin(labels, darkened)
    assert not out_mask[is_removed].any() and not out_image[is_removed, 3].any()
    assert np.array_equal(out_mask[is_darkened], mask[is_darkened])
    object_darkened = is_darkened & (mask > 0)
    before = image[object_darkened, :3].astype(int).sum()
    after = out_image[object_darkened, :3].astype(int).sum()
    assert after == pytest.approx(0.5 * before, rel=0.02)
    untouched = ~(is_removed | is_darkened)
    assert np.array_equal(out_image[untouched], image[untouched])
    assert np.array_equal(out_mask[untouched], mask[untouched])
    # Only superpixels that overlap the object are picked.
    assert set(removed + darkened) <= set(np.unique(labels[mask > 0]).tolist())


def test_superpixel_occlusion_resizes_reduced_labels_and_skips_without_them():
    image, mask = make_object(200, 260)
    reduced = compute_superpixels(image, max_side=64)
    assert max(reduced.shape) == 64
    params = {"fraction": 0.5, "remove_ratio": 1.0, "darken": 0.5, "seed": 1}
    out_image, out_mask = SuperpixelOcclusion().apply(image, mask, params, reduced)
    assert out_mask.sum() < mask.sum()
    assert np.array_equal(out_mask > 0, (out_image[:, :, 3] > 0) & (mask > 0))
    unchanged = SuperpixelOcclusion().apply(image, mask, params, None)
    assert np.array_equal(unchanged[0], image) and np.array_equal(unchanged[1], mask)


def test_compute_superpixels_labels():
    image, _ = make_object(150, 300)
    labels = compute_superpixels(image, max_side=100)
    assert labels.dtype == np.int32 and labels.shape == (50, 100)
    assert np.array_equal(labels, compute_superpixels(image, max_side=100))
    background = resize_labels((image[:, :, 3] == 0).astype(np.int32), 50, 100) > 0
    assert not labels[background].any()
    ids = np.unique(labels[labels > 0])
    assert ids.size >= 2 and np.array_equal(ids, np.arange(1, ids.size + 1))
    assert resize_labels(labels, 150, 300).shape == (150, 300)


# --------------------------------------------------------------------------- photometric


def test_transparency_scales_alpha_only():
    image, mask = make_object()
    out_image, out_mask = Transparency().apply(image, mask, {"factor": 0.6})
    assert np.array_equal(out_mask, mask) and np.array_equal(out_image[:, :, :3], image[:, :, :3])
    assert np.abs(out_image[:, :, 3].astype(int) - image[:, :, 3] * 0.6).max() <= 1


def test_object_lighting_changes_colour_not_alpha():
    image, mask = make_object()
    params = {"brightness": 0.1, "contrast": 1.2, "gamma": 0.8, "temperature": 0.1}
    out_image, out_mask = Lighting().apply(image, mask, params)
    assert np.array_equal(out_mask, mask) and np.array_equal(out_image[:, :, 3], image[:, :, 3])
    assert not np.array_equal(out_image[:, :, :3], image[:, :, :3])
    # Warmer: red gains on blue.
    inside = mask > 0
    red_gain = out_image[inside, 0].astype(int).sum() - image[inside, 0].astype(int).sum()
    blue_gain = out_image[inside, 2].astype(int).sum() - image[inside, 2].astype(int).sum()
    assert red_gain > blue_gain


@pytest.mark.parametrize(
    "distortion, params",
    [
        (SceneLighting(), {"brightness": -0.05, "contrast": 0.9, "gamma": 1.2, "temperature": -0.05}),
        (LensBlur(), {"radius": 2.5}),
        (MotionBlur(), {"length": 9.0, "angle": 30.0}),
        (Noise(), {"kind": "gaussian", "sigma": 5.0, "shot": 8.0, "color": 3.0, "seed": 3}),
        (Noise(), {"kind": "iso", "sigma": 5.0, "shot": 8.0, "color": 3.0, "seed": 3}),
        (ResolutionLoss(), {"scale": 0.4, "interpolation": "nearest", "jpeg_quality": 0}),
        (ResolutionLoss(), {"scale": 1.0, "interpolation": "linear", "jpeg_quality": 30}),
    ],
    ids=lambda value: value.name if hasattr(value, "name") else "",
)
def test_photometric_scene_distortions_change_image_only(distortion, params):
    image, mask = make_scene(dtype=np.uint16)
    out_image, out_mask = distortion.apply(image, mask, params)
    assert np.array_equal(out_mask, mask) and out_mask.dtype == np.uint16
    assert out_image.shape == image.shape and not np.array_equal(out_image, image)


def test_noise_statistics_and_seed():
    image = np.full((128, 128, 3), 128, np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    params = {"kind": "gaussian", "sigma": 6.0, "shot": 8.0, "color": 3.0, "seed": 11}
    out, _ = Noise().apply(image, mask, params)
    residual = out.astype(float) - 128
    assert abs(residual.mean()) < 0.3 and residual.std() == pytest.approx(6.0, rel=0.1)
    other, _ = Noise().apply(image, mask, {**params, "seed": 12})
    assert not np.array_equal(out, other)
    # ISO noise grows with intensity.
    ramp = np.repeat(np.array([20, 230], np.uint8), 64 * 128 * 3).reshape(128, 128, 3)
    iso, _ = Noise().apply(ramp, mask, {**params, "kind": "iso", "color": 0.0})
    dark, bright = (iso.astype(float) - ramp)[:64], (iso.astype(float) - ramp)[64:]
    assert bright.std() > 2 * dark.std()


def test_blur_kernels_are_normalised():
    assert LensBlur.kernel(2.3).sum() == pytest.approx(1.0)
    kernel = MotionBlur.kernel(7.0, 0.0)
    assert kernel.sum() == pytest.approx(1.0)
    assert np.count_nonzero(kernel.sum(axis=1)) == 1  # a horizontal streak occupies one row


# --------------------------------------------------------------------------- pillar box


@pytest.mark.parametrize("orientation", ["pillar", "letterbox"])
def test_pillar_box_bars_and_aligned_mask(orientation):
    image, mask = make_scene(dtype=np.uint16)
    params = {"orientation": orientation, "content": 0.75, "color": [10, 20, 30]}
    out_image, out_mask = PillarBox().apply(image, mask, params)
    assert out_image.shape == image.shape and out_mask.dtype == np.uint16
    x0, y0, inner_w, inner_h = PillarBox.content_box(*mask.shape, params)
    assert (inner_w, inner_h) == ((72, 96) if orientation == "pillar" else (96, 72))
    bars = np.ones(mask.shape, bool)
    bars[y0 : y0 + inner_h, x0 : x0 + inner_w] = False
    assert (out_image[bars] == [10, 20, 30]).all() and not out_mask[bars].any()
    expected = cv2.resize(mask, (inner_w, inner_h), interpolation=cv2.INTER_NEAREST_EXACT)  # the pixel under each centre
    assert np.array_equal(out_mask[y0 : y0 + inner_h, x0 : x0 + inner_w], expected)
    assert set(np.unique(out_mask).tolist()) == {0, 1, 2, 3}
