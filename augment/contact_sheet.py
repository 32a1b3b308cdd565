"""`synth show`: a contact sheet of random composites with instance masks and boxes drawn."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from augment.atomic_files import atomic_write_bytes
from augment.draw_labels import format_score, put_label
from augment.imageio import InputError, decode_image, encode_jpeg, encode_png
from augment.photo_shards import IGNORE_CATEGORY
from augment.schema import is_photo_background, is_photo_region, object_problem, stored_bytes
from augment.shards import find_shards, open_shard, read_row_group
from augment.storage import Place
from augment.resizing import resize_labels


# Written into every sheet (a PNG tEXt chunk, a JPEG comment) near its start: an existing --out is
# replaced only when it carries it, so `synth show --out photo.jpg` never overwrites a photo.
SHEET_MARK = b"synth show contact sheet"
MARK_WITHIN = 4096  # bytes from the start where the mark is looked for


def sheet_bytes(sheet: np.ndarray, suffix: str) -> bytes:
    """The sheet encoded by ``suffix`` (.jpg/.jpeg: JPEG, else PNG), with :data:`SHEET_MARK` in it."""
    if suffix.lower() in (".jpg", ".jpeg"):
        data = encode_jpeg(sheet, 90)
        at = 2  # after SOI; after the JFIF APP0 segment where there is one (it must come first)
        if data[2:4] == b"\xff\xe0":
            at = 4 + struct.unpack(">H", data[4:6])[0]
        return data[:at] + b"\xff\xfe" + struct.pack(">H", len(SHEET_MARK) + 2) + SHEET_MARK + data[at:]
    data = encode_png(sheet, 3)
    text = b"Software\0" + SHEET_MARK
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    return data[:33] + chunk + data[33:]  # after the signature (8 bytes) and IHDR (25)


def check_replaceable_sheet(path: Path) -> None:
    """A file already at ``path`` must be a contact sheet (an earlier ``synth show``) to be replaced:
    an --out naming a photo, a background or any other image by mistake is one line, not overwritten."""
    if not path.is_file():
        return
    try:
        with path.open("rb") as handle:
            start = handle.read(MARK_WITHIN)
    except OSError as error:
        raise InputError(f"{path}: cannot read --out ({error.strerror})") from None
    if SHEET_MARK not in start:
        raise InputError(f"{path}: --out exists and is not a contact sheet of `synth show`; not overwriting it "
                         "(remove it or choose another name; a sheet of a synth before 2026-12-07 carries no mark "
                         "telling it from a photo)")


def instance_colour(instance_id: int) -> tuple[int, int, int]:
    hue = (instance_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_annotations(image: np.ndarray, instances: np.ndarray, objects: list[dict], opacity: float = 0.3,
                     scale: float = 1.0) -> np.ndarray:
    """Tint each instance's visible mask, outline it, and draw its box and category, on ``image``
    (the composite resized by ``scale``; ``instances`` at that size, boxes scaled to it). Drawn at the
    size the sheet shows: drawn on the 512-px composite and then shrunk, the labels were unreadable."""
    out = image.copy()
    h, w = out.shape[:2]
    for obj in objects:
        colour = instance_colour(obj["instance_id"])
        region = instances == obj["instance_id"]
        out[region] = (out[region] * (1 - opacity) + np.array(colour, np.float32) * opacity).astype(np.uint8)
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 1)
        x0, y0, x1, y1 = (round(v * scale) for v in obj["box"])
        x1, y1 = min(w, max(x0 + 1, x1)), min(h, max(y0 + 1, y1))
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
        label = f"{obj['category']} {format_score(obj['visible_fraction'])}"
        put_label(out, (label, str(obj["category"])), (x0 + 3, y0 + 1), (255, 255, 255), above=False)
    return out


def contact_sheet(shard_paths: list[Place | str], out: Path, rows: int = 4, columns: int = 4, tile: int = 256, seed: int = 0) -> int:
    """Write a grid of randomly chosen, annotated composites; returns how many were drawn."""
    shards = find_shards(shard_paths)
    # An entry a row group, not a row (a tuple a row was ~100 bytes: 100 MB for a million rows); a
    # pick is the same row of the same shards as before.
    groups = [(path, group, count) for path in shards for group, count in enumerate(_group_sizes(path))]
    firsts = np.cumsum([0] + [count for _, _, count in groups])
    if firsts[-1] == 0:  # (a shard file named alone, written with no rows): a blank sheet said '0 composites'
        raise InputError(f"{', '.join(map(str, shards))}: no rows to show")
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(int(firsts[-1]), size=min(rows * columns, int(firsts[-1])), replace=False).tolist())
    sheet = np.full((rows * tile, columns * tile, 3), 24, np.uint8)
    shard = None  # (path, the shard open): the picks come in shard order, each footer read once, not per pick
    for slot, pick in enumerate(picks):
        at = int(np.searchsorted(firsts, pick, side="right")) - 1
        path, group, row = groups[at][0], groups[at][1], pick - int(firsts[at])
        if shard is None or shard[0] != path:
            shard = (path, open_shard(path))
        record = read_row_group(path, group, None, shard[1]).slice(row, 1).to_pylist()[0]
        # In colour whatever was stored: a grey composite (a shard written by another tool) was numpy's
        # broadcast ValueError where its objects were tinted. Its pixels as stored, as its mask's are.
        image = decode_image(stored_bytes(record, "image"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
                             name=f"{path}:{record['id']}")
        instances = decode_image(stored_bytes(record, "mask"), name=f"{path}:{record['id']} mask")
        if instances.ndim != 2:  # an RGB picture, not the one-channel instance ids the schema stores
            raise InputError(f"{path}:{record['id']}: mask has {instances.shape[2]} channels; expected one "
                             "channel of instance ids")
        if instances.shape[:2] != image.shape[:2]:  # resized to the tile, it would be drawn stretched
            raise InputError(f"{path}:{record['id']}: mask is {instances.shape[1]}x{instances.shape[0]} but its "
                             f"image is {image.shape[1]}x{image.shape[0]}")
        scale = tile / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        instances = resize_labels(instances, size[1], size[0])
        problem = next(filter(None, map(object_problem, record["objects"] or [])), None)
        if problem is not None:
            raise InputError(f"{path}:{record['id']}: malformed object entry ({problem})")
        # A labelled photo's background and its __ignore__ pixels are no objects: drawn, extract's untrusted
        # pixels (most of a pseudo-labelled photo) were a tinted box round the photo, '__ignore__ 1.00'.
        objects = [obj for obj in record["objects"] or []
                   if not is_photo_background(obj) and not is_photo_region(obj, IGNORE_CATEGORY)]
        drawn = draw_annotations(image, instances, objects, scale=scale)
        y, x = (slot // columns) * tile, (slot % columns) * tile
        sheet[y : y + drawn.shape[0], x : x + drawn.shape[1]] = drawn
        put_label(sheet[y : y + tile, x : x + tile], (record["id"],), (4, tile), (255, 255, 0), base_scale=0.35)
    atomic_write_bytes(out, sheet_bytes(sheet, out.suffix))
    return len(picks)


def _group_sizes(path: Place) -> list[int]:
    metadata = open_shard(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
