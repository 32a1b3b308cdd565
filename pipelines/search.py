"""Find a query object (e.g. a jacket's catalogue photo) in images and video frames.

Python API; the ``synth search`` command is a thin layer over it::

    from pipelines.search import Searcher, find

    searcher = Searcher()                        # the shipped head if one ships, else untrained
    result = searcher.find("jacket.png", "street.jpg")   # paths, arrays or PIL images (augment.picture_arrays)
    for det in result.detections:                # above the threshold, highest score first
        print(det.box, det.score, det.area)      # box = [x0, y0, x1, y1] in medium pixels
    print(result.best)                           # the top peak, whatever its score
    heat = result.heatmap                        # float32 H x W in [0, 1] at the medium's size
    picture = result.highlight()                 # RGB: object pixels kept, the rest dimmed
    line = result.to_json()                      # its detections.jsonl line (less "highlight", a file)

    result = find("jacket.png", "street.jpg", threshold=0.5)   # one-off convenience
    baseline = Searcher(untrained=True)          # pretrained backbone + correlation, no training

An alpha channel in the query (or ``query_mask=``) limits the search kernel to the object's pixels,
so a catalogue photo's white background does not match white walls. Arrays (and PIL images) are
held to the pixel limit as files are (``SYNTH_MAX_MEGAPIXELS``, :mod:`augment.pixel_limit`): over
it, a ValueError naming the argument and its size, before any copy. Objects from
``min(query_scales)`` to ``max(query_scales)`` times the query's size are found (the network's own
(query, medium) scale pairs cover the gaps between pyramid levels); with ``query_scales=None`` they
are chosen per query and medium size (0.5, 1, 2, and for a query large against the medium smaller
octaves down to an object 1/16 of the medium's shorter side: :func:`pipelines.search_levels.auto_scales`); small queries are searched in
the medium up-sampled, large ones in the medium shrunk (:mod:`pipelines.search_maps`). Maps become
detections in :mod:`pipelines.detections`; highlights are drawn by :mod:`pipelines.highlight`.
"""

from __future__ import annotations

import logging
import numbers
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from augment.imageio import InputError
from augment.picture_arrays import ArrayInputError, ImageLike, load_rgb, picture_array  # noqa: F401 (API)
from augment.blas_threads import limit_blas_threads
from augment.system import tune_malloc
from pipelines.calibration import Calibration, CalibrationCase, calibrate_threshold  # noqa: F401 (API)
from pipelines.detections import Detection, box_iou, detect, json_score, match_counts  # noqa: F401 (API)
from pipelines.highlight import highlight, object_mask
from pipelines.search_inputs import (MIN_QUERY_INPUT_SIDE, PreparedQuery, SearchMaps,  # noqa: F401 (API)
                                     check_min_side, load_checkpoint_model, load_query, resolve_device,
                                     textured, untrained_model)
from pipelines.search_maps import (DEFAULT_MAX_SIDE, DEFAULT_QUERY_SCALES, DEFAULT_SCALES,  # noqa: F401 (API)
                                   MAX_QUERY_SCALE, MIN_QUERY_SCALE, NetworkSearch, auto_scales, check_scales)

logger = logging.getLogger(__name__)
_UNSEEN_SAID = threading.Lock()  # a search's small-query warning taken by one thread of those searching at once

# Heat threshold of the untrained network's heat map alone (`--no-verify`): F1 of detections at
# IoU >= 0.5 over 200 catalogue -> scene cases of CCP calibration photos (F1 0.715), from
# `synth calibrate --photos ../shared/data/ccp --include '05[0-9][0-9]' --categories coat,dress,skirt
# --untrained --no-verify` (0.34 before stop 19, from generated cases). The default, verified search
# takes its fusion model's own threshold (pipelines/fusion_untrained.json). A shipped head carries
# its own calibrated threshold; a checkpoint none (`synth calibrate` writes it into a report).
UNTRAINED_THRESHOLD = 0.36
DEFAULT_THRESHOLD = UNTRAINED_THRESHOLD  # the name earlier releases exported (the heat map's threshold)
# Heat peaks closer than this fraction of the smallest searched query side are one peak.
PEAK_WINDOW_FRACTION = 0.5


