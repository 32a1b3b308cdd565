"""Speed-ups of the rendering give the bytes of the plain computation they replace (rows must replay)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from augment.straight_alpha import premultiply, unpremultiply


def _rgba(seed: int, height: int = 37, width: int = 29) -> np.ndarray:
    rgba = np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8)
    rgba[:5, :, 3] = 0
    rgba[5:9, :, 3] = 255
    return rgba


def test_premultiply_matches_four_plane_arithmetic():
    for seed in range(3):
        rgba = _rgba(seed)
        alpha = rgba[:, :, 3]
        planes = cv2.merge([alpha, alpha, alpha, np.full_like(alpha, 255)])
        assert np.array_equal(premultiply(rgba), cv2.multiply(rgba, planes, scale=1.0 / 255.0))
        assert np.array_equal(unpremultiply(rgba), cv2.divide(rgba, planes, scale=255.0))
        view = np.dstack([rgba, rgba])[:, :, 4:]  # not contiguous
        assert np.array_equal(premultiply(view), premultiply(rgba))


def test_composition_check_remembers_good_values_only(monkeypatch):
    from augment import config as config_module
    from augment.config import CompositionConfig, check_composition
    from augment.imageio import InputError

    built = []
    build_section = config_module._build_section
    monkeypatch.setattr(config_module, "_build_section", lambda *args: built.append(1) or build_section(*args))
    config = CompositionConfig(min_objects=1, max_objects=1, width=333)
    check_composition(config)
    check_composition(config)  # remembered: no second check needed, and still fine
    assert len(built) == 1, "a good composition was checked again"
    for key, bad in (("min_objects", True), ("max_objects", 1.0), ("object_scale", (0.5, 0.25)), ("blend", ["hard"])):
        changed = CompositionConfig(min_objects=1, max_objects=1)
        setattr(changed, key, bad)  # equal to a good value (True == 1, 1.0 == 1) or unhashable: checked anew
        with pytest.raises(InputError, match=key if key != "blend" else "blend"):
            check_composition(changed)
    config.width = 8  # changed after a good check
    with pytest.raises(InputError, match="width"):
        check_composition(config)


def test_superpixel_occlusion_matches_boolean_indexing():
    from augment.object_distortions import SuperpixelOcclusion

    rng = np.random.default_rng(7)
    image = _rgba(5, 60, 50)
    mask = (image[:, :, 3] >= 128).astype(np.uint8)
    superpixels = cv2.resize(rng.integers(0, 30, (6, 5)).astype(np.int32), (25, 30), interpolation=cv2.INTER_NEAREST)
    for seed in range(12):
        params = {"fraction": float(rng.uniform(0.05, 0.6)), "remove_ratio": float(rng.uniform()),
                  "darken": float(rng.uniform(0.3, 0.7)), "seed": seed}
        out_image, out_mask = SuperpixelOcclusion().apply(image, mask, params, superpixels)
        labels = cv2.resize(superpixels, (50, 60), interpolation=cv2.INTER_NEAREST_EXACT)
        remove, darken = SuperpixelOcclusion.choose(labels, mask, params)
        expected_image, expected_mask = image.copy(), mask.copy()
        removed, darkened = np.isin(labels, remove), np.isin(labels, darken)
        expected_image[removed, 3] = 0
        expected_mask[removed] = 0
        expected_image[darkened, :3] = (expected_image[darkened, :3] * np.float32(params["darken"]) + 0.5).astype(np.uint8)
        assert remove or darken
        assert np.array_equal(out_image, expected_image) and np.array_equal(out_mask, expected_mask)
