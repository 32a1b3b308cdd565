"""`synth show`: a contact sheet of random composites with instance masks and boxes drawn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from augment.imageio import decode_image, save_image
from augment.shards import find_shards, open_shard
from augment.storage import Place


def instance_colour(instance_id: int) -> tuple[int, int, int]:
    hue = (instance_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_annotations(image: np.ndarray, instances: np.ndarray, objects: list[dict], opacity: float = 0.3) -> np.ndarray:
    """Tint each instance's visible mask, outline it, and draw its box and category."""
    out = image.copy()
    for obj in objects:
        region = instances == obj["instance_id"]
        colour = np.array(instance_colour(obj["instance_id"]), np.float32)
        out[region] = (out[region] * (1 - opacity) + colour * opacity).astype(np.uint8)
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, instance_colour(obj["instance_id"]), 1)
        x0, y0, x1, y1 = obj["box"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), instance_colour(obj["instance_id"]), 2)
        label = f"{obj['category']} {obj['visible_fraction']:.2f}"
        cv2.putText(out, label, (x0 + 2, max(12, y0 + 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, (x0 + 2, max(12, y0 + 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(shard_paths: list[Place | str], out: Path, rows: int = 4, columns: int = 4, tile: int = 256, seed: int = 0) -> int:
    """Write a grid of randomly chosen, annotated composites; returns how many were drawn."""
    shards = find_shards(shard_paths)
    index = [(path, group, row) for path in shards for group, count in enumerate(_group_sizes(path)) for row in range(count)]
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(index), size=min(rows * columns, len(index)), replace=False).tolist())
    sheet = np.full((rows * tile, columns * tile, 3), 24, np.uint8)
    for slot, pick in enumerate(picks):
        path, group, row = index[pick]
        record = open_shard(path).read_row_group(group).slice(row, 1).to_pylist()[0]
        image = decode_image(record["image"]["bytes"], name=f"{path}:{record['id']}")
        instances = decode_image(record["mask"]["bytes"], name=f"{path}:{record['id']}")
        drawn = draw_annotations(image, instances, record["objects"])
        scale = tile / max(drawn.shape[:2])
        drawn = cv2.resize(drawn, (int(drawn.shape[1] * scale), int(drawn.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        y, x = (slot // columns) * tile, (slot % columns) * tile
        sheet[y : y + drawn.shape[0], x : x + drawn.shape[1]] = drawn
        cv2.putText(sheet, record["id"], (x + 4, y + tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
    save_image(out, sheet)
    return len(picks)


def _group_sizes(path: Place) -> list[int]:
    metadata = open_shard(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
