"""Detection figures shared by the real-data benchmarks.

Every method gives, per case, its best box and a score (no threshold). From those:

- ``top1``: positives whose best box has IoU >= 0.5 with the truth;
- ``hit_at_threshold`` / ``fpr_at_threshold``: positives whose best box is right and scores at least
  the method's own threshold; negatives whose best score reaches it (a false alarm);
- ``hit_at_fpr10``: the same at the threshold that lets at most 10% of negatives through (NaN
  where there are no negatives: no false-positive rate to hold);
- ``auc``: ROC AUC of the score, correct positives against negatives (a positive whose best box
  is wrong counts as scoring below every negative);
- ``precision20`` and ``success_auc`` (OTB's measures of the best box over positives): the share
  whose centre is within 20 px of the truth's, and the mean over IoU thresholds 0, 0.05 ... 1 of
  the share whose IoU exceeds the threshold (OTB's own rule: centre error <= 20 px, IoU strictly
  above each of the 21 thresholds, so a box of IoU exactly 0.5 counts up to t = 0.45). One
  function (:func:`otb_figures`) gives both, here and in benchmarks/tracking.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Outcome:
    """A method's answer on one case."""

    positive: bool
    correct: bool  # positives: best box IoU >= 0.5 (negatives: False)
    score: float  # best score; -inf when the method found nothing
    iou: float = 0.0  # positives: the best box's IoU with the truth
    centre_error: float = float("inf")  # positives: px between the best box's centre and the truth's


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


PRECISION_PX = 20.0  # OTB's precision: the box's centre within this many pixels of the truth's
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # OTB's success plot: IoU thresholds 0, 0.05 ... 1


def centre_error(box: Sequence[float], truth: Sequence[float]) -> float:
    """Pixels between the centres of two [x0, y0, x1, y1] boxes."""
    return float(np.hypot((box[0] + box[2] - truth[0] - truth[2]) / 2, (box[1] + box[3] - truth[1] - truth[3]) / 2))


def otb_figures(ious: Sequence[float], errors: Sequence[float]) -> tuple[float, float]:
    """(precision at 20 px, success AUC) of per-frame (or per-case) IoUs and centre errors; a miss
    (nothing found) is IoU 0 (or below) and error inf. NaN for no frames."""
    if len(ious) == 0:
        return float("nan"), float("nan")
    iou = np.asarray(ious, np.float64)
    precision = float(np.mean(np.asarray(errors, np.float64) <= PRECISION_PX))
    return precision, float(np.mean(iou[None, :] > SUCCESS_THRESHOLDS[:, None]))


def outcome(positive: bool, box: Sequence[float] | None, score: float, truth: Sequence[float] | None) -> Outcome:
    """A method's answer (best box and score, ``box`` None = nothing found) against the truth."""
    if box is None:
        return Outcome(positive, False, -np.inf)
    if not positive or truth is None:
        return Outcome(positive, False, score)
    iou = box_iou(box, truth)
    return Outcome(True, iou >= 0.5, score, iou, centre_error(box, truth))


def shown(figures: dict[str, float]) -> str:
    """Top-1, hit at FPR <= 0.1 and AUC of :func:`summarise`'s figures, in one line."""
    return f"top-1 {figures['top1']:.3f}, hit@FPR<=0.1 {figures['hit_at_fpr10']:.3f}, AUC {figures['auc']:.3f}"


def threshold_at_fpr(outcomes: Sequence[Outcome], fpr: float) -> float:
    """The lowest threshold letting at most ``fpr`` of negatives reach it (scores >= threshold pass)."""
    negatives = np.sort([o.score for o in outcomes if not o.positive])[::-1]
    if negatives.size == 0:
        return -np.inf
    allowed = int(np.floor(fpr * negatives.size))  # this many negatives may pass
    if allowed >= negatives.size:
        return -np.inf
    return float(np.nextafter(negatives[allowed], np.inf))  # just above the first one that must not pass


def auc(outcomes: Sequence[Outcome]) -> float:
    """P(a positive outranks a negative), ties half. A wrong positive ranks below every negative, also
    one that found nothing (score -inf): as -inf against it, it tied and took half a pair."""
    positives = [o for o in outcomes if o.positive]
    bad = np.array([o.score for o in outcomes if not o.positive])
    if not positives or bad.size == 0:
        return float("nan")
    good = np.array([o.score for o in positives if o.correct])
    greater = (good[:, None] > bad[None, :]).sum()
    ties = (good[:, None] == bad[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * bad.size))


def summarise(outcomes: Sequence[Outcome], threshold: float | None = None) -> dict[str, float]:
    positives = [o for o in outcomes if o.positive]
    negatives = [o for o in outcomes if not o.positive]
    figures = {"positives": len(positives), "negatives": len(negatives),
               "top1": float(np.mean([o.correct for o in positives])) if positives else float("nan")}
    cut = threshold_at_fpr(outcomes, 0.10)
    figures["hit_at_fpr10"] = (float(np.mean([o.correct and o.score >= cut for o in positives]))
                               if positives and negatives else float("nan"))
    figures["auc"] = auc(outcomes)
    if positives:
        figures["precision20"], figures["success_auc"] = otb_figures([o.iou for o in positives],
                                                                     [o.centre_error for o in positives])
    if threshold is not None:
        figures["hit_at_threshold"] = float(np.mean([o.correct and o.score >= threshold for o in positives])) if positives else float("nan")
        figures["fpr_at_threshold"] = float(np.mean([o.score >= threshold for o in negatives])) if negatives else float("nan")
    return figures
