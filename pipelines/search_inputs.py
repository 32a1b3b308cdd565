"""What the search runs on: the network (untrained or from a checkpoint), the device, a prepared
query with its cached features, the media as tensors (resized, zoomed), and the per-frame maps the
search returns (:class:`SearchMaps`). :mod:`pipelines.search_maps` runs the network over them.
"""

from __future__ import annotations

import functools
import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from augment.imageio import VIDEO_EXTENSIONS, InputError, read_image
from augment.mask_files import read_mask
from augment.picture_arrays import ImageLike, mask_array, picture_array
from train.model import QueryFeatures, QuerySearchNet, SearchNetConfig

logger = logging.getLogger(__name__)


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for absent CUDA is an InputError. A
    ``torch.device`` given to the API is taken as its name; anything else (None) is an InputError."""
    if isinstance(name, torch.device):  # Searcher(device=torch.device("cpu")) was an AttributeError
        name = str(name)
    if not isinstance(name, str):
        raise InputError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def load_checkpoint_model(checkpoint: Path | str, state: dict[str, Any] | None = None) -> QuerySearchNet:
    """A ``synth train`` checkpoint's network (``state``: the checkpoint already read, not read again). A
    checkpoint holds no threshold: ``synth calibrate`` writes one into its own report, which ``--threshold`` takes."""
    from train.checkpoint import load_checkpoint, load_model_state
    from train.config import TrainConfig

    state = load_checkpoint(checkpoint) if state is None else state
    config = TrainConfig.from_checkpoint(state, checkpoint)
    if config.task != "query_search":  # a segmenter's config has none of the search network's keys
        raise InputError(f"{checkpoint}: a {config.task} checkpoint, not a query search one (task query_search)")
    model = QuerySearchNet(config.model_config())
    load_model_state(model, state, checkpoint)
    return model


def untrained_model() -> QuerySearchNet:
    """Pretrained backbone + normalised correlation + the conversion net's initial readout."""
    return QuerySearchNet(SearchNetConfig())


@dataclass
class SearchMaps:
    """Per medium of a batch: heat (N x H x W in [0, 1]) and the height in pixels of the object
    that would explain the heat at each pixel (from the best-matching scale)."""

    heat: np.ndarray
    object_height: np.ndarray
    # The media's raw stride-8 backbone features at the working size (N x C x h x w), reused by
    # verification with the network's own features (pipelines/verify.py); None where no level
    # searched the medium unzoomed and whole.
    features: np.ndarray | None = None


@dataclass
class PreparedQuery:
    """A query's pixels and its encoded features, cached per network and kernel size (computed once
    per network: one prepared query may be searched by several Searchers)."""

    name: str
    rgb: np.ndarray
    mask: np.ndarray | None
    # Features per network (held weakly: they go with their Searcher), then per (kernel size, mirrored).
    # Keyed by the network: another Searcher's network read the first one's features, silently.
    features: weakref.WeakKeyDictionary[Any, dict[tuple[tuple[int, int], bool], QueryFeatures]] = field(
        default_factory=weakref.WeakKeyDictionary)
    warned_shrink: bool = False
    # Medium sizes whose automatic scales were logged (once per size, not per frame).
    logged_scales: set[tuple[int, int]] = field(default_factory=set)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    @functools.cached_property
    def flat(self) -> bool:
        """Whether the object is one flat colour (query_is_flat): no texture to tell it from a flat region."""
        return query_is_flat(self.rgb, self.mask)


def to_tensor(images: Sequence[np.ndarray], device: torch.device, channels_last: bool) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def resize_hw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def zoom_media(batch: torch.Tensor, size: tuple[int, int], zoom: float) -> torch.Tensor:
    """A batch of ``size`` (H, W) media resampled by ``zoom``: area-averaged down, bilinear up."""
    if zoom == 1.0:
        return batch
    zoomed = (max(8, round(size[0] * zoom)), max(8, round(size[1] * zoom)))
    if zoomed[0] * 2 == size[0] and zoomed[1] * 2 == size[1]:
        # Area-averaging by exactly 2 is a 2 x 2 average pool: the same values, 1.6x faster.
        return F.avg_pool2d(batch, 2)
    if zoom < 1 and batch.device.type == "cpu" and batch.dtype == torch.float32 and batch.shape[1] <= 4:
        return _cpu_area(batch, zoomed)
    return F.interpolate(batch, size=zoomed, mode="area" if zoom < 1 else "bilinear",
                         **({} if zoom < 1 else {"align_corners": False}))


