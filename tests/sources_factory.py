"""Small generated inputs for every source format `synth expand` reads."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 20), (200, 40, 200)]


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), image)
    return path


def textured(height: int, width: int, colour: tuple[int, int, int], seed: int) -> np.ndarray:
    """A flat colour with a stripe pattern, so objects are distinct but not uniform."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = colour
    period = int(rng.integers(5, 9))
    image[(np.arange(height)[:, None] + np.arange(width)[None, :]) % period == 0] = (255, 255, 255)
    return image


def make_rgba_source(root: Path, count: int = 4) -> Path:
    """RGBA cutouts in category sub-folders: ellipses and rectangles."""
    for index in range(count):
        size = 60 + 10 * index
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[:, :, :3] = textured(size, size, COLOURS[index % len(COLOURS)], index)
        alpha = np.zeros((size, size), np.uint8)
        if index % 2:
            cv2.ellipse(alpha, (size // 2, size // 2), (size // 2 - 2, size // 3), 0, 0, 360, 255, -1)
        else:
            alpha[5:-5, 10:-10] = 255
        rgba[:, :, 3] = alpha
        _save(root / ("disc" if index % 2 else "box") / f"object_{index}.png", rgba)
    return root


def make_backgrounds(root: Path, count: int = 3, size: tuple[int, int] = (160, 200)) -> Path:
    rng = np.random.default_rng(7)
    for index in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), dtype=np.uint8), (0, 0), 4)
        _save(root / f"background_{index}.jpg", image)
    return root


def make_mask_pairs(root: Path) -> Path:
    """images/ + masks/: one binary mask, one instance-id mask with two objects."""
    image = textured(120, 160, (90, 120, 200), 1)
    binary = np.zeros((120, 160), np.uint8)
    binary[20:90, 30:110] = 255
    _save(root / "images" / "a.jpg", image)
    _save(root / "masks" / "a.png", binary)
    instances = np.zeros((120, 160), np.uint8)
    instances[10:60, 10:70] = 1
    instances[70:115, 80:150] = 2
    _save(root / "images" / "b.png", textured(120, 160, (200, 100, 50), 2))
    _save(root / "masks" / "b.png", instances)
    (root / "categories.json").write_text(json.dumps({"1": "cup", "2": "bag"}))
    return root


def make_coco(root: Path) -> Path:
    """A COCO instances file with one polygon and one RLE annotation."""
    _save(root / "images" / "scene.jpg", textured(100, 140, (60, 160, 90), 3))
    square = np.zeros((100, 140), np.uint8)
    square[50:95, 70:130] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode()
    coco = {
        "images": [{"id": 1, "file_name": "scene.jpg", "width": 140, "height": 100}],
        "categories": [{"id": 1, "name": "shirt"}, {"id": 2, "name": "shoe"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, 60, 10, 60, 60, 10, 60]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle, "iscrowd": 0},
        ],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    return root


def make_label_map(root: Path) -> Path:
    """label_list.json + labels/ + photos/: label 1 in two separate regions, label 2 once, a speck of 3."""
    (root / "label_list.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "label_list.json").write_text(json.dumps(["null", "jacket", "skirt", "hat"]))
    labels = np.zeros((120, 100), np.uint8)
    labels[5:45, 5:45] = 1
    labels[60:110, 55:95] = 1
    labels[60:110, 5:40] = 2
    labels[0:3, 97:100] = 3  # 9 px: below any sensible min_area
    _save(root / "labels" / "0001.png", labels)
    _save(root / "photos" / "0001.jpg", textured(120, 100, (180, 60, 60), 4))
    _save(root / "photos" / "0002.jpg", textured(120, 100, (60, 60, 180), 5))  # unlabelled photo: not used
    return root


def make_street_photos(root: Path, count: int = 6) -> Path:
    """Label-map photos, each a 'coat' (label 1) and, on even ones, a 'skirt' (label 2)."""
    root.mkdir(parents=True)
    (root / "label_list.json").write_text(json.dumps(["null", "coat", "skirt"]))
    for i in range(count):
        labels = np.zeros((160, 100), np.uint8)
        labels[20:90, 20 + i * 5:70 + i * 5 // 2] = 1
        if i % 2 == 0:
            labels[100:150, 20:80] = 2
        _save(root / "labels" / f"{i:04d}.png", labels)
        _save(root / "photos" / f"{i:04d}.jpg", textured(160, 100, (40 * i % 255, 90, 160), 10 + i))
    return root
