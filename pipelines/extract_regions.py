"""The regions of a photo's prediction in `synth extract` (:mod:`pipelines.extract`): each connected
region of a class scored (area, confidence, stability against the second view) and rejected for the
first filter it fails, the pseudo-label values they give, an accepted region as a cutout row, and
the preview drawing of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from augment.config import SourceConfig
from augment.cutouts import object_row
from augment.sources import crop_object
from pipelines.segmenter import Prediction, overlay

if TYPE_CHECKING:  # pipelines.extract imports this module
    from pipelines.extract import ExtractConfig


@dataclass
class Region:
    class_index: int
    area: float  # share of the photo
    confidence: float
    stability: float
    mask: np.ndarray  # bool, working resolution
    rejected: str | None  # None = accepted


def score_regions(first: Prediction, second: Prediction, config: ExtractConfig) -> list[Region]:
    """Connected regions of every non-background class in ``first``, scored against ``second``."""
    labels = first.probabilities.argmax(0)
    other = second.probabilities.argmax(0)
    pixels = labels.size
    regions: list[Region] = []
    for index in range(1, first.probabilities.shape[0]):
        present = labels == index
        if not present.any():
            continue
        count, components = cv2.connectedComponents(present.astype(np.uint8), connectivity=8)
        other_count, other_components = cv2.connectedComponents((other == index).astype(np.uint8), connectivity=8)
        for component in range(1, count):
            mask = components == component
            area = float(mask.sum()) / pixels
            confidence = float(first.probabilities[index][mask].mean())
            touching = np.unique(other_components[mask])
            matched = np.isin(other_components, touching[touching > 0]) if other_count > 1 else np.zeros_like(mask)
            stability = float((mask & matched).sum() / max(1, (mask | matched).sum()))
            rejected = ("small" if area < config.min_area else "low_confidence" if confidence < config.min_confidence
                        else "unstable" if stability < config.min_stability else None)
            regions.append(Region(index, area, confidence, stability, mask, rejected))
    return regions


def pseudo_label_values(prediction: Prediction, regions: list[Region], config: ExtractConfig) -> np.ndarray:
    """Working-resolution label values: accepted regions' classes, confident background 0, the rest ignored."""
    num_classes = prediction.probabilities.shape[0]
    values = np.full(prediction.probabilities.shape[1:], num_classes, np.uint8)  # num_classes = "ignore"
    values[(prediction.probabilities.argmax(0) == 0) & (prediction.probabilities[0] >= config.background_confidence)] = 0
    for region in regions:
        if region.rejected is None:
            values[region.mask] = region.class_index
    return values


def cutout_row(image: np.ndarray, path: Path, region: Region, category: str, cutter: SourceConfig, model_id: str,
                round_index: int) -> dict:
    height, width = image.shape[:2]
    mask = cv2.resize(region.mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    item = crop_object(image, mask, category, path, cutter)
    item.provenance = {"source": "auto", "model_id": model_id, "round": round_index,
                       "confidence": region.confidence, "stability": region.stability}
    return object_row(item)


def preview_image(image: np.ndarray, prediction: Prediction, regions: list[Region]) -> np.ndarray:
    """Accepted regions tinted in their class colour, rejected ones outlined in red (working resolution)."""
    height, width = prediction.probabilities.shape[1:]
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    labels = np.zeros((height, width), np.uint8)
    for region in regions:
        if region.rejected is None:
            labels[region.mask] = region.class_index
    picture = overlay(small, labels)
    for region in regions:
        if region.rejected is not None:
            contours, _ = cv2.findContours(region.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(picture, contours, -1, (255, 0, 0), 1)
    return picture
