"""QA of what the trainer sees: pairs whose targets and negatives are what they claim to be."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.shard_factory import make_shards, rewrite_rows
from train.data import PairConfig, ShardPairs


def _queried_cutouts(dataset, epochs: int, positive: bool) -> list[str]:
    """The cutouts ``dataset`` rendered as queries over ``epochs`` epochs, each sample positive (or
    negative, with an empty target) as ``positive`` says."""
    library = dataset._cutouts()
    drawn: list[str] = []
    rgba = library.rgba
    library.rgba = lambda cid: (drawn.append(cid), rgba(cid))[1]  # the query's cutout, as it is rendered
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for sample in dataset:
            assert bool(sample["positive"]) == positive
            assert positive or int(sample["target"].sum()) == 0
    return drawn


@pytest.mark.parametrize("hard", [1.0, 0.0])
def test_a_negative_never_queries_a_cutout_pasted_but_too_hidden_to_be_labelled(tmp_path, hard):
    """`synth expand` drops an object left under min_visible visible from a row's objects, but its visible
    part stays in the image (the row's params record it as pasted). A negative's query was drawn among the
    cutouts missing from ``objects``: that object, partly in view, with an all-zero target (a hard negative
    took it first of all, as the one other cutout of a category the medium holds)."""
    shards = make_shards(tmp_path / "s", n_cutouts=4, n_composites=1, rows_per_group=1, rows_per_shard=1,
                         max_objects=1)
    first, hidden = shards.cutout_ids[0], shards.cutout_ids[3]  # both of category shape0
    pasted = {"objects": [{"cutout_id": first, "position": [4, 4]}, {"cutout_id": hidden, "position": [60, 60]},
                          {"cutout_id": shards.cutout_ids[1], "position": None}]}  # left out: never pasted
    objects = [{"instance_id": 1, "cutout_id": first, "category": "shape0", "box": [0, 0, 8, 8],
                "visible_fraction": 1.0}]
    rewrite_rows(tmp_path / "s" / "train-00000.parquet", {0: {"objects": objects, "params": json.dumps(pasted)}})
    config = PairConfig(query_size=32, medium_size=64, negative_fraction=1.0, hard_negative_fraction=hard,
                        eval_fraction=0.0)
    dataset = ShardPairs(tmp_path / "s", config, split="all")
    drawn = _queried_cutouts(dataset, 30, positive=False)
    assert len(drawn) == 30
    assert hidden not in drawn and first not in drawn
    assert set(drawn) == {shards.cutout_ids[1], shards.cutout_ids[2]}


def test_a_positive_never_queries_a_cutout_with_an_instance_too_hidden_to_be_labelled(tmp_path):
    """The same cutout pasted twice, one instance dropped as under min_visible: its visible part stays in
    the image but is background in the mask, so a positive of that cutout had a target lacking it."""
    shards = make_shards(tmp_path / "s", n_cutouts=4, n_composites=1, rows_per_group=1, rows_per_shard=1)
    twice, once = shards.cutout_ids[0], shards.cutout_ids[1]
    record = {"objects": [{"cutout_id": twice, "position": [4, 4], "instance_id": 1},
                          {"cutout_id": once, "position": [60, 4], "instance_id": 2},
                          {"cutout_id": twice, "position": [60, 60], "instance_id": 3}], "dropped": [1]}
    objects = [{"instance_id": 1, "cutout_id": once, "category": "shape1", "box": [0, 0, 8, 8],
                "visible_fraction": 1.0},
               {"instance_id": 2, "cutout_id": twice, "category": "shape0", "box": [0, 0, 8, 8],
                "visible_fraction": 1.0}]
    rewrite_rows(tmp_path / "s" / "train-00000.parquet", {0: {"objects": objects, "params": json.dumps(record)}})
    dataset = ShardPairs(tmp_path / "s", PairConfig(query_size=32, medium_size=64, negative_fraction=0.0,
                                                    eval_fraction=0.0), split="all")
    assert _queried_cutouts(dataset, 12, positive=True) == [once] * 12


def _l_shaped_coats(root):
    """Label-map photos, each holding one 'coat' shaped as an L: its mass on its left."""
    import cv2

    root.mkdir(parents=True)
    (root / "label_list.json").write_text(json.dumps(["null", "coat"]))
    for folder in ("labels", "photos"):
        (root / folder).mkdir()
    for i in range(3):
        labels = np.zeros((160, 120), np.uint8)
        labels[20:140, 20:45] = 1  # the L's upright
        labels[115:140, 20:100] = 1  # its foot
        cv2.imwrite(str(root / "labels" / f"{i:04d}.png"), labels)
        photo = np.random.default_rng(i).integers(0, 256, (160, 120, 3)).astype(np.uint8)
        cv2.imwrite(str(root / "photos" / f"{i:04d}.jpg"), photo)
    return root


def _mass_on_left(mask: np.ndarray) -> bool:
    ys, xs = np.nonzero(mask)
    return bool(np.median(xs) < (xs.min() + xs.max()) / 2)


@pytest.mark.parametrize("cache", [False, True])
def test_real_media_queries_are_mirrored_as_the_catalogue_transform_says(tmp_path, cache):
    """The catalogue transform mirrors every query (mirror_probability 1.0: a catalogue shot is not the
    street pose, as calibrate and the benchmarks search it); render_query then flipped the shot back half
    of the time, so half the training queries were the street pose the recorded parameters deny."""
    from augment.photo_pairs import PhotoIndex
    from train.photo_data import PhotoMediaConfig, PhotoPairs

    root = _l_shaped_coats(tmp_path / "photos")
    config = PhotoMediaConfig(sources=(str(root),), format="label_map", min_area=50, medium_hw=(64, 96),
                              photos_per_scene=(2, 2), epoch_size=16, cache_features=cache)
    index = PhotoIndex.from_sources([root], config.source_config())
    data = PhotoPairs(config, PairConfig(query_size=48, negative_fraction=0.0, colour_jitter=0.0), index=index)
    assert data.sampler.catalogue.config.mirror_probability == 1.0
    for k in range(16):
        plan = data.sampler.plan(np.random.default_rng([data.seed, 0, k]))
        shot = data.sampler.query_shot(plan)
        assert plan.catalogue["mirror"] and not _mass_on_left(shot[:, :, 3] > 127)
        assert not _mass_on_left(data.pair(k)["query_mask"][0].numpy() > 127), f"pair {k}: the street pose"


def test_fft_correlation_of_windows_over_padding_alone_is_zero_as_the_exact_one():
    """A 'same' window whose masked kernel cells all fall in the zero padding (a ring-shaped mask, its
    hole over a small medium map; a mask in a corner) scores 0 exactly. The FFT left ~1e-7 of the largest
    dot product there, which the clamped window norm (1e-6) made a score of 0.03 on unit features and
    ~0.5 on features of tens, past 1 too: spurious heat along the edges of every searched map."""
    import torch

    from train.correlation import correlate, correlate_looped, correlate_sizes

    torch.manual_seed(0)
    ring = torch.zeros(2, 1, 9, 9)
    ring[:, :, :2], ring[:, :, -2:], ring[:, :, :, :2], ring[:, :, :, -2:] = 1.0, 1.0, 1.0, 1.0
    corner = torch.zeros(2, 1, 5, 6)
    corner[:, :, :2, :] = torch.rand(2, 1, 2, 6)  # the top rows only, soft
    for mask, medium_hw in ((ring, (3, 3)), (corner, (7, 9))):
        for scale in (1.0, 30.0):
            query = torch.randn(2, 16, *mask.shape[-2:]) * scale
            medium = torch.randn(2, 16, *medium_hw) * scale
            exact = correlate_looped(query, medium, mask)
            assert (exact == 0).any()  # windows over the padding alone
            for got in (correlate(query, medium, mask, method="fft"),
                        correlate_sizes([(query, mask)], medium, method="fft")[0]):
                assert got.abs().max() <= 1.0 + 1e-6
                torch.testing.assert_close(got, exact, atol=1e-4, rtol=0)


def test_hit_rate_takes_the_heat_maps_peak_also_where_the_sigmoid_saturates():
    """hit: the heat map's argmax lies in the true mask. It was the argmax of sigmoid(logits), exactly
    1.0 in float32 for every logit past ~17: a confident map's 'peak' was its first saturated pixel."""
    import torch

    from train.tasks.query_search import heatmap_metrics

    logits = torch.full((2, 1, 4, 4), -5.0)
    logits[:, 0, 0, 0] = 20.0  # a confident false peak, first in row-major order
    logits[:, 0, 3, 3] = 30.0  # the true maximum, inside the target
    logits[1, 0, 2:, 2:] = -3.0  # sample 1: a negative (its alarm: the 20)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 2:, 2:] = 1
    metrics = heatmap_metrics(logits, target, torch.tensor([True, False]))
    values = {name: (float(total), float(count)) for name, (total, count) in metrics.items()}
    # IoU: predicted {(0,0), (3,3)} vs the 2x2 target: 1 / 5. Hit: the peak (3,3) is in it.
    assert values == {"iou": (pytest.approx(0.2), 1.0), "hit_rate": (1.0, 1.0), "false_alarm": (1.0, 1.0)}


def test_calibration_cases_from_shards_box_each_instance_whole(tmp_path):
    """calibrate --shards took the connected regions of a pair's target as its true boxes: an instance
    split in two by an object in front of it was two boxes, neither matched by a detection of the whole
    object (a miss and false alarm both); the true boxes are the query's instances' boxes."""
    from augment.imageio import encode_png
    from pipelines.calibration import shard_cases
    from train.data import cutout_split

    shards = make_shards(tmp_path / "s", n_cutouts=40, n_composites=1, rows_per_group=1, rows_per_shard=1)
    held = next(c for c in shards.cutout_ids if cutout_split(c, 0.1) == "eval")
    trained = next(c for c in shards.cutout_ids if cutout_split(c, 0.1) == "train")
    ids = np.zeros((128, 128), np.uint8)
    ids[40:80, 20:50] = 1  # the query's object, its middle hidden by ...
    ids[40:80, 70:100] = 1
    ids[30:90, 50:70] = 2  # ... an object in front of it
    objects = [{"instance_id": 1, "cutout_id": held, "category": "shape0", "box": [20, 40, 100, 80],
                "visible_fraction": 0.75},
               {"instance_id": 2, "cutout_id": trained, "category": "shape1", "box": [50, 30, 70, 90],
                "visible_fraction": 1.0}]
    rewrite_rows(tmp_path / "s" / "train-00000.parquet",
                 {0: {"objects": objects, "mask": {"bytes": encode_png(ids), "path": None}}})
    positives = [case for seed in range(8) for case in shard_cases(tmp_path / "s", 1, seed=seed) if case.boxes]
    assert positives
    for case in positives:  # the medium is 256 x 256: the 128 x 128 composite's coordinates doubled
        assert case.boxes == [(40, 80, 200, 160)]


def test_cached_real_media_keep_the_querys_object_of_a_photo_wider_than_the_medium(tmp_path):
    """With cached features a medium is a window of the tiled photos, placed to hold the query's photo;
    a photo wider than the window was cut to its right end, so an object on its left was outside: a
    'positive' pair with an all-zero target (every one of them here)."""
    import cv2

    from augment.photo_pairs import PhotoIndex
    from train.photo_data import PhotoMediaConfig, PhotoPairs

    root = tmp_path / "photos"
    for folder in ("labels", "photos"):
        (root / folder).mkdir(parents=True)
    (root / "label_list.json").write_text(json.dumps(["null", "coat"]))
    for i in range(3):  # landscape photos, 256 wide at the medium's height, a coat on their left
        labels = np.zeros((64, 256), np.uint8)
        labels[10:50, 5 + i:40] = 1
        cv2.imwrite(str(root / "labels" / f"{i:04d}.png"), labels)
        cv2.imwrite(str(root / "photos" / f"{i:04d}.jpg"),
                    np.random.default_rng(i).integers(0, 256, (64, 256, 3)).astype(np.uint8))
    config = PhotoMediaConfig(sources=(str(root),), format="label_map", min_area=50, medium_hw=(64, 96),
                              photos_per_scene=(2, 2), epoch_size=8, cache_features=True)
    index = PhotoIndex.from_sources([root], config.source_config())
    data = PhotoPairs(config, PairConfig(query_size=48, negative_fraction=0.0), index=index)
    for k in range(8):
        plan = data.sampler.plan(np.random.default_rng([data.seed, 0, k]))
        sample = data.pair(k)
        assert bool(sample["positive"]) and sample["target"].shape == (1, 64, 96)
        assert int(sample["target"].sum()) == 40 * (35 - plan.photo), f"pair {k}: the object cut off"


def test_benchmark_figures_match_hand_counts_with_ties_and_nothing_found():
    """benchmarks/metrics.py on four cases: a right positive (0.9), a positive that found nothing, a
    negative at 0.5 and one that found nothing. AUC: a wrong positive ranks below every negative, so
    of the 4 (positive, negative) pairs the right one wins 2: 0.5 (the two '-inf's tied: 0.625)."""
    from tests.benchmark_modules import load_benchmark

    metrics = load_benchmark("metrics", "bench_metrics")
    truth = (10.0, 10.0, 30.0, 30.0)
    cases = [metrics.outcome(True, (12.0, 10.0, 30.0, 30.0), 0.9, truth), metrics.outcome(True, None, 0.0, truth),
             metrics.outcome(False, (0.0, 0.0, 5.0, 5.0), 0.5, None), metrics.outcome(False, None, 0.0, None)]
    figures = metrics.summarise(cases, threshold=0.6)
    assert cases[0].correct and cases[0].iou == pytest.approx(0.9) and cases[0].centre_error == pytest.approx(1.0)
    assert figures["auc"] == 0.5
    assert figures["top1"] == 0.5 and figures["hit_at_threshold"] == 0.5 and figures["fpr_at_threshold"] == 0.0
    # at most 10% of 2 negatives: none may pass, so the cut lies just above 0.5; the 0.9 passes it
    assert figures["hit_at_fpr10"] == 0.5
    assert figures["success_auc"] == pytest.approx(np.mean([0.5 * (0.9 > t) for t in np.linspace(0, 1, 21)]))
    assert metrics.auc([metrics.outcome(True, None, 0.0, truth)] * 2 + cases[2:]) == 0.0
    assert np.isnan(metrics.auc(cases[2:])) and np.isnan(metrics.auc(cases[:2]))  # all negatives; no negatives


@pytest.mark.parametrize("hard", [1.0, 0.0])
def test_a_negative_never_queries_another_piece_of_an_object_the_medium_shows(tmp_path, hard):
    """A label map's object is cut into one cutout per connected region: the two halves of an open coat,
    a pair of stockings, each a cutout of the same photo and label. A negative queried one half in a
    medium holding the other (a hard negative first of all, as another object of a present category):
    seen on a CCP expansion in 7 of 200 hard negatives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from augment.schema import OBJECTS_SCHEMA

    shards = make_shards(tmp_path / "s", n_cutouts=4, n_composites=1, rows_per_group=1, rows_per_shard=1)
    table = pq.read_table(tmp_path / "s" / "objects.parquet").to_pylist()
    first, half = shards.cutout_ids[0], shards.cutout_ids[3]  # both shape0: made the halves of one object
    table[3]["source"] = table[0]["source"]
    pq.write_table(pa.Table.from_pylist(table, schema=OBJECTS_SCHEMA), tmp_path / "s" / "objects.parquet")
    objects = [{"instance_id": 1, "cutout_id": first, "category": "shape0", "box": [0, 0, 8, 8],
                "visible_fraction": 1.0}]
    rewrite_rows(tmp_path / "s" / "train-00000.parquet", {0: {"objects": objects}})
    dataset = ShardPairs(tmp_path / "s", PairConfig(query_size=32, medium_size=64, negative_fraction=1.0,
                                                    hard_negative_fraction=hard, eval_fraction=0.0), split="all")
    assert set(_queried_cutouts(dataset, 30, positive=False)) == {shards.cutout_ids[1], shards.cutout_ids[2]}


@pytest.mark.parametrize("medium", [(200, 384), (192, 380)])
def test_cached_photo_media_of_sides_off_the_feature_grid_are_one_line(tmp_path, medium):
    """photo_cache_features with a photo_medium height off the backbone's deepest stride was
    PhotoFeatureCache's ValueError traceback once the photos were read; a width off it gave features
    narrower than the target, stretched over it."""
    from augment.imageio import InputError
    from train.config import TrainConfig

    with pytest.raises(InputError, match=r"photo_medium \[\d+, \d+\]: with photo_cache_features .* stride, 16"):
        TrainConfig(real_fraction=0.5, photo_sources=[str(tmp_path)], photo_cache_features=True,
                    photo_medium=medium, model={"feature_strides": [8, 16], "freeze_backbone": True})
    TrainConfig(real_fraction=0.5, photo_sources=[str(tmp_path)], photo_cache_features=False, photo_medium=medium)