@dataclass
class Result:
    """What a search found in one image or frame: ``detections`` above the threshold and ``best``,
    the top peak whatever its score (where the query most likely is).

    ``threshold`` is the bar the detections' scores passed, on the scale of ``score_kind``'s scores
    ("fused": heat and verification, :mod:`pipelines.fusion`; "heat": the heat map alone);
    ``heat_threshold`` is the heat level it was carried from (the searcher's ``threshold``; the same
    number for "heat")."""

    heatmap: np.ndarray  # float32 H x W in [0, 1]
    detections: list[Detection]
    threshold: float
    best: Detection | None = None
    image: np.ndarray | None = None  # the medium (RGB uint8), kept for highlight()
    source: str | None = None
    query: str | None = None
    frame: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more fields for detections.jsonl
    score_kind: str = "heat"
    heat_threshold: float | None = None  # None: ``threshold`` (a heat score's bar is the heat level)

    @property
    def height(self) -> int:
        return int(self.heatmap.shape[0])

    @property
    def width(self) -> int:
        return int(self.heatmap.shape[1])

    def heat_png(self) -> np.ndarray:
        """The heat map as 8-bit grey: round(clip(heat x 255)), computed in one scratch array (the
        same values as ``np.clip(heat * 255 + 0.5, 0, 255)``'s temporaries, 84 -> 15 ms at 12 MP)."""
        grey = self.heatmap * np.float32(255.0)
        grey += np.float32(0.5)
        np.clip(grey, 0, 255, out=grey)
        return grey.astype(np.uint8)

    def object_mask(self) -> np.ndarray:
        """H x W uint8, 1 on the detected objects' pixels (the heat map's, inside each box)."""
        return object_mask(self.heatmap, self.detections)

    def highlight(self, image: np.ndarray | None = None) -> np.ndarray:
        """The medium with detected objects kept, the rest dimmed and each instance outlined (with
        none, the best peak's box thinly, as the best guess)."""
        if image is None and self.image is None:
            raise ValueError("no medium image kept in this Result; pass image=")
        if image is not None:  # read as a medium is (grey, RGBA, floats...), and of the searched size
            image = load_rgb(image, "image")
            if image.shape[:2] != self.heatmap.shape:
                raise ArrayInputError(f"image: {image.shape[1]}x{image.shape[0]}, but the medium searched is "
                                      f"{self.width}x{self.height} (its boxes would be drawn elsewhere)")
        return highlight(self.image if image is None else image, self.heatmap, self.detections, self.best)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "query": self.query, "frame": self.frame,
                "width": self.width, "height": self.height, "threshold": json_score(self.threshold),
                "score_kind": self.score_kind,
                "heat_threshold": json_score(self.threshold if self.heat_threshold is None else self.heat_threshold),
                "detections": [d.to_json() for d in self.detections],
                "best": None if self.best is None else self.best.to_json(), **self.extra}


def _media(media: Sequence[Any]) -> list[np.ndarray]:
    """uint8 RGB arrays of a batch given to the API, each named by its place (as given where they
    are uint8 RGB already: no copy). An empty batch, or one of several sizes (each would be searched,
    and its boxes given, at the first medium's size), is an ArrayInputError naming it; media under
    MIN_QUERY_INPUT_SIDE px a side an InputError, as :meth:`Searcher.find`'s."""
    arrays = [load_rgb(medium, f"media[{index}]") for index, medium in enumerate(media)]
    if not arrays:
        raise ArrayInputError("media: an empty batch; give at least one image")
    height, width = arrays[0].shape[:2]
    # As find's medium (and the command's): a 4x4 batch was searched, its noise given as a detection.
    check_min_side("media[0]", width, height, what="image")
    for index, array in enumerate(arrays):
        if array.shape[:2] != (height, width):
            raise ArrayInputError(f"media[{index}]: {array.shape[1]}x{array.shape[0]}, but media[0] is {width}x{height} "
                                  "(a batch holds media of one size; search the others in a batch of their own)")
    return arrays


def _per_medium(given: Sequence[Any] | None, name: str, count: int, kind: type) -> list[Any] | None:
    """``sources`` or ``frames`` of a batch as plain ``kind`` values (None kept), or None where none are
    given (an empty list too); another count is a ValueError naming it. A numpy array of them was
    'truth value of an array is ambiguous', and its np.int64 frames no JSON number."""
    if given is None or len(given) == 0:
        return None
    if len(given) != count:
        raise ValueError(f"{name}: {len(given)} given for {count} media (one per medium)")
    return [None if value is None else kind(value) for value in given]


