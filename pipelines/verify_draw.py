"""Drawing a verification (:mod:`pipelines.verify`): the query beside the medium, the fit's inlier
pairs joined by lines and the boxes (fitted, true, reported), for benchmarks and reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:  # only annotations: pipelines.verify imports this module to re-export it
    from pipelines.verify import Verification


VERIFIED_RGB = (0, 230, 0)
UNVERIFIED_RGB = (255, 150, 0)
TRUTH_RGB = (40, 90, 255)
ANSWER_RGB = (255, 0, 0)


def draw_matches(query: np.ndarray, medium: np.ndarray, check: Verification,
                 truth: Sequence[int] | None = None, answer: Sequence[int] | None = None) -> np.ndarray:
    """The query (mirrored if the fit was) left of the medium, the fit's inlier pairs joined by
    lines and its box, green if verified, orange if not; the true box in blue and the reported
    one (``answer``, if other than the fit's) in red."""
    q = np.ascontiguousarray(query[..., :3])
    if check.mirrored:
        q = np.ascontiguousarray(q[:, ::-1])
    scale = min(1.0, medium.shape[0] / q.shape[0])
    q = cv2.resize(q, (max(1, round(q.shape[1] * scale)), max(1, round(q.shape[0] * scale))),
                   interpolation=cv2.INTER_AREA)
    canvas = np.full((max(q.shape[0], medium.shape[0]), q.shape[1] + medium.shape[1], 3), 255,
                     np.uint8)
    canvas[:q.shape[0], :q.shape[1]] = q
    canvas[:medium.shape[0], q.shape[1]:] = medium[..., :3]
    shift = q.shape[1]
    colour = VERIFIED_RGB if check.verified else UNVERIFIED_RGB

    def rectangle(box: Sequence[int], rgb: tuple[int, int, int]) -> None:
        cv2.rectangle(canvas, (int(box[0]) + shift, int(box[1])), (int(box[2]) + shift - 1, int(box[3]) - 1),
                      rgb, 2)

    if truth is not None:
        rectangle(truth, TRUTH_RGB)
    if answer is not None and tuple(answer) != check.box:
        rectangle(answer, ANSWER_RGB)
    if check.box is not None:
        rectangle(check.box, colour)
    for (qx, qy), (mx, my) in zip((check.query_points + 0.5) * scale - 0.5, check.medium_points):
        end = (round(float(mx)) + shift, round(float(my)))
        cv2.line(canvas, (round(float(qx)), round(float(qy))), end, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, end, 2, colour, -1)
    return canvas
