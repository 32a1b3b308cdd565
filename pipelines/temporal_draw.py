"""Drawing the temporal mode's decisions: the searched heat in frame pixels, the held box in its
state's colour, and the state written in a corner."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipelines.temporal_track import LOST, REDETECTED, TRACKING, Track


STATE_RGB = {TRACKING: (40, 220, 40), REDETECTED: (255, 200, 0), LOST: (255, 40, 40)}


def frame_heat(track: Track, width: int, height: int) -> np.ndarray:
    """The heat that was searched, in frame pixels (0 outside the searched window)."""
    if track.heat is None or track.heat_affine is None:
        return np.zeros((height, width), np.float32)
    return cv2.warpAffine(track.heat, track.heat_affine, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def draw_track(frame: np.ndarray, track: Track, heat_alpha: float = 0.6) -> np.ndarray:
    """The frame with the searched heat overlaid (where it was searched), the held box outlined in
    the state's colour (thin while lost: the best guess), and the state written in a corner.

    The heat is shown from the searched pixels' median (clear) to its peak (red): scores are
    ~0.1-0.4, and drawn as they are the overlay was near invisible. The score is written beside
    the state."""
    h, w = frame.shape[:2]
    heat = frame_heat(track, w, h)
    searched = heat[heat > 0]
    if searched.size:
        floor, peak = float(np.median(searched)), float(searched.max())
        heat = np.clip((heat - floor) / max(peak - floor, 1e-6), 0.0, 1.0)
    colour = cv2.applyColorMap(np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8),
                               cv2.COLORMAP_JET)[:, :, ::-1]
    weight = (heat_alpha * heat)[..., None]
    out = (frame * (1 - weight) + colour * weight).astype(np.uint8)
    thickness = max(1, round(0.004 * math.hypot(h, w)))
    if track.best_box is not None:
        x0, y0, x1, y1 = track.best_box
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), STATE_RGB[track.state],
                      thickness if track.held else 1, cv2.LINE_AA)
    cv2.putText(out, f"{track.state} {track.best_score:.2f}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, STATE_RGB[track.state], 1, cv2.LINE_AA)
    return out
