"""Small objects among look-alikes: crowd mosaics of CCP test photos, and the tracking sequences.

A crowd mosaic is a 640x480 frame tiled with small street photos in rows 75-135 px high (so each
person is about 60-120 px tall): 6-12 CCP *test* photos (0601-0700, benchmarks/ccp.py) at random
places, unlabelled CCP photos (1005-2098) everywhere else. The query is a garment of one photo, in two variants:

- ``original``: cut from the photo at its original resolution (on white, with its alpha), so the
  search must shrink it 4-8x;
- ``mosaic``: cut small from the mosaic itself, then mirrored and recoloured (hue +-12 degrees,
  value and saturation +-15%): a query of 30-60 px, like a player cropped from a broadcast frame.

Negatives search the same kind of query in a mosaic without its photo but with at least one
photo holding a garment of its category. Every case is a pure function of (seed, index).

The tracking sequences (../shared/data/tracking, read its README): the query is the target cut
from frame 1 by its box; every later frame is searched whole, with no motion prior.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

import ccp
from rendition import RenditionCase as SmallCase  # the same fields: query (RGBA or RGB), scene, box, name
from augment.catalogue import CatalogueConfig, CatalogueTransform
from augment.config import SourceConfig
from augment.imageio import read_image
from augment.photo_pairs import PhotoIndex

FRAME_HW = (480, 640)
ROW_PX = (75, 136)  # a photo's height in the mosaic: its person is then about 60-120 px tall
PHOTOS = (6, 12)
VARIANTS = ("original", "mosaic")
TRACKING = ccp.CCP.parent / "tracking"
BACKGROUND_IDS = (1005, 2098)
# The query variants' catalogue transforms: a plain cut, and a cut mirrored and recoloured.
PLAIN = CatalogueConfig(mirror_probability=0.0, scale=(1.0, 1.0), rotation=0.0, hue_shift=0.0,
                        brightness=(1.0, 1.0), saturation=(1.0, 1.0), min_side=4)
RECOLOURED = CatalogueConfig(mirror_probability=1.0, scale=(1.0, 1.0), rotation=0.0, hue_shift=12.0,
                             brightness=(0.85, 1.15), saturation=(0.85, 1.15), min_side=4)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class CrowdMosaics:
    """The fixed crowd-mosaic cases (see the module docstring)."""

    def __init__(self, seed: int = 0, split: str = "test") -> None:
        # split "calibrate" (photos 0501-0600) makes mosaics to choose settings on; the figures
        # reported are the test photos'.
        first, last = ccp.SEARCH_SPLIT[split]
        config = SourceConfig(format="label_map", min_area=600, drop_labels=["null"],
                              include=ccp.id_patterns(first, last))
        self.index = PhotoIndex.from_sources([ccp.CCP], config)
        self.seed = seed
        self.garments = [[o for o, (c, f) in enumerate(zip(r.categories, r.area_fractions))
                          if c in ccp.GARMENTS and f >= 0.04] for r in self.index.records]
        self.backgrounds = [p for i in range(*BACKGROUND_IDS)
                            if (p := ccp.CCP / "photos" / f"{i:04d}.jpg").is_file()]

    def _mosaic(self, photos: list[int], rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
        """The frame and, per photo of ``photos``, where it landed: (x, y, scale).

        Rows of random height (``ROW_PX``) are filled left to right with photos scaled to the row's
        height; ``photos`` take random slots where they fit whole, unlabelled CCP street photos
        the rest, so the whole frame is a crowd of small people."""
        height, width = FRAME_HW
        frame = np.zeros((height, width, 3), np.uint8)
        placements: dict[int, tuple[int, int, float]] = {}
        todo = list(photos)
        y = 0
        while y < height:
            row = int(rng.integers(*ROW_PX))
            x = 0
            while x < width:
                fits = y + row <= height and todo
                left = max(1.0, (width - x) / (0.66 * row) + (height - y - row) * width / (0.66 * row * row))
                if fits and rng.random() < len(todo) / left:
                    photo = todo[0]
                    image = self.index.image(photo)
                    if x + round(image.shape[1] * row / image.shape[0]) <= width:
                        todo.pop(0)
                        scale = row / image.shape[0]
                        placements[photo] = (x, y, scale)
                        x += self._paste(frame, image, x, y, row)
                        continue
                filler = read_image(self.backgrounds[int(rng.integers(len(self.backgrounds)))], "rgb")
                x += self._paste(frame, filler, x, y, row)
            y += row
        # The random slots ran out (often: 60 of the first 100 positives): the rest at the smallest row
        # height over fillers, from the frame's start on; never over a photo placed (it covered the
        # query's own garment in 3 of those 100, its truth box naming pixels of another photo).
        row = min(ROW_PX[0], height)
        for i, photo in enumerate(todo):
            image = self.index.image(photo)
            x0, y0 = self._free_slot(placements, max(1, round(image.shape[1] * row / image.shape[0])), row,
                                     min(width - 1, i * round(0.7 * row)))
            self._paste(frame, image, x0, y0, row)
            placements[photo] = (x0, y0, row / image.shape[0])
        return frame, [placements[p] for p in photos]

    def _free_slot(self, placements: dict[int, tuple[int, int, float]], w: int, h: int, x: int) -> tuple[int, int]:
        """Where a ``w`` x ``h`` photo covers none of ``placements``: (``x``, 0) where that is free, else
        the first free place, row by row (where none is, (``x``, 0) all the same)."""
        height, width = FRAME_HW
        taken = []
        for p, (px, py, scale) in placements.items():
            ph, pw = self.index.image(p).shape[:2]
            taken.append((px, py, px + max(1, round(pw * scale)), py + round(ph * scale)))

        def free(x0: int, y0: int) -> bool:
            return all(x0 + w <= a or b <= x0 or y0 + h <= c or d <= y0 for a, c, b, d in taken)

        # A free place slid up and left stops at the frame's edge or a placed photo's: those edges suffice.
        xs = sorted({0} | {b for _, _, b, _ in taken if b + w <= width})
        ys = sorted({0} | {d for _, _, _, d in taken if d + h <= height})
        return next((place for place in [(x, 0)] + [(x0, y0) for y0 in ys for x0 in xs] if free(*place)), (x, 0))

    @staticmethod
    def _paste(frame: np.ndarray, image: np.ndarray, x: int, y: int, row: int) -> int:
        """Paste ``image`` scaled to ``row`` pixels high at (x, y), cut at the frame's edges; its width."""
        w = max(1, round(image.shape[1] * row / image.shape[0]))
        small = cv2.resize(image, (w, row), interpolation=cv2.INTER_AREA)
        h_fit, w_fit = min(row, frame.shape[0] - y), min(w, frame.shape[1] - x)
        frame[y:y + h_fit, x:x + w_fit] = small[:h_fit, :w_fit]
        return w

    def _placed_mask(self, photo: int, obj: int, placement: tuple[int, int, float]) -> np.ndarray:
        x, y, scale = placement
        mask = self.index.records[photo].mask(obj).astype(np.float32)
        h, w = max(1, round(mask.shape[0] * scale)), max(1, round(mask.shape[1] * scale))
        small = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA) >= 0.5
        out = np.zeros(FRAME_HW, bool)
        out[y:y + h, x:x + w] = small[:FRAME_HW[0] - y, :FRAME_HW[1] - x]
        return out

    def case(self, k: int, variant: str, positive: bool) -> SmallCase:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, k]))
        queries = [p for p, objects in enumerate(self.garments) if objects]
        photo = queries[int(rng.integers(len(queries)))]
        obj = self.garments[photo][int(rng.integers(len(self.garments[photo])))]
        category = self.index.records[photo].categories[obj]
        count = int(rng.integers(PHOTOS[0], PHOTOS[1] + 1))
        others = [p for p in range(len(self.index)) if p != photo]
        alike = [p for p in self.index.photos_with(category) if p != photo]
        chosen = list(rng.choice(others, size=count - 1, replace=False))
        if alike and not any(p in alike for p in chosen):  # look-alikes: at least one of its category
            chosen[0] = alike[int(rng.integers(len(alike)))]
        with_query = [int(p) for p in chosen] + [photo]
        order = rng.permutation(len(with_query))
        with_query = [with_query[i] for i in order]
        frame, placements = self._mosaic(with_query, rng)
        placed = self._placed_mask(photo, obj, placements[with_query.index(photo)])
        params_rng = np.random.default_rng(np.random.SeedSequence([self.seed, k, 1]))
        if variant == "original":
            query = CatalogueTransform(PLAIN).apply(self.index.image(photo), self.index.records[photo].mask(obj),
                                                    CatalogueTransform(PLAIN).sample(params_rng))
        else:
            transform = CatalogueTransform(RECOLOURED)
            query = transform.apply(frame, placed, transform.sample(params_rng))
        if positive:
            return SmallCase(query, frame, _mask_box(placed), f"mosaic-{k}-{variant}")
        # A negative: the same query in another mosaic of photos without it (one of its category).
        pool = [int(p) for p in others if p not in with_query] or [int(p) for p in others]
        negatives = list(rng.choice(pool, size=min(count, len(pool)), replace=False))
        if alike and not any(p in alike for p in negatives):
            negatives[0] = alike[int(rng.integers(len(alike)))]
        scene, _ = self._mosaic([int(p) for p in negatives], rng)
        return SmallCase(query, scene, None, f"mosaic-{k}-{variant}-negative")

    def cases(self, variant: str, positives: int, negatives: int) -> list[SmallCase]:
        return ([self.case(k, variant, True) for k in range(positives)]
                + [self.case(10_000 + k, variant, False) for k in range(negatives)])


def tracking_sequences() -> list[Path]:
    return sorted(p for p in TRACKING.iterdir() if (p / "groundtruth.txt").is_file()) if TRACKING.is_dir() else []


def tracking_cases(sequence: Path, every: int = 1) -> Iterator[SmallCase]:
    """Frame 1's box as the query; frames 2, 2 + every, ... searched whole (read one at a time)."""
    boxes = []
    for line in (sequence / "groundtruth.txt").read_text().splitlines():
        if line.strip():
            x, y, w, h = (float(v) for v in line.replace("\t", ",").split(",")[:4])
            boxes.append((round(x), round(y), round(x + w), round(y + h)))
    frames = sorted((sequence / "img").glob("*.jpg"))
    first = read_image(frames[0], "rgb")
    x0, y0, x1, y1 = boxes[0]
    query = np.ascontiguousarray(first[max(0, y0):y1, max(0, x0):x1])
    for i in range(1, min(len(frames), len(boxes)), every):
        yield SmallCase(query, read_image(frames[i], "rgb"), boxes[i], f"{sequence.name}/{i + 1:04d}")
