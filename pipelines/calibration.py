"""Choosing the heat threshold: F1 of detections over cases whose true boxes are known.

Cases come from real labelled photos (:func:`photo_cases`: any source format with masks, through
the catalogue transform of :mod:`augment.photo_pairs`, so calibration sees the catalogue → scene
task itself) or from the held-out pairs of ``synth expand`` shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np

from augment.imageio import InputError
from augment.storage import Place
from pipelines.detections import Detection, match_counts

if TYPE_CHECKING:
    from pipelines.search import Searcher

ImageLike = Union[str, Path, np.ndarray]


@dataclass
class CalibrationCase:
    """A query, a medium and the true boxes of the query's instances in it (may be empty)."""

    query: ImageLike
    medium: ImageLike
    boxes: list[tuple[float, float, float, float]]
    query_mask: ImageLike | None = None


@dataclass
class Calibration:
    threshold: float
    f1: float
    precision: float
    recall: float
    table: list[dict[str, float]]  # per candidate threshold: threshold, f1, precision, recall


def read_calibration(path: Path | str) -> dict[str, Any]:
    """A ``synth calibrate`` report (its ``threshold`` checked to be a number in (0, 1)); anything
    else is an :class:`InputError` naming the file."""
    from augment.textfiles import loads_json, read_user_text

    path = Path(path)
    try:
        report = loads_json(read_user_text(path, "a `synth calibrate` report (JSON)"))
        report["threshold"] = float(report["threshold"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise InputError(f"{path}: not a `synth calibrate` report ({error})") from None
    if not 0.0 < report["threshold"] < 1.0:  # synth search refuses such a threshold
        raise InputError(f"{path}: threshold must be between 0 and 1, not {report['threshold']}")
    return report


def same_network(calibrated: Any, checkpoint: Path | str | None, model_name: str) -> bool:
    """Whether a ``synth calibrate`` report's ``model`` (a checkpoint path or a run's folder,
    ``untrained`` or a shipped head's name) is the network of ``checkpoint`` (None: the default
    network, named ``model_name``). A checkpoint path that no longer exists (a moved run folder)
    cannot be told apart and counts as the same."""
    import filecmp

    from train.checkpoint import checkpoint_file

    if not isinstance(calibrated, str):
        return True  # a report written before the record: nothing to compare
    if checkpoint is None or calibrated == "untrained" or calibrated.startswith("shipped head"):
        return calibrated == model_name
    try:
        path, wanted = checkpoint_file(calibrated), checkpoint_file(checkpoint)
    except InputError:  # a run's folder that lost its checkpoint
        return True
    if not path.is_file():
        return True
    return path.samefile(wanted) or filecmp.cmp(path, wanted, shallow=False)


def candidate_thresholds() -> list[float]:
    return [round(float(t), 2) for t in np.arange(0.1, 0.91, 0.02)]


def calibrate_threshold(searcher: "Searcher", cases: Iterable[CalibrationCase],
                        thresholds: Sequence[float] | None = None, iou: float = 0.5) -> Calibration:
    """The heat threshold maximising F1 of ``searcher``'s detections (IoU >= ``iou``) over ``cases``.

    Each case is searched once with every peak kept; a threshold keeps the detections scoring at
    least it (suppression only ever removes a box for a higher-scoring one, so this is exactly
    what searching at that threshold gives). A searcher that verifies is calibrated as it
    searches: on its fused detections, a heat threshold ``t`` keeping those whose fused score
    reaches ``t`` carried through the fusion model (:meth:`pipelines.fusion.FusionModel.heat_score`).
    """
    from pipelines.search import load_rgb
    from pipelines.search_inputs import textured
    from pipelines.search_workers import SearchWorkers
    from pipelines.window_geometry import check_start_box

    candidates = list(thresholds) if thresholds is not None else candidate_thresholds()
    stage = searcher.verification

    def searched(item: tuple[CalibrationCase, list]) -> tuple[list[Detection], list]:
        case, boxes = item
        prepared = searcher.prepare(case.query, case.query_mask)
        medium = load_rgb(case.medium)
        maps = searcher.maps(prepared, [medium])
        if stage is None:
            detections = searcher.detect(prepared, maps.heat[0], maps.object_height[0], threshold=0.0)
        else:
            detections = stage.fused(prepared, medium, maps.heat[0], maps.object_height[0], 0.0, maps.features)
        return textured(detections, medium, prepared), boxes  # as the search reports them: none in a flat box

    # A box no detection can match (x, y, w, h as COCO writes them: x1 < x0; NaN) was a miss at every
    # threshold without a word: F1 0 and the threshold 0.5.
    checked = [(case, [check_start_box(box, None, None, f"cases[{index}].boxes[{j}]")
                       for j, box in enumerate(case.boxes)]) for index, case in enumerate(cases)]
    with SearchWorkers(searcher) as workers:  # cases side by side on the CPU's threads
        found = workers.map(searched, checked)
    if not found:
        raise InputError("no calibration cases")
    table = []
    for t in candidates:
        cut = t if stage is None else stage.model.heat_score(t)
        tp = fp = fn = 0
        for detections, boxes in found:
            a, b, c = match_counts([d for d in detections if d.score >= cut], boxes, iou)
            tp, fp, fn = tp + a, fp + b, fn + c
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        table.append({"threshold": float(t), "f1": f1, "precision": precision, "recall": recall})
    best = max(table, key=lambda row: (row["f1"], -abs(row["threshold"] - 0.5)))
    return Calibration(best["threshold"], best["f1"], best["precision"], best["recall"], table)


def held_out_fraction(shards: Place | str, checkpoint: Path | str | None, state: dict[str, Any] | None = None) -> float:
    """The share of cutouts a ``synth train`` checkpoint's training held out (its config's
    ``eval_fraction``; no checkpoint, the untrained network: the default's): the held-out pairs of
    ``shards`` :func:`shard_cases` may take (``state``: the checkpoint already read). None held out is an
    :class:`InputError`."""
    from train.checkpoint import checkpoint_file, load_checkpoint
    from train.config import TrainConfig
    from train.data import PairConfig

    if checkpoint is None:
        return PairConfig().eval_fraction
    state = load_checkpoint(checkpoint_file(checkpoint)) if state is None else state
    fraction = TrainConfig.from_checkpoint(state, checkpoint).eval_fraction
    if fraction <= 0:
        raise InputError(f"{shards}: no held-out pairs: {checkpoint} was trained on every cutout (eval_fraction 0); "
                         "calibrate it on --photos it did not train on")
    return fraction


def photo_cases(sources: Sequence[Path | str], count: int, seed: int = 0, negative_fraction: float = 0.25,
                source_format: str = "auto", include: Sequence[str] = (), categories: Sequence[str] = (),
                drop_labels: Sequence[str] = (), min_area: int = 600, config: Any = None,
                skips: list[Any] | None = None) -> list[CalibrationCase]:
    """Catalogue → scene cases from labelled photos (``count`` of them, a ``negative_fraction``
    without the query, negatives with look-alikes), made by :mod:`augment.photo_pairs`.

    ``include``: glob patterns on photo stems; ``categories``: the objects used as queries;
    ``drop_labels``: labels that are never objects (a label map's skin or hair); ``skips``, where
    given, receives the inputs left out (unreadable photos, label maps of another size...:
    ``augment.source_items.Skip``, path and reason)."""
    from augment.config import SourceConfig
    from augment.label_names import check_label_names
    from augment.photo_pairs import PhotoIndex, PhotoPairConfig, PhotoPairSampler, make_cases

    if count < 1:
        raise InputError("--cases must be at least 1")
    source_config = SourceConfig(format=source_format, include=list(include), drop_labels=list(drop_labels),
                                 min_area=min_area)
    # a misspelt --categories name matched no object without a word (--drop-labels: a warning)
    check_label_names(sources, SourceConfig(format=source_format, keep_labels=list(categories),
                                            drop_labels=list(drop_labels)), keys=("--categories", "--drop-labels"))
    given = [name for name, value in (("--include", include), ("--drop-labels", drop_labels),
                                      ("--min-area", min_area)) if value]
    index = PhotoIndex.from_sources(list(sources), source_config, " or ".join(given))
    if skips is not None:
        skips.extend(index.skips)
    if len(index) < 2:  # else 'a scene of 2 photos needs more labelled photos than the 1 indexed'
        raise InputError(f"{', '.join(map(str, sources))}: 1 labelled photo with objects; calibration needs "
                         "at least 2 (a case's scene tiles the query's photo with others)")
    pair_config = config or PhotoPairConfig(query_categories=tuple(categories))
    most = max(1, len(index) - 1)  # a negative's scene is made of photos other than the query's
    pair_config.photos_per_scene = (min(pair_config.photos_per_scene[0], most),
                                    min(pair_config.photos_per_scene[1], most))
    try:
        sampler = PhotoPairSampler(index, pair_config)
    except InputError as error:  # 'no object covers 4% of its photo': which photos, which option
        raise InputError(f"{', '.join(map(str, sources))}: {error}"
                         + (" (--categories)" if categories else "")) from None
    negatives = int(round(count * negative_fraction))
    return [CalibrationCase(case.query, case.scene, case.boxes)
            for case in make_cases(sampler, count - negatives, negatives, seed)]


def shard_cases(shards: Place | str, count: int, seed: int = 0,
                eval_fraction: float | None = None) -> list[CalibrationCase]:
    """Calibration cases from held-out pairs of ``synth expand`` shards (train/data.py pairs:
    queries are held-out cutouts, a quarter of them absent); the true boxes are the query's instances'
    visible boxes in the medium (the connected regions of the target were not: an instance split by an
    occluder was two boxes, neither matching a detection of it, and touching instances one).

    ``eval_fraction``: the share of cutouts the network's training held out (see
    :func:`held_out_fraction`; None: the default's), so that no query is one it trained on."""
    from train.data import PairConfig, ShardPairs

    config = PairConfig() if eval_fraction is None else PairConfig(eval_fraction=eval_fraction)
    dataset = ShardPairs(shards, config, split="eval", seed=seed, instance_boxes=True)
    cases = []
    for sample in dataset:
        boxes = [(round(x0), round(y0), round(x1), round(y1)) for x0, y0, x1, y1 in sample["boxes"].tolist()]
        boxes = [box for box in boxes if box[2] > box[0] and box[3] > box[1]]  # under a pixel: no detection matches it
        query = sample["query"].permute(1, 2, 0).numpy()
        mask = sample["query_mask"].numpy().reshape(query.shape[:2])
        cases.append(CalibrationCase(np.dstack([query, mask]), sample["medium"].permute(1, 2, 0).numpy(),
                                     boxes))
        if len(cases) == count:
            break
    if not cases:
        raise InputError(f"{shards}: no held-out pairs in these shards")
    return cases
