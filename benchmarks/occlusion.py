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
  of the 17 cuts of the shared sequences the target came back split, for 23-60 frames);
- ``zoom``: a gradual camera zoom over ``length`` frames: each frame is rescaled about one pivot
  (drawn once per seed in the frame's central half) by a factor that goes geometrically from 1 to
  ``zoom_to`` (zooming out: the target shrinks, e.g. 2.5x at 0.4, as Soccer's face does from ~80
  to ~30 px), is held there until the next event, which zooms back in to 1 (events alternate out
  and in); the area the shrunken frame leaves is filled with the frame's mean colour (a border
  reflected would show the target twice). The frame is blurred before it is shrunk (anti-aliased,
  as a lens would). The true boxes are moved by the same affine, so frames and boxes agree. Zoom
  events are spaced at least ``length`` + 20 frames apart (20 frames held between zooms), and
  only whole zooms are placed;
- ``zoom-occlude``: the same zooms, each with the target covered (as ``occlude``) for ``cover``
  frames from a third of the way into the zoom: the target lost while its size changes steadily,
  and back at another size than it was lost at (its "return" is the cover's end);
- ``relight``: from the event on, every frame takes a lasting colour cast (per-channel gains
  0.45-1.3 and a gamma 0.7-1.4, drawn per event), as when stage lights change colour: the
  target's appearance changes for good, nothing is hidden (its "return" is the event's frame);
- ``blur``: for ``length`` frames, a linear motion blur (9-25 px at one angle, drawn per event),
  as a shaking camera gives (its "return" is the first sharp frame);
