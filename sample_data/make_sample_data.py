"""Regenerate sample_data/: RGBA object cutouts drawn here and backgrounds from scikit-image.

    python sample_data/make_sample_data.py

Objects are drawn procedurally (garment, bag, shoe, hat and badge shapes with
printed textures) plus scikit-image's logo; backgrounds are crops of the photos that
ship inside scikit-image (licences in sample_data/LICENSES.md). Deterministic.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

HERE = Path(__file__).resolve().parent
rng = np.random.default_rng(2026)


def texture(kind: str, size: tuple[int, int], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """A printed-fabric texture: stripes, checks, dots, gradient or noise."""
    h, w = size
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[:] = colours[0]
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "stripes":
        period = int(rng.integers(8, 20))
        canvas[((xx + yy) // period) % 2 == 1] = colours[1]
    elif kind == "checks":
        period = int(rng.integers(10, 24))
        canvas[((xx // period) + (yy // period)) % 2 == 1] = colours[1]
        canvas[(xx % period < 2) | (yy % period < 2)] = colours[2]
    elif kind == "dots":
        period = int(rng.integers(12, 22))
        for cy in range(period // 2, h, period):
            for cx in range((cy // period % 2) * period // 2, w, period):
                cv2.circle(canvas, (cx, cy), period // 4, colours[1], -1, cv2.LINE_AA)
    elif kind == "gradient":
        t = (xx / max(1, w - 1))[..., None]
        canvas = (np.array(colours[0]) * (1 - t) + np.array(colours[1]) * t).astype(np.uint8)
    else:
        noise = cv2.GaussianBlur(rng.integers(0, 255, (h, w), dtype=np.uint8), (0, 0), 3)
        t = (noise / 255.0)[..., None]
        canvas = (np.array(colours[0]) * (1 - t) + np.array(colours[1]) * t).astype(np.uint8)
    return canvas


def shape_mask(kind: str, size: int) -> np.ndarray:
    """A garment-like silhouette on a size×size canvas."""
    mask = np.zeros((size, size), np.uint8)
    s = size / 100.0
    polygons = {
        "shirt": [(30, 8), (42, 14), (58, 14), (70, 8), (95, 28), (84, 42), (74, 36), (74, 95), (26, 95), (26, 36), (16, 42), (5, 28)],
        "dress": [(38, 5), (62, 5), (64, 30), (85, 95), (15, 95), (36, 30)],
        "trousers": [(25, 5), (75, 5), (82, 95), (58, 95), (50, 40), (42, 95), (18, 95)],
        "bag": [(12, 35), (88, 35), (92, 92), (8, 92)],
        "shoe": [(8, 55), (40, 50), (55, 30), (70, 30), (72, 60), (95, 70), (95, 85), (8, 85)],
    }
    if kind == "hat":
        cv2.ellipse(mask, (size // 2, int(70 * s)), (int(46 * s), int(14 * s)), 0, 0, 360, 255, -1, cv2.LINE_AA)
        cv2.ellipse(mask, (size // 2, int(62 * s)), (int(28 * s), int(38 * s)), 0, 180, 360, 255, -1, cv2.LINE_AA)
    elif kind == "badge":
        points = [(50 + 45 * np.cos(a) * (1 if i % 2 == 0 else 0.55), 50 + 45 * np.sin(a) * (1 if i % 2 == 0 else 0.55)) for i, a in enumerate(np.linspace(0, 2 * np.pi, 17)[:-1])]
        cv2.fillPoly(mask, [np.round(np.array(points) * s).astype(np.int32)], 255, cv2.LINE_AA)
    else:
        cv2.fillPoly(mask, [np.round(np.array(polygons[kind]) * s).astype(np.int32)], 255, cv2.LINE_AA)
    if kind == "bag":  # a handle
        cv2.ellipse(mask, (size // 2, int(35 * s)), (int(24 * s), int(22 * s)), 0, 180, 360, 255, int(6 * s), cv2.LINE_AA)
    return mask


def make_objects(out: Path) -> None:
    palette = [(200, 30, 40), (30, 60, 160), (240, 200, 40), (20, 130, 70), (240, 240, 235), (30, 30, 35), (150, 80, 160), (230, 120, 30)]
    kinds = ["shirt", "dress", "trousers", "bag", "shoe", "hat", "badge"]
    textures = ["stripes", "checks", "dots", "gradient", "noise"]
    for index in range(14):
        kind = kinds[index % len(kinds)]
        size = int(rng.integers(150, 220))
        picks = rng.choice(len(palette), 3, replace=False)
        rgb = texture(textures[index % len(textures)], (size, size), [palette[i] for i in picks])
        mask = shape_mask(kind, size)
        # Shading and a printed logo make each object distinct enough to be searched for.
        shade = cv2.GaussianBlur(mask, (0, 0), size / 12).astype(np.float32) / 255.0
        rgb = np.clip(rgb.astype(np.float32) * (0.6 + 0.4 * shade[..., None]), 0, 255).astype(np.uint8)
        cv2.putText(rgb, f"{index:02d}", (size // 3, size // 2 + 10), cv2.FONT_HERSHEY_SIMPLEX, size / 160, (255, 255, 255), 2, cv2.LINE_AA)
        ys, xs = np.nonzero(mask)
        crop = np.dstack([rgb, mask])[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{kind}_{index:02d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGBA2BGRA))
    logo = skdata.logo()  # RGBA, alpha is the mask
    folder = out / "logo"
    folder.mkdir(parents=True, exist_ok=True)
    logo = cv2.resize(logo, (logo.shape[1] // 2, logo.shape[0] // 2), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "skimage_logo.png"), cv2.cvtColor(logo, cv2.COLOR_RGBA2BGRA))


def make_backgrounds(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    photos = {
        "astronaut": skdata.astronaut(),
        "coffee": skdata.coffee(),
        "chelsea": skdata.chelsea(),
        "rocket": skdata.rocket(),
        "hubble": skdata.hubble_deep_field(),
        "brick": skdata.brick(),
        "grass": skdata.grass(),
        "gravel": skdata.gravel(),
    }
    for name, image in photos.items():
        if image.ndim == 2:
            image = np.dstack([image] * 3)
        image = image[:, :, :3]
        scale = 480 / min(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def main() -> None:
    for folder in ("objects", "backgrounds"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    make_objects(HERE / "objects")
    make_backgrounds(HERE / "backgrounds")


if __name__ == "__main__":
    main()
