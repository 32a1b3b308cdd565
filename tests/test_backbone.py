"""EfficientNet-Lite0 backbone: strict weight loading, ImageNet sanity, features, BN folding."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from train.backbones import (create_backbone, efficientnet_lite0, fold_batchnorm, list_backbones,
                             load_pretrained)

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return create_backbone("efficientnet_lite0", pretrained=True).eval()


def _center_crop_224(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> 1x3x224x224 in [0, 1]: shorter side to 224 (keeps aspect), centre crop."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    scale = 224 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear",
                      align_corners=False, antialias=True)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    return x[..., top:top + 224, left:left + 224]


def test_registry() -> None:
    assert "efficientnet_lite0" in list_backbones()
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        create_backbone("resnet9000")


def test_strict_load() -> None:
    model = efficientnet_lite0()
    assert load_pretrained(model) is model  # load_state_dict(strict=True) inside
    assert len(model.state_dict()) == 296


@pytest.mark.parametrize("image_name,classes", [("chelsea", CAT_CLASSES),
                                                ("coffee", COFFEE_CLASSES)])
def test_imagenet_top5(model: torch.nn.Module, image_name: str, classes: set[int]) -> None:
    x = _center_crop_224(getattr(skimage.data, image_name)())
    with torch.no_grad():
        top5 = set(model(x).topk(5, dim=1).indices[0].tolist())
    assert top5 & classes, f"{image_name}: top-5 {top5}"


def test_feature_shapes(model: torch.nn.Module) -> None:
    assert model.feature_strides == [8, 16, 32]
    assert model.feature_channels == [40, 112, 320]
    with torch.no_grad():
        feats = model.forward_features(torch.rand(2, 3, 256, 256))
        partial = model.forward_features(torch.rand(1, 3, 100, 90), max_stride=16)
    assert [tuple(f.shape) for f in feats] == [(2, 40, 32, 32), (2, 112, 16, 16), (2, 320, 8, 8)]
    # 'same' padding: ceil(H / stride) for sizes that are not multiples of the stride.
    assert [tuple(f.shape) for f in partial] == [(1, 40, 13, 12), (1, 112, 7, 6)]


def test_channels_last_matches(model: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 64, 96)
    cl = fold_batchnorm(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model.forward_features(x)
        out = cl.forward_features(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_equivalence(model: torch.nn.Module) -> None:
    x = torch.rand(2, 3, 96, 96)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original intact
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
        for a, b in zip(folded.forward_features(x), model.forward_features(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_inference_forward_in_place_relu6_equals_the_graph_keeping_one(model: torch.nn.Module) -> None:
    """Without a graph ReLU6 runs in place (train/backbones.py's _relu6): the features must be the
    very same as with the graph kept (the out-of-place ReLU6), bit for bit, folded or not."""
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    for net in (model, fold_batchnorm(create_backbone("efficientnet_lite0", pretrained=True).eval())):
        with torch.enable_grad():
            kept = [f.detach() for f in net.forward_features(x, max_stride=32)]
        with torch.inference_mode():
            fast = net.forward_features(x, max_stride=32)
        assert len(kept) == len(fast) == 3
        for a, b in zip(kept, fast):
            assert torch.equal(a, b)
