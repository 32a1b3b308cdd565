"""Inference of a trained segmentation checkpoint on photos: class probabilities, label maps, overlays.

A photo is scaled so its shorter side is the training config's ``segment.short_side`` (the scale
the network was trained and scored at; the longer side at most :data:`MAX_WORKING_ASPECT` times
that), run through the network (bf16 autocast on CUDA), and the class probabilities are resized
back to the photo's size for the outputs of `synth segment`. :meth:`Segmenter.views` also returns
the mirrored view's probabilities, for `synth extract`'s stability filter. Both take a path (read
upright, as `synth segment` reads it), a numpy array or a PIL image, read as
:func:`augment.picture_arrays.load_rgb` reads them for the search: grey, RGB or RGBA (its alpha is
dropped, as a file's), uint16 as 16-bit, floats in [0, 1] or 0-255; an array that is not a picture
(channels first, a batch, no pixels) is a ValueError naming ``image``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from augment.imageio import InputError, resize_image
from augment.picture_arrays import ImageLike, load_rgb
from augment.pixel_limit import SEGMENT_WORK, pixel_work
from pipelines.search import resolve_device
from train.segment_config import SegmentClass

# The network's input is at most this many times ``segment.short_side`` on its longer side: a photo
# more elongated than 8:1 (a banner, a strip of pixels) is seen with a shorter short side, not
# enlarged until its long side alone takes gigabytes.
MAX_WORKING_ASPECT = 8

# Overlay colours of classes 1.. (class 0, the background, is left uncoloured); cycled past 12.
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
                    (220, 190, 255), (170, 110, 40)], np.uint8)


def class_colour(index: int) -> np.ndarray:
    return PALETTE[(index - 1) % len(PALETTE)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The photo with each non-background class tinted in its colour and outlined."""
    colours = np.zeros_like(image)
    for index in np.unique(labels):
        if index:
            colours[labels == index] = class_colour(int(index))
    tinted = image.copy()
    painted = labels > 0
    tinted[painted] = (image[painted] * (1 - alpha) + colours[painted] * alpha).astype(np.uint8)
    edges = cv2.morphologyEx(labels.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    tinted[edges & painted] = colours[edges & painted]
    return tinted


def weights_digest(model: torch.nn.Module) -> str:
    """Content hash of a model's weights: its id in provenance (the checkpoint file's bytes also hold
    optimizer and RNG state, and the archive's internal names, so they would not identify the model)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Prediction:
    """Class probabilities of one photo at the working resolution (C × h × w) and the photo's size."""

    probabilities: np.ndarray
    size: tuple[int, int]  # (height, width) of the photo

    def at_photo_size(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8, confidence float32) at the photo's size."""
        height, width = self.size
        probs = F.interpolate(torch.from_numpy(self.probabilities)[None], size=(height, width), mode="bilinear",
                              align_corners=False)[0]
        confidence, labels = probs.max(0)
        return labels.numpy().astype(np.uint8), confidence.numpy()


class Segmenter:
    """A trained segmentation checkpoint, ready to label photos."""

    def __init__(self, checkpoint: Path | str, device: str | torch.device = "auto") -> None:
        from train.evaluate import load_trained

        model, config = load_trained(checkpoint)
        if config.task != "segment":
            raise InputError(f"{checkpoint}: a {config.task} checkpoint, not a segmentation one (task segment)")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.segment = config.segment_config()
        self.classes: tuple[SegmentClass, ...] = self.segment.classes
        self.model_id = weights_digest(model)
        self.amp = self.device.type == "cuda" and config.amp != "off"
        self.channels_last = config.channels_last

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network sees: the shorter side at ``segment.short_side``, the longer at
        most :data:`MAX_WORKING_ASPECT` times that (a 2 x 12000 px strip was 160 x 960000 px: 24 GB, killed)."""
        factor = min(self.segment.short_side / min(height, width),
                     self.segment.short_side * MAX_WORKING_ASPECT / max(height, width))
        return max(1, round(height * factor)), max(1, round(width * factor))

    @torch.no_grad()
    def _probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(batch)["logits"]
        return logits.float().softmax(1).cpu().numpy()

    def predict(self, image: ImageLike) -> Prediction:
        # the pixel limit (from the shape, before any copy), the shape and the values, as the search reads
        # them: a uint16 or [0, 1] float array fed as it came was 257x too bright or all but black
        with pixel_work(SEGMENT_WORK):
            image = load_rgb(image, "image")
        height, width = image.shape[:2]
        work_h, work_w = self.working_size(height, width)
        return Prediction(self._probabilities([resize_image(image, work_w, work_h)])[0], (height, width))

    def views(self, image: ImageLike) -> tuple[Prediction, Prediction]:
        """The photo's prediction and its mirror image's (mirrored back), from one batch of two."""
        with pixel_work(SEGMENT_WORK):
            image = load_rgb(image, "image")
        height, width = image.shape[:2]
        work_h, work_w = self.working_size(height, width)
        small = resize_image(image, work_w, work_h)
        probs = self._probabilities([small, np.ascontiguousarray(small[:, ::-1])])
        return (Prediction(probs[0], (height, width)),
                Prediction(np.ascontiguousarray(probs[1][:, :, ::-1]), (height, width)))
