"""Classical baselines the search is measured against, run on the same cases in the same benchmark.

SIFT alone: the verification stage's own SIFT matcher (:meth:`pipelines.verify.Verifier.verify_scene`)
applied to the whole scene: RootSIFT, Lowe's ratio test, a RANSAC similarity fit for the query as
given and mirrored; the box is the query's silhouette mapped by the fit, the score the inlier count.
Template matching: OpenCV's normalised cross-correlation at many scales (small objects).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.verify import Verifier, VerifyConfig

MIN_INLIERS = 3  # a fit with fewer inliers is no answer at all


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)


@dataclass
class Found:
    box: tuple[int, int, int, int] | None
    score: float


class SiftBaseline:
    """``find(query_rgb_or_rgba, scene_rgb)`` -> the best similarity fit's box and inlier count."""

    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.verifier = Verifier(config or VerifyConfig(features="sift"))

    def find(self, query: np.ndarray, scene: np.ndarray) -> Found:
        mask = (query[..., 3] >= 128).astype(np.float32) if query.shape[-1] == 4 else None
        check = self.verifier.verify_scene(np.ascontiguousarray(query[..., :3]), mask, scene)
        if check.box is None or check.inliers < MIN_INLIERS:
            return Found(None, 0.0)
        return Found(check.box, float(check.inliers))


class TemplateBaseline:
    """Multi-scale template matching (OpenCV ``TM_CCOEFF_NORMED`` on grey, masked by the query's
    alpha where it has one), the query as given and mirrored, at ``scales`` of its size; the box
    is the best match's, the score its correlation."""

    def __init__(self, scales: tuple[float, ...] | None = None, min_side: int = 8) -> None:
        self.scales = scales or tuple(float(s) for s in np.geomspace(0.08, 1.6, 24))
        self.min_side = min_side

    def find(self, query: np.ndarray, scene: np.ndarray) -> Found:
        grey = _grey(scene)
        template = _grey(query)
        mask = (query[..., 3] >= 128).astype(np.uint8) * 255 if query.shape[-1] == 4 else None
        sh, sw = grey.shape
        best = Found(None, -np.inf)
        for scale in self.scales:
            h, w = round(template.shape[0] * scale), round(template.shape[1] * scale)
            if min(h, w) < self.min_side or h > sh or w > sw:
                continue
            small = cv2.resize(template, (w, h), interpolation=cv2.INTER_AREA)
            small_mask = None if mask is None else cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            if small_mask is not None and small_mask.min() == small_mask.max():
                small_mask = None  # all object (or none): a mask adds nothing
            for mirrored in (False, True):
                t = small[:, ::-1].copy() if mirrored else small
                m = None if small_mask is None else (small_mask[:, ::-1].copy() if mirrored else small_mask)
                if t.std() < 1e-3:
                    continue
                response = cv2.matchTemplate(grey, t, cv2.TM_CCOEFF_NORMED, mask=m)
                response[~np.isfinite(response)] = -1.0
                _, score, _, (x, y) = cv2.minMaxLoc(response)
                if score > best.score:
                    best = Found((x, y, x + w, y + h), float(score))
        return best
