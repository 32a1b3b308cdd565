"""Geometric verification and the fused score (pipelines/verify.py, pipelines/fusion.py), on
generated scenes: a transformed instance is verified and re-boxed, a look-alike is not, a flat
query falls back to the heat map, and everything is the same run to run."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from augment.imageio import InputError, save_image
from pipelines.cli import app
from pipelines.fusion import (DEFAULT_FUSION, FusionModel, fit_logistic, fusion_path, load_fusion)
from pipelines.local_features import Keypoints, NetworkFeatures, backbone_encoder, mutual_matches
from pipelines.search import Searcher
from pipelines.verify import TRUTH_RGB, VERIFIED_RGB, Verification, Verifier, VerifyConfig, draw_matches

SCENE = (300, 400)  # height, width


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return Searcher(device="cpu")


@pytest.fixture(scope="module", params=["network", "sift"])
def verifier(request: pytest.FixtureRequest, searcher: Searcher) -> Verifier:
    """Both feature sources: the search network's own features (the default) and SIFT."""
    network = NetworkFeatures(backbone_encoder(searcher.model)) if request.param == "network" else None
    return Verifier(VerifyConfig(features=request.param), network)


def _bar(verifier: Verifier) -> int:
    """Inliers needed to verify, for the verifier's feature source."""
    c = verifier.config
    return c.dense_min_inliers if c.features == "network" else c.min_inliers


def _query() -> np.ndarray:
    """A textured, non-symmetric query: the astronaut's helmet, face and badge (120 x 96)."""
    return cv2.resize(data.astronaut()[20:260, 130:322], (96, 120), interpolation=cv2.INTER_AREA)


def _background() -> np.ndarray:
    return cv2.resize(data.coffee(), SCENE[::-1], interpolation=cv2.INTER_AREA)


