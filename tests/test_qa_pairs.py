"""QA of what the trainer sees: pairs whose targets and negatives are what they claim to be."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.shard_factory import make_shards, rewrite_rows
from train.data import PairConfig, ShardPairs


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
    library = dataset._cutouts()
    drawn: list[str] = []
    rgba = library.rgba
    library.rgba = lambda cid: (drawn.append(cid), rgba(cid))[1]  # the query's cutout, as it is rendered
    for epoch in range(30):
        dataset.set_epoch(epoch)
        for sample in dataset:
            assert not bool(sample["positive"]) and int(sample["target"].sum()) == 0
    assert len(drawn) == 30
    assert hidden not in drawn and first not in drawn
    assert set(drawn) == {shards.cutout_ids[1], shards.cutout_ids[2]}