def load_model(checkpoint: Path | str | None, untrained: bool = False,
               state: dict[str, Any] | None = None, verify: bool = True,
               threshold_given: bool = False) -> tuple[Any, float, str]:
    """(network, its calibrated threshold, a name for it): a ``synth train`` checkpoint, the
    untrained network, or by default the head shipped with synth (:mod:`pipelines.shipped`) where
    the package holds one, else the untrained network. No head ships today: none trained on this
    machine beat the untrained network on held-out real photos (README, "Search on real photos").
    ``state``: the checkpoint already read (``synth calibrate`` reads its config first), not read again.
    ``verify``: the search asked; a shipped head's threshold calibrates one (its manifest says which),
    the other searches at the untrained network's, with a warning (none where ``threshold_given``: the
    search's own threshold is taken)."""
    from pipelines.shipped import head_ships, load_shipped, shipped_threshold

    if checkpoint is not None and untrained:
        raise InputError("pass --checkpoint or --untrained, not both")
    if checkpoint is not None:
        # A checkpoint holds no calibrated threshold (Searcher warns when none is given).
        return load_checkpoint_model(checkpoint, state), UNTRAINED_THRESHOLD, str(checkpoint)
    if untrained or not head_ships():
        return untrained_model(), UNTRAINED_THRESHOLD, "untrained"
    model, _, manifest = load_shipped()
    name = f"shipped head {manifest['sha256'][:12]}"
    threshold = shipped_threshold(manifest, verify)
    if threshold is None and not threshold_given:
        logger.warning("%s is calibrated for the %s only: searching at the untrained network's threshold "
                       "(%.2f heat); pass --threshold", name,
                       "heat map alone (--no-verify)" if verify else "verified search", UNTRAINED_THRESHOLD)
    if threshold is None:
        threshold = UNTRAINED_THRESHOLD
    return model, threshold, name