def _place(scene: np.ndarray, patch: np.ndarray, centre: tuple[float, float], angle: float,
           scale: float, mirror: bool) -> tuple[int, int, int, int]:
    """Paste ``patch`` mirrored, rotated by ``angle`` degrees and scaled about its centre, its
    centre at ``centre``; returns the box (pixel edges) of the pasted pixels."""
    h, w = patch.shape[:2]
    if mirror:
        patch = np.ascontiguousarray(patch[:, ::-1])
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    matrix[:, 2] += np.array(centre) - np.array([(w - 1) / 2, (h - 1) / 2])
    size = scene.shape[1::-1]
    warped = cv2.warpAffine(patch, matrix, size, flags=cv2.INTER_AREA)
    alpha = cv2.warpAffine(np.ones((h, w), np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    scene[:] = (warped * alpha[..., None] + scene * (1 - alpha[..., None])).astype(np.uint8)
    ys, xs = np.nonzero(alpha >= 0.5)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _rough(box: tuple[int, int, int, int], shift: int = 12, grow: float = 1.3) -> tuple[int, ...]:
    """A heat-map-like candidate: off-centre and the wrong size."""
    cx, cy = (box[0] + box[2]) / 2 + shift, (box[1] + box[3]) / 2 - shift
    hw, hh = (box[2] - box[0]) * grow / 2, (box[3] - box[1]) * grow / 2
    return (round(cx - hw), round(cy - hh), round(cx + hw), round(cy + hh))


def test_mirrored_rotated_scaled_instance_is_verified_and_reboxed(verifier: Verifier) -> None:
    scene = _background()
    truth = _place(scene, _query(), (230, 160), angle=10, scale=0.7, mirror=True)
    check = verifier.verify(_query(), None, scene, [_rough(truth)])[0]
    assert check.verified and check.mirrored and check.inliers >= 20, check
    assert max(abs(a - b) for a, b in zip(check.box, truth)) <= 5, (check.box, truth)
    assert 0.65 <= check.scale <= 0.75


def test_look_alike_with_another_texture_is_not_verified(verifier: Verifier) -> None:
    """Same size, shape and placement as the query, other pixels (the astronaut's suit)."""
    scene = _background()
    look_alike = cv2.resize(data.astronaut()[260:500, 180:372], (96, 120), interpolation=cv2.INTER_AREA)
    box = _place(scene, look_alike, (230, 160), angle=10, scale=0.7, mirror=True)
    check = verifier.verify(_query(), None, scene, [_rough(box)])[0]
    assert not check.verified and check.inliers <= 0.6 * _bar(verifier), check


def _two_instances() -> tuple[np.ndarray, list[tuple[int, ...]], tuple[tuple[int, int, int, int], ...]]:
    scene = _background()
    first = _place(scene, _query(), (90, 90), angle=0, scale=0.8, mirror=False)
    second = _place(scene, _query(), (300, 200), angle=-8, scale=0.6, mirror=True)
    return scene, [_rough(first), _rough(second), (150, 220, 230, 300)], (first, second)


def test_several_instances_are_each_checked(verifier: Verifier) -> None:
    scene, candidates, truths = _two_instances()
    every = Verifier(replace(verifier.config, enough_inliers=0), verifier.network)
    checks = every.verify(_query(), None, scene, candidates)
    assert [c.verified for c in checks] == [True, True, False]
    for check, truth in zip(checks, truths):
        assert max(abs(a - b) for a, b in zip(check.box, truth)) <= 5
    assert [c.mirrored for c in checks[:2]] == [False, True]


def test_a_strongly_verified_candidate_ends_the_checks(searcher: Searcher) -> None:
    """Network features: the top candidate verified with enough inliers leaves the others
    unchecked (None), and its own check is the one checking every candidate gives."""
    scene, candidates, _ = _two_instances()
    network = NetworkFeatures(backbone_encoder(searcher.model))
    every = Verifier(VerifyConfig(enough_inliers=0), network).verify(_query(), None, scene, candidates)
    early = Verifier(VerifyConfig(), network).verify(_query(), None, scene, candidates)
    assert every[0].inliers >= VerifyConfig().enough_inliers
    assert early[1:] == [None, None]
    assert (early[0].verified, early[0].inliers, early[0].box) == (every[0].verified, every[0].inliers, every[0].box)
    # A bar above the top candidate's inliers checks the rest as before.
    high = Verifier(VerifyConfig(enough_inliers=every[0].inliers + 1), network)
    rest = high.verify(_query(), None, scene, candidates)
    assert [(c.verified, c.inliers, c.box) for c in rest] == [(c.verified, c.inliers, c.box) for c in every]


def test_query_mask_outline_gives_the_object_box(verifier: Verifier) -> None:
    """With a mask, the box follows the object's silhouette, not the query's white margin."""
    scene = _background()
    padded = np.full((160, 136, 3), 255, np.uint8)
    padded[20:140, 20:116] = _query()
    mask = np.zeros((160, 136), np.float32)
    mask[20:140, 20:116] = 1.0
    truth = _place(scene, _query(), (200, 150), angle=0, scale=0.75, mirror=False)
    check = verifier.verify(padded, mask, scene, [_rough(truth)])[0]
    assert check.verified and max(abs(a - b) for a, b in zip(check.box, truth)) <= 5


def _flat_scene() -> tuple[np.ndarray, np.ndarray]:
    flat = np.full((80, 60, 3), (200, 60, 40), np.uint8)
    scene = _background()
    scene[100:180, 200:260] = flat
    return flat, scene


def test_flat_query_is_not_verified(verifier: Verifier) -> None:
    flat, scene = _flat_scene()
    check = verifier.verify(flat, None, scene, [(190, 90, 270, 190)])[0]
    assert check.verified is False and check.inliers < _bar(verifier)


def test_flat_query_search_falls_back_to_the_heat_map(searcher: Searcher) -> None:
    """Unverified candidates keep the heat map's boxes, order and pass/fail: the same detections
    as the search without verification, only the score is the heat carried through the fusion."""
    flat, scene = _flat_scene()
    fused = searcher.find(flat, scene).detections
    prepared = searcher.prepare(flat)
    maps = searcher.maps(prepared, [scene])
    plain = searcher.detect(prepared, maps.heat[0], maps.object_height[0])  # the --no-verify path
    assert plain and [d.box for d in fused] == [d.box for d in plain]
    assert all(d.verified is not True and d.heat == p.score for d, p in zip(fused, plain))
    model = searcher.verification.model
    assert [d.score for d in fused] == [model.heat_score(p.score) for p in plain]


def test_search_verifies_reboxes_and_is_deterministic(searcher: Searcher) -> None:
    scene = _background()
    truth = _place(scene, _query(), (230, 160), angle=10, scale=0.7, mirror=True)
    first = searcher.find(_query(), scene)
    second = Searcher(device="cpu").find(_query(), scene)  # a fresh model and verifier
    assert first.detections == second.detections
    top = first.detections[0]
    assert top.verified and top.inliers >= 20 and top.score > searcher.verification.model.heat_score(top.heat)
    assert max(abs(a - b) for a, b in zip(top.box, truth)) <= 5
    line = first.to_json()["detections"][0]
    assert line["verified"] is True and line["inliers"] == top.inliers and line["heat"] == round(top.heat, 4)


def test_verification_is_the_same_run_to_run(verifier: Verifier) -> None:
    scene = _background()
    truth = _place(scene, _query(), (230, 160), angle=10, scale=0.7, mirror=True)
    checks = [Verifier(verifier.config, verifier.network).verify(_query(), None, scene, [_rough(truth)])[0]
              for _ in range(2)]
    assert checks[0].box == checks[1].box and checks[0].inliers == checks[1].inliers
    assert np.array_equal(checks[0].medium_points, checks[1].medium_points)


def test_overlay_draws_the_inliers(verifier: Verifier) -> None:
    scene = _background()
    truth = _place(scene, _query(), (230, 160), angle=10, scale=0.7, mirror=True)
    check = verifier.verify(_query(), None, scene, [_rough(truth)])[0]
    picture = draw_matches(_query(), scene, check, truth=(10, 10, 60, 60))
    assert picture.shape == (SCENE[0], SCENE[1] + 96, 3)
    assert np.all(picture == VERIFIED_RGB, axis=-1).sum() > 200  # inlier lines and the fitted box
    assert np.all(picture == TRUTH_RGB, axis=-1).sum() > 100


def test_logistic_fit_recovers_weights_and_keeps_evidence_non_negative() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    y = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))).astype(float)
    weights, bias = fit_logistic(x, y, [False, False])
    assert abs(weights[0] - 2.0) < 0.2 and abs(weights[1] + 1.0) < 0.15 and abs(bias - 0.5) < 0.15
    weights, _ = fit_logistic(x, y, [False, True])
    assert weights[1] == 0.0 and weights[0] > 1.0


