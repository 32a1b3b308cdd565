"""`synth export --format coco`: images plus a COCO instances JSON with RLE masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from augment.imageio import atomic_write_bytes, atomic_write_text, decode_image
from augment.shards import find_shards, iter_rows


def export_coco(shard_paths: list[Path], out_dir: Path) -> dict[str, int]:
    """Write ``out_dir/images/<id>.jpg`` (the stored JPEG bytes, not re-encoded) and ``annotations.json``."""
    shards = find_shards(shard_paths)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, categories = [], [], {}
    for _, row in iter_rows(shards):
        image_id = len(images) + 1
        file_name = f"{row['id']}.jpg"
        atomic_write_bytes(out_dir / "images" / file_name, row["image"]["bytes"])
        images.append({"id": image_id, "file_name": file_name, "width": row["width"], "height": row["height"]})
        instances = decode_image(row["mask"]["bytes"], name=row["id"])
        for obj in row["objects"]:
            binary = np.asfortranarray((instances == obj["instance_id"]).astype(np.uint8))
            rle = mask_utils.encode(binary)
            area = float(mask_utils.area(rle))
            if area == 0:
                continue
            rle["counts"] = rle["counts"].decode("ascii")
            category_id = categories.setdefault(obj["category"], len(categories) + 1)
            x0, y0, x1, y1 = obj["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": rle,
                    "area": area,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    "attributes": {"cutout_id": obj["cutout_id"], "visible_fraction": obj["visible_fraction"]},
                }
            )
    coco = {
        "info": {"description": "exported by synth from " + ", ".join(map(str, shards))},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "object"} for name, i in categories.items()],
    }
    atomic_write_text(out_dir / "annotations.json", json.dumps(coco))
    return {"images": len(images), "annotations": len(annotations), "categories": len(categories)}
