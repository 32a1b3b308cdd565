"""One calibrated score from the heat map and geometric verification, per search model.

The score of a candidate is a small logistic model::

    p = sigmoid(w_heat * logit(heat) + bias + w_inliers * log(1 + inliers) * v + w_spread * spread * v)

with ``v`` = 1 when the candidate was verified (:mod:`pipelines.verify`) and 0 otherwise. The
evidence weights are fitted non-negative, so verification can only *raise* a candidate; without it
the score is a monotone function of the heat alone, and the detection threshold is the heat
threshold carried through that same function. Hence:

- unverified candidates are exactly the heat map's detections, ranked as the heat ranks them
  (weak or absent evidence leaves the heat-map result as it is);
- verified ones gain confidence by how much evidence there is, and take the fitted box.

The model is fitted per search network on the CCP calibration split (photos 0501-0600, never the
test photos), with ``python benchmarks/fit_fusion.py [--checkpoint CKPT]``, and stored as a small
JSON: ``pipelines/fusion_untrained.json`` for the untrained default network, ``CKPT.fusion.json``
beside a checkpoint (see :func:`fusion_path`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from augment.atomic_files import atomic_write_text
from augment.imageio import InputError
from augment.textfiles import loads_json, read_user_text
from pipelines.local_features import DenseMap
from pipelines.verify import Verification

logger = logging.getLogger(__name__)

DEFAULT_FUSION = Path(__file__).resolve().parent / "fusion_untrained.json"
FIT_COMMAND = "python benchmarks/fit_fusion.py --checkpoint CKPT"
HEAT_EPS = 1e-4
FEATURES = ("logit_heat", "log_inliers", "spread")
EVIDENCE = (False, True, True)  # features that only verification provides (weights kept >= 0)


def _logit(p: float) -> float:
    p = min(1.0 - HEAT_EPS, max(HEAT_EPS, float(p)))
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def features(heat: float, check: Verification) -> list[float]:
    """The model's inputs for one candidate (evidence is zero unless verified)."""
    v = 1.0 if check.verified else 0.0
    return [_logit(heat), v * math.log1p(check.inliers), v * check.spread]