def test_fusion_model_round_trip_and_errors(tmp_path: Path) -> None:
    model = load_fusion(None)
    assert fusion_path(None) == DEFAULT_FUSION and model.weights[0] > 0
    assert all(w >= 0 for w in model.weights[1:])
    path = tmp_path / "model.fusion.json"
    model.save(path)
    assert FusionModel.load(path) == model
    path.write_text(json.dumps({"features": ["heat"], "weights": [1.0], "bias": 0.0}))
    with pytest.raises(InputError, match="model.fusion.json: not a fusion model"):
        FusionModel.load(path)
    # A weight per feature, finite, and a heat level for pre_threshold: each of these was taken, the
    # verification ignored (one weight, zip's shortest), a string's characters as weights, no detection
    # at all (NaN scores), no candidate verified (pre_threshold 7).
    for change, says in (({"weights": model.weights[:1]}, "weights must be a list of 3 numbers"),
                         ({"weights": "123"}, "weights must be a list of 3 numbers"),
                         ({"weights": [float("nan"), *model.weights[1:]]}, "must be finite numbers"),
                         ({"bias": float("inf")}, "must be finite numbers"),
                         ({"pre_threshold": 7}, "pre_threshold must be between 0 and 1, not 7")):
        path.write_text(json.dumps({**model.to_json(), **change}))
        with pytest.raises(InputError, match=f"model.fusion.json: .*{says}"):
            FusionModel.load(path)
    # Unverified: a monotone function of the heat; the fused threshold is the heat threshold's image.
    heats = np.linspace(0.05, 0.95, 19)
    assert np.all(np.diff([model.heat_score(h) for h in heats]) > 0)


def test_search_command_records_verification_and_no_verify(tmp_path: Path) -> None:
    scene = _background()
    _place(scene, _query(), (230, 160), angle=10, scale=0.7, mirror=True)
    save_image(tmp_path / "scene.png", scene)
    save_image(tmp_path / "query.png", _query())
    lines = {}
    for flag in ([], ["--no-verify"]):
        out = tmp_path / ("plain" if flag else "fused")
        result = CliRunner().invoke(app, ["search", str(tmp_path / "query.png"), str(tmp_path / "scene.png"),
                                          "--out", str(out), "--device", "cpu", *flag])
        assert result.exit_code == 0, result.output
        lines[bool(flag)] = json.loads((out / "detections.jsonl").read_text())["detections"]
    assert lines[False][0]["verified"] is True and lines[False][0]["inliers"] >= 20
    assert all("verified" not in d and "inliers" not in d for d in lines[True])
    assert not math.isclose(lines[False][0]["score"], lines[True][0]["score"])


