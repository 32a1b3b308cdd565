"""Rendition-change pairs from real video (../shared/data/tracking): the same object, seen again
much later, after pose, light and background changed.

A query is the target cut by its box from an early frame (1, 6, ... 46, while a frame 100 later
exists); it is searched in the frames 100, 200 and 300 later of the same sequence (positives,
truth = that frame's box) and in one frame of each of two other sequences (negatives). Nothing here is
trained or calibrated on: the fusion of issue 13 is fitted on CCP photos only, so these pairs check
that it does no harm where appearance changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRACKING = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tracking").resolve()
SEQUENCES = ("Crossing", "Skating1", "Soccer", "VOT_bag")
QUERY_FRAMES = tuple(range(1, 47, 5))  # early frames the target is cut from (1-based)
GAPS = (100, 200, 300)  # frames later the target is searched
MIN_QUERY_SIDE = 8


@dataclass
class RenditionCase:
    """The attributes the benchmarks read from any case: query, scene, positive, boxes."""

    query: np.ndarray  # RGB crop of the target
    scene: np.ndarray  # RGB frame
    box: tuple[int, int, int, int] | None  # the target's box in the scene, None for a negative
    name: str

    @property
    def positive(self) -> bool:
        return self.box is not None

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [] if self.box is None else [self.box]


def available() -> bool:
    return all((TRACKING / s / "groundtruth.txt").is_file() for s in SEQUENCES)


def skip_message() -> str:
    return f"skipped: {TRACKING} is absent (the tracking sequences are not on this machine)"


def read_boxes(sequence: str) -> list[tuple[int, int, int, int]]:
    """Per frame (index 0 = frame 1): x0, y0, x1, y1 in whole pixels."""
    boxes = []
    for line in (TRACKING / sequence / "groundtruth.txt").read_text().split("\n"):
        if line.strip():
            x, y, w, h = (float(v) for v in line.replace("\t", ",").split(",")[:4])
            boxes.append((round(x), round(y), round(x + w), round(y + h)))
    return boxes


def _frame(sequence: str, number: int) -> np.ndarray:
    from augment.imageio import read_image

    return read_image(TRACKING / sequence / "img" / f"{number:04d}.jpg", "rgb")


def rendition_cases() -> list[RenditionCase]:
    """Positives first, then two negatives per query (the frame of the same number, wrapping
    round, in each of the next two sequences); a fixed list."""
    positives: list[RenditionCase] = []
    negatives: list[RenditionCase] = []
    for k, sequence in enumerate(SEQUENCES):
        boxes = read_boxes(sequence)
        others = [SEQUENCES[(k + j) % len(SEQUENCES)] for j in (1, 2)]
        for first in QUERY_FRAMES:
            later = [first + gap for gap in GAPS if first + gap <= len(boxes)]
            if not later:
                continue
            frame = _frame(sequence, first)
            x0, y0, x1, y1 = boxes[first - 1]
            h, w = frame.shape[:2]
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if min(x1 - x0, y1 - y0) < MIN_QUERY_SIDE:
                continue
            query = np.ascontiguousarray(frame[y0:y1, x0:x1])
            for number in later:
                bx0, by0, bx1, by1 = boxes[number - 1]
                truth = (max(0, bx0), max(0, by0), min(w, bx1), min(h, by1))
                positives.append(RenditionCase(query, _frame(sequence, number), truth,
                                               f"{sequence}:{first}->{number}"))
            for other in others:
                number = (first - 1) % len(read_boxes(other)) + 1
                negatives.append(RenditionCase(query, _frame(other, number), None,
                                               f"{sequence}:{first}->{other}:{number}"))
    return positives + negatives
