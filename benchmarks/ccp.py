"""The Clothing Co-Parsing photos (../shared/data/ccp) as benchmark data: the splits, in one place.

Search (issues 8 and 13): training may use photos 0001-0500, calibration 0501-0600, and the test
0601-0700, which no training or calibration touches. Cases are catalogue → scene
(:mod:`augment.photo_pairs`): a garment of a test photo, as a catalogue shot, searched in that photo
tiled with two other test photos; negatives are three test photos without it, at least one holding a
garment of its category.

Self-tuning (issue 9) uses its own split of the labelled photos, also fixed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from augment.config import SourceConfig
from augment.photo_pairs import PhotoCase, PhotoIndex, PhotoPairConfig, PhotoPairSampler, make_cases

CCP = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ccp").resolve()

# Garments: the labels a catalogue query can be (not skin, hair, jewellery, shoes, belts ...).
GARMENTS = ("blazer", "blouse", "cape", "cardigan", "coat", "dress", "hoodie", "jacket", "jeans", "jumper",
            "leggings", "pants", "romper", "shirt", "shorts", "skirt", "suit", "sweater", "sweatshirt",
            "t-shirt", "top", "vest", "bag", "purse")
# Labels that are never objects of their own.
NOT_OBJECTS = ("null", "skin", "hair")

SEARCH_SPLIT = {"train": (1, 500), "calibrate": (501, 600), "test": (601, 700)}  # inclusive photo ids
# Photos of one shoot: the same person in the same outfit, a moment apart (found by backbone-feature
# similarity over photos 0001-0700: the three pairs across the search splits above 0.85, each checked
# by eye, the next, 0.84, another person; no calibration photo has one in the test, nor has one test
# photo another's shoot). A split that holds photos out leaves their twins out of training: the search's
# training split (below), the segmentation ceiling (benchmarks/segment_ccp.py), so no garment of a
# held-out photo is trained on.
SHOOT_TWINS = (("0197", "0671"), ("0223", "0616"), ("0366", "0649"))


def twins_of(stems: set[str] | list[str]) -> set[str]:
    """The other photo of each :data:`SHOOT_TWINS` pair one of ``stems`` is in (not in ``stems``)."""
    held = set(stems)
    return {b if a in held else a for a, b in SHOOT_TWINS if (a in held) != (b in held)}


TEST_POSITIVES, TEST_NEGATIVES, TEST_SEED = 160, 60, 0
CALIBRATION_POSITIVES, CALIBRATION_NEGATIVES, CALIBRATION_SEED = 160, 60, 1


def available() -> bool:
    return (CCP / "labels").is_dir() and (CCP / "photos").is_dir()


def skip_message() -> str:
    return f"skipped: {CCP} is absent (the CCP working copy is not on this machine)"


def id_patterns(first: int, last: int) -> list[str]:
    """Stems ``first``..``last`` (4-digit, inclusive) as a list for SourceConfig.include."""
    return [f"{i:04d}" for i in range(first, last + 1)]


def source_config(split: str) -> SourceConfig:
    """The split's photos (training: without the test photos' :data:`SHOOT_TWINS`)."""
    first, last = SEARCH_SPLIT[split]
    return SourceConfig(format="label_map", min_area=2500, drop_labels=list(NOT_OBJECTS),
                        include=id_patterns(first, last),
                        exclude=sorted(twins_of(id_patterns(*SEARCH_SPLIT["test"]))) if split == "train" else [])


def pair_config() -> PhotoPairConfig:
    """The benchmark's cases: three photos side by side at 416 px (photos are 832 px high, so the
    garment in the scene is 0.36-0.83x the query's size), hard negatives only."""
    return PhotoPairConfig(scene_height=416, photos_per_scene=(3, 3), look_alike_probability=0.5,
                           hard_negatives=True, min_object_fraction=0.04, query_categories=GARMENTS)


def search_cases(split: str = "test") -> list[PhotoCase]:
    """The fixed catalogue → scene cases of a split (test: 160 positives, 60 negatives)."""
    index = PhotoIndex.from_sources([CCP], source_config(split))
    sampler = PhotoPairSampler(index, pair_config())
    if split == "calibrate":
        return make_cases(sampler, CALIBRATION_POSITIVES, CALIBRATION_NEGATIVES, CALIBRATION_SEED)
    return make_cases(sampler, TEST_POSITIVES, TEST_NEGATIVES, TEST_SEED)


def best_outcomes(searcher: Any, cases: list[PhotoCase]) -> list[Any]:
    """Each case's ``best`` answer from ``searcher`` (a :class:`pipelines.search.Searcher`) against
    its truth, as :class:`metrics.Outcome` s."""
    from metrics import outcome

    answers = []
    for case in cases:
        best = searcher.find_many(case.query, [case.scene], keep_images=False)[0].best
        answers.append(outcome(case.positive, None if best is None else best.box,
                               -1.0 if best is None else best.score, case.boxes[0] if case.positive else None))
    return answers