class Searcher:
    """Searches queries in media with one loaded network; see the module docstring for an example.

    ``checkpoint``: a ``synth train`` checkpoint; ``untrained``: the pretrained backbone with the
    conversion net's initial readout; neither: :func:`load_model`'s default. ``threshold`` None takes
    the network's calibrated one (a heat level). ``query_scales``: relative object sizes searched,
    as given; the default, :data:`DEFAULT_SCALES`, is :data:`DEFAULT_QUERY_SCALES` less the sizes at
    which the object would be under 1/16 of the medium (and smaller than the query), plus, for a query
    large against the medium in a frame where these find nothing (best heat under
    :data:`pipelines.search_levels.DEFAULT_EXTEND_HEAT`), the object 8x smaller than the query (a
    catalogue garment on a person in a crowd; keywords ``extend_heat``, None: off,
    ``extend_max_zoom``, ``extend_probe_ratio``, ``extend_window_ratio``: the up-sampled level only
    around the probe's best places, None: over the whole medium); None chooses them per query and medium size
    (:func:`auto_scales`, from :data:`DEFAULT_QUERY_SCALES`: slower for a query large against the
    medium, whose small sizes are searched in the medium up-sampled; the keyword ``min_object_fraction``, default 1/16, is the smallest
    object it covers against the medium's shorter side: 1/8 encodes about a third of the pixels
    for a large query, and misses more small instances); ``mirror`` (default) also searches the query
    mirrored: a garment faces either way in a scene (CCP calibration photos, heat map alone: top-1
    0.467 -> 0.833, hit at FPR <= 0.1 0.350 -> 0.683; on 20 CCP scenes the heat map took 1.54x the
    backbone instead of 1.39x). ``verify``:
    check candidates geometrically and fuse the evidence into the score (:mod:`pipelines.verify`,
    :mod:`pipelines.fusion`; ``fusion`` = a fusion model JSON other than the network's own); False
    gives the heat map's detections alone.
    """

    def __init__(self, checkpoint: Path | str | None = None, device: str | torch.device = "auto",
                 threshold: float | None = None,
                 query_scales: Sequence[float] | str | None = DEFAULT_SCALES,
                 max_side: int = DEFAULT_MAX_SIDE, amp: bool = True, untrained: bool = False,
                 mirror: bool = True, verify: bool = True, fusion: Path | str | None = None,
                 checkpoint_state: dict[str, Any] | None = None, **level_options: Any) -> None:
        tune_malloc()
        limit_blas_threads(1)  # numpy's products between torch's layers: see limit_blas_threads
        check_scales(query_scales)
        if not (isinstance(max_side, (int, np.integer)) and max_side >= MIN_QUERY_INPUT_SIDE):
            raise InputError(f"max_side must be a whole number of pixels, at least {MIN_QUERY_INPUT_SIDE}, not {max_side!r}")
        model, stored, self.model_name = load_model(checkpoint, untrained, checkpoint_state, verify,
                                                   threshold is not None)
        del checkpoint_state  # its tensors copied into the model: not held beside it
        if threshold is not None and not (isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
                                          and 0.0 < threshold < 1.0):  # a str was TypeError: '<' not supported
            raise InputError(f"threshold must be between 0 and 1, not {threshold!r}")
        if checkpoint is not None and threshold is None:
            # The untrained network's level on a trained heat map raised alarms on 90% of CCP
            # negatives (README, "Search on real photos"): say so rather than search silently.
            logger.warning("%s has no calibrated threshold: searching at the untrained network's (%.2f heat); "
                           "run `synth calibrate --checkpoint %s` and pass its report to --threshold",
                           checkpoint, stored, checkpoint)
        self.network = NetworkSearch(model, resolve_device(device), query_scales, max_side, amp,
                                     mirror=mirror, **level_options)
        # A trained conversion net predicts the object's pixels, so its heat regions can box peaks;
        # one whose residual is still zero (a head that trained only the projections, the readout
        # or the backbone's last stage) reads out correlation as the untrained network does.
        self.heat_boxes = self.model_name != "untrained" and not self.network.model.conversion.readout_only
        # The heat map's own threshold (searches without verification; benchmarks' heat-map rows).
        self.heat_map_threshold = float(threshold if threshold is not None else stored)
        self.verification = None
        if verify:
            from pipelines.fusion import VerificationStage

            self.verification = VerificationStage.create(self, checkpoint, fusion)
            # The fused search's own calibrated threshold, where its fusion model has one: verified
            # candidates outscore the heat map's, so its best cut is not the heat map's.
            # (Not a fallback: a network searched with another network's fusion keeps its own.)
            fusion_model = self.verification.model
            if fusion_model.threshold is not None and \
                    (fusion_model.model == "untrained") == (self.model_name == "untrained"):
                stored = fusion_model.threshold
        self.threshold = float(threshold if threshold is not None else stored)

    @property
    def score_threshold(self) -> float:
        """The cut on detections' scores: the threshold itself for the heat map alone, carried
        through the fusion model for the verified search (whose scores are fused)."""
        if self.verification is None:
            return self.threshold
        return self.verification.model.heat_score(self.threshold)

    # The network side, under the names earlier releases exposed.
    @property
    def model(self) -> Any:
        return self.network.model

    @property
    def device(self) -> Any:
        return self.network.device

    @property
    def query_scales(self) -> tuple[float, ...]:
        """The given scales, or the automatic range's base (see :attr:`auto_scales`)."""
        return self.network.query_scales

    @property
    def auto_scales(self) -> bool:
        """True when the scales are chosen per query and medium size (none were given)."""
        return self.network.auto_scales

    @property
    def channels_last(self) -> bool:
        return self.network.channels_last

    def _autocast(self) -> Any:
        return self.network.autocast()

    def working_size(self, height: int, width: int) -> tuple[int, int, float]:
        return self.network.working_size(height, width)

    # -- queries --------------------------------------------------------------------------------

    def prepare(self, query: ImageLike | PreparedQuery,
                query_mask: ImageLike | None = None) -> PreparedQuery:
        """Read a query once; its features are computed on first use and then reused."""
        if isinstance(query, PreparedQuery):
            if query_mask is not None:  # it was silently ignored: the prepared query keeps its own mask
                raise ValueError(f"query_mask: {query.name} is prepared with its mask already; pass the mask "
                                 "to prepare(), or the query as a path or array")
            return query
        name = str(query) if isinstance(query, (str, Path)) else "query"
        rgb, mask = load_query(query, query_mask, name)
        return PreparedQuery(name, rgb, mask)

    # -- search ---------------------------------------------------------------------------------

    def maps(self, query: ImageLike | PreparedQuery, media: Sequence[np.ndarray]) -> SearchMaps:
        """Heat and object-size maps of one query (prepared, or what :meth:`prepare` reads) in same-size
        RGB media (a batch of frames; arrays read as :func:`load_rgb` reads them); a medium over the
        pixel limit is a :class:`augment.pixel_limit.PixelLimitError` naming it."""
        return self.network.maps(self.prepare(query), _media(media))  # an array was "'int' object ..."

    def heatmaps(self, query: ImageLike | PreparedQuery, media: Sequence[np.ndarray]) -> np.ndarray:
        """Heat maps (N x H x W float32 in [0, 1]) of one query in same-size RGB media."""
        return self.maps(query, media).heat

    def detect(self, query: ImageLike | PreparedQuery, heat: np.ndarray, object_height: np.ndarray,
               threshold: float | None = None) -> list[Detection]:
        """The heat map's instances above the threshold in one frame's maps (no verification; with no image,
        no flat-box rule either: :meth:`find` drops a textured query's instances in flat boxes)."""
        return self.peaks(query, heat, object_height, threshold)[0]

    def peaks(self, query: ImageLike | PreparedQuery, heat: np.ndarray, object_height: np.ndarray,
              threshold: float | None = None) -> tuple[list[Detection], Detection]:
        """(The heat map's instances above the threshold, its best peak whatever its score) in one
        frame's maps (see :func:`pipelines.detections.detect`); ``query`` as :meth:`maps` takes it. Maps
        only: flat boxes are not dropped here (:meth:`find` does, with the image: ``search_inputs.textured``)."""
        query = self.prepare(query)
        qh, qw = query.size
        levels = self.network.levels(query, *heat.shape)
        smallest = min(min(l.query_size[0] / l.zoom, l.query_size[1] / l.zoom) for l in levels)
        factor = self.network.working_size(*heat.shape)[2]
        peak_window = round(PEAK_WINDOW_FRACTION * smallest / factor)
        fill = 1.0 if query.mask is None else float((query.mask >= 0.5).mean())
        return detect(heat, object_height, qw / qh, self.threshold if threshold is None else threshold,
                      peak_window, fill, heat_boxes=self.heat_boxes)

    def find_many(self, query: ImageLike | PreparedQuery, media: Sequence[np.ndarray],
                  sources: Sequence[str | None] | None = None,
                  frames: Sequence[int | None] | None = None,
                  keep_images: bool = True) -> list[Result]:
        """Search one query in a batch of same-size RGB media (video frames, or still images; arrays
        read as :func:`load_rgb` reads them)."""
        prepared = self.prepare(query)
        if len(media) == 0:  # a batch given as an array has no truth value
            return []
        sources, frames = _per_medium(sources, "sources", len(media), str), _per_medium(frames, "frames", len(media), int)
        media = _media(media)
        if not self.network.warned_unseen:
            unseen = self.network.unseen_warning(prepared, *media[0].shape[:2])
            if unseen is not None:
                with _UNSEEN_SAID:  # (checked and set at once: said once a search, however many threads)
                    said, self.network.warned_unseen = self.network.warned_unseen, True
                if not said:
                    logger.warning("%s: %s", sources[0] if sources and sources[0] else "medium", unseen)
        maps = self.network.maps(prepared, media)  # read and checked once, above
        results = []
        # Each line names the bar its scores were held to: fused scores pass the heat threshold
        # carried through the fusion model, not the heat threshold itself.
        kind = "heat" if self.verification is None else "fused"
        for i, (heat, size) in enumerate(zip(maps.heat, maps.object_height)):
            if self.verification is None:
                detections, best = self.peaks(prepared, heat, size)
            else:  # candidates checked geometrically, scores fused (issue 13)
                detections, best = self.verification.results(prepared, media[i], heat, size, maps.features, i)
            # A flat box holds no texture, so not the query, however its near-constant features
            # correlate (a grey frame's heat reached 0.39); it stays the best guess if it is the top peak.
            detections = textured(detections, media[i], prepared)
            results.append(Result(
                heatmap=heat, detections=detections, threshold=self.score_threshold, best=best,
                image=media[i] if keep_images else None, source=sources[i] if sources else None,
                query=prepared.name, frame=frames[i] if frames else None, score_kind=kind,
                heat_threshold=self.threshold))
        return results

    def find(self, query: ImageLike | PreparedQuery, medium: ImageLike,
             query_mask: ImageLike | None = None) -> Result:
        """Search ``query`` (path, RGB(A) array or prepared query) in one image."""
        prepared = self.prepare(query, query_mask)
        image = load_rgb(medium, "medium")
        source = str(medium) if isinstance(medium, (str, Path)) else None
        # As the command's media: an empty array was a ZeroDivisionError deep in the levels.
        check_min_side(source or "medium", image.shape[1], image.shape[0], what="image")
        return self.find_many(prepared, [image], sources=[source])[0]


def find(query: ImageLike, medium: ImageLike, query_mask: ImageLike | None = None,
         **searcher_options: Any) -> Result:
    """One-off search with a fresh :class:`Searcher` (build a Searcher to search many media)."""
    return Searcher(**searcher_options).find(query, medium, query_mask)
