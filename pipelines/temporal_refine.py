"""Where in the window the target's centre is, finer than the score's argmax (the temporal mode,
pipelines/temporal.py, with ``TemporalConfig.refine_radius``).

The score that picks the target (the siamese heat blended with the online filter's response and
the motion prior) decides *which* blob is the target; it is a poor judge of *where in it* the
centre lies: the query's heat, from a template of the first frame at 48 px, peaks off the centre of
a target seen larger (Skating1 from frame ~230: on her lower body), and the filter's response is
upsampled from its stride-8 grid, so its maximum sits on a cell centre (8 window px, ~20 frame px
on a 130 px target). The filter was learned on this target's own features at its centre, so its
peak near the chosen place, refined between cells by a parabola through the neighbours (the
correlation trackers' sub-cell step), places the centre.
"""

from __future__ import annotations

import numpy as np


def _parabola(low: float, mid: float, high: float) -> float:
    """Offset (-0.5 .. 0.5) of the vertex of the parabola through (-1, low), (0, mid), (1, high);
    0 where it does not open downward."""
    curve = low - 2.0 * mid + high
    if curve >= 0.0:
        return 0.0
    return float(np.clip(0.5 * (low - high) / curve, -0.5, 0.5))


def refine_peak(response: np.ndarray, y: float, x: float, radius: float, stride: int) -> tuple[float, float]:
    """The (y, x) window pixel of the highest point of ``response`` (an H x W grid of cells
    ``stride`` window pixels apart, cell i's centre at window pixel (i + 0.5) stride - 0.5, as
    ``cv2.resize`` upsamples it) within ``radius`` cells of window pixel (y, x), refined between
    cells; (y, x) itself where no cell lies that near."""
    rows, cols = response.shape
    gy, gx = (y + 0.5) / stride - 0.5, (x + 0.5) / stride - 0.5
    yy, xx = np.ogrid[:rows, :cols]
    near = (yy - gy) ** 2 + (xx - gx) ** 2 <= radius ** 2
    if not near.any():
        return y, x
    masked = np.where(near, response, -np.inf)
    cy, cx = np.unravel_index(int(np.argmax(masked)), masked.shape)
    sy = _parabola(response[cy - 1, cx], response[cy, cx], response[cy + 1, cx]) if 0 < cy < rows - 1 else 0.0
    sx = _parabola(response[cy, cx - 1], response[cy, cx], response[cy, cx + 1]) if 0 < cx < cols - 1 else 0.0
    return (cy + sy + 0.5) * stride - 0.5, (cx + sx + 0.5) * stride - 0.5
