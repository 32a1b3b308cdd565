"""QuerySearchNet: shapes, query broadcasting and reuse, gradients, untrained baseline, ONNX."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

from train.backbones import fold_batchnorm
from train.model import QueryFeatures, QuerySearchNet, SearchNetConfig


def _image(array: np.ndarray) -> torch.Tensor:
    """HWC float/uint8 image -> 1 x 3 x H x W float in [0, 1]."""
    array = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def net() -> QuerySearchNet:
    torch.manual_seed(0)
    return QuerySearchNet(SearchNetConfig(box_head=True, num_label_classes=5)).eval()


def test_output_shapes(net: QuerySearchNet) -> None:
    with torch.no_grad():
        out = net(torch.rand(2, 3, 128, 128), torch.rand(2, 3, 256, 256),
                  query_mask=torch.ones(2, 1, 128, 128))
    s = net.cfg.num_score_maps
    assert s == len(net.cfg.scale_pairs) * len(net.cfg.feature_strides) == 6  # 3 scale pairs x strides 8, 16
    assert out["logits"].shape == (2, 1, 256, 256)
    assert out["correlation"].shape == (2, s, 32, 32)
    assert out["box"].shape == (2, 4) and out["label_logits"].shape == (2, 5)
    assert out["correlation"].abs().max() <= 1.0 + 1e-4


def test_one_query_broadcast_over_media(net: QuerySearchNet) -> None:
    query, media = torch.rand(1, 3, 128, 128), torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        batched = net(query, media)
        single = net(query, media[1:2])
    assert batched["logits"].shape == (3, 1, 256, 256)
    torch.testing.assert_close(batched["logits"][1:2], single["logits"], atol=1e-4, rtol=1e-4)


def test_encode_query_once_then_search_equals_forward(net: QuerySearchNet) -> None:
    query, media = torch.rand(1, 3, 96, 96), torch.rand(2, 3, 160, 192)
    mask = torch.zeros(1, 1, 96, 96)
    mask[..., 16:80, 16:80] = 1.0
    with torch.no_grad():
        encoded = net.encode_query(query, mask)
        assert isinstance(encoded, QueryFeatures) and encoded.masks is not None
        from_image = net.search(encoded, media)
        from_features = net.search(encoded, net.encode_medium(media), medium_size=(80, 96))
        reference = net(query, media, mask)
    torch.testing.assert_close(from_image["logits"], reference["logits"])
    assert from_features["logits"].shape == (2, 1, 80, 96)


def test_queries_searched_together_equal_each_searched_alone(net: QuerySearchNet) -> None:
    """search_many (the search's query as given and mirrored) shares the medium's transform and
    caches the pair's kernels apart from the first query's own: the same maps as one at a time,
    with kernels large enough for the FFT path (>= 64 cells) and with small ones."""
    media = torch.rand(2, 3, 192, 256)
    with torch.inference_mode():
        medium = net.encode_medium(media)
        for side in (96, 160):  # 12 x 12 cells at stride 8 (the FFT); 6 x 6 below it at stride 16
            query = torch.rand(1, 3, side, side)
            given = net.encode_query(query)._replace(cache={})
            mirrored = net.encode_query(query.flip(-1))._replace(cache={})
            alone = [net.search(q, medium)["logits"] for q in (given, mirrored)]
            for _ in range(2):  # the second time from the cached kernel transforms
                together = [out["logits"] for out in net.search_many([given, mirrored], medium)]
                for a, b in zip(alone, together):
                    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(alone[0], alone[1])
            assert net.search(given, medium)["logits"].equal(alone[0])  # its own cache untouched


def test_a_query_searched_again_from_its_cache_gives_the_same_logits_to_the_bit(net: QuerySearchNet) -> None:
    """At inference a query keeps its resized scale-pair kernels and its small kernels' terms in its
    cache (a video's frames searched one after another): every medium's logits are those of the
    same query searched without a cache, bit for bit, masked or not, with FFT-sized kernels and
    small ones; with gradients nothing is kept."""
    for side, masked in ((40, True), (160, False)):  # small kernels at both strides; FFT-sized ones
        query = torch.rand(1, 3, side, side)
        mask = torch.zeros(1, 1, side, side)
        mask[..., 8:side - 8, 16:side - 16] = 1.0
        with torch.inference_mode():
            kept = net.encode_query(query, mask if masked else None)
            bare = kept._replace(cache=None)
            for _ in range(3):
                medium = net.encode_medium(torch.rand(2, 3, 160, 192))
                assert net.search(kept, medium)["logits"].equal(net.search(bare, medium)["logits"])
            assert any(key[0] == "scaled" for key in kept.cache)
            small = any("kept" in entry for entry in kept.cache.values() if isinstance(entry, dict))
            assert small == (side == 40)
    trained = net.encode_query(torch.rand(1, 3, 96, 96))
    net.search(trained, torch.rand(1, 3, 128, 128))
    assert trained.cache is not None and all(entry == {} for entry in trained.cache.values())  # nothing kept


@pytest.mark.parametrize("freeze", [False, True])
def test_gradients(freeze: bool) -> None:
    torch.manual_seed(0)
    net = QuerySearchNet(SearchNetConfig(pretrained=False, freeze_backbone=freeze,
                                         projection_channels=16, box_head=True)).train()
    assert net.backbone.training is not freeze  # a frozen backbone keeps BN statistics fixed
    out = net(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 96, 96))
    (out["logits"].mean() + out["box"].mean()).backward()
    conv = net.conversion
    for param in (conv.readout.weight, conv.residual.weight, net.edge.residual.weight,
                  net.projections[0].proj[0].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    stem_grad = net.backbone._conv_stem.weight.grad
    if freeze:
        assert stem_grad is None
    else:
        assert stem_grad is not None and stem_grad.abs().sum() > 0


def test_untrained_net_finds_pasted_patch(net: QuerySearchNet) -> None:
    """Pretrained backbone + correlation alone must locate a pasted natural patch."""
    face = skimage.data.astronaut()[40:200, 150:310]  # 160 x 160 textured patch
    background = skimage.transform.resize(skimage.data.coffee(), (256, 256), anti_aliasing=True)
    patch = skimage.transform.resize(face, (64, 64), anti_aliasing=True)
    boxes = [(150, 40), (30, 140)]  # top, left of the 64 x 64 pasted patch
    media = []
    for top, left in boxes:
        medium = background.copy()
        medium[top:top + 64, left:left + 64] = patch
        media.append(_image(medium))
    # Query at the pasted size and at 2x (the (0.5, 1.0) scale pair covers the mismatch).
    queries = [_image(patch), _image(skimage.transform.resize(face, (128, 128),
                                                               anti_aliasing=True))]
    for query in queries:
        with torch.no_grad():
            logits = net(query, torch.cat(media))["logits"]
        for (top, left), heat in zip(boxes, logits[:, 0]):
            y, x = divmod(int(heat.argmax()), heat.shape[1])
            assert top <= y < top + 64 and left <= x < left + 64, (query.shape, (y, x))


def test_channels_last_and_bf16(net: QuerySearchNet) -> None:
    query, media = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 128, 128)
    cl = torch.channels_last
    with torch.no_grad():
        ref = net(query, media)["logits"]
        net_cl = QuerySearchNet(net.cfg).eval()
        net_cl.load_state_dict(net.state_dict())
        net_cl.to(memory_format=cl)
        out = net_cl(query.contiguous(memory_format=cl), media.contiguous(memory_format=cl))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(query, media)["logits"]
    torch.testing.assert_close(out["logits"], ref, atol=1e-3, rtol=1e-3)
    assert torch.isfinite(low).all() and low.shape == ref.shape


class _OnnxWrapper(torch.nn.Module):
    """Dict outputs -> tuple, for torch.onnx.export."""

    def __init__(self, net: QuerySearchNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, query: torch.Tensor, medium: torch.Tensor,
                query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(query, medium, query_mask)
        return out["logits"], out["box"]


def test_onnx_export_matches_onnxruntime(net: QuerySearchNet) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    pytest.importorskip("onnx", reason="onnx not installed")
    # eval() on the wrapper itself: the exporter restores/uses the wrapper's training flag.
    wrapper = _OnnxWrapper(net).eval()
    inputs = (torch.rand(1, 3, 64, 64), torch.rand(1, 3, 128, 128),
              (torch.rand(1, 1, 64, 64) > 0.3).float())
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # int(shape) -> constant is intended for fixed-size export
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)  # exporter's constant-folding notes
        warnings.simplefilter("ignore", DeprecationWarning)  # exporter-internal
        torch.onnx.export(wrapper, inputs, buffer, dynamo=False, opset_version=17,
                          input_names=["query", "medium", "query_mask"],
                          output_names=["logits", "box"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    logits, box = session.run(None, {"query": inputs[0].numpy(), "medium": inputs[1].numpy(),
                                     "query_mask": inputs[2].numpy()})
    with torch.no_grad():
        ref_logits, ref_box = wrapper(*inputs)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(box, ref_box.numpy(), atol=1e-3, rtol=1e-3)
    assert not net.training


def test_query_mask_ignores_catalogue_background(net: QuerySearchNet) -> None:
    """A product shot on white must not match a white wall once its alpha mask is given."""
    face = skimage.transform.resize(skimage.data.astronaut()[40:200, 150:310], (64, 64),
                                    anti_aliasing=True)
    query = np.ones((128, 128, 3))
    query[32:96, 32:96] = face
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 32:96, 32:96] = 1.0
    medium = skimage.transform.resize(skimage.data.coffee(), (256, 256), anti_aliasing=True)
    medium[:, 160:] = 1.0  # white wall
    top, left = 150, 40
    medium[top:top + 48, left:left + 48] = skimage.transform.resize(face, (48, 48),
                                                                    anti_aliasing=True)
    with torch.no_grad():
        heat = net(_image(query), _image(medium), mask)["logits"][0, 0]
    y, x = divmod(int(heat.argmax()), heat.shape[1])
    assert top <= y < top + 48 and left <= x < left + 48, (y, x)


def test_fold_batchnorm_whole_net(net: QuerySearchNet) -> None:
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    query, media = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(folded(query, media)["logits"], net(query, media)["logits"],
                                   atol=1e-4, rtol=1e-4)


def test_residual_projection_starts_as_the_identity_and_only_the_last_blocks_train() -> None:
    torch.manual_seed(0)
    plain = QuerySearchNet(SearchNetConfig(pretrained=False, freeze_backbone=True, edge_path=False)).eval()
    tuned = QuerySearchNet(SearchNetConfig(pretrained=False, freeze_backbone=True, edge_path=False,
                                           residual_projection=True, trainable_blocks=2)).eval()
    missing, _ = tuned.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("projections.") for k in missing)
    query, media = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(tuned(query, media)["logits"], plain(query, media)["logits"])
    tuned.train()
    tuned(query, media)["logits"].mean().backward()
    trained = set(tuned.trained_backbone_keys())
    assert trained and all(k.startswith("backbone._blocks.") for k in trained)
    for name, param in tuned.backbone.named_parameters():
        if f"backbone.{name}" in trained:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name  # the frozen blocks run without a graph
    assert tuned.projections[0].project.weight.grad.abs().sum() > 0


def test_residual_hidden_sets_the_projections_rank_and_still_starts_as_the_identity() -> None:
    torch.manual_seed(0)
    plain = QuerySearchNet(SearchNetConfig(pretrained=False, edge_path=False)).eval()
    low = QuerySearchNet(SearchNetConfig(pretrained=False, edge_path=False, residual_projection=True,
                                         residual_hidden=8)).eval()
    low.load_state_dict(plain.state_dict(), strict=False)
    assert [p.expand.out_channels for p in low.projections] == [8, 8]
    assert [p.project.out_channels for p in low.projections] == list(low.backbone.feature_channels[:2])
    query, media = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(low(query, media)["logits"], plain(query, media)["logits"])
        torch.nn.init.normal_(low.projections[1].project.weight)
        assert not torch.allclose(low(query, media)["logits"], plain(query, media)["logits"])


def test_skipping_inert_branches_keeps_the_logits_to_the_bit() -> None:
    """The untrained network's zero residual branches are not run at inference; a trained one's are."""
    torch.manual_seed(0)
    full = fold_batchnorm(QuerySearchNet(SearchNetConfig())).eval()
    lean = fold_batchnorm(full)
    assert lean.skip_inert_branches() == ["edge", "conversion"]
    query, media = torch.rand(1, 3, 64, 48), torch.rand(2, 3, 122, 150)  # odd stride-4 sizes
    with torch.inference_mode():
        expected = full.search(full.encode_query(query), full.encode_medium(media))
        encoded = lean.encode_medium(media)
        got = lean.search(lean.encode_query(query), encoded)
    assert encoded.edge is None  # the edge path's image encoder did not run
    assert torch.equal(got["logits"], expected["logits"])
    assert torch.equal(got["correlation"], expected["correlation"])
    trained = fold_batchnorm(full)
    with torch.no_grad():
        trained.conversion.residual.weight.fill_(0.01)
    assert trained.skip_inert_branches() == ["edge"]  # the conversion trunk still runs
