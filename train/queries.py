"""Queries for training pairs: the clean cutouts of an expansion's ``objects.parquet``
(:class:`CutoutLibrary`, decoded lazily), a cutout turned into a catalogue-style shot on a
plain background (:func:`render_query`), and which cutouts a composite shows, so a negative's query is
none of them (:func:`pasted_cutouts`, :func:`may_be_negative`)."""

from __future__ import annotations

import cv2
import numpy as np
from augment.byte_cache import ByteLRU
from augment.imageio import decode_image
from augment.resizing import resize_rgba
from augment.schema import stored_bytes
from augment.objects_table import read_objects_table
from augment.storage import Place
from augment.textfiles import loads_json


# Decoded cutouts a CutoutLibrary keeps (per loader worker): a count (512) held 512 x 590 kB = 300 MB of
# 384-px cutouts, and without bound for cutouts cut larger (sources.max_cutout_side).
QUERY_CACHE_BYTES = 256 << 20


def _nbytes(image: np.ndarray) -> int:  # a function, not a lambda: a library pickled to a worker pickles it
    return image.nbytes


class CutoutLibrary:
    """Clean cutouts of ``objects.parquet``, looked up by id; decoded lazily, the least recently used
    dropped past ``cache_bytes`` decoded (:class:`augment.byte_cache.ByteLRU`, as expand's cutouts)."""

    def __init__(self, path: Place, cache_bytes: int = QUERY_CACHE_BYTES) -> None:
        table = read_objects_table(path, ["cutout_id", "category", "source", "image"], memory_map=True)
        self._images = table.column("image")
        ids = table.column("cutout_id").to_pylist()
        self._row = {cid: i for i, cid in enumerate(ids)}
        self._category = dict(zip(ids, table.column("category").to_pylist()))
        self._source = dict(zip(ids, table.column("source").to_pylist()))
        self._cache: ByteLRU[np.ndarray] = ByteLRU(cache_bytes, _nbytes)

    def __contains__(self, cutout_id: str) -> bool:
        return cutout_id in self._row

    def ids(self) -> list[str]:
        return sorted(self._row)

    def category(self, cutout_id: str) -> str:
        return self._category[cutout_id]

    def origin(self, cutout_id: str) -> tuple[str, str] | None:
        """What a cutout is a piece of: (source image, category). A label map's object is split into
        one cutout per connected region (an open coat's halves, a pair of stockings), each a piece of
        the one object its label marks in that photo; None where the source is not known. (Two
        instances of one category in one photo, as COCO's, share it too: a negative keeps off both.)"""
        source = self._source.get(cutout_id)
        return (source, self._category[cutout_id]) if source else None

    def rgba(self, cutout_id: str) -> np.ndarray:
        """The cutout as H×W×4 uint8 RGBA (alpha = mask)."""
        cached = self._cache.get(cutout_id)
        if cached is not None:
            return cached
        # A null image (an objects table another tool wrote) is empty bytes: one InputError naming the cutout.
        data = stored_bytes({"image": self._images[self._row[cutout_id]].as_py()}, "image")
        image = decode_image(data, cv2.IMREAD_UNCHANGED, f"cutout {cutout_id}")
        if image.ndim == 2 or image.shape[2] == 3:  # no alpha stored: the whole crop is the object
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
            image = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        self._cache.put(cutout_id, image)
        return image


def _jitter_colour(rgb: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter, each by a factor in [1 - amount, 1 + amount]."""
    if amount <= 0:
        return rgb
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, 3)
    x = rgb.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * saturation + grey
    return np.clip(x, 0, 255).astype(np.uint8)


def render_query(rgba: np.ndarray, size: int, rng: np.random.Generator, fill: tuple[float, float] = (0.6, 0.9),
                 colour_jitter: float = 0.1, mirror: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Place a cutout on a plain background like a catalogue photo, mirrored with probability ``mirror``
    (0 for a shot already mirrored as configured: a real medium's catalogue shot).

    Returns the size×size×3 RGB query and its size×size alpha (uint8, 255 = object).
    """
    alpha = rgba[:, :, 3]
    ys, xs = np.nonzero(alpha)
    if len(xs):  # crop to the object so ``fill`` means the same thing for every cutout
        rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    if rng.random() < mirror:  # drawn whatever ``mirror`` is, so the other draws stay the same
        rgba = rgba[:, ::-1]
    rgb = _jitter_colour(np.ascontiguousarray(rgba[:, :, :3]), colour_jitter, rng)
    h, w = rgba.shape[:2]
    scale = rng.uniform(*fill) * size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = resize_rgba(np.dstack([rgb, rgba[:, :, 3]]), new_w, new_h)
    rgb, alpha = resized[:, :, :3], resized[:, :, 3]
    kind = rng.random()  # white, light grey or a random flat colour, as product shots are
    background = (np.full(3, 255.0) if kind < 0.4 else np.full(3, rng.uniform(190, 240)) if kind < 0.7
                  else rng.uniform(0, 255, 3))
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = background
    mask = np.zeros((size, size), np.uint8)
    x0, y0 = int(rng.integers(0, size - new_w + 1)), int(rng.integers(0, size - new_h + 1))
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    region = canvas[y0:y0 + new_h, x0:x0 + new_w]
    canvas[y0:y0 + new_h, x0:x0 + new_w] = region * (1 - a) + rgb.astype(np.float32) * a
    mask[y0:y0 + new_h, x0:x0 + new_w] = alpha
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), mask


def may_be_negative(cutout_id: str, cutouts: CutoutLibrary, shown: set[str],
                    origins: set[tuple[str, str] | None]) -> bool:
    """Whether a negative may query ``cutout_id``: neither it nor a piece of the same object is shown."""
    return cutout_id not in shown and cutouts.origin(cutout_id) not in origins


def pasted_cutouts(params: str | None) -> tuple[set[str], set[str]]:
    """The cutout ids a composite row's ``params`` (its JSON record) says were pasted into it, and those
    of them with an instance dropped from its labels as too hidden (``dropped``: its visible part is in
    the image, labelled as background); none for a row without such a record (a photo row)."""
    try:
        record = loads_json(params) if params else {}
    except ValueError:
        return set(), set()
    plans = record.get("objects") if isinstance(record, dict) else None
    if not isinstance(plans, list):
        return set(), set()
    plans = [plan for plan in plans if isinstance(plan, dict) and isinstance(plan.get("cutout_id"), str)
             and plan.get("position") is not None]
    dropped = record.get("dropped") if isinstance(record.get("dropped"), list) else []
    return ({plan["cutout_id"] for plan in plans},
            {plan["cutout_id"] for plan in plans if plan.get("instance_id") in dropped})
