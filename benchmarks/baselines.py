"""Classical baselines the search is measured against, run on the same cases in the same benchmark.

SIFT alone: the verification stage's own SIFT matcher (:meth:`pipelines.verify.Verifier.verify_scene`)
applied to the whole scene: RootSIFT, Lowe's ratio test, a RANSAC similarity fit for the query as
given and mirrored; the box is the query's silhouette mapped by the fit, the score the inlier count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.verify import Verifier, VerifyConfig

MIN_INLIERS = 3  # a fit with fewer inliers is no answer at all


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