@dataclass
class FusionModel:
    """The fitted weights (one per :data:`FEATURES`), the bias, and the heat level below which a
    candidate is not verified at all (``pre_threshold``: a small, fitted share of the correct
    candidates lies below it); ``threshold``: the heat threshold of the fused search (carried
    through the model, see :meth:`heat_score`), calibrated on the same cases, which the search
    uses by default in place of the network's heat-map threshold (None: the network's)."""

    weights: list[float]
    bias: float
    pre_threshold: float
    model: str = "untrained"  # which search network it was fitted for
    fitted_on: str = ""  # the cases it was fitted on
    figures: dict[str, Any] = field(default_factory=dict)  # fit diagnostics, for the record
    threshold: float | None = None
    source: str = field(default="", compare=False)  # the file it was read from (not written into one)

    def score(self, heat: float, check: Verification) -> float:
        x = features(heat, check)
        return _sigmoid(sum(w * v for w, v in zip(self.weights, x)) + self.bias)

    def heat_score(self, heat: float) -> float:
        """The score of an unverified candidate: a monotone function of the heat."""
        return _sigmoid(self.weights[0] * _logit(heat) + self.bias)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), **{k: v for k, v in asdict(self).items() if k != "source"}}

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "FusionModel":
        try:
            data = loads_json(read_user_text(path, "a fusion model (JSON)"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            if data.get("features") != list(FEATURES):
                raise ValueError(f"features {data.get('features')} are not {list(FEATURES)}")
            # One number per feature: "weights": [1.85] fused the heat alone (zip stopped at the shortest,
            # verification silently ignored), a string "123" was the weights 1, 2, 3.
            if not isinstance(data.get("weights"), list) or len(data["weights"]) != len(FEATURES):
                raise ValueError(f"weights must be a list of {len(FEATURES)} numbers, one per feature, "
                                 f"not {data.get('weights')!r}")
            model = cls(weights=[float(w) for w in data["weights"]], bias=float(data["bias"]),
                        pre_threshold=float(data["pre_threshold"]), model=str(data.get("model", "")),
                        fitted_on=str(data.get("fitted_on", "")), figures=dict(data.get("figures", {})),
                        threshold=None if data.get("threshold") is None else float(data["threshold"]),
                        source=str(Path(path).absolute()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path}: not a fusion model ({error})") from None
        if not all(math.isfinite(v) for v in (*model.weights, model.bias, model.pre_threshold)):
            # a NaN weight made every score NaN: not one detection, without a word
            raise InputError(f"{path}: weights, bias and pre_threshold must be finite numbers")
        if not 0.0 <= model.pre_threshold < 1.0:  # a heat level: 7 verified no candidate at all
            raise InputError(f"{path}: pre_threshold must be between 0 and 1, not {model.pre_threshold}")
        if model.weights[0] <= 0:
            raise InputError(f"{path}: the heat weight must be positive")
        if model.threshold is not None and not 0.0 < model.threshold < 1.0:
            raise InputError(f"{path}: threshold must be between 0 and 1, not {model.threshold}")
        return model


def fusion_path(checkpoint: Path | str | None) -> Path:
    """Where the fusion model of a search network lives: beside the checkpoint, or the default."""
    if checkpoint is None:
        return DEFAULT_FUSION
    from train.checkpoint import checkpoint_file  # a run's folder: beside its checkpoint.pt

    return Path(str(checkpoint_file(checkpoint)) + ".fusion.json")


def load_fusion(checkpoint: Path | str | None, path: Path | str | None = None) -> FusionModel:
    """The fusion model of a network (``path`` overrides where it is read from).

    A checkpoint without its own falls back to the untrained network's, with a warning: its heat
    is scaled differently, so the lead's command is named.
    """
    wanted = Path(path) if path is not None else fusion_path(checkpoint)
    if path is None and checkpoint is not None and not wanted.is_file():
        logger.warning("%s: no fusion model fitted for this checkpoint; using the untrained "
                       "network's (fit one with `%s`)", wanted, FIT_COMMAND)
        wanted = DEFAULT_FUSION
    if not wanted.is_file():
        raise InputError(f"{wanted}: no such fusion model")
    return FusionModel.load(wanted)


# ----------------------------------------------------------------------------------------------
# Fitting


def fit_logistic(x: np.ndarray, y: np.ndarray, nonnegative: Sequence[bool], l2: float = 1e-3,
                 iterations: int = 100) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic model (Newton's method, a small ridge), with the flagged
    weights projected to >= 0 after every step (deterministic: no random start)."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    lower = np.array([0.0 if flag else -np.inf for flag in nonnegative] + [-np.inf])
    ridge = l2 * n * np.diag([1.0] * d + [0.0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (p - y) + ridge @ theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        updated = np.maximum(theta - step, lower)
        if np.abs(updated - theta).max() < 1e-8:
            theta = updated
            break
        theta = updated
    return theta[:d], float(theta[d])


@dataclass
class Candidate:
    """A verified candidate of a calibration case: its rank by heat in the medium, its heat, its
    verification, and whether the box the fusion reports for it (the fitted one if verified, else
    the heat box) is right (IoU >= 0.5 with a true box)."""

    case: int
    rank: int
    heat: float
    check: Verification
    correct: bool


def label_candidates(case: int, found: Sequence[Any], checks: Sequence[Verification | None],
                     truth: Sequence[Sequence[float]], iou: float = 0.5) -> list[Candidate]:
    """The checked candidates of one medium (see :meth:`VerificationStage.check`), labelled."""
    from pipelines.search import box_iou

    out = []
    for rank, (det, check) in enumerate(zip(found, checks)):
        if check is None:
            continue
        box = check.box if check.verified and check.box is not None else det.box
        correct = any(box_iou(box, t) >= iou for t in truth)
        out.append(Candidate(case, rank, float(det.score), check, correct))
    return out


def fit_fusion(candidates: Sequence[Candidate], model: str, fitted_on: str, max_candidates: int,
               keep_share: float = 0.97) -> FusionModel:
    """Fit the fusion on labelled candidates gathered with a low pre-threshold.

    The pre-threshold is set to keep ``keep_share`` of the correct candidates; the weights are then
    fitted on the candidates the search will verify with it (the top peak and those at or above
    it, at most ``max_candidates`` per medium).
    """
    if not any(c.correct for c in candidates):
        raise InputError("fusion fit: no correct candidate among the calibration cases")
    correct = np.sort([c.heat for c in candidates if c.correct])
    pre = float(correct[int(math.floor((1.0 - keep_share) * len(correct)))])
    used = [c for c in candidates if c.rank == 0 or c.heat >= pre]
    per_case: dict[int, int] = {}
    kept = []
    for c in sorted(used, key=lambda c: (c.case, c.rank)):
        per_case[c.case] = per_case.get(c.case, 0) + 1
        if per_case[c.case] <= max_candidates:
            kept.append(c)
    x = np.array([features(c.heat, c.check) for c in kept])
    y = np.array([1.0 if c.correct else 0.0 for c in kept])
    weights, bias = fit_logistic(x, y, EVIDENCE)
    if weights[0] <= 0:
        raise InputError("fusion fit: heat does not rank the candidates (non-positive weight)")
    verified = [c for c in kept if c.check.verified]
    figures = {"cases": len({c.case for c in kept}), "candidates": len(kept), "correct": int(y.sum()),
               "verified": len(verified), "verified_correct": sum(c.correct for c in verified)}
    return FusionModel([round(float(w), 6) for w in weights], round(bias, 6), round(pre, 6),
                       model, fitted_on, figures)


# ----------------------------------------------------------------------------------------------
# The search stage


class VerificationStage:
    """Turns one medium's heat-map candidates into fused detections (the Searcher's hook).

    Candidates are the heat map's peaks down to ``min(pre_threshold, threshold)``; the strongest
    ``max_candidates`` at or above ``pre_threshold`` are verified, highest heat first until one
    is (see :meth:`check`); each gets the fused score, the fitted box when verified, and
    non-maximum suppression runs again on the new boxes.
    """

    def __init__(self, searcher: Any, model: FusionModel, verifier: Any) -> None:
        self.searcher = searcher
        self.model = model
        self.verifier = verifier

    @classmethod
    def create(cls, searcher: Any, checkpoint: Path | str | None, fusion: Path | str | None = None,
               config: Any = None) -> "VerificationStage":
        return cls(searcher, load_fusion(checkpoint, fusion), searcher_verifier(searcher, config))

    def check(self, query: Any, medium: np.ndarray, heat: np.ndarray, object_height: np.ndarray,
              threshold: float | None = None, features: np.ndarray | None = None,
              index: int = 0) -> tuple[list[Any], list[Verification | None]]:
        """The heat-map candidates of one medium and their verifications (None: not verified).

        Candidates are the heat peaks down to ``min(pre_threshold, threshold)`` (``threshold``
        None: down to the pre-threshold); the top peak and the others at or above the
        pre-threshold are verified, at most ``max_candidates``, highest heat first until one is
        verified with the verifier's ``enough_inliers`` (those after it stay unchecked, None:
        their heat-map detections stand). ``features[index]`` is the
        medium's stride-8 feature map from the search (:class:`~pipelines.search.SearchMaps`),
        reused by network-feature verification.
        """
        if threshold is None:  # every candidate worth verifying, and at least the top peak
            floor = min(self.model.pre_threshold, float(heat.max()))
        else:
            floor = min(self.model.pre_threshold, threshold)
        found = self.searcher.detect(query, heat, object_height, floor)
        chosen = [i for i, d in enumerate(found) if i == 0 or d.score >= self.model.pre_threshold]
        chosen = chosen[:self.verifier.config.max_candidates]
        checks: list[Verification | None] = [None] * len(found)
        dense = None
        if features is not None:
            dense = DenseMap(features[index], self.searcher.working_size(*medium.shape[:2])[2])
        results = self.verifier.verify(query.rgb, query.mask, medium, [found[i].box for i in chosen],
                                       dense)
        for i, check in zip(chosen, results):
            checks[i] = check
        return found, checks

    def fused(self, query: Any, medium: np.ndarray, heat: np.ndarray, object_height: np.ndarray,
              threshold: float | None = None, features: np.ndarray | None = None,
              index: int = 0) -> list[Any]:
        """Every fused candidate of one medium (see :meth:`check`), highest score first."""
        found, checks = self.check(query, medium, heat, object_height, threshold, features, index)
        fill = 1.0 if query.mask is None else float((query.mask >= 0.5).mean())
        return fuse(found, checks, self.model, fill)

    def detections(self, query: Any, medium: np.ndarray, heat: np.ndarray,
                   object_height: np.ndarray, features: np.ndarray | None = None, index: int = 0,
                   threshold: float | None = None) -> list[Any]:
        """Fused detections above the fused threshold: the heat ``threshold`` (default the
        searcher's) carried through the model, so unverified candidates pass exactly when their
        heat does."""
        return self.results(query, medium, heat, object_height, features, index, threshold)[0]

    def results(self, query: Any, medium: np.ndarray, heat: np.ndarray, object_height: np.ndarray,
                features: np.ndarray | None = None, index: int = 0,
                threshold: float | None = None) -> tuple[list[Any], Any]:
        """(:meth:`detections`, the best candidate whatever its score): the top fused candidate,
        or the heat map's top peak (unverified, its heat carried through the model) where no
        candidate reached the verification floor."""
        threshold = self.searcher.threshold if threshold is None else threshold
        cut = self.model.heat_score(threshold)
        fused = self.fused(query, medium, heat, object_height, threshold, features, index)
        if fused:
            best = fused[0]
        else:
            top = self.searcher.peaks(query, heat, object_height, threshold)[1]
            best = replace(top, score=self.model.heat_score(top.score), heat=top.score)
        return [d for d in fused if d.score >= cut], best


def searcher_verifier(searcher: Any, config: Any = None) -> Any:
    """A :class:`~pipelines.verify.Verifier` using ``searcher``'s network for its features."""
    from pipelines.local_features import NetworkFeatures, backbone_encoder
    from pipelines.verify import Verifier, VerifyConfig

    config = config or VerifyConfig()
    network = (NetworkFeatures(backbone_encoder(searcher.model, searcher.device,
                                                onnx=lambda: bool(getattr(searcher.network, "onnx", False))))
               if config.features == "network" else None)
    return Verifier(config, network)


def fuse(found: Sequence[Any], checks: Sequence[Verification | None], model: FusionModel,
         fill: float) -> list[Any]:
    """Fused :class:`~pipelines.search.Detection` s: score from heat and evidence, the fitted box
    where verified, then non-maximum suppression (highest score first)."""
    from pipelines.detections import first_unique

    scored = []
    for det, check in zip(found, checks):
        if check is not None and check.verified and check.box is not None:
            box = tuple(int(v) for v in check.box)
            area = max(1, round((box[2] - box[0]) * (box[3] - box[1]) * fill))
            scored.append(replace(det, box=box, score=model.score(det.score, check), area=area, source="verified",
                                  heat=det.score, verified=True, inliers=check.inliers))
        else:
            scored.append(replace(det, score=model.heat_score(det.score), heat=det.score,
                                  verified=False if check is not None else None,
                                  inliers=check.inliers if check is not None else 0))
    scored.sort(key=lambda d: -d.score)
    return [scored[i] for i in first_unique(np.asarray([d.box for d in scored], float).reshape(-1, 4))]