def _cpu_area(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average down-sampling of a CPU image batch with OpenCV: 3-4x faster than torch's
    ``mode="area"`` (adaptive average pooling: whole-pixel bins), and exact where a bin covers part
    of a pixel (INTER_AREA weighs it by the share covered)."""
    resized = [cv2.resize(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (size[1], size[0]),
                          interpolation=cv2.INTER_AREA).reshape(size[0], size[1], -1) for image in batch]
    out = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)  # channels_last strides, no copy
    return out if batch.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


# A query object smaller than this on either side (after cropping to its mask) has no texture left to
# match: refused with one line rather than searched with detections that mean nothing.
MIN_QUERY_INPUT_SIDE = 8
# Object pixels a query's mask needs: half the smallest query's square (a solid 9-px disk has 61;
# a few scattered specks spanning a large box do not pass).
MIN_QUERY_PIXELS = MIN_QUERY_INPUT_SIDE ** 2 // 2
FLAT_QUERY_STD = 2.0  # grey levels (of 255): a query's object under this spread is one colour, no texture


# Pixels averaged per side before a medium's region is measured (flat_region): sensor noise of 3 grey
# levels on a black frame spreads 0.75 over 4 x 4 pixels, an object's pattern or edges far more.
FLAT_CELL = 4
FLAT_MIN_CELLS = 4  # cells a side a plane (a gradient) is fitted to
FLAT_NOISE_STD = 6.0  # grey levels the pixels of a flat region spread about their cell's mean (noise)
FLAT_MAX_SIDE = 512  # a larger box is judged shrunk to this (the search sees a frame at 1024 px)


def is_flat(pixels: np.ndarray) -> bool:
    """Whether pixels (N x channels) spread under FLAT_QUERY_STD grey levels in every channel: one
    colour, no texture (no pixels: not flat)."""
    return bool(pixels.size) and float(pixels.astype(np.float32).std(axis=0).max()) < FLAT_QUERY_STD


def flat_region(image: np.ndarray, box: Sequence[float]) -> bool:
    """Whether the part of ``image`` (H x W x C) inside ``box`` (x0, y0, x1, y1) is one flat colour or a
    single linear gradient once averaged over FLAT_CELL x FLAT_CELL pixels (sensor noise, a flat colour's
    JPEG blocks), the pixels spreading under FLAT_NOISE_STD about their cell's mean: it holds no texture, so no textured query is there, whatever a correlation of its
    near-constant features scores (a box wholly outside the image: not flat)."""
    h, w = image.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return False
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    if max(region.shape[:2]) > FLAT_MAX_SIDE:  # judged at about the search's working scale: a 2000-px box took
        factor = FLAT_MAX_SIDE / max(region.shape[:2])  # 60-320 ms a frame and three full-size float copies
        region = cv2.resize(region, (max(1, round(region.shape[1] * factor)), max(1, round(region.shape[0] * factor))),
                            interpolation=cv2.INTER_AREA)
    height, width = region.shape[:2]
    cells = (width // FLAT_CELL, height // FLAT_CELL)
    if min(cells) < FLAT_MIN_CELLS:  # a small box: its pixels as they are
        cells = (width, height)
    averaged = cv2.resize(region, cells, interpolation=cv2.INTER_AREA).astype(np.float32)
    values = averaged.reshape(cells[0] * cells[1], -1)
    if min(cells) < FLAT_MIN_CELLS:  # too few to tell a gradient from a pattern: one colour only
        return is_flat(values)
    # What a plane through the cells (a gradient: a sky, a vignette, a lamp's fall-off) leaves
    ys, xs = np.mgrid[0:cells[1], 0:cells[0]].astype(np.float32)
    plane = np.stack([np.ones(values.shape[0], np.float32), xs.ravel(), ys.ravel()], axis=1)
    fit = np.linalg.lstsq(plane, values, rcond=None)[0]
    if not is_flat(values - plane @ fit):
        return False
    # What the cells averaged out must be noise, not a pattern finer than a cell (2-px stripes, a fine weave)
    cell_means = cv2.resize(averaged, (width, height), interpolation=cv2.INTER_NEAREST)
    fine = (region.astype(np.float32) - cell_means.reshape(region.shape)).reshape(-1, values.shape[1])
    return float(fine.std(axis=0).max()) < FLAT_NOISE_STD


def textured(detections: Sequence[Any], image: np.ndarray, query: "PreparedQuery") -> list[Any]:
    """``detections`` of a textured query less those whose box is flat in ``image`` (flat_region): what
    every search reports (stills, video frames, calibration's cases), its best guess left as it is. A
    flat query's are all kept: a flat region is what it matches (warned: warn_if_flat)."""
    return [d for d in detections if not flat_for(query, image, d.box)]


def flat_for(query: "PreparedQuery", image: np.ndarray, box: Sequence[float]) -> bool:
    """Whether ``box`` is flat in ``image`` for a textured ``query`` (a flat query matches flat boxes): the
    rule every search applies (:func:`textured`, the temporal mode's holds and re-detections)."""
    return not query.flat and flat_region(image, box)


def query_is_flat(rgb: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether a query's object (its pixels under ``mask`` >= 0.5) is one flat colour, or flat as a medium's
    box is judged (flat_region: noise, a smooth shading): a query cut from a plain region found itself in a
    box the search then dropped as flat, its own match at 1.0 (outside the mask: the object's mean colour,
    so the mask's edge is no texture)."""
    inside = np.ones(rgb.shape[:2], bool) if mask is None else mask >= 0.5
    if is_flat(rgb[inside]):
        return True
    if not inside.any():
        return False
    filled = np.where(inside[..., None], rgb, rgb[inside].mean(axis=0).astype(rgb.dtype))
    return flat_region(filled, (0, 0, rgb.shape[1], rgb.shape[0]))


def warn_if_flat(name: str, rgb: np.ndarray, mask: np.ndarray | None) -> None:
    """A warning where the query's object is one flat colour (a solid red square): the correlation then
    matches flat regions of a medium with high scores. Warned, not refused; the search is as it was
    (the line handler says a line once, so a query read twice is warned about once)."""
    if query_is_flat(rgb, mask):
        logger.warning("%s: the query is one flat colour (no texture): it matches flat regions of a medium with "
                       "high scores; crop a query that holds some of the object's pattern or edges", name)


def load_query(query: ImageLike, query_mask: ImageLike | None = None,
               name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The query's RGB and object mask (float [0, 1], None = every pixel), cropped to the object.

    The mask is ``query_mask`` if given, else the query's alpha channel if it has a non-opaque one.
    Files are read upright (their EXIF orientation applied), as media are.
    """
    name = name or (str(query) if isinstance(query, (str, Path)) else "query")
    if isinstance(query, (str, Path)) and Path(query).suffix.lower() in VIDEO_EXTENSIONS:
        # read_image said "not a readable image (corrupt ...)" of a good video given first by mistake
        raise InputError(f"{query}: is a video; the query is an image of the object (cut it from a frame), "
                         "and the video is a medium: synth search QUERY VIDEO [--box X,Y,W,H]")
    rgba = read_image(query, "rgba") if isinstance(query, (str, Path)) else None
    if rgba is None:
        array = picture_array(query, name)  # the pixel limit (before any copy), shape and values
        rgba = array if array.shape[2] == 4 else np.dstack(
            [array, np.full(array.shape[:2], 255, np.uint8)])
    rgb = np.ascontiguousarray(rgba[:, :, :3])
    if query_mask is not None:
        mask_name = str(query_mask) if isinstance(query_mask, (str, Path)) else "query_mask"
        # An array or PIL image is read as a mask file of that kind is (an opaque RGBA mask's alpha
        # was taken: the whole query, silently); another shape is one ValueError naming it.
        raw = read_mask(query_mask) if isinstance(query_mask, (str, Path)) else mask_array(query_mask, mask_name)
        if raw.shape[:2] != rgb.shape[:2]:
            query_label = "the query" if name == "query" else f"the query {name}"  # not "the query query"
            raise InputError(f"{mask_name}: mask is {raw.shape[1]}x{raw.shape[0]} but {query_label} "
                             f"is {rgb.shape[1]}x{rgb.shape[0]}")
        # Floats of any width are soft values in [0, 1] (a float64 array was read as non-zero = object
        # where the same numbers in float32 were weights: 0.3 the whole object, or an empty mask).
        mask = (np.clip(np.nan_to_num(raw.astype(np.float32)), 0, 1) if np.issubdtype(raw.dtype, np.floating)
                else (raw > 0).astype(np.float32))
        source = mask_name
    elif rgba[:, :, 3].min() < 255:
        mask = rgba[:, :, 3].astype(np.float32) / 255.0
        source = f"{name} (alpha)"
    else:
        check_min_side(name, rgb.shape[1], rgb.shape[0])
        warn_if_flat(name, rgb, None)
        return rgb, None
    ys, xs = np.nonzero(mask >= 0.5)  # the object's pixels, as its fill and silhouette count them
    if ys.size == 0:
        # A soft mask (alpha, floats) whose values all stay under one half was "empty" beside pixels of 0.3
        faint = f"; its values stay under 0.5, the highest {float(mask.max()):.3g}" if mask.max() > 0 else ""
        raise InputError(f"{source}: the query mask is empty (no object pixels{faint})")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    check_min_side(name, x1 - x0, y1 - y0, detail=" (its mask's extent)")
    if ys.size < MIN_QUERY_PIXELS:  # two specks at opposite corners span 400 x 400 px
        raise InputError(f"{name}: its mask holds {ys.size} object pixel{'s' if ys.size > 1 else ''}; at least "
                         f"{MIN_QUERY_PIXELS} (half of {MIN_QUERY_INPUT_SIDE}x{MIN_QUERY_INPUT_SIDE}) are needed to "
                         "search for it")
    warn_if_flat(name, rgb, mask)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1])


def check_min_side(name: str, width: int, height: int, what: str = "query", detail: str = "") -> None:
    """A query or medium under MIN_QUERY_INPUT_SIDE px a side: one error line (shrunk to the
    network's cells, it would find only noise)."""
    if min(width, height) < MIN_QUERY_INPUT_SIDE:
        purpose = "for it" if what == "query" else "in it"
        raise InputError(f"{name}: {what} is {width}x{height} px{detail}; at least {MIN_QUERY_INPUT_SIDE} px "
                         f"per side is needed to search {purpose}")
