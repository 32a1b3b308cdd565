"""Backbone features of labelled photos, computed once while the backbone is frozen.

With a frozen (pretrained) backbone the medium's features are a fixed function of its pixels, and a
real medium is photos tiled side by side at one height. So each training photo is encoded once, at
that height and a width rounded to the backbone's deepest stride, and a medium's features are its
photos' features put side by side: the medium's backbone pass, most of a CPU training step, is
gone. (A tiled medium's features differ from these only within a few cells of the seams, where the
real pass would see the neighbouring photo instead of padding.)
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from augment.imageio import resize_image
from augment.photo_pairs import PhotoIndex
from train.backbones import create_backbone, fold_batchnorm

logger = logging.getLogger(__name__)


class PhotoFeatureCache:
    """Per photo of ``index``: its width in pixels at ``height`` and its backbone features (float16,
    one C x h x w tensor per feature level up to ``max_stride``)."""

    def __init__(self, index: PhotoIndex, height: int, backbone: str = "efficientnet_lite0",
                 max_stride: int = 16) -> None:
        if height % max_stride:
            raise ValueError(f"cache height {height} must be a multiple of the stride {max_stride}")
        self.height, self.stride = height, max_stride
        network = fold_batchnorm(create_backbone(backbone, pretrained=True)).eval()
        self.widths: list[int] = []
        self.features: list[list[torch.Tensor]] = []
        with torch.inference_mode():
            for photo in range(len(index)):
                image = index.image(photo)
                width = max(max_stride, round(image.shape[1] * height / image.shape[0] / max_stride) * max_stride)
                pixels = resize_image(image, width, height)
                tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255.0
                feats = network.forward_features(tensor, max_stride=max_stride)
                self.widths.append(width)
                self.features.append([f[0].to(torch.float16).contiguous() for f in feats])
        total = sum(f.numel() * 2 for feats in self.features for f in feats)
        logger.info("cached backbone features of %d photos at height %d (%.1f MB)", len(index), height, total / 2**20)

    def strides(self) -> list[int]:
        return [self.height // f.shape[-2] for f in self.features[0]]

    def medium(self, photos: list[int], x0: int, width: int) -> list[torch.Tensor]:
        """Features of ``photos`` side by side, columns ``x0`` .. ``x0 + width`` pixels (zeros past
        the last photo)."""
        out = []
        for level, stride in enumerate(self.strides()):
            row = torch.cat([self.features[p][level] for p in photos], dim=-1)
            a, b = x0 // stride, (x0 + width) // stride
            piece = row[..., a:min(b, row.shape[-1])]
            if piece.shape[-1] < b - a:
                piece = torch.nn.functional.pad(piece, (0, b - a - piece.shape[-1]))
            out.append(piece.contiguous())
        return out
