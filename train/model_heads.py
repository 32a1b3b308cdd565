"""The layers after the correlation (:mod:`train.model`): the conversion net that turns score maps
into logits, the optional stride-4 edge path, and the pooled box / label heads; with the small
helpers they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from train.backbones import SameConv2d

if TYPE_CHECKING:
    from train.model import SearchNetConfig


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    conv: nn.Conv2d = (SameConv2d(in_ch, out_ch, kernel, stride=stride) if stride > 1 else
                       nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def _zero_conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _is_zero(conv: nn.Conv2d) -> bool:
    return not bool(conv.weight.any()) and (conv.bias is None or not bool(conv.bias.any()))


def _hw(x: torch.Tensor) -> tuple[int, int]:
    """Spatial size as Python ints (the ONNX tracer hands out shape entries as tensors)."""
    return int(x.shape[-2]), int(x.shape[-1])


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False)


class ConversionNet(nn.Module):
    """Score maps (+ medium skip features) -> logits at stride 8 and a feature map for heads.

    ``logits = readout(scores) + residual(trunk(scores, skip))`` with the readout initialised to
    ``gain * (mean(scores) - offset)`` and the residual's last conv zero-initialised.
    """

    def __init__(self, num_scores: int, skip_in: int, cfg: SearchNetConfig) -> None:
        super().__init__()
        self.readout = nn.Conv2d(num_scores, 1, 1)
        nn.init.constant_(self.readout.weight, cfg.readout_gain / num_scores)
        nn.init.constant_(self.readout.bias, -cfg.readout_gain * cfg.readout_offset)
        self.skip_proj = _conv_bn_relu(skip_in, cfg.skip_channels, kernel=1)
        layers = [_conv_bn_relu(num_scores + cfg.skip_channels, cfg.conversion_width)]
        layers += [_conv_bn_relu(cfg.conversion_width, cfg.conversion_width)
                   for _ in range(cfg.conversion_layers - 1)]
        self.trunk = nn.Sequential(*layers)
        self.residual = _zero_conv(cfg.conversion_width, 1, 3)
        # Set by QuerySearchNet.skip_inert_branches (inference only): the residual adds exactly 0.
        self.readout_only = False

    def forward(self, scores: torch.Tensor,
                skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.readout_only:
            return self.readout(scores), None
        trunk = self.trunk(torch.cat([scores, self.skip_proj(skip).to(scores.dtype)], dim=1))
        return self.readout(scores) + self.residual(trunk), trunk


class EdgeRefiner(nn.Module):
    """Light stride-4 path from the raw image that sharpens the up-sampled logits' edges."""

    def __init__(self, trunk_channels: int, edge_channels: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_conv_bn_relu(3, edge_channels, stride=2),
                                     _conv_bn_relu(edge_channels, edge_channels, stride=2))
        self.fuse = _conv_bn_relu(trunk_channels + edge_channels + 1, edge_channels)
        self.residual = _zero_conv(edge_channels, 1, 3)
        # Set by QuerySearchNet.skip_inert_branches (inference only): the residual adds exactly 0,
        # so the logits are only resized to the stride-4 grid and the image is not encoded.
        self.resize_only = False

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)

    @staticmethod
    def grid_size(image_size: tuple[int, int]) -> tuple[int, int]:
        """The encoder's output size for an image of ``image_size``: two stride-2 'same' convs."""
        return -(-image_size[0] // 4), -(-image_size[1] // 4)

    def forward(self, logits: torch.Tensor, trunk: torch.Tensor | None, edge: torch.Tensor | None,
                image_size: tuple[int, int]) -> torch.Tensor:
        if self.resize_only:
            return _resize(logits, self.grid_size(image_size))
        if edge is None or trunk is None:
            raise ValueError("the edge path needs the conversion trunk and the image's edge features")
        size = _hw(edge)
        logits = _resize(logits, size)
        x = torch.cat([_resize(trunk, size), edge.to(trunk.dtype), logits], dim=1)
        return logits + self.residual(self.fuse(x))


class PooledHeads(nn.Module):
    """Box (normalised x0, y0, x1, y1) and/or label heads on logit-attention-pooled features."""

    def __init__(self, channels: int, box: bool, num_labels: int, hidden: int = 64) -> None:
        super().__init__()
        in_features = 2 * channels + 2
        self.box = (nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 4)) if box else None)
        self.label = nn.Linear(in_features, num_labels) if num_labels > 0 else None

    def forward(self, trunk: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = _hw(trunk)
        attn = logits.float().flatten(1).softmax(dim=1).to(trunk.dtype)  # N x HW
        feats = trunk.flatten(2)  # N x C x HW
        attended = torch.einsum("nck,nk->nc", feats, attn)
        ys = (torch.arange(h, device=trunk.device, dtype=trunk.dtype) + 0.5) / h
        xs = (torch.arange(w, device=trunk.device, dtype=trunk.dtype) + 0.5) / w
        grid_y = ys[:, None].expand(h, w).reshape(1, h * w)
        grid_x = xs[None, :].expand(h, w).reshape(1, h * w)
        centre = torch.stack([(attn * grid_x).sum(1), (attn * grid_y).sum(1)], dim=1)
        pooled = torch.cat([attended, feats.mean(dim=2), centre], dim=1)
        out: dict[str, torch.Tensor] = {}
        if self.box is not None:
            out["box"] = self.box(pooled).sigmoid()
        if self.label is not None:
            out["label_logits"] = self.label(pooled)
        return out
