"""Local features for geometric verification (pipelines/verify.py): points and descriptors from
OpenCV SIFT or from the search network's own stride-8 features, and the two ways of matching them.

Coordinates follow OpenCV's keypoints: pixel (i, j)'s centre is the point (i, j).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np


@dataclass
class Keypoints:
    """Points (N x 2, x/y in an image's pixels) and their descriptors (N x D float32)."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def inside(self, box: Sequence[float]) -> "Keypoints":
        """Those within ``box`` = [x0, y0, x1, y1] (pixel edges)."""
        x0, y0, x1, y1 = box
        x, y = self.points[:, 0] + 0.5, self.points[:, 1] + 0.5
        keep = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        return Keypoints(self.points[keep], self.descriptors[keep])


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)


class SiftFeatures:
    """OpenCV SIFT keypoints with RootSIFT descriptors (L1-normalised, square-rooted: Hellinger
    distance, which ranks matches better than SIFT's raw L2).

    ``zoom`` resizes images before detection: 0.5 skips OpenCV's doubled first octave (about 4x
    faster, but on the benchmarks' garments it lost half the verifications, so 1.0 is the default).
    """

    def __init__(self, zoom: float = 1.0) -> None:
        self.sift = cv2.SIFT_create()
        self.zoom = zoom

    def detect(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> Keypoints:
        grey = _grey(rgb)
        mask8 = None if mask is None else (mask >= 0.5).astype(np.uint8) * 255
        if self.zoom != 1.0:
            size = (max(1, round(grey.shape[1] * self.zoom)), max(1, round(grey.shape[0] * self.zoom)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            mask8 = None if mask8 is None else cv2.resize(mask8, size, interpolation=cv2.INTER_NEAREST)
        keypoints, descriptors = self.sift.detectAndCompute(grey, mask8)
        if descriptors is None or not keypoints:
            return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        descriptors = descriptors / (np.abs(descriptors).sum(axis=1, keepdims=True) + 1e-7)
        points = (np.float32([k.pt for k in keypoints]) + 0.5) / self.zoom - 0.5
        return Keypoints(points.astype(np.float32), np.sqrt(descriptors).astype(np.float32))


@dataclass
class DenseMap:
    """A C x h x w stride-8 feature map of an image shrunk by ``factor`` (map pixels = image
    pixels x factor), e.g. the one the search network computed for its heat map."""

    features: np.ndarray
    factor: float = 1.0


class NetworkFeatures:
    """Dense descriptors: a backbone's stride-8 features, one per grid cell, L2-normalised.

    ``encode`` maps a batch of same-size RGB uint8 images (N x H x W x 3) to their feature maps
    (N x C x ceil(H/8) x ceil(W/8), e.g. the search network's backbone: :func:`backbone_encoder`).
    """

    stride = 8

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray]) -> None:
        self.encode = encode

    def detect_many(self, images: Sequence[np.ndarray],
                    masks: Sequence[np.ndarray | None]) -> list[Keypoints]:
        """The cells of same-size images (those at least half object where a mask is given),
        encoded in one batch."""
        features = self.encode(np.stack(images))
        out = []
        for feature, mask in zip(features, masks):
            keep = None if mask is None else cv2.resize(
                mask.astype(np.float32), feature.shape[:0:-1], interpolation=cv2.INTER_AREA) >= 0.5
            out.append(self.cells(feature, keep))
        return out

    def detect(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> Keypoints:
        return self.detect_many([rgb], [mask])[0]

    def cells(self, features: np.ndarray, keep: np.ndarray | None = None) -> Keypoints:
        """Keypoints of a C x h x w feature map: cell centres (pixels of the encoded image)."""
        _, gh, gw = features.shape
        keep = np.ones((gh, gw), bool) if keep is None else keep
        ys, xs = np.nonzero(keep)
        descriptors = np.ascontiguousarray(features[:, ys, xs].T, dtype=np.float32)
        descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True) + 1e-6
        points = (np.stack([xs, ys], axis=1).astype(np.float32) + 0.5) * self.stride - 0.5
        return Keypoints(points, descriptors)


def backbone_encoder(model: object, device: object = "cpu",
                     onnx: Callable[[], bool] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``encode`` for :class:`NetworkFeatures` from a :class:`train.model.QuerySearchNet`: the
    raw stride-8 backbone features, as its search correlates them. Where ``onnx()`` says so at the
    call (the search encodes its media in onnxruntime: a long job), onnxruntime encodes them too,
    from a graph of the backbone up to stride 8 (pipelines/onnx_backbone.py)."""
    import torch

    def encode(images: np.ndarray) -> np.ndarray:
        if onnx is not None and onnx():
            from pipelines.onnx_backbone import medium_encoder

            encoder = medium_encoder(model, max_stride=8)  # type: ignore[arg-type]
            if encoder is not None:
                array = images[..., :3].transpose(0, 3, 1, 2).astype(np.float32)  # a C-ordered copy
                array /= np.float32(255.0)
                return encoder.raw(array)[0]
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(images[..., :3])).to(device)
            tensor = tensor.permute(0, 3, 1, 2).float().div_(255.0)
            tensor = tensor.contiguous(memory_format=torch.channels_last)
            feats = model.backbone.forward_features(tensor, max_stride=8)  # type: ignore[attr-defined]
            return feats[0].float().contiguous().cpu().numpy()

    return encode


def ratio_matches(query: Keypoints, medium: Keypoints, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (query, medium) of matches passing Lowe's ratio test (a lone medium keypoint has
    no second-best and is matched on its own)."""
    if len(query) == 0 or len(medium) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(query.descriptors, medium.descriptors, k=min(2, len(medium)))
    good = [p[0] for p in pairs if p and (len(p) == 1 or p[0].distance < ratio * p[1].distance)]
    return np.array([g.queryIdx for g in good], int), np.array([g.trainIdx for g in good], int)


def mutual_matches(query: Keypoints, medium: Keypoints, ratio: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of mutual nearest neighbours by cosine between unit descriptors."""
    if len(query) == 0 or len(medium) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    similarity = query.descriptors @ medium.descriptors.T
    best_medium = similarity.argmax(axis=1)
    # The best query of each medium keypoint as argmax(axis=0) gives it, without that call: numpy
    # reduces a column-wise argmax one strided column at a time (20x slower than max(axis=0) at
    # 3000 x 4800, most of verification's time). A column's first maximal row is its argmax.
    column_max = similarity.max(axis=0)
    at_max = similarity == column_max
    if np.count_nonzero(at_max) == len(medium):  # no ties: each column's maximum is at one row
        q = np.nonzero(at_max[np.arange(len(query)), best_medium])[0]
    else:
        q = np.nonzero(at_max.argmax(axis=0)[best_medium] == np.arange(len(query)))[0]
    return q, best_medium[q]
