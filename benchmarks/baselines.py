"""Classical baselines the search is measured against, run on the same cases in the same benchmark.

SIFT (OpenCV) matched from the query to the whole scene with Lowe's ratio test, a RANSAC similarity
fit (``cv2.estimateAffinePartial2D``) for the query as given and mirrored; the box is the query's
box mapped by the fit, the score the inlier count.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RATIO = 0.75
MIN_INLIERS = 3
RANSAC_PX = 5.0


@dataclass
class Found:
    box: tuple[int, int, int, int] | None
    score: float


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)


class SiftBaseline:
    """``find(query_rgba, scene_rgb)`` -> the best similarity fit's box and inlier count."""

    def __init__(self) -> None:
        self.sift = cv2.SIFT_create()
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)

    def find(self, query: np.ndarray, scene: np.ndarray) -> Found:
        mask = (query[..., 3] >= 128).astype(np.uint8) * 255 if query.shape[-1] == 4 else None
        scene_kp, scene_desc = self.sift.detectAndCompute(_grey(scene), None)
        best = Found(None, 0.0)
        if scene_desc is None or len(scene_kp) < 2:
            return best
        h, w = query.shape[:2]
        for mirrored in (False, True):
            grey = _grey(query)
            m = mask
            if mirrored:
                grey = np.ascontiguousarray(grey[:, ::-1])
                m = None if mask is None else np.ascontiguousarray(mask[:, ::-1])
            kp, desc = self.sift.detectAndCompute(grey, m)
            if desc is None or len(kp) < 2:
                continue
            pairs = self.matcher.knnMatch(desc, scene_desc, k=2)
            good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
            if len(good) < MIN_INLIERS:
                continue
            src = np.float32([kp[g.queryIdx].pt for g in good])
            dst = np.float32([scene_kp[g.trainIdx].pt for g in good])
            matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                          ransacReprojThreshold=RANSAC_PX)
            if matrix is None or inliers is None:
                continue
            count = int(inliers.sum())
            if count < MIN_INLIERS or count <= best.score:
                continue
            corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
            mapped = corners @ matrix[:, :2].T + matrix[:, 2]
            x0, y0 = np.floor(mapped.min(0)).astype(int)
            x1, y1 = np.ceil(mapped.max(0)).astype(int)
            sh, sw = scene.shape[:2]
            box = (max(0, int(x0)), max(0, int(y0)), min(sw, int(x1)), min(sh, int(y1)))
            if box[2] > box[0] and box[3] > box[1]:
                best = Found(box, float(count))
        return best


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
