"""Temporal search: hold one target through a video, re-detect it in the whole frame when lost.

Each frame is searched in a *window* around where the target is expected (the previous box's
centre, a few times its size, resampled so the target appears at the template's size), at three
nearby scales in one forward pass of the medium, with a prior that favours small moves (a Hann
window blended into the heat, as SiamFC does) and small scale changes (a penalty on the off
scales, a damped size update). The box keeps the query's aspect.

Two classical trackers' strengths are borrowed. An online correlation filter learned on the
window's own stride-8 features (pipelines/online_filter.py; MOSSE/DSST form, taught on confident
frames) re-ranks the places the siamese heat finds query-like, telling the target from look-alikes
near it; its response is gated by the heat so that it cannot hold on to a static background. A
1-D scale filter on gradient cells (pipelines/scale_filter.py, DSST) follows the target's size,
within a band around a slow average of it (with ``band_trust``, the band moves with the size
where the scale filter is sure of it, or with ``band_follow`` with the size's steady trend: a
steady zoom outruns the slow average).

The target counts as *lost* when the windowed peak's heat falls below ``lost_ratio`` of the
reference heat (the median peak of the last frames held), or when the online filter's response
there falls below ``filter_lost_ratio`` of its own reference while the heat is not sure either
(under ``reacquire_ratio``): a covering object keeps much of the siamese heat but little of the
filter's response, and the filter alone could have learned a background. On that frame the last
place is first looked at again with the box ``rescue_sizes`` larger, and a look there that meets
the re-detection bars is held at its size (a box fallen behind a fast-growing target). While lost (the long-term
trackers' re-detection, LCT-style), each frame searches a window at the last place and, on every
``redetect_every``-th frame, windows at the whole frame's highest peaks, all in one batch (a peak
whose window, cut from the whole frame's own maps, scores far under the filter's reference is not
sampled again: ``candidate_screen``); the window the filter finds most like the target is
*re-detected* where its response reaches ``filter_reacquire_ratio`` of the reference (hysteresis:
re-acquiring asks more than holding), or ``far_reacquire_ratio`` far from where it was lost unless
the scene cut since (pipelines/temporal_lost.py). Until then the box coasts on the best evidence
near the last place, and nothing is learned. With ``probation_frames`` (off by default), for that many frames
after a re-detection holding the target asks the filter for the re-detection bar, not the looser
lost bar: a wrong re-detection (a look-alike, a covering patch) is dropped within a few frames
instead of held. The online filter learns only from confident frames. Without it the
lost target is searched in the whole frame until a peak reaches ``reacquire_ratio``. Without a box
the target is first acquired with the still-image search's help (pipelines/temporal_acquire.py).

The query's own template stays the anchor: an optional running template (``template_rate`` > 0)
blends the last confident boxes' pixels into it, never more than half.

Usage::

    tracker = TemporalSearcher(searcher, searcher.prepare("query.png"))
    for frame in frames:                      # RGB uint8, same size
        track = tracker.step(frame)           # .best_box .best_score .state .heat ...
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, Sequence

import cv2
import numpy as np

from augment.picture_arrays import ArrayInputError, load_rgb
from augment.validation import check_instance
from pipelines.camera_motion import CameraPrior
from pipelines.online_filter import CorrelationFilter
from pipelines.scale_filter import ScaleFilter
from pipelines.search_inputs import check_min_side
from pipelines.temporal_config import TemporalConfig
from pipelines.temporal_acquire import Acquisition
from pipelines.temporal_adapt import SCALE_MEMORY, Adaptation
from pipelines.temporal_lost import LostSearch, scene_cut, thumbnail
from pipelines.temporal_track import (GRID, LOST, REDETECTED, STATES, TRACKING, Look, RecentLevels, Track,
                                      TrackSummary)
from pipelines.template_heat import TemplateHeat
from pipelines.temporal_windows import WindowLooks
from pipelines.window_geometry import box_from, check_start_box, hann_window, part_inside, turned_size

logger = logging.getLogger(__name__)

__all__ = ["LOST", "REDETECTED", "STATES", "TRACKING", "Look", "TemporalConfig", "TemporalSearcher",
           "Track", "TrackSummary"]


# ----------------------------------------------------------------------------------------------
# The state machine


class TemporalSearcher(LostSearch, Adaptation, Acquisition, WindowLooks):
    """Holds one query's target through a sequence of same-size frames (see the module docstring).

    ``query``: prepared (``searcher.prepare``) or what ``prepare`` reads. ``initial_box`` ([x0, y0,
    x1, y1]) starts tracking at once on the first frame (e.g. the box the query was cut from); without
    it the first frame is searched whole. A box that is no box or lies outside the first frame is a
    ValueError naming it (window_geometry.check_start_box; ``box_checked``: a still search's box).
    """

    def __init__(self, searcher: Any, query: Any, config: TemporalConfig | None = None,
                 initial_box: Sequence[float] | None = None, *, box_checked: bool = False) -> None:
        if not callable(getattr(searcher, "prepare", None)):  # None, a path: an AttributeError below
            raise TypeError(f"searcher must be a Searcher (pipelines.search.Searcher()), not {type(searcher).__name__}")
        query = searcher.prepare(query)  # a PreparedQuery as it is; a path or an array read once
        self._check_box = initial_box is not None and not box_checked
        if self._check_box:
            initial_box = check_start_box(initial_box, None, None)
        if config is not None:  # a dict: an AttributeError later
            check_instance(config, TemporalConfig, "config")
        self.config = config or TemporalConfig()
        cfg = self.config
        qh, qw = query.size
        grow = cfg.template_side / math.sqrt(qh * qw)
        self.template_size = (max(16, round(qh * grow)), max(16, round(qw * grow)))
        self.aspect = qw / qh
        th, tw = self.template_size
        pad = (tw + th) / 2
        side = cfg.context * math.sqrt((tw + pad) * (th + pad))
        self.window_side = max(32, int(math.ceil(side / 8)) * 8)
        self.anchor_rgb, self.mask = query.rgb, query.mask
        self.net = TemplateHeat(searcher, query.rgb, query.mask)
        self.searcher, self.query = searcher, query  # the still-image search (acquire_every)
        self._guess: tuple[tuple[int, ...], float] | None = None  # the still search's best guess (box, score)
        self._hypothesis: TemporalSearcher | None = None  # followed from that guess (acquire_confirm)
        self._agreed = 0  # tries in a row the still search's best landed on the hypothesis
        self._blank_tries = 0  # tries in a row that found nothing strong (acquire_backoff)
        self._until_try = 0  # frames until the still search is tried again (0: on this frame)
        if cfg.onnx_backbone:  # encoded by onnxruntime (pipelines/onnx_backbone.py), if it is there
            self.net.use_onnx()
        self.scales = (1.0 / cfg.scale_step, 1.0, cfg.scale_step) if cfg.scale_step > 1 else (1.0,)
        self.prior = hann_window(self.window_side, self.window_side)
        self._weighted_prior = cfg.window_influence * self.prior[None]  # the score's prior term
        self.peak_offset = self.net.peak_offset(self.template_size, self.window_side)
        self.center: tuple[float, float] | None = None
        # Target height in frame pixels (width = height x aspect); before the target is found, the
        # query's own pixel height is the guess.
        self.height = float(qh)
        # Peak heats of the last frames held: their median is the reference the levels scale.
        # (Not the first frame's alone: when the query was cut from it, it matches exactly.)
        self.recent = RecentLevels(cfg.reference_frames)
        # The online filter's responses where the target was held: the same for the filter.
        self.recent_confidence = RecentLevels(cfg.reference_frames)
        self._lost_frames = 0  # frames since the target was lost
        self._lost_center: tuple[float, float] | None = None  # where it was lost
        self._thumb: np.ndarray | None = None  # the last frame's thumbnail (scene cuts)
        self._cut = False  # a scene cut since the target was last held
        self._probation = 0  # frames of probation left after a re-detection (probation_frames)
        self._slow_height: float | None = None  # the size's slow average (size_band)
        self._size_trend = 0.0  # the size's recent log change a frame (band_follow)
        self._trend_height: float | None = None  # the last frame's height held (band_follow)
        self.scale_bias: np.ndarray | None = None  # per scale, set on the first windowed frame
        # The target's in-plane turn (degrees) against the query's, which the windows undo
        # (TemporalConfig.rescue_turns).
        self.angle = 0.0
        self.state = LOST
        self.index = 0
        self._frame_size: tuple[int, int] | None = None  # (w, h) of the first frame; every frame's
        self._initial = None if initial_box is None else tuple(float(v) for v in initial_box)
        self._confident_frames = 0
        self.motion = CameraPrior(cfg.camera_frames, prior=cfg.camera_prior) if cfg.camera_motion else None
        self._fresh = False  # the target was given by a box on this frame
        self._running: np.ndarray | None = None
        self.filter: CorrelationFilter | None = None
        self.sizer: ScaleFilter | None = None
        # The scale filter's response peaks on confident frames, and whether this frame's estimate
        # reached band_trust of their median (a sure size change: see band_trust).
        self._scale_peaks: deque[float] = deque(maxlen=SCALE_MEMORY)
        self._scale_sure = False

    @property
    def reference(self) -> float | None:
        return self.recent.median

    @property
    def filter_reference(self) -> float | None:
        return self.recent_confidence.median

    # -- one frame ------------------------------------------------------------------------------

    def step(self, frame: np.ndarray) -> Track:
        """Search one RGB frame; returns the frame's :class:`Track`. A frame over the pixel limit is a
        :class:`augment.pixel_limit.PixelLimitError`, as a video's frames are. Frames are read as
        :meth:`pipelines.search.Searcher.find` reads a medium (grey or RGBA, uint16 or float in [0, 1]
        are converted; an array that is not a picture is a ValueError naming it; one under 8 px a side an
        InputError, as the command's), and must keep the first frame's size: one of another size is a
        ValueError (its boxes would be the other size's)."""
        frame = load_rgb(frame, "frame")  # uint8 RGB: as given, no copy
        h, w = frame.shape[:2]
        if self._frame_size is None:
            check_min_side(f"frame {self.index}", w, h, what="video frame")  # as the command's: 4x4 was searched
            if self._check_box and self._initial is not None:  # where the first frame's size is known
                check_start_box(self._initial, w, h)
            self._frame_size = (w, h)
        elif self._frame_size != (w, h):
            raise ArrayInputError(f"frame {self.index}: {w}x{h}, but the frames before it are "
                                  f"{self._frame_size[0]}x{self._frame_size[1]} (one TemporalSearcher "
                                  "holds one video of same-size frames)")
        index, self.index = self.index, self.index + 1
        if self._initial is not None:  # the part in view: a box overhanging the frame was held centred
            self._place(part_inside(self._initial, w, h))  # outside it, its box shown empty on frame 1
            self._initial = None
            self.state = TRACKING
            self._fresh = True
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame  # made once
        thumb = thumbnail(grey)
        cut = scene_cut(thumb, self._thumb, self.config.cut_correlation)
        self._cut = self._cut or cut
        self._thumb = thumb
        if cut and self.center is None:
            self._acquire_after_cut()
        if self.motion is not None:  # the camera's shift, as far as the target shares it
            fresh = self._fresh
            moved = self.motion.predict(grey, None if fresh else self.center, cut)
            self.center = self.center if fresh else moved
            if self._lost_center is not None:
                self._lost_center = (self._lost_center[0] + self.motion.move[0],
                                     self._lost_center[1] + self.motion.move[1])
        near = None
        if self.center is not None and self.state != LOST:
            near = self._look(frame, [self.center])[0]
            # On a cut the last place says nothing of where the target is: its window only
            # competes with the whole frame's peaks, at the re-detection bar (see cut_redetect).
            held = not (cut and self.config.cut_redetect and not self._fresh
                        and self.filter_reference is not None)
            track = self._windowed(frame, index, near) if held else None
            if track is not None:
                return track
        if self.center is not None and self.filter_reference is not None:
            return self._search_lost(frame, index, near)
        return self._whole(frame, index, w, h)

    def _place(self, box: Sequence[float]) -> None:
        """The target's centre and height from a box (x0, y0, x1, y1) of any aspect: the height of
        the box of the query's aspect with the same area."""
        x0, y0, x1, y1 = box
        self.center = ((x0 + x1) / 2, (y0 + y1) / 2)
        self.height = max(2.0, math.sqrt(max(0.0, (x1 - x0) * (y1 - y0)) / self.aspect))

    def box_size(self) -> tuple[float, float]:
        """(w, h) of the box shown: the upright box around the target turned by ``angle``."""
        return turned_size(self.height * self.aspect, self.height, self.angle)

    def _windowed(self, frame: np.ndarray, index: int, look: Look) -> Track | None:
        """The target held in the window around its last place, or None where it is lost there."""
        fresh = self._fresh
        if self._fresh:
            # The frame the target was found (or given) in: the query may have been cut from it,
            # an exact match that would set the reference too high; the next frame sets it.
            self._fresh = False
        elif self._holds_nothing(look, frame):
            return None  # the target left the frame, or the box is flat: lost, however well it matches
        elif self.reference is not None and self._lost(look):
            rescued = self._rescued(frame, look)
            if rescued is None or self._holds_nothing(rescued, frame):
                return None  # lost: the caller searches on
            look = rescued
            self._remember(look)
        else:
            self._remember(look)
            self._probation = max(0, self._probation - 1)
        return self._hold(frame, index, look, TRACKING, fresh)

    def _lost(self, look: Look) -> bool:
        cfg = self.config
        assert self.reference is not None
        if look.peak < cfg.lost_ratio * self.reference:
            return True
        # The filter's doubt counts where the query's own heat is not sure either: the filter can
        # drift (learn a background), the query cannot. On probation the bar is re-detection's.
        level = self.filter_reference
        ratio = cfg.filter_reacquire_ratio if self._probation > 0 else cfg.filter_lost_ratio
        return (level is not None and look.confidence is not None
                and look.confidence < ratio * level
                and look.peak < cfg.reacquire_ratio * self.reference)

    def _is_confident(self, look: Look) -> bool:
        """Both witnesses at least ``filter_update_ratio`` of their references: a frame to learn
        from (a partly covered target would teach the filters the cover, and lower the levels)."""
        ratio = self.config.filter_update_ratio
        if self.reference is None or look.peak < ratio * self.reference:
            return False
        level = self.filter_reference
        return level is None or look.confidence is None or look.confidence >= ratio * level

    def _remember(self, look: Look) -> None:
        """The look's heat (and filter response) join the references."""
        self.recent.append(look.peak)
        if look.confidence is not None:
            self.recent_confidence.append(look.confidence)

    def _hold(self, frame: np.ndarray, index: int, look: Look, state: str, fresh: bool) -> Track:
        """Move the target to where ``look`` peaks; teach the filters on confident frames."""
        cfg = self.config
        side = self.window_side
        (y, x), peak = look.point, look.peak
        angle = (look.angle + 180.0) % 360.0 - 180.0
        turned, self.angle = angle != self.angle, angle  # only a turned rescue changes the angle
        dx = dy = 0.0
        if fresh:  # the box is given (or just found whole): the target sits in the window's middle
            dx, dy = x + 0.5 - side / 2, y + 0.5 - side / 2
        if state == REDETECTED:
            self._probation = cfg.probation_frames
        if turned and self.filter is not None:
            # Rescued turned: the filter set afresh from this window, its level rebuilt from here.
            self.filter.initialise([look.features], [((y + 0.5) / GRID, (x + 0.5) / GRID)])
            self.recent_confidence = RecentLevels(cfg.reference_frames)
        elif state == TRACKING:
            self._teach(look.features, (y + 0.5 - dy) / GRID, (x + 0.5 - dx) / GRID, self._is_confident(look),
                        (frame, look))
        self.center = self._frame_point(look, dx, dy)
        self.height = look.height  # a re-detection may have found the target at another size
        # A larger template matching means the target looks larger in the window.
        self.height *= 1.0 + cfg.scale_rate * (self.scales[look.s] - 1.0)
        self._rescale(frame, peak, fresh)
        self.height = float(np.clip(self.height, 4.0, 4.0 * max(frame.shape[:2])))
        if cfg.size_band > 1.0:  # within the band around the slow average (see size_band)
            if fresh or self._slow_height is None or self._scale_sure:
                # A sure estimate (band_trust) moves the band with it: a zoom is followed at the
                # scale filter's pace, not the slow average's.
                self._slow_height = self.height
            self.height = float(np.clip(self.height, self._slow_height / cfg.size_band,
                                        self._slow_height * cfg.size_band))
            self._slow_height += cfg.size_rate * (self.height - self._slow_height)
            if cfg.band_follow > 0:  # the band follows the size's steady trend (see band_follow)
                before = self._trend_height
                if state == TRACKING and not fresh and before is not None:
                    change = math.log(self.height / before)
                    self._size_trend += 0.1 * (change - self._size_trend)
                    self._slow_height *= math.exp(float(np.clip(self._size_trend, -cfg.band_follow, cfg.band_follow)))
                elif fresh:
                    self._size_trend = 0.0
                self._trend_height = self.height
        self.state, self._cut = state, False
        if self.motion is not None and state == TRACKING and not fresh:
            self.motion.observe(self.center)
        # The box shown: centred on the refined point (refine_radius), whether or not the search
        # goes on from it (refine_feedback); the given box as given.
        shown = self.center
        if look.shown is not None and not fresh:
            shown = self._frame_point(look, dx, dy, point=look.shown)
        box = box_from(shown, self.box_size(), *frame.shape[1::-1])
        if state == TRACKING:
            self._update_template(frame, box, peak)
        return Track(index, state, box, peak, look.heat[look.s], look.affine)
