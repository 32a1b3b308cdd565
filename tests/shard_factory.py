"""Build tiny, valid `synth expand`-style shard folders for tests and benchmarks.

The objects are flat-coloured, striped ellipses and rectangles pasted onto noisy backgrounds:
cheap to generate, distinct from one another, and laid out exactly as ``augment/schema.py``
prescribes (composite shards, ``objects.parquet`` and ``manifest.json``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augment.imageio import encode_jpeg, encode_png
from augment.schema import COMPOSITE_SCHEMA, MANIFEST_FILE, OBJECTS_FILE, OBJECTS_SCHEMA, shard_name


@dataclass
class ShardSet:
    """What :func:`make_shards` wrote, for tests to check against."""

    folder: Path
    cutout_ids: list[str]
    rows: list[dict] = field(default_factory=list)  # per composite: id, objects (cutout_id, instance_id)
    corrupt_ids: list[str] = field(default_factory=list)


def _cutout(rng: np.random.Generator, side: int) -> np.ndarray:
    """An RGBA object: a striped ellipse or rectangle in two random colours."""
    h = int(rng.integers(side // 2, side + 1))
    w = int(rng.integers(side // 2, side + 1))
    rgb = np.empty((h, w, 3), np.uint8)
    colour_a, colour_b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    period = int(rng.integers(3, 9))
    stripes = (np.arange(w)[None, :] // period + np.arange(h)[:, None] // (period * 2)) % 2
    rgb[:] = np.where(stripes[..., None] == 1, colour_a, colour_b).astype(np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cv2.ellipse(alpha, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1)
    else:
        alpha[1:-1, 1:-1] = 255
    return np.dstack([rgb, alpha])


def _paste(canvas: np.ndarray, ids: np.ndarray, cutout: np.ndarray, x: int, y: int, instance: int) -> None:
    h, w = cutout.shape[:2]
    inside = cutout[:, :, 3] > 127
    canvas[y:y + h, x:x + w][inside] = cutout[:, :, :3][inside]
    ids[y:y + h, x:x + w][inside] = instance


def make_shards(folder: Path | str, *, n_cutouts: int = 10, n_composites: int = 24, rows_per_group: int = 4,
                rows_per_shard: int = 12, size: int = 128, max_objects: int = 3, seed: int = 0,
                corrupt_rows: tuple[int, ...] = (), split: str = "train") -> ShardSet:
    """Write ``n_composites`` composites of ``size``×``size`` and ``n_cutouts`` objects to ``folder``.

    ``corrupt_rows``: composite indices whose JPEG bytes are replaced by garbage.
    The same cutout is placed twice in some composites, so targets must be unions of instances.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cutouts, cutout_ids = [], []
    for index in range(n_cutouts):
        rgba = _cutout(rng, size // 3)
        cutouts.append(rgba)
        cutout_ids.append(hashlib.sha1(encode_png(rgba) + str(index).encode()).hexdigest()[:16])
    objects_table = pa.Table.from_pylist([
        {"cutout_id": cid, "category": f"shape{i % 3}", "source": f"source_{i}.png",
         "box": [0, 0, int(c.shape[1]), int(c.shape[0])], "image": {"bytes": encode_png(c), "path": None},
         "superpixels": {"bytes": encode_png(np.zeros((4, 4), np.uint16)), "path": None},
         "width": int(c.shape[1]), "height": int(c.shape[0]), "area": int((c[:, :, 3] > 127).sum())}
        for i, (cid, c) in enumerate(zip(cutout_ids, cutouts))], schema=OBJECTS_SCHEMA)
    pq.write_table(objects_table, folder / OBJECTS_FILE)

    shard_set = ShardSet(folder=folder, cutout_ids=cutout_ids)
    records = []
    for row in range(n_composites):
        canvas = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
        canvas = cv2.GaussianBlur(canvas, (0, 0), 2.0)
        ids = np.zeros((size, size), np.uint8)
        count = int(rng.integers(1, max_objects + 1))
        chosen = list(rng.choice(n_cutouts, size=count))
        if row % 3 == 0:  # a repeated cutout: the target is the union of both instances
            chosen.append(chosen[0])
        objects = []
        for instance, which in enumerate(chosen, start=1):
            cutout = cutouts[which]
            h, w = cutout.shape[:2]
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            _paste(canvas, ids, cutout, x, y, instance)
            objects.append((instance, cutout_ids[which]))
        visible = []
        for instance, cid in objects:
            ys, xs = np.nonzero(ids == instance)
            if len(xs):  # fully covered instances are dropped from the labels, as `synth expand` does
                visible.append({"instance_id": instance, "cutout_id": cid, "category": "shape",
                                "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                                "visible_fraction": 1.0})
        image_bytes = encode_jpeg(canvas, 92)
        composite_id = f"composite-{row:05d}"
        if row in corrupt_rows:
            image_bytes = b"not a jpeg" + bytes(32)
            shard_set.corrupt_ids.append(composite_id)
        records.append({"id": composite_id, "image": {"bytes": image_bytes, "path": None},
                        "mask": {"bytes": encode_png(ids), "path": None}, "width": size, "height": size,
                        "objects": visible, "params": json.dumps({"row": row}), "seed": seed * 100_000 + row,
                        "config_hash": "factory"})
        shard_set.rows.append({"id": composite_id, "objects": [(o["cutout_id"], o["instance_id"]) for o in visible]})
    listed = []
    for shard_index, start in enumerate(range(0, n_composites, rows_per_shard)):
        table = pa.Table.from_pylist(records[start:start + rows_per_shard], schema=COMPOSITE_SCHEMA)
        pq.write_table(table, folder / shard_name(split, shard_index), row_group_size=rows_per_group)
        listed.append({"name": shard_name(split, shard_index), "rows": table.num_rows, "first_row": start})
    # Readers take the shard list from the manifest, as from a finished `synth expand` run.
    manifest = {"shards": listed, "num_rows": n_composites, "objects": {"file": OBJECTS_FILE, "cutouts": n_cutouts},
                "config_hash": "factory", "factory": True}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return shard_set


def rewrite_rows(shard: Path, changes: dict[int, dict], rows_per_group: int = 3) -> None:
    """Rewrite rows of ``shard`` with some fields changed (row index -> new field values)."""
    rows = pq.read_table(shard).to_pylist()
    for index, change in changes.items():
        rows[index].update(change)
    pq.write_table(pa.Table.from_pylist(rows, schema=COMPOSITE_SCHEMA), shard, row_group_size=rows_per_group)


def damage_pages(shard: Path) -> None:
    """Zero the first pages' headers; the footer stays intact (listing the rows works, reading them fails)."""
    data = bytearray(shard.read_bytes())
    data[4:400] = bytes(396)
    shard.write_bytes(bytes(data))
