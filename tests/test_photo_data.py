"""Training pairs from labelled photos (train/photo_data.py), hard negatives among composites, and
the mixed, resumable batch stream (train/stream.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augment.config import SourceConfig
from augment.photo_pairs import PhotoIndex
from shard_factory import make_shards
from sources_factory import make_street_photos
from train.data import PairConfig, ShardPairs, make_loader
from train.photo_data import PhotoMediaConfig, PhotoPairs
from train.stream import BatchStream, MixedStream, make_stream


def _photos(tmp_path, cache: bool = False, seed: int = 3) -> PhotoPairs:
    root = make_street_photos(tmp_path / "photos", count=6)
    config = PhotoMediaConfig(sources=(str(root),), min_area=50, medium_hw=(80, 192), photos_per_scene=(3, 3),
                              query_categories=("skirt",), epoch_size=12, cache_features=cache)
    index = PhotoIndex.from_sources([root], config.source_config())
    return PhotoPairs(config, PairConfig(query_size=48, negative_fraction=0.5), seed=seed, index=index)


def test_real_pairs_have_the_right_targets_and_hard_negatives(tmp_path):
    data = _photos(tmp_path)
    skirts = {p for p in data.index.photos_with("skirt")}
    positives = negatives = 0
    for k in range(12):
        sample = data.pair(k)
        rng = np.random.default_rng([data.seed, 0, k])
        plan = data.sampler.plan(rng)  # the same draws the pair was made from
        assert sample["medium"].shape == (3, 80, 192) and sample["query"].shape == (3, 48, 48)
        target = sample["target"][0].numpy().astype(bool)
        assert bool(sample["positive"]) == plan.positive == target.any()
        if plan.positive:
            positives += 1
            ys, xs = np.nonzero(target)
            # The skirt (rows 100-150 of 160) lies in the query photo's tile, in the lower half.
            assert ys.min() >= 0.55 * 80 and ys.max() <= 0.97 * 80
            widths = [data.index.records[p].size[1] * 80 / data.index.records[p].size[0] for p in plan.tiles]
            left = sum(widths[:plan.position]) * 192 / sum(widths)
            right = left + widths[plan.position] * 192 / sum(widths)
            assert left - 2 <= xs.min() and xs.max() <= right + 2
        else:
            negatives += 1
            assert plan.photo not in plan.tiles and skirts & set(plan.tiles)  # another skirt is there
    assert positives and negatives


def test_real_pairs_are_deterministic_per_seed(tmp_path):
    a, b = _photos(tmp_path / "a"), _photos(tmp_path / "b")
    other = _photos(tmp_path / "c", seed=4)
    for key in ("query", "query_mask", "medium", "target"):
        assert torch.equal(a.pair(5, epoch=1)[key], b.pair(5, epoch=1)[key])
    assert not torch.equal(a.pair(5)["query"], other.pair(5)["query"])
    assert not torch.equal(a.pair(5, epoch=0)["query"], a.pair(5, epoch=1)["query"])


def test_cached_features_are_the_photos_features_side_by_side(tmp_path):
    data = _photos(tmp_path, cache=True)
    sample = data.pair(2)
    assert "medium" not in sample
    s8, s16 = sample["medium_feats_0"], sample["medium_feats_1"]
    assert s8.shape == (40, 10, 24) and s16.shape == (112, 5, 12) and s8.dtype == torch.float16
    rng = np.random.default_rng([data.seed, 0, 2])
    plan = data.sampler.plan(rng)
    first = data.cache.features[plan.tiles[0]][0]
    np.testing.assert_array_equal(s8[:, :, :first.shape[-1]].numpy(), first.numpy())  # window at x = 0 here
    assert bool(sample["positive"]) == bool(sample["target"].any())


def test_composite_hard_negatives_hold_the_querys_category(tmp_path):
    made = make_shards(tmp_path / "shards", n_cutouts=9, n_composites=16)
    categories = ("shape0", "shape1", "shape2")  # make_shards' cutout categories (i mod 3)
    category_of = {cid: f"shape{i % 3}" for i, cid in enumerate(made.cutout_ids)}
    objects = {row["id"]: {cid for cid, _ in row["objects"]} for row in made.rows}

    def negatives(hard: float) -> list[tuple[str, set[str]]]:
        config = PairConfig(query_size=32, medium_size=64, negative_fraction=1.0, hard_negative_fraction=hard,
                            eval_fraction=0.0, categories=categories)
        data = ShardPairs(made.folder, config, split="all", seed=1)
        found = []
        for sample in data:
            assert not bool(sample["positive"]) and not sample["target"].any()
            table = data._rows([int(sample["unit"])])
            row = next(r for r in table if r[1] == int(sample["row"]))
            present = objects[row[2]]
            found.append((categories[int(sample["label"])], {category_of[c] for c in present}))
        return found

    hard = negatives(1.0)
    assert hard and all(query in present for query, present in hard)  # another object of its kind is there
    easy = negatives(0.0)
    assert any(query not in present for query, present in easy)  # plain negatives need not be


def _stream(tmp_path, state=None):
    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=16).folder
    composites = ShardPairs(shards, PairConfig(query_size=32, medium_size=64, eval_fraction=0.0), split="all")
    photos = _photos(tmp_path)
    parts = [(d, make_loader(d, 2, 0), w) for d, w in ((composites, 0.5), (photos, 0.5))]
    return make_stream(parts, seed=9, state=state)


def test_mixed_stream_resumes_exactly(tmp_path):
    stream = _stream(tmp_path / "a")
    assert isinstance(stream, MixedStream) and all(isinstance(s, BatchStream) for s in stream.streams)
    batches = [next(stream) for _ in range(3)]
    state = stream.state()
    sources = []
    later = []
    for _ in range(4):
        later.append(next(stream))
        sources.append(stream.source)
    assert set(sources) == {0, 1}  # both kinds of media are drawn
    resumed = _stream(tmp_path / "b", state=state)
    for expected in later:
        got = next(resumed)
        assert got.keys() == expected.keys()
        for key in ("query", "target", "position", "worker"):
            assert torch.equal(got[key], expected[key])
    assert batches[0]["query"].shape[-1] in (32, 48)


def test_mixed_stream_weights_must_make_sense():
    with pytest.raises(ValueError):
        MixedStream([], [], seed=0)
