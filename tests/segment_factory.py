"""Tiny generated photos for the segmentation and self-tuning tests: discs and boxes on noise.

``make_scene_photos`` writes a ``mask_pairs`` source (images/, masks/ with value 1 = disc and
2 = box, categories.json), ``make_unlabeled`` the same kind of photos without masks, and
``make_noise_backgrounds`` plain textures. ``tiny_selftune_config`` is a self-tuning config small
enough to run two rounds in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

CLASSES = [{"name": "background"}, {"name": "disc", "source_labels": ["disc"]}, {"name": "box", "source_labels": ["box"]}]


def _scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.GaussianBlur(rng.integers(60, 200, (size, size, 3), dtype=np.uint8), (0, 0), 2)
    mask = np.zeros((size, size), np.uint8)
    for value in (1, 2):
        x, y = (int(v) for v in rng.integers(size // 5, size - size // 5, 2))
        r = int(rng.integers(size // 5, size // 3))
        if value == 1:
            cv2.circle(mask, (x, y), r, 1, -1)
            colour = (230, 40, 40)
        else:
            mask[max(0, y - r):y + r, max(0, x - r):x + r] = 2
            colour = (40, 60, 230)
        image[mask == value] = colour
    return image, mask


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def make_scene_photos(root: Path, count: int = 8, size: int = 64, seed: int = 0, prefix: str = "photo") -> Path:
    rng = np.random.default_rng(seed)
    for index in range(count):
        image, mask = _scene(rng, size)
        _save(root / "images" / f"{prefix}{index:03d}.png", image)
        _save(root / "masks" / f"{prefix}{index:03d}.png", mask)
    (root / "categories.json").write_text(json.dumps({"1": "disc", "2": "box"}))
    return root


def make_unlabeled(root: Path, count: int = 6, size: int = 64, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for index in range(count):
        _save(root / f"unlabeled{index:03d}.png", _scene(rng, size)[0])
    return root


def make_noise_backgrounds(root: Path, count: int = 3, size: int = 80) -> Path:
    rng = np.random.default_rng(7)
    for index in range(count):
        _save(root / f"background{index}.jpg", cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (0, 0), 3))
    return root


def tiny_train_values(**overrides) -> dict:
    values = {
        "task": "segment",
        "model": {"pretrained": False, "decoder_channels": 8, "dropout": 0.0},
        "segment": {"classes": CLASSES, "short_side": 48, "crop_size": 48, "eval_size": [48, 48], "scale_range": [0.9, 1.1],
                    "store_short_side": 64, "blur_p": 0.0},
        "batch_size": 2, "steps": 4, "num_workers": 0, "warmup_steps": 1, "log_every": 2, "eval_every": 0,
        "checkpoint_every": 2, "shuffle_buffer": 4, "device": "cpu", "lr": 0.01,
    }
    values.update(overrides)
    return values


def save_untrained_segmenter(path: Path) -> Path:
    """A segmenter's checkpoint with untrained weights (what it labels does not matter; the wrong
    kind of checkpoint for the query search commands)."""
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(**tiny_train_values())
    save_checkpoint(path, model=build_task(config).build_model(), optimizer=None, step=0, config=config.to_dict(),
                    config_hash=config.hash())
    return path


def tiny_selftune_config(**overrides) -> dict:
    values = {
        "train": tiny_train_values(),
        "expand": {"num": 6, "composition": {"width": 64, "height": 64, "min_objects": 1, "max_objects": 2,
                                             "object_scale": [0.3, 0.6]},
                   "sources": {"min_area": 20, "superpixel_max_side": 32}, "output": {"row_group_rows": 3}},
        "extract": {"min_area": 0.01, "min_confidence": 0.0, "min_stability": 0.0, "superpixel_max_side": 32,
                    "previews": 2},
        "labeled": {"include": ["photo00[0-5]"]},
        "held_out": {"include": ["photo00[6-7]"]},
        "finetune_steps": 4,
        "max_rounds": 2,
        "min_gain": -1.0,
    }
    values.update(overrides)
    return values
