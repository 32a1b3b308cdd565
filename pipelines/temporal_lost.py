"""The temporal mode's search for a lost target (a mixin of pipelines/temporal.py's
:class:`TemporalSearcher`): the rescue at the moment of loss (the last place at other sizes and
turns), windows at the last place and at the whole frame's highest peaks, the online filter
choosing among them (the first acquisition without a box: pipelines/temporal_acquire.py).

Two guards keep a look-alike from taking the target's place:
- *where it went*: a candidate farther than ``far_radius`` target heights from where the target
  was lost needs the filter's response at ``far_reacquire_ratio`` (not ``filter_reacquire_ratio``)
  of its reference; a target that went behind a cover comes back where it went (Skating1's other
  skaters score as high as the skater herself: with one bar, a look-alike 240 px away was taken
  while she was covered, and kept);
- *unless the scene cut*: consecutive frames whose thumbnails no longer correlate
  (:func:`scene_cut`) drop the last place's claim, since after a cut the target may be anywhere,
  and (with ``cut_sizes``) at another size.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from pipelines.search_inputs import flat_for
from pipelines.temporal_track import GRID, LOST, REDETECTED, Look, Track
from pipelines.window_geometry import box_from, shift_map, turned_size


def _top_peaks(heat: np.ndarray, count: int, radius: float) -> list[tuple[int, int]]:
    """(y, x) of the ``count`` highest peaks of a map, each ``radius`` px from the others."""
    heat = heat.copy()
    found = []
    reach = int(math.floor(radius))  # the disc lies within this many px of its centre
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        if not np.isfinite(heat[y, x]):
            break
        found.append((int(y), int(x)))
        # The disc masked in its bounding box only (the same pixels as over the whole map).
        y0, x0 = max(0, y - reach), max(0, x - reach)
        yy, xx = np.ogrid[y0:min(heat.shape[0], y + reach + 1), x0:min(heat.shape[1], x + reach + 1)]
        heat[y0:y0 + yy.shape[0], x0:x0 + xx.shape[1]][(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = -np.inf
    return found


def _crop(maps: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """``side`` x ``side`` of a (... x H x W) array's last two axes from (y0, x0), edges replicated
    outside it (as sample_window replicates the frame's edge pixels)."""
    rows = np.clip(np.arange(y0, y0 + side), 0, maps.shape[-2] - 1)
    cols = np.clip(np.arange(x0, x0 + side), 0, maps.shape[-1] - 1)
    return np.ascontiguousarray(maps[..., rows[:, None], cols[None, :]])


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A 32 x 24 grey thumbnail, less its mean, of unit norm: consecutive frames of one shot
    correlate at 0.56-0.99 (VOT_bag's shaking camera the lowest), across a cut near 0."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    thumb = cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean()
    return thumb / (float(np.linalg.norm(thumb)) + 1e-6)


def scene_cut(thumb: np.ndarray, previous: np.ndarray | None, level: float) -> bool:
    """Whether two consecutive frames' thumbnails (:func:`thumbnail`) correlate below ``level``."""
    return previous is not None and float((thumb * previous).sum()) < level


class LostSearch:
    """Re-detection for :class:`pipelines.temporal.TemporalSearcher`, which sets the attributes
    named here and has the window search (``_look``, ``_hold``, ``_frame_point``) and the levels
    (its ``reference`` and ``filter_reference`` properties) these methods use."""

    config: Any
    center: tuple[float, float] | None
    height: float
    aspect: float
    state: str
    recent: Any
    template_size: tuple[int, int]
    peak_offset: np.ndarray
    net: Any
    _look: Callable[..., list[Look]]
    _score: Callable[..., Look]
    window_side: int
    prior: np.ndarray
    scales: tuple[float, ...]
    scale_bias: np.ndarray | None
    _hold: Callable[..., Track]
    _place: Callable[[Sequence[float]], None]
    _frame_point: Callable[..., tuple[float, float]]
    box_size: Callable[[], tuple[float, float]]
    angle: float
    _zoom: Callable[[], float]
    _sizes: Callable[[Sequence[float]], list[tuple[int, int]]]
    _lost_frames: int
    _lost_center: tuple[float, float] | None
    _cut: bool
    searcher: Any
    query: Any  # the PreparedQuery

    def _search_lost(self, frame: np.ndarray, index: int, near: Look | None) -> Track:
        """While lost (long-term trackers' re-detection): the last place and the highest peaks of
        the whole frame are each searched in a window, and the one the online filter finds most
        like the target is re-detected if the filter's response there reaches
        ``filter_reacquire_ratio`` of its reference (and the heat ``lost_ratio`` of its own).
        Else the target stays lost, the box coasting near its last place."""
        cfg = self.config
        assert self.center is not None and self.reference is not None and self.filter_reference is not None
        h, w = frame.shape[:2]
        centers = [] if near is not None else [self.center]
        if self.state != LOST:
            self._lost_frames, self._lost_center = 0, self.center
        else:
            self._lost_frames += 1
        if self._cut:
            self._lost_center = None
        whole = cfg.filter_candidates and self._lost_frames % cfg.redetect_every == 0
        if whole:
            heat, sizes, affine, features = self._whole_heat(frame, cfg.redetect_scales)
            radius = max(sizes[0]) / 2
            level = cfg.lost_ratio * self.reference  # weaker peaks cannot be re-detected
            for y, x in _top_peaks(heat.max(axis=0), cfg.filter_candidates, radius):
                if heat[:, y, x].max() >= level:
                    centers.append(self._whole_point(affine, x, y, sizes[0][0]))
        # After a scene cut the new shot may show the target at another size: on the frames the
        # whole frame is searched, each place is looked at in windows for a few sizes, and the
        # filter picks among them all (on every lost frame, a loss after a cut cost 3x: Crossing
        # and Soccer with cuts at 37 and 31 frames/s instead of 53 and 55).
        heights = [self.height * f for f in (cfg.cut_sizes if self._cut and whole else (1.0,))]
        croppable = whole and self._can_crop(affine, sizes, heights)
        if croppable and cfg.candidate_screen > 0 and not cfg.lost_crops:
            centers = self._screen(centers, 0 if near is not None else 1, heat, features, affine)
        places = [c for c in centers for _ in heights]
        if croppable and cfg.lost_crops:
            # The windows cut from the whole frame's maps: no encoding beyond the whole frame's.
            looks = ([near] if near is not None else []) + [
                self._crop_look(heat, features, affine, center) for center in centers]
        else:
            looks = ([near] if near is not None else []) + (
                self._look(frame, places, heights * len(centers)) if centers else [])
        chosen = [look for look in looks if self._reacquires(look) and not self._holds_nothing(look, frame)]
        if chosen:
            best = max(chosen, key=lambda look: (look.confidence or 0.0, look.peak))
            return self._hold(frame, index, best, REDETECTED, False)
        # Not re-detected: follow the best evidence near the last place (as a tracker coasts), but
        # learn nothing from it; a covered target comes back there, a changed one may be kept.
        # The score's own peak, not the filter's (refine_radius): on a cover the filter's response
        # is noise, and following it walked the box off (generated video: 40 px off after 10
        # frames covered against 17, the target's return then re-detected a frame late).
        here = looks[0]
        self.center = self._frame_point(here, point=(here.y, here.x))
        self.state = LOST
        box = box_from(self.center, self.box_size(), w, h)
        return Track(index, LOST, box, here.peak, here.heat[here.s], here.affine)

    def _rescued(self, frame: np.ndarray, look: Look) -> Look | None:
        """Where the held window was just counted lost: the last place looked at again with the box
        at each of ``rescue_sizes`` and turned by each of ``rescue_turns``, and the best of those
        looks that meets the re-detection bars, held at its size and turn (a box fallen behind the
        target's growth, or a target turned away from the query, loses the witnesses before they
        can follow); else None."""
        cfg = self.config
        assert self.center is not None
        if not cfg.rescue_sizes and not cfg.rescue_turns:
            return None
        heights = [self.height * factor for factor in cfg.rescue_sizes] + [self.height] * len(cfg.rescue_turns)
        angles = [self.angle] * len(cfg.rescue_sizes) + [self.angle + turn for turn in cfg.rescue_turns]
        looks = self._look(frame, [self.center] * len(heights), heights, angles)
        sized, turned = looks[:len(cfg.rescue_sizes)], looks[len(cfg.rescue_sizes):]
        held = [candidate for candidate in sized if self._meets_bars(candidate, cfg.filter_reacquire_ratio)]
        if held:
            return max(held, key=lambda candidate: candidate.peak)
        # A turn is judged mainly by the siamese heat (the upright query cannot drift); the online
        # filter learned the target's context as it stood, which a turned window turns too, so it
        # is asked only for the lower turn_filter bar.
        assert self.reference is not None
        turned = [candidate for candidate in turned if candidate.peak >= cfg.turn_heat * self.reference
                  and candidate.peak >= cfg.turn_margin * look.peak
                  and (self.filter_reference is None
                       or (candidate.confidence or 0.0) >= cfg.turn_filter * self.filter_reference)]
        # Held, a turned look sets the target's angle and the online filter afresh (_hold).
        return max(turned, key=lambda candidate: candidate.peak) if turned else None

    def _holds_nothing(self, look: Look, frame: np.ndarray) -> bool:
        """Whether the box ``look`` would hold lies wholly outside the frame (the target left it) or
        is one flat colour (search_inputs.flat_region): such a look is never held nor re-detected.
        Its window sees the frame's edge pixels replicated, which can go on matching the query (a
        target of horizontal bands leaving sideways kept 0.8 of its reference heat 40 px beyond the
        edge, "tracking" an empty box); a flat frame's features match a reference heat as flat (a
        grey video given a --box was "re-detected" in 8 of its 10 frames)."""
        size = turned_size(look.height * self.aspect, look.height, look.angle)
        box = box_from(self._frame_point(look, point=look.shown), size, *frame.shape[1::-1])
        return box[2] <= box[0] or box[3] <= box[1] or self._flat(frame, box)

    def _flat(self, frame: np.ndarray, box: Sequence[float]) -> bool:
        """Whether ``box`` is flat in ``frame`` for a textured query (a flat query matches flat boxes)."""
        return flat_for(self.query, frame, box)

    def _reacquires(self, look: Look) -> bool:
        """Whether a look found while lost is the target again (see far_reacquire_ratio)."""
        cfg = self.config
        assert self.reference is not None and self.filter_reference is not None
        filter_ratio = cfg.filter_reacquire_ratio
        if cfg.far_reacquire_ratio > 0 and self._lost_center is not None:
            point = self._frame_point(look)
            # The target moves while unseen: the radius grows with the frames it has been lost.
            radius = (cfg.far_radius + cfg.far_growth * self._lost_frames) * self.height
            if math.dist(point, self._lost_center) > radius:
                filter_ratio = max(filter_ratio, cfg.far_reacquire_ratio)
        return self._meets_bars(look, filter_ratio)

    def _meets_bars(self, look: Look, filter_ratio: float) -> bool:
        """Whether a look's heat reaches ``lost_ratio`` of its reference and the filter's response
        ``filter_ratio`` of its own (where there is a filter)."""
        assert self.reference is not None
        if look.peak < self.config.lost_ratio * self.reference:
            return False
        return self.filter_reference is None or (look.confidence or 0.0) >= filter_ratio * self.filter_reference

    def _screen(self, centers: list[tuple[float, float]], keep: int, heat: np.ndarray,
                features: np.ndarray, affine: np.ndarray) -> list[tuple[float, float]]:
        """``centers`` less the peaks (after the first ``keep``: the last place, whose window the box
        coasts on) whose window cut from the whole frame's maps scores under ``candidate_screen`` of
        the filter's reference: those are not sampled and encoded again (see candidate_screen)."""
        assert self.filter_reference is not None
        bar = self.config.candidate_screen * self.filter_reference
        return centers[:keep] + [center for center in centers[keep:]
                                 if (self._crop_look(heat, features, affine, center).confidence or 0.0) >= bar]

    def _can_crop(self, affine: np.ndarray, sizes: list[tuple[int, int]], heights: list[float]) -> bool:
        """Whether the whole frame's maps were made as the windows' would be (the same zoom, within
        the rounding of the frame's resampled size; the same template sizes), so that windows can
        be cut from them (lost_crops)."""
        zoom = self.template_size[0] / self.height
        return (self.scale_bias is not None and heights == [self.height] and self.angle == 0.0
                and sizes == self._sizes(self.scales)
                and abs(affine[0, 0] / zoom - 1) < 0.01 and abs(affine[1, 1] / zoom - 1) < 0.01)

    def _crop_look(self, heat: np.ndarray, features: np.ndarray, affine: np.ndarray,
                   center: tuple[float, float]) -> Look:
        """The window around ``center`` cut from the whole frame's heat (S x H x W) and stride-8
        features (C x h x w), edges replicated: its corner on the feature grid (the window's centre
        within 4 heat pixels of ``center``), scored as a sampled window is, with the motion prior
        moved onto ``center`` (as a window sampled around it has it)."""
        side = self.window_side
        half = side / 2
        ax, ay = affine[0, 0], affine[1, 1]
        x0 = GRID * round((center[0] * ax - half) / GRID)
        y0 = GRID * round((center[1] * ay - half) / GRID)
        window_heat = _crop(heat, y0, x0, side)
        window_features = _crop(features, y0 // GRID, x0 // GRID, side // GRID)
        # The window's affine (frame -> window pixels) and centre, as crop_affine's convention.
        window_affine = np.array([[ax, 0.0, 0.5 * (ax - 1) - x0], [0.0, ay, 0.5 * (ay - 1) - y0]])
        window_center = ((x0 + half) / ax, (y0 + half) / ay)
        prior = shift_map(self.prior, np.array([center[0] * ax - half - x0, center[1] * ay - half - y0]))
        return self._score(window_center, self.height, window_affine, window_heat, window_features, prior)

    def _whole_heat(self, frame: np.ndarray, scales: Sequence[float]
                    ) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray, np.ndarray]:
        """Heat of the whole frame resampled so the target, at its last known size (at first: the
        query's pixel size), appears at the template's size: (S x H x W heat, template sizes, the
        2 x 3 affine from frame pixels to the heat's, the C x h x w stride-8 features)."""
        cfg = self.config
        h, w = frame.shape[:2]
        zoom = min(self._zoom(), cfg.redetect_max_side / max(w, h))
        if cfg.redetect_max_zoom > 0 and self.center is not None:
            # Re-detection: the frame no more magnified than redetect_max_zoom (coarse), the peaks'
            # windows then sampled at the windows' zoom (fine; see TemporalConfig.redetect_max_zoom).
            zoom = min(zoom, cfg.redetect_max_zoom)
        out_w, out_h = max(32, round(w * zoom)), max(32, round(h * zoom))
        medium = cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_AREA if zoom < 1
                            else cv2.INTER_LINEAR)
        sizes = self._sizes(scales)
        if zoom < self._zoom():  # the frame was capped (redetect_max_side / _zoom): shrink the templates
            sizes = [(max(8, round(sh * zoom / self._zoom())), max(8, round(sw * zoom / self._zoom())))
                     for sh, sw in sizes]
        sizes = [(min(sh, out_h), min(sw, out_w)) for sh, sw in sizes]
        affine = np.array([[out_w / w, 0, 0], [0, out_h / h, 0]], np.float64)
        heat, features = self.net.heat_and_features(medium, sizes)
        return heat, sizes, affine, features

    def _whole_point(self, affine: np.ndarray, x: int, y: int, template_height: int) -> tuple[float, float]:
        """The object's centre in the frame for a whole-frame heat peak at (x, y) of a template
        ``template_height`` tall (its peak sits peak_offset, scaled, off the centre)."""
        dx, dy = self.peak_offset * template_height / self.template_size[0]
        return (x + 0.5 - dx) / affine[0, 0], (y + 0.5 - dy) / affine[1, 1]

    def _whole(self, frame: np.ndarray, index: int, w: int, h: int) -> Track:
        """The whole frame searched for its highest peak: the first acquisition, and re-detection
        when no online filter is there to tell the target from look-alikes."""
        cfg = self.config
        if self.center is None and cfg.acquire_every > 0:
            return self._acquire(frame, index, w, h)
        heat, sizes, affine, _ = self._whole_heat(
            frame, cfg.acquire_scales if self.center is None else cfg.redetect_scales)
        s, y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        peak = float(heat[s, y, x])
        center = self._whole_point(affine, x, y, sizes[s][0])
        height = sizes[s][0] / affine[1, 1]
        box = box_from(center, turned_size(height * self.aspect, height, self.angle), w, h)
        level = self.reference * cfg.reacquire_ratio if self.reference is not None else None
        if (level is None or peak >= level) and not self._flat(frame, box):
            if level is not None:
                self.recent.append(peak)
            self.center, self.height, self.state = center, height, REDETECTED
            return Track(index, REDETECTED, box, peak, heat[s], affine)
        self.state = LOST
        return Track(index, LOST, box, peak, heat[s], affine)
