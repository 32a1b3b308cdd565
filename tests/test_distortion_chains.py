"""Distortion chains and their config: seeded sampling, probabilities, replay of a recorded chain, and
DistortionConfig's overrides and validation (augment/distortions.py). Generated arrays only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augment.distortions import (
    OBJECT_DISTORTIONS,
    REGISTRY,
    SCENE_DISTORTIONS,
    DistortionConfig,
    apply_chain,
    sample_chain,
)
from augment.superpixels import compute_superpixels
from test_distortions import make_object, make_scene, roundtrip


# --------------------------------------------------------------------------- chains and config


def test_sample_chain_is_seeded_and_json_ready():
    config = DistortionConfig()
    distortions = config.object_distortions()
    a = sample_chain(distortions, np.random.default_rng(5), 80, 80)
    b = sample_chain(distortions, np.random.default_rng(5), 80, 80)
    assert a == b and roundtrip(a) == a
    chains = {json.dumps(sample_chain(distortions, np.random.default_rng(seed), 80, 80)) for seed in range(10)}
    assert len(chains) > 5


def test_probability_zero_and_one():
    never = [cls(p=0.0) for cls in REGISTRY.values()]
    always = [cls(p=1.0) for cls in REGISTRY.values()]
    for seed in range(20):
        assert sample_chain(never, np.random.default_rng(seed), 64, 64) == []
        steps = sample_chain(always, np.random.default_rng(seed), 64, 64)
        assert [step["name"] for step in steps] == [d.name for d in always]


def test_sample_chain_draws_do_not_depend_on_p():
    after = []
    for p in (0.0, 1.0):
        rng = np.random.default_rng(3)
        sample_chain([cls(p=p) for cls in REGISTRY.values()], rng, 64, 64)
        after.append(rng.random())
    assert after[0] == after[1]


def test_apply_chain_replays_steps():
    image, mask = make_object()
    superpixels = compute_superpixels(image)
    distortions = [cls(p=1.0) for cls in OBJECT_DISTORTIONS]
    steps = sample_chain(distortions, np.random.default_rng(9), *mask.shape)
    out = apply_chain(roundtrip(steps), image, mask, superpixels)
    manual_image, manual_mask = image, mask
    for distortion, step in zip(distortions, steps):
        params = {k: v for k, v in step.items() if k != "name"}
        manual_image, manual_mask = distortion.apply(manual_image, manual_mask, params, superpixels)
    assert np.array_equal(out[0], manual_image) and np.array_equal(out[1], manual_mask)

    scene, scene_mask = make_scene()
    scene_steps = sample_chain([cls(p=1.0) for cls in SCENE_DISTORTIONS], np.random.default_rng(9), 96, 96)
    out_scene, out_scene_mask = apply_chain(scene_steps, scene, scene_mask)
    assert out_scene.shape == scene.shape and set(np.unique(out_scene_mask)) <= {0, 1, 2, 3}

    with pytest.raises(ValueError, match="warp_drive"):
        apply_chain([{"name": "warp_drive"}], image, mask)


def test_config_overrides_and_validation():
    config = DistortionConfig.from_dict({"affine": {"p": 0.9, "rotate": [-5, 5]}, "noise": None})
    assert config.affine.p == 0.9 and config.affine.rotate == (-5, 5)
    assert config.noise == DistortionConfig().noise
    assert DistortionConfig.from_dict(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert [d.name for d in config.scene_distortions()] == [cls.name for cls in SCENE_DISTORTIONS]

    with pytest.raises(ValueError, match="sparkles"):
        DistortionConfig.from_dict({"sparkles": {"p": 1.0}})
    with pytest.raises(ValueError, match="rotation"):
        DistortionConfig.from_dict({"affine": {"rotation": [0, 1]}})
    with pytest.raises(ValueError, match="low > high"):
        DistortionConfig.from_dict({"lens_blur": {"radius": [3, 1]}})
    with pytest.raises(ValueError, match="probability"):
        DistortionConfig.from_dict({"tear": {"p": 1.5}})
    with pytest.raises(ValueError, match="interpolations"):
        DistortionConfig.from_dict({"resolution_loss": {"interpolations": ["lanczos"]}})


def test_apply_reads_only_the_recorded_params_so_one_default_instance_per_kind_replays_every_step():
    """apply_chain replays with one default instance per distortion kind (making one per step checked
    every setting: ~8% of a composite). That is right only while no ``apply`` reads a setting of its
    instance: every ``self.x`` it uses must be a static helper of the class."""
    import ast
    import inspect
    import textwrap

    from augment.distortions import REGISTRY, _applier

    for name, kind in REGISTRY.items():
        tree = ast.parse(textwrap.dedent(inspect.getsource(kind.apply)))
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"}
        for attribute in used:
            assert isinstance(inspect.getattr_static(kind, attribute), staticmethod), f"{name}.apply reads self.{attribute}"
        assert _applier(kind) is _applier(kind)
