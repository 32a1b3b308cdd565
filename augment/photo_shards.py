"""Whole labelled photos as shards, for training segmentation on real pixels.

`synth photo-shards SOURCE... --out DIR` writes ``photos-{index:05d}.parquet`` in the composite
schema of :mod:`augment.schema`, one row per photo: the photo (JPEG, scaled so its shorter side is
at most ``short_side``), an instance-id mask and ``objects`` naming each id's category. Every pixel
is named: id = source value + 1, so the source's value 0 becomes the category ``background`` and
mask id 0 never occurs. A label map's value that ``label_list.json`` does not name, and a COCO
annotation whose category the file does not list, are counted skips as in `synth expand`, and their
pixels get no object or ``__ignore__`` (no loss in training). A row's id is its photo's name
(``NAME-2`` for a second photo of that name). A rerun of a killed run keeps the full shards it
finished (:func:`finished_row_shards`).
`synth extract` writes automatically labelled photos the same way (``pseudo-*.parquet``).

Sources: ``label_map`` (value k = ``label_list.json[k]``), ``mask_pairs`` (value = instance, named by
``categories.json``, else ``object``), ``coco`` (annotations painted in order, crowd regions not
used for training) and ``labelme``, ``yolo``, ``cvat_mask`` (objects painted in order); ``rgba`` cutouts are not photos. ``include`` / ``exclude`` / ``limit`` of
:class:`augment.config.SourceConfig` pick the photos, e.g. a held-out split.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augment.atomic_files import atomic_path, atomic_write_text, remove_orphaned_temporaries
from augment.coco_source import annotation_mask_or_skip, coco_category, coco_images, load_coco_index
from augment.config import SourceConfig
from augment.cutouts import sources_fingerprint
from augment.excluded_folders import excluding
from augment.imageio import InputError, encode_jpeg, encode_label_png, resize_image
from augment.label_names import check_label_names
from augment.outputs import OutputNames
from augment.photo_objects import photo_mask_pairs
from augment.pixel_limit import PHOTO_SHARDS_WORK, pixel_work
from augment.resizing import resize_labels
from augment.schema import BACKGROUND_CATEGORY, COMPOSITE_SCHEMA, MANIFEST_FILE, RENDERING_VERSION, shard_name
from augment.shards import check_manifest_kind, footer_problem
from augment.sources import PHOTO_OBJECTS, Skip, detect_format, loaded_pairs, read_each, skipped_summary, value_category
from augment.textfiles import loads_json
from augment.validation import is_number

IGNORE_CATEGORY = "__ignore__"  # pixels that must carry no loss (crowd regions, untrusted automatic labels)
logger = logging.getLogger(__name__)

PHOTO_ROWS_PER_GROUP = 16
PHOTO_ROWS_PER_SHARD = 512
MAX_LABEL_ID = 65535  # ids are stored in 16-bit PNGs


def label_id(value: int) -> int:
    """The id of a source's label value: value + 1, except the 16-bit full scale 65535 (a binary mask
    saved at 16 bits), whose value + 1 does not fit a 16-bit PNG: id 65535. It wrapped to id 0 (the
    object's pixels read as background in a photo's row) or stopped `synth expand` on labelled
    backgrounds with an OverflowError traceback."""
    return min(value + 1, MAX_LABEL_ID)


def label_id_array(values: np.ndarray) -> np.ndarray:
    """:func:`label_id` of every value of a label map, uint8 when the ids fit."""
    ids = np.minimum(values.astype(np.uint32) + 1, MAX_LABEL_ID)
    return ids.astype(np.uint8 if int(ids.max(initial=0)) <= 255 else np.uint16)


def shared_label_id(present: list[int], mask_path: Path) -> Skip | None:
    """A Skip for a mask holding both 65534 and 65535, whose values :func:`label_id` cannot tell apart."""
    if MAX_LABEL_ID - 1 in present and MAX_LABEL_ID in present:
        return Skip(str(mask_path), f"label values {MAX_LABEL_ID - 1} and {MAX_LABEL_ID} both present: ids are "
                                    f"value + 1 in a 16-bit PNG, so {MAX_LABEL_ID - 1} is the largest value besides "
                                    f"{MAX_LABEL_ID}; renumber the mask")
    return None


@dataclass
class LabelledPhoto:
    path: Path
    image: np.ndarray  # H×W×3 RGB
    values: np.ndarray  # H×W label values, 0 = background
    names: dict[int, str]  # value -> category
    params: dict = field(default_factory=dict)  # recorded in the row's params JSON


def read_labelled_photos(source: Path, config: SourceConfig) -> Iterator[LabelledPhoto | Skip]:
    """The labelled photos of a source, in a deterministic order; unusable ones as :class:`Skip`."""
    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    if fmt == "coco":
        yield from coco_photos(source, config)
        return
    if fmt in PHOTO_OBJECTS:  # LabelMe, YOLO, CVAT: an object's masks at its photo's size, a value each
        for item in PHOTO_OBJECTS[fmt](source, config):
            if isinstance(item, Skip):
                yield item
                continue
            path, image, found = item
            values = np.zeros(image.shape[:2], np.uint16)
            names: dict[int, str] = {}
            for one in found:
                if isinstance(one, Skip):
                    yield one
                    continue
                names[len(names) + 1] = one[0]
                values[one[1]] = len(names)
            yield LabelledPhoto(path, image, values, names)
        return
    names, pairs, skips = photo_mask_pairs(source, fmt, config)
    yield from skips
    for loaded in loaded_pairs(pairs, "empty mask", soft_edges=fmt == "mask_pairs" and not names):
        if isinstance(loaded, Skip):
            yield loaded
            continue
        image_path, mask_path, image, values, present = loaded
        if collision := shared_label_id(present, mask_path):
            yield collision
            continue
        photo_names = {}
        for value in present:
            category = value_category(value, names, fmt, mask_path)
            if isinstance(category, Skip):  # skipped as `synth expand` skips it; its pixels carry no loss
                yield category
            else:
                photo_names[value] = category
        yield LabelledPhoto(image_path, image, values, photo_names, {"mask": str(mask_path)})


def coco_photos(source: Path, config: SourceConfig) -> Iterator[LabelledPhoto | Skip]:
    coco = load_coco_index(source)
    for item in coco_images(coco, config):
        if isinstance(item, Skip):
            yield item
            continue
        image_id, path, image = item
        height, width = image.shape[:2]
        values = np.zeros((height, width), np.uint16)
        names: dict[int, str] = {}
        for number, annotation in enumerate(coco.by_image[image_id], start=1):
            mask = annotation_mask_or_skip(annotation, path, height, width)  # a Skip naming the image, as expand's
            if isinstance(mask, Skip):
                yield mask
                # an object without a mask (box-only, broken) lies in its box: no loss there, where no other
                # object is, rather than a background's (a detection dataset's object taught as background)
                box = _box_pixels(annotation.get("bbox"), height, width)
                if box is not None:
                    values[box][values[box] == 0] = number
                    names[number] = IGNORE_CATEGORY
                continue
            values[mask] = number
            category = coco_category(coco, annotation)
            if isinstance(category, Skip):  # an object of no known category: its pixels carry no loss, not background's
                yield category
            names[number] = IGNORE_CATEGORY if annotation.get("iscrowd") or isinstance(category, Skip) else category
        yield LabelledPhoto(path, image, values, names)


def _box_pixels(bbox: object, height: int, width: int) -> tuple[slice, slice] | None:
    """The pixels of a COCO ``bbox`` (x, y, width, height) in a ``height`` x ``width`` image, every pixel
    it touches; None for no box of a positive size inside the image."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox) and bbox[2] > 0 < bbox[3]):
        return None
    x0, y0 = max(0, math.floor(bbox[0])), max(0, math.floor(bbox[1]))
    x1, y1 = min(width, math.ceil(bbox[0] + bbox[2])), min(height, math.ceil(bbox[1] + bbox[3]))
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def photo_row(row_id: str, photo: LabelledPhoto, short_side: int, jpeg_quality: int = 92) -> dict:
    """A shard row (composite schema) of a labelled photo, scaled so its shorter side is at most ``short_side``."""
    image, values = photo.image, photo.values
    height, width = values.shape
    factor = min(1.0, short_side / min(height, width))
    if factor < 1.0:
        new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
        image = resize_image(image, new_w, new_h)
        values = resize_labels(values, new_h, new_w)
    ids = label_id_array(values)  # value 0 -> id 1: no pixel keeps id 0
    named = {0: BACKGROUND_CATEGORY, **{v: n for v, n in photo.names.items() if v != 0}}
    objects = []
    for value, category in sorted(named.items()):
        ys, xs = np.nonzero(values == value)
        if len(xs):
            objects.append({"instance_id": label_id(value), "cutout_id": "", "category": category,
                            "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                            "visible_fraction": 1.0, "provenance": None})
    return {
        "id": row_id,
        "image": {"bytes": encode_jpeg(image, jpeg_quality), "path": f"{row_id}.jpg"},
        "mask": {"bytes": encode_label_png(ids), "path": f"{row_id}.png"},
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "objects": objects,
        "params": json.dumps({"kind": "photo", "source": str(photo.path), "scale": factor, **photo.params}),
        "seed": 0,
        "config_hash": "",
    }


def write_row_shards(rows: Iterable[dict], out_dir: Path, prefix: str, run_hash: str,
                     progress: Callable[[int], None] | None = None, first: int = 0) -> list[dict]:
    """Write rows to ``{prefix}-{index:05d}.parquet`` (atomically, each shard; indices from ``first``);
    returns the shard list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = COMPOSITE_SCHEMA.with_metadata({**COMPOSITE_SCHEMA.metadata, b"synth_run_hash": run_hash.encode()})
    shards: list[dict] = []
    batch: list[dict] = []
    done = 0

    def flush() -> None:
        path = out_dir / shard_name(prefix, first + len(shards))
        with atomic_path(path) as temporary:  # named after this process: a killed run's is told from a live one's
            pq.write_table(pa.Table.from_pylist(batch, schema=schema), temporary, row_group_size=PHOTO_ROWS_PER_GROUP,
                           compression={name: ("none" if name in ("image", "mask") else "zstd")
                                        for name in schema.names})
        shards.append({"name": path.name, "rows": len(batch)})
        batch.clear()

    for row in rows:
        batch.append(row)
        done += 1
        if progress:
            progress(done)
        if len(batch) == PHOTO_ROWS_PER_SHARD:
            flush()
    if batch:
        flush()
    return shards


def finished_row_shards(out_dir: Path, prefix: str, run_hash: str) -> list[dict]:
    """The leading full shards (:data:`PHOTO_ROWS_PER_SHARD` rows each) that a killed run of ``run_hash``
    finished in ``out_dir``, by their footers (each was renamed into place whole): kept by a rerun."""
    kept: list[dict] = []
    while True:
        path = out_dir / shard_name(prefix, len(kept))
        try:
            if not path.is_file() or footer_problem(path, PHOTO_ROWS_PER_SHARD, run_hash) is not None:
                return kept
        except (pa.ArrowException, OSError):
            return kept
        kept.append({"name": path.name, "rows": PHOTO_ROWS_PER_SHARD})


def remove_row_shards(out_dir: Path, prefix: str, keep: Iterable[str] = ()) -> None:
    """Remove an older run's ``{prefix}-*.parquet`` shards from ``out_dir`` and the temporaries that
    killed writes left there, before :func:`write_row_shards` writes new ones (under the folder's lock).

    A temporary is removed only when its writer is gone (:func:`augment.atomic_files.remove_orphaned_temporaries`):
    the lock keeps other runs of this command out, not a command that writes one file and takes no
    lock (``synth eval --out``, ``calibrate``, ``show``, ``export-onnx``), whose temporary beside its file
    here stays while it writes. The fixed names of the shard temporaries that runs made before writers
    were recorded (``.{prefix}-00000.parquet.tmp``: only this command's lock holder wrote them) go too.
    """
    legacy = re.compile(rf"\.{re.escape(prefix)}-\d{{5}}\.parquet\.tmp")
    keep = set(keep)
    for stale in [*(p for p in out_dir.glob(f"{prefix}-*.parquet") if p.name not in keep),
                  *(p for p in out_dir.glob(".*.tmp") if legacy.fullmatch(p.name) and not p.is_symlink())]:
        stale.unlink(missing_ok=True)
    remove_orphaned_temporaries(out_dir)


def write_photo_shards(sources: list[Path], out_dir: Path, config: SourceConfig, short_side: int = 384,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Labelled photos of ``sources`` → ``out_dir/photos-*.parquet`` and ``manifest.json``.

    Reuses an up-to-date output (same sources, filters and size), and the full shards a killed run of
    them finished (:func:`finished_row_shards`): their photos are read again, not made into rows.
    Raises :class:`InputError` when the sources hold no usable labelled photo.
    """
    out_dir = Path(out_dir)
    # an --out inside a source: neither read as photos nor in its fingerprint; an image over the
    # pixel limit is told this command's memory, not a search's
    with excluding(out_dir), pixel_work(PHOTO_SHARDS_WORK):
        return _write_photo_shards(sources, out_dir, config, short_side, progress)


def _write_photo_shards(sources: list[Path], out_dir: Path, config: SourceConfig, short_side: int,
                        progress: Callable[[int], None] | None) -> dict:
    seen: set[Path] = set()
    for source in sources:  # twice would write every photo twice, under the same id
        if Path(source).resolve() in seen:
            raise InputError(f"{source}: source given twice")
        seen.add(Path(source).resolve())
    check_label_names(sources, config)
    check_manifest_kind(out_dir, "photos")  # an expansion's or extraction's folder: not taken over
    fingerprint = hashlib.sha256(f"{sources_fingerprint(sources, config)}:{short_side}:rendering {RENDERING_VERSION}"
                                 .encode()).hexdigest()[:16]
    manifest_path = out_dir / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            manifest = loads_json(manifest_path.read_text())
        except ValueError:
            manifest = {}
        if manifest.get("fingerprint") == fingerprint and all((out_dir / s["name"]).is_file() for s in manifest["shards"]):
            return manifest
    skips: list[Skip] = []
    photos = read_each(sources, read_labelled_photos, config, skips)
    # The first photo is read before anything is removed: sources that give none (a missing path, an
    # undetectable format, filters that match nothing) stop here and leave an earlier run's output as it was.
    first = next(photos, None)
    if first is None:
        raise InputError(f"{', '.join(map(str, sources))}: no labelled photos found ({skipped_summary(skips)})")
    # The older run's manifest goes first: a run that fails or is killed from here on must not
    # leave it naming shards that are gone, or that this run has rewritten under the same names.
    manifest_path.unlink(missing_ok=True)
    # A killed run of these inputs: its full shards are kept, their photos read (for the ids and skips
    # that follow) but not made into rows again. Any other run's shards must not mix with these.
    kept = finished_row_shards(out_dir, "photos", fingerprint)
    remove_row_shards(out_dir, "photos", keep=[shard["name"] for shard in kept])
    if kept:
        logger.info("%s: %d shard(s) of a killed run of these photos kept", out_dir, len(kept))
    done = len(kept) * PHOTO_ROWS_PER_SHARD
    row_ids = OutputNames()  # a/0001.jpg and b/0001.jpg: rows 0001 and 0001-2 (export kept one id once)
    rows = (photo_row(row_id, item, short_side)
            for number, item in enumerate(itertools.chain([first], photos))
            for row_id in [row_ids.take(item.path)] if number >= done)
    shards = kept + write_row_shards(rows, out_dir, "photos", fingerprint, progress, first=len(kept))
    manifest = {"kind": "photos", "shards": shards, "num_rows": sum(s["rows"] for s in shards),
                "sources": [str(s) for s in sources], "short_side": short_side, "fingerprint": fingerprint,
                "source_config": config.__dict__, "skipped": [{"path": s.path, "reason": s.reason} for s in skips]}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=list))
    return manifest