- ``rotate``: a camera roll over ``length`` frames: each frame is turned about one pivot (drawn
  once per seed in the frame's central half) by an angle that goes linearly from 0 to
  ``rotate_to`` degrees, is held there until the next event, which turns back to 0 (events
  alternate, placed as zooms are); the corners the turn uncovers are filled with the frame's mean
  colour. The true box becomes the upright box around the turned one (as VOT's upright boxes
  enclose its rotated ones), so its centre is exact and its size an upper bound. Its "return" is
  its last frame.

Measured per event: the frames after the target's return until the predicted centre is within
20 px again (``None`` when it never is before the next event), and whether that was within 5. A
zoom's "return" is its last frame: the frames after the zoom ends until the box is on the target.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
from metrics import PRECISION_PX, centre_error  # noqa: E402

KINDS = ("occlude", "cut", "zoom", "zoom-occlude", "relight", "blur", "rotate")
ZOOMS = ("zoom", "zoom-occlude")
RAMPS = ZOOMS + ("rotate",)  # a camera change over ``length`` frames, then held
ZOOM_GAP = 20  # frames held between two zooms


@dataclass(frozen=True)
class Event:
    kind: str
    start: int  # index into the searched frames' list (frame 1 = index 0 is never touched)
    length: int  # frames the target is hidden (occlude) / 0 for a cut
    shift: tuple[int, int] = (0, 0)  # cut: the frames' offset from ``start`` on
    # zoom: the frame's scale about ``pivot`` (x, y) goes from zoom[0] at ``start`` to zoom[1] at
    # ``start + length`` (geometrically), and stays there until the next event
    zoom: tuple[float, float] = (1.0, 1.0)
    pivot: tuple[float, float] = (0.0, 0.0)
    # zoom-occlude: the target covered from frame start + cover[0] for cover[1] frames
    cover: tuple[int, int] = (0, 0)
    # relight: (red, green, blue gains, gamma) from ``start`` on; blur: (kernel px, angle degrees)
    light: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    blur: tuple[int, float] = (0, 0.0)
    # rotate: the frame's turn about ``pivot`` (degrees, counter-clockwise as cv2 draws it) goes
    # from angle[0] at ``start`` to angle[1] at ``start + length`` (linearly), then stays
    angle: tuple[float, float] = (0.0, 0.0)

    @property
    def returns(self) -> int:
        """Index of the first frame where the target is visible again (a zoom or a rotation: its
        last frame; zoom-occlude: the cover's end; relight: the event's own frame; blur: the first
        sharp one)."""
        if self.kind == "zoom-occlude":
            return self.start + sum(self.cover)
        if self.kind == "relight":
            return self.start
        return self.start + self.length

    @property
    def covered(self) -> range:
        """The frames where the target is covered."""
        if self.kind == "occlude":
            return range(self.start, self.start + self.length)
        if self.kind == "zoom-occlude":
            return range(self.start + self.cover[0], self.start + sum(self.cover))
        return range(0)


def plan_events(count: int, size: tuple[int, int], kind: str, every: int = 60, first: int = 40,
                length: int = 10, seed: int = 0, boxes: np.ndarray | None = None,
                tries: int = 64, zoom_to: float = 0.4, cover: int = 20, rotate_to: float = 60.0) -> list[Event]:
    """Events every ``every`` frames from ``first`` on; cuts shift by 25-45% of the frame; zooms
    (``length`` frames each, at least ``length`` + ZOOM_GAP apart) go to ``zoom_to`` and back.

    With ``boxes`` (the true boxes, N x 4, x0 y0 x1 y1), each cut's offset is the first of up to
    ``tries`` draws that keeps the target whole in every frame until the next event (else the
    draw that splits it in the fewest frames)."""
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {KINDS}, not {kind!r}")
    if kind in ZOOMS and not (0.0 < zoom_to and length >= 1 and 0 <= cover <= length - length // 3):
        raise ValueError(f"a zoom needs zoom_to > 0, length >= 1 and a cover within it, not {zoom_to}, "
                         f"{length}, {cover}")
    if kind == "rotate" and not (length >= 1 and math.isfinite(rotate_to) and abs(rotate_to) <= 180):
        raise ValueError(f"a rotation needs length >= 1 and |rotate_to| <= 180 degrees, not {length}, {rotate_to}")
    rng = np.random.default_rng(seed)
    h, w = size
    if kind in RAMPS:
        every = max(every, length + ZOOM_GAP)
        covered = (length // 3, cover) if kind == "zoom-occlude" else (0, 0)
        pivot = (float(rng.uniform(0.25, 0.75) * w), float(rng.uniform(0.25, 0.75) * h))
        ramps = []
        for number, start in enumerate(range(first, count - length - 5, every)):
            out = number % 2 == 0  # zooms go out and back in, rotations to the angle and back
            if kind == "rotate":
                angle = (0.0, rotate_to) if out else (rotate_to, 0.0)
                ramps.append(Event(kind, start, length, pivot=pivot, angle=angle))
            else:
                zoom = (1.0, zoom_to) if out else (zoom_to, 1.0)
                ramps.append(Event(kind, start, length, zoom=zoom, pivot=pivot, cover=covered))
        return ramps
    starts = list(range(first, count - length - 5, every))
    events = []
    offset = np.zeros(2)
    for number, start in enumerate(starts):
        if kind == "occlude":
            events.append(Event(kind, start, length))
            continue
        if kind == "relight":
            gains = rng.uniform(0.45, 1.3, 3)
            events.append(Event(kind, start, 0, light=(*(float(g) for g in gains), float(rng.uniform(0.7, 1.4)))))
            continue
        if kind == "blur":
            events.append(Event(kind, start, length, blur=(int(rng.integers(9, 26)), float(rng.uniform(0, 180)))))
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
    # The camera's ramps (zooms, rolls): per frame the value its events reach, frames and boxes
    # moved alike about the events' one pivot where it is not the identity.
    for kinds, value_at, identity, frame_moved, box_moved in (
            (ZOOMS, zoom_scale, 1.0, _zoomed, zoomed_box), (("rotate",), rotation_angle, 0.0, _turned, turned_box)):
        ramp = [e for e in events if e.kind in kinds]
        for index in range(len(frames) if ramp else 0):
            value = value_at(ramp, index)
            if value != identity:
                frames[index] = frame_moved(frames[index], value, ramp[0].pivot)
                boxes[index] = box_moved(boxes[index], value, ramp[0].pivot)
    offset = np.zeros(2)
    cut_at = {e.start: e for e in events if e.kind == "cut"}
    for index in range(len(frames)):
        if index in cut_at:
            offset += cut_at[index].shift
        if offset.any():
            frames[index] = _shift(frames[index], int(offset[0]), int(offset[1]))
            boxes[index] = _shifted_box(boxes[index], offset, w, h)
    lights = [e for e in events if e.kind == "relight"]
    for index in range(len(frames)):
        light = next((e.light for e in reversed(lights) if e.start <= index), None)
        if light is not None:
            frames[index] = _relit(frames[index], light)
    for event in events:
        if event.kind == "blur":
            kernel = _motion_kernel(*event.blur)
            for index in range(event.start, min(len(frames), event.start + event.length)):
                frames[index] = _blurred(frames[index], kernel)
        for index in event.covered:
            if index < len(frames):
                _cover(frames[index], boxes[index], margin, rng)
    return frames, boxes


def _relit(frame: np.ndarray, light: tuple[float, float, float, float]) -> np.ndarray:
    """The frame under a colour cast: each channel's gain after a gamma (clipped to uint8)."""
    *gains, gamma = light
    lifted = (frame.astype(np.float32) / 255.0) ** gamma * np.asarray(gains, np.float32)
    return np.clip(lifted * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised line of ``length`` px at ``angle`` degrees (linear motion blur)."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    turn = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return kernel / kernel.sum()


def _blurred(frame: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT)


def zoom_scale(zooms: list[Event], index: int) -> float:
    """The frame's scale at ``index`` under zoom events (sorted by start): 1 before the first, each
    event's geometric ramp from its zoom[0] to its zoom[1], then held."""
    scale = 1.0
    for event in zooms:
        if index < event.start:
            break
        start, end = event.zoom
        progress = min(1.0, (index - event.start) / event.length)
        scale = start * (end / start) ** progress
    return scale


def _zoom_affine(scale: float, pivot: tuple[float, float]) -> np.ndarray:
    """Pixel-index affine (as cv2.warpAffine reads it) of a rescale by ``scale`` about the
    continuous point ``pivot`` (pixel i covers [i, i + 1), its centre at i + 0.5)."""
    # continuous c -> p + s (c - p); index i = c - 0.5 -> s i + (1 - s) (p - 0.5)
    return np.array([[scale, 0.0, (1 - scale) * (pivot[0] - 0.5)],
                     [0.0, scale, (1 - scale) * (pivot[1] - 0.5)]], np.float64)


def _zoomed(frame: np.ndarray, scale: float, pivot: tuple[float, float]) -> np.ndarray:
    """The frame rescaled about ``pivot`` (anti-aliased when shrunk), the rest filled with its mean."""
    h, w = frame.shape[:2]
    source = frame
    if scale < 1.0:  # a Gaussian of ~half the new pixel's width, in source pixels
        sigma = 0.5 * math.sqrt(1.0 / scale ** 2 - 1.0)
        source = cv2.GaussianBlur(frame, (0, 0), sigma)
    fill = tuple(float(v) for v in frame.reshape(-1, frame.shape[2] if frame.ndim == 3 else 1).mean(axis=0))
    return cv2.warpAffine(source, _zoom_affine(scale, pivot), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def zoomed_box(box: np.ndarray, scale: float, pivot: tuple[float, float]) -> np.ndarray:
    """A box (x0, y0, x1, y1, continuous) rescaled about ``pivot`` as :func:`_zoomed` moves pixels."""
    px, py = pivot
    return np.array([px + scale * (box[0] - px), py + scale * (box[1] - py),
                     px + scale * (box[2] - px), py + scale * (box[3] - py)])


def rotation_angle(turns: list[Event], index: int) -> float:
    """The frame's turn (degrees) at ``index`` under rotate events (sorted by start): 0 before the
    first, each event's linear ramp from its angle[0] to its angle[1], then held."""
    angle = 0.0
    for event in turns:
        if index < event.start:
            break
        start, end = event.angle
        angle = start + (end - start) * min(1.0, (index - event.start) / event.length)
    return angle


def _turn_affine(angle: float, pivot: tuple[float, float]) -> np.ndarray:
    """Pixel-index affine (as cv2.warpAffine reads it) of a turn by ``angle`` degrees about the
    continuous point ``pivot`` (pixel i's centre at i + 0.5, as _zoom_affine)."""
    return cv2.getRotationMatrix2D((pivot[0] - 0.5, pivot[1] - 0.5), angle, 1.0)


def _turned(frame: np.ndarray, angle: float, pivot: tuple[float, float]) -> np.ndarray:
    """The frame turned about ``pivot``, the corners it uncovers filled with its mean colour."""
    h, w = frame.shape[:2]
    fill = tuple(float(v) for v in frame.reshape(-1, frame.shape[2] if frame.ndim == 3 else 1).mean(axis=0))
    return cv2.warpAffine(frame, _turn_affine(angle, pivot), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def turned_box(box: np.ndarray, angle: float, pivot: tuple[float, float]) -> np.ndarray:
    """The upright box around a box (x0, y0, x1, y1, continuous) turned as :func:`_turned` turns
    pixels: its centre moves exactly, its size is the turned box's extent."""
    turn = _turn_affine(angle, pivot)
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]]) - 0.5
    moved = corners @ turn[:, :2].T + turn[:, 2] + 0.5
    return np.array([*moved.min(axis=0), *moved.max(axis=0)])


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


def reacquisition(predicted: list, truth: np.ndarray, events: list[Event]) -> list[int | None]:
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
            if centre_error(box, truth[index]) <= PRECISION_PX:
                delay = index - event.returns
                break
        delays.append(delay)
    return delays
