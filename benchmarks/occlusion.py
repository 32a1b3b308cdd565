"""Occlusions and cuts put into real footage, to measure losing and re-acquiring the target.

The shared sequences have few full occlusions and no cuts, so the temporal mode's lost /
re-detect path is barely exercised by them. This module makes *events* on a real sequence
(seeded, so every method sees the same frames):

- ``occlude``: the target's true box (grown by a margin) is covered for ``length`` frames by a
  patch of the same frame taken from far away from the target (real texture, the scene's own
  colours), as when someone walks in front of it;
- ``cut``: from the event on, every frame is shifted circularly (what leaves one side comes in
  at the other, so the target is never shown twice) by a large offset, so the target jumps to
  another place of the picture as after a camera cut. The offset is drawn so that the target's
  box stays whole (off the wrap's seam) in the frames up to the next event where it can: a target
  cut in two by the seam is not a cut a camera makes (an earlier version drew offsets blind: on 6
  of the 17 cuts of the shared sequences the target came back split, for 23-60 frames).

Measured per event: the frames after the target's return until the predicted centre is within
20 px again (``None`` when it never is before the next event), and whether that was within 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("occlude", "cut")


@dataclass(frozen=True)
class Event:
    kind: str
    start: int  # index into the searched frames' list (frame 1 = index 0 is never touched)
    length: int  # frames the target is hidden (occlude) / 0 for a cut
    shift: tuple[int, int] = (0, 0)  # cut: the frames' offset from ``start`` on

    @property
    def returns(self) -> int:
        """Index of the first frame where the target is visible again."""
        return self.start + self.length


def plan_events(count: int, size: tuple[int, int], kind: str, every: int = 60, first: int = 40,
                length: int = 10, seed: int = 0, boxes: np.ndarray | None = None,
                tries: int = 64) -> list[Event]:
    """Events every ``every`` frames from ``first`` on; cuts shift by 25-45% of the frame.

    With ``boxes`` (the true boxes, N x 4, x0 y0 x1 y1), each cut's offset is the first of up to
    ``tries`` draws that keeps the target whole in every frame until the next event (else the
    draw that splits it in the fewest frames)."""
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {KINDS}, not {kind!r}")
    rng = np.random.default_rng(seed)
    h, w = size
    starts = list(range(first, count - length - 5, every))
    events = []
    offset = np.zeros(2)
    for number, start in enumerate(starts):
        if kind == "occlude":
            events.append(Event(kind, start, length))
            continue
        end = starts[number + 1] if number + 1 < len(starts) else count
        best, fewest = (0, 0), None
        for _ in range(tries if boxes is not None else 1):
            dx = int(rng.uniform(0.25, 0.45) * w) * int(rng.choice([-1, 1]))
            dy = int(rng.uniform(0.25, 0.45) * h) * int(rng.choice([-1, 1]))
            split = 0 if boxes is None else _split_frames(boxes[start:end], offset + (dx, dy), w, h)
            if fewest is None or split < fewest:
                best, fewest = (dx, dy), split
            if split == 0:
                break
        offset += best
        events.append(Event(kind, start, 0, best))
    return events


def _split_frames(boxes: np.ndarray, offset: np.ndarray, w: int, h: int) -> int:
    """Frames whose box, moved by the (cumulative) offset, straddles the circular shift's seam."""
    split = 0
    for box in boxes:
        x0, y0 = (box[0] + offset[0]) % w, (box[1] + offset[1]) % h
        split += bool(x0 + (box[2] - box[0]) > w or y0 + (box[3] - box[1]) > h)
    return split


def _shift(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return np.roll(frame, (dy, dx), axis=(0, 1))


def apply_events(frames: list[np.ndarray], boxes: np.ndarray, events: list[Event],
                 margin: float = 0.2, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """The frames and true boxes (x0, y0, x1, y1) with the events applied (copies)."""
    rng = np.random.default_rng(seed)
    frames = [f.copy() for f in frames]
    boxes = boxes.copy()
    h, w = frames[0].shape[:2]
    offset = np.zeros(2)
    cut_at = {e.start: e for e in events if e.kind == "cut"}
    for index in range(len(frames)):
        if index in cut_at:
            offset += cut_at[index].shift
        if offset.any():
            frames[index] = _shift(frames[index], int(offset[0]), int(offset[1]))
            boxes[index] = _shifted_box(boxes[index], offset, w, h)
    for event in events:
        if event.kind != "occlude":
            continue
        for index in range(event.start, min(event.returns, len(frames))):
            _cover(frames[index], boxes[index], margin, rng)
    return frames, boxes


def _shifted_box(box: np.ndarray, offset: np.ndarray, w: int, h: int) -> np.ndarray:
    """The box moved by the offset, its centre wrapped like the pixels."""
    cx = ((box[0] + box[2]) / 2 + offset[0]) % w
    cy = ((box[1] + box[3]) / 2 + offset[1]) % h
    bw, bh = box[2] - box[0], box[3] - box[1]
    return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def _cover(frame: np.ndarray, box: np.ndarray, margin: float, rng: np.random.Generator) -> None:
    """Cover the box (grown by margin) with a same-size patch from the far side of the frame."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
    x1, y1 = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    bw, bh = x1 - x0, y1 - y0
    if bw <= 0 or bh <= 0:
        return
    # The source: the patch position farthest from the box among a few random tries.
    best, far = (0, 0), -1.0
    for _ in range(8):
        sx, sy = int(rng.integers(0, max(1, w - bw + 1))), int(rng.integers(0, max(1, h - bh + 1)))
        d = abs(sx - x0) / max(bw, 1) + abs(sy - y0) / max(bh, 1)
        if d > far:
            best, far = (sx, sy), d
    sx, sy = best
    frame[y0:y1, x0:x1] = frame[sy:sy + bh, sx:sx + bw]


def reacquisition(predicted: list, truth: np.ndarray, events: list[Event], within: int = 5
                  ) -> list[int | None]:
    """Per event: frames from the target's return until the prediction is within 20 px again
    (None: not before the next event or the end)."""
    delays: list[int | None] = []
    ends = [e.start for e in events[1:]] + [len(truth)]
    for event, end in zip(events, ends):
        delay = None
        for index in range(event.returns, end):
            box = predicted[index]
            if box is None:
                continue
            dx = (box[0] + box[2]) / 2 - (truth[index][0] + truth[index][2]) / 2
            dy = (box[1] + box[3]) / 2 - (truth[index][1] + truth[index][3]) / 2
            if np.hypot(dx, dy) <= 20.0:
                delay = index - event.returns
                break
        delays.append(delay)
    return delays
