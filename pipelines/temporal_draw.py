"""Drawing the temporal mode's decisions: the searched heat in frame pixels, the held box in its
state's colour, and the state written in a corner."""

from __future__ import annotations

import math

import cv2
import numpy as np

from augment.draw_labels import fit_label, format_score, line_width, overlaps, put_label
from pipelines.temporal_track import LOST, REDETECTED, TRACKING, Track


STATE_RGB = {TRACKING: (40, 220, 40), REDETECTED: (255, 200, 0), LOST: (255, 40, 40)}
# The overlay's colours span at least this much heat above the searched pixels' median: a held target's
# peak stands 0.08-0.43 above it on the tracking sequences, but a grey or black frame's (a fade, a
# covered lens: nothing to find) only ~0.02, its padding's ripple, which stretched to the full range was
# drawn red-hot in a corner, as vividly as a target.
MIN_HEAT_SPAN = 0.1


def heat_region(track: Track, width: int, height: int) -> tuple[int, int, np.ndarray] | None:
    """The heat that was searched, in frame pixels, over the frame rectangle its window covers:
    (x, y, heat there), 0 outside the window; None where nothing was searched or the window lies
    off the frame. Warped over that rectangle only, not the whole frame: a 4K frame's full-size
    float map (33 MB, warped, thresholded and scanned) took a 4K frame's highlight of a 440-px window
    from 15 to 39 ms, of a 1500-px one from 182 to 232 ms (the same pixels)."""
    if track.heat is None or track.heat_affine is None:
        return None
    affine = np.asarray(track.heat_affine, np.float64)
    hh, hw = track.heat.shape[:2]
    # The window's corners in frame pixels, a pixel past its edge (bilinear reaches there).
    corners = cv2.transform(np.array([[[-1.0, -1.0], [hw, -1.0], [-1.0, hh], [hw, hh]]]),
                            cv2.invertAffineTransform(affine))[0]
    x0, y0 = (max(0, math.floor(v) - 1) for v in corners.min(axis=0))
    x1, y1 = min(width, math.ceil(corners[:, 0].max()) + 2), min(height, math.ceil(corners[:, 1].max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    shifted = affine.copy()
    shifted[:, 2] += affine[:, :2] @ np.array([x0, y0], np.float64)  # rectangle pixel -> frame pixel -> window
    return x0, y0, cv2.warpAffine(track.heat, shifted, (x1 - x0, y1 - y0),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def frame_heat(track: Track, width: int, height: int) -> np.ndarray:
    """The heat that was searched, in frame pixels (0 outside the searched window)."""
    heat = np.zeros((height, width), np.float32)
    found = heat_region(track, width, height)
    if found is not None:
        x, y, region = found
        heat[y:y + region.shape[0], x:x + region.shape[1]] = region
    return heat


def draw_track(frame: np.ndarray, track: Track, heat_alpha: float = 0.6) -> np.ndarray:
    """The frame with the searched heat overlaid (where it was searched), the held box outlined in
    the state's colour (thin while lost: the best guess), and the state written in a corner.

    The heat is shown from the searched pixels' median (clear) to its peak (red): scores are
    ~0.1-0.4, and drawn as they are the overlay was near invisible; a peak under MIN_HEAT_SPAN above
    the median is drawn as that fraction of the range (faint). The score is written beside the state."""
    h, w = frame.shape[:2]
    found = heat_region(track, w, h)
    out = frame.copy()
    # Only the searched window's bounding rectangle is coloured and blended: outside it the heat is
    # 0, so the weight is 0 and the frame stays as it is (the same pixels as blending the whole
    # frame, at a fraction of the cost: 5 -> ~0.5 ms a 640 x 360 frame, 23 -> ~1 ms at 1280 x 720,
    # where blending the whole frame in float took longer than searching it).
    support = None if found is None else found[2] > 0
    if support is not None and support.any():
        ox, oy, heat = found
        x, y, bw, bh = cv2.boundingRect(support.view(np.uint8))
        region = heat[y:y + bh, x:x + bw]
        searched = region[support[y:y + bh, x:x + bw]]
        floor, peak = float(np.median(searched)), float(searched.max())
        region = np.clip((region - floor) / max(peak - floor, MIN_HEAT_SPAN), 0.0, 1.0)
        colour = cv2.cvtColor(cv2.applyColorMap(np.clip(region * 255 + 0.5, 0, 255).astype(np.uint8),
                                                cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        # The weight spelled out per channel: numpy's broadcast along the last axis cost 2.7x.
        weight = cv2.merge([heat_alpha * region] * 3)
        x, y = x + ox, y + oy  # frame pixels
        blend = np.multiply(frame[y:y + bh, x:x + bw], 1 - weight, dtype=np.float32)
        blend += np.multiply(colour, weight, dtype=np.float32)
        out[y:y + bh, x:x + bw] = blend.astype(np.uint8)
    thickness = max(1, round(0.004 * math.hypot(h, w)))
    if track.best_box is not None:
        x0, y0, x1, y1 = track.best_box
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), STATE_RGB[track.state],
                      thickness if track.held else line_width(h, w), cv2.LINE_AA)  # thin: 1 px was lost on 4K
    # In the top-left corner, sized to the frame and kept inside it (augment.draw_labels): a fixed
    # 0.5 was a speck on a 4K frame and ran off a narrow one. In the bottom-left one where the box
    # is in the top-left corner (the label hid its edge).
    texts = (f"{track.state} {format_score(track.best_score)}", track.state)
    anchor, above = (6, 2), False
    fitted = fit_label(h, w, texts, anchor, 0.5, above)
    if fitted is not None and track.best_box is not None and overlaps(fitted[-1], track.best_box, thickness):
        anchor, above = (6, h - 2), True
    put_label(out, texts, anchor, STATE_RGB[track.state], base_scale=0.5, above=above)
    return out
