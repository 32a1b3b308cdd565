"""The temporal mode's first acquisition without a box (a mixin of pipelines/temporal.py's
:class:`TemporalSearcher`; see ``TemporalConfig.acquire_every`` and ``acquire_confirm``).

The still-image search (heat map, candidates verified geometrically, its calibrated threshold) is
tried on the first frame and every ``acquire_every``-th after it. Where it reports the query, its
top detection is the target. Where it does not, its best guess is followed as a *hypothesis*: a
tracker of its own, started at that box, whose box is shown while the frames are still counted
lost; the hypothesis becomes the target once the still search's best lands on it at
``acquire_confirm`` tries in a row, each with ``acquire_inliers`` geometric inliers. A best guess
elsewhere starts a new hypothesis there. While the tries find nothing strong (an absent query), they
back off (``acquire_patience``, ``acquire_backoff``); a scene cut brings a try at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Sequence

import numpy as np

from pipelines.temporal_track import LOST, REDETECTED, Track
from pipelines.window_geometry import box_from

logger = logging.getLogger(__name__)

# Attributes the adopted hypothesis does not bring: the frame count and acquisition's own state.
_OWN = ("index", "_guess", "_hypothesis", "_agreed", "_blank_tries", "_until_try")


def _heat(detection: Any) -> float:
    """A still-search detection's heat (its score is fused where verification ran): the temporal
    mode's lines carry the heat on every frame, one scale."""
    return float(detection.heat if detection.heat is not None else detection.score)


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def lands_on(box: Sequence[float], held: Sequence[float]) -> bool:
    """Whether ``box``'s centre lies within half the taller box's height of ``held``'s."""
    reach = max(box[3] - box[1], held[3] - held[1]) / 2
    return math.dist(_centre(box), _centre(held)) <= reach


class Acquisition:
    """:meth:`_acquire` for :class:`pipelines.temporal.TemporalSearcher`, which sets the attributes
    named here."""

    config: Any
    searcher: Any
    query: Any
    center: tuple[float, float] | None
    state: str
    _guess: tuple[tuple[int, ...], float] | None
    _hypothesis: Any  # a TemporalSearcher started at the still search's best guess, or None
    _agreed: int  # tries in a row the still search's best landed on the hypothesis
    _blank_tries: int  # tries in a row with no report and no strong best guess (acquire_backoff)
    _until_try: int  # frames until the still search is tried again
    _place: Callable[[Sequence[float]], None]
    box_size: Callable[[], tuple[float, float]]

    def _acquire(self, frame: np.ndarray, index: int, w: int, h: int) -> Track:
        """One frame before the first acquisition (see the module docstring): the target found
        (re-detected), or the frame lost with the hypothesis's box (else the last best guess)."""
        cfg = self.config
        tried = self._until_try <= 0
        self._until_try -= 1
        # The hypothesis follows its object between tries, as the target would be followed.
        followed = self._hypothesis.step(frame) if self._hypothesis is not None else None
        if tried:
            result = self.searcher.find_many(self.query, [frame], keep_images=False)[0]
            if result.detections:
                found = result.detections[0]
                self._hypothesis = None
                self._place(found.box)
                self.state = REDETECTED
                return Track(index, REDETECTED, box_from(self.center, self.box_size(), w, h), _heat(found))
            best = result.best
            self._guess = None if best is None else (tuple(int(v) for v in best.box), _heat(best))
            strong = best is not None and best.inliers >= cfg.acquire_inliers
            self._back_off(blank=not strong)
            if best is not None and cfg.acquire_confirm > 0:
                if followed is not None and followed.best_box is not None and lands_on(best.box, followed.best_box):
                    self._agreed = self._agreed + 1 if strong else 0
                else:
                    self._hypothesis = type(self)(self.searcher, self.query, cfg, initial_box=best.box,
                                                  box_checked=True)
                    followed = self._hypothesis.step(frame)
                    self._agreed = int(strong)
                if self._agreed >= cfg.acquire_confirm:
                    return self._adopt(followed, index)
        if followed is not None and followed.best_box is not None:
            return Track(index, LOST, followed.best_box, self._guess[1] if self._guess else 0.0)
        box, score = self._guess if self._guess is not None else (None, 0.0)
        return Track(index, LOST, box, score)

    def _back_off(self, blank: bool) -> None:
        """Schedule the next try after one that reported nothing: ``acquire_every`` frames on, the
        gap doubled with each blank try from the ``acquire_patience``-th in a row on, at most
        ``acquire_backoff`` times."""
        cfg = self.config
        self._blank_tries = self._blank_tries + 1 if blank else 0
        doublings = max(0, self._blank_tries - cfg.acquire_patience + 1)
        self._until_try = cfg.acquire_every * min(cfg.acquire_backoff, 2 ** min(doublings, 30)) - 1
        if doublings:  # -v shows why the still search is tried more and more rarely
            logger.debug("acquisition: %d blank tries in a row; the next in %d frames", self._blank_tries,
                         self._until_try + 1)

    def _acquire_after_cut(self) -> None:
        """A scene cut before the first acquisition: the new shot may hold the query, so the still
        search is tried on this frame and the back-off starts afresh."""
        self._blank_tries, self._until_try = 0, 0

    def _adopt(self, followed: Track, index: int) -> Track:
        """The hypothesis becomes the target: its place, size, levels and learned filters are this
        searcher's from now on (it has followed the target since its try), the frame re-detected."""
        hypothesis = self._hypothesis
        own = {name: getattr(self, name) for name in _OWN}
        self.__dict__.update({k: v for k, v in vars(hypothesis).items() if k not in _OWN})
        self.__dict__.update(own)
        self._hypothesis, self.state = None, REDETECTED
        return dataclasses.replace(followed, frame=index, state=REDETECTED)