@pytest.mark.parametrize("ties", [False, True])
def test_mutual_matches_equal_the_two_argmaxes(ties: bool) -> None:
    """Mutual nearest neighbours as the straightforward argmax both ways gives them (the first
    maximal row wins a tied column)."""
    rng = np.random.default_rng(0)
    query, medium = rng.standard_normal((300, 16)), rng.standard_normal((500, 16))
    if ties:  # repeated descriptors and integer ones make tied similarities
        query[7], medium[9] = query[3], medium[2]
        query, medium = np.round(query), np.round(medium)
    query, medium = query.astype(np.float32), medium.astype(np.float32)
    similarity = query @ medium.T
    best_medium, best_query = similarity.argmax(axis=1), similarity.argmax(axis=0)
    expected = np.nonzero(best_query[best_medium] == np.arange(len(query)))[0]
    q, m = mutual_matches(Keypoints(np.zeros((300, 2), np.float32), query),
                          Keypoints(np.zeros((500, 2), np.float32), medium))
    assert len(expected) > 10
    np.testing.assert_array_equal(q, expected)
    np.testing.assert_array_equal(m, best_medium[expected])


@pytest.mark.parametrize("scale, attempts", [(2.0, 2), (16.0, 1)])
def test_second_try_only_at_a_size_a_verified_fit_may_have(searcher: Searcher, monkeypatch: pytest.MonkeyPatch,
                                                          scale: float, attempts: int) -> None:
    """An unverified fit at another size gives a second try there, unless that size lies outside
    scale_range (no fit at it could be verified; on noise frames it meant 36864-cell query views)."""
    verifier = Verifier(VerifyConfig(), NetworkFeatures(backbone_encoder(searcher.model)))
    tries: list[float] = []
    fit = Verification(False, inliers=10, matches=30, box=(40, 40, 120, 140), scale=scale)

    def best_fit(views, scene, *args):  # type: ignore[no-untyped-def]
        tries.append(views[0].scale)
        return fit

    monkeypatch.setattr(verifier, "_best_fit", best_fit)
    check = verifier.verify(_query(), None, _background(), [(100, 100, 196, 220)])[0]
    assert len(tries) == attempts and check == fit  # zoom 1 first (the box is the query's size)


def test_verified_search_takes_its_fusion_models_threshold(searcher: Searcher, tmp_path: Path) -> None:
    from pipelines.search import UNTRAINED_THRESHOLD

    model = load_fusion(None)
    assert model.threshold is not None and 0.0 < model.threshold < 1.0
    assert searcher.threshold == model.threshold and searcher.heat_map_threshold == UNTRAINED_THRESHOLD
    assert searcher.score_threshold == model.heat_score(model.threshold)
    plain = Searcher(device="cpu", verify=False)
    assert plain.threshold == plain.score_threshold == UNTRAINED_THRESHOLD
    assert Searcher(device="cpu", threshold=0.3).threshold == 0.3  # given: taken as it is
    # A fusion model without a threshold, or fitted for another network, leaves the network's own.
    for name, fields in (("none", {"threshold": None}), ("other", {"model": "runs/other.pt"})):
        path = tmp_path / f"{name}.fusion.json"
        replace(model, **fields).save(path)
        assert Searcher(device="cpu", fusion=path).threshold == UNTRAINED_THRESHOLD
    (tmp_path / "bad.fusion.json").write_text(json.dumps({**model.to_json(), "threshold": 1.5}))
    with pytest.raises(InputError, match="bad.fusion.json: threshold must be between 0 and 1"):
        FusionModel.load(tmp_path / "bad.fusion.json")


def test_calibration_of_the_verified_search_counts_its_fused_scores(searcher: Searcher) -> None:
    """A verified instance scores above any heat level's cut, so at a heat threshold the heat map
    alone misses it at, the verified search still finds it: calibrated as each one searches."""
    from pipelines.calibration import CalibrationCase, calibrate_threshold

    scene = _background()
    box = _place(scene, _query(), (230, 160), angle=10, scale=0.7, mirror=True)
    cases = [CalibrationCase(_query(), scene, [box])]
    plain = Searcher(device="cpu", verify=False)
    heat = float(plain.find(_query(), scene).heatmap.max())
    above = round(min(0.98, heat + 0.05), 2)  # a threshold over every heat in the scene
    fused = calibrate_threshold(searcher, cases, thresholds=[above])
    alone = calibrate_threshold(plain, cases, thresholds=[above])
    assert fused.recall == 1.0 and alone.recall == 0.0
