"""Tests for the batched normalised cross-correlation (train/correlation.py)."""

from __future__ import annotations

import pytest
import torch

from train.correlation import FeatureProjection, correlate, correlate_looped, correlate_sizes


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("method", ["grouped", "matmul"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_batched_matches_looped(gen: torch.Generator, padding: str, normalize: bool,
                                masked: bool, method: str) -> None:
    query = torch.randn(4, 8, 5, 4, generator=gen)
    medium = torch.randn(4, 8, 13, 11, generator=gen)
    mask = torch.rand(4, 1, 5, 4, generator=gen) if masked else None
    fast = correlate(query, medium, mask, padding=padding, normalize=normalize, method=method)
    ref = correlate_looped(query, medium, mask, padding=padding, normalize=normalize)
    expected_hw = (13, 11) if padding == "same" else (13 - 5 + 1, 11 - 4 + 1)
    assert fast.shape == (4, 1, *expected_hw)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_scores_are_cosines(gen: torch.Generator, masked: bool) -> None:
    query = torch.randn(3, 6, 4, 4, generator=gen)
    medium = torch.randn(3, 6, 10, 10, generator=gen)
    mask = torch.rand(3, 1, 4, 4, generator=gen) if masked else None
    score = correlate(query, medium, mask)
    assert score.min() >= -1.0 - 1e-5 and score.max() <= 1.0 + 1e-5


@pytest.mark.parametrize("masked", [False, True])
def test_crop_scores_one_at_its_location(gen: torch.Generator, masked: bool) -> None:
    medium = torch.randn(2, 16, 20, 24, generator=gen)
    tops, lefts, u, v = [3, 11], [7, 2], 5, 6
    query = torch.stack([medium[i, :, t:t + u, l:l + v] for i, (t, l) in
                         enumerate(zip(tops, lefts))])
    mask = torch.rand(2, 1, u, v, generator=gen) + 0.1 if masked else None
    score = correlate(query, medium, mask, padding="same")
    assert score.shape == (2, 1, 20, 24)
    for i, (t, l) in enumerate(zip(tops, lefts)):
        # 'same' output (y, x) is centred: window top-left = (y - (u-1)//2, x - (v-1)//2).
        flat = int(score[i, 0].argmax())
        y, x = divmod(flat, 24)
        assert (y - (u - 1) // 2, x - (v - 1) // 2) == (t, l)
        assert abs(float(score[i, 0, y, x]) - 1.0) < 1e-5


def test_mask_ignores_features_outside_it(gen: torch.Generator) -> None:
    query = torch.randn(1, 4, 3, 3, generator=gen)
    medium = torch.randn(1, 4, 9, 9, generator=gen)
    mask = torch.zeros(1, 1, 3, 3)
    mask[..., 1, :] = 1.0  # only the middle row of the query counts
    changed_query = query.clone()
    changed_query[..., 0, :] = torch.randn(1, 4, 3, generator=gen)
    changed_query[..., 2, :] = 100.0
    torch.testing.assert_close(correlate(query, medium, mask),
                               correlate(changed_query, medium, mask))
    # The medium under the masked-out rows must not matter either: perturb rows that only ever
    # fall under the query's top/bottom rows for output row 3 ('valid' window rows 3..5).
    valid = correlate(query, medium, mask, padding="valid")
    perturbed = medium.clone()
    perturbed[..., 3, :] += 50.0
    perturbed[..., 5, :] -= 50.0
    torch.testing.assert_close(valid[..., 3, :],
                               correlate(query, perturbed, mask, padding="valid")[..., 3, :])


def test_matmul_and_grouped_gradients_agree(gen: torch.Generator) -> None:
    grads = {}
    for method in ("grouped", "matmul"):
        query = torch.randn(3, 6, 4, 5, generator=torch.Generator().manual_seed(1)).requires_grad_()
        medium = torch.randn(3, 6, 9, 10, generator=torch.Generator().manual_seed(2)).requires_grad_()
        mask = torch.rand(3, 1, 4, 5, generator=torch.Generator().manual_seed(3))
        (correlate(query, medium, mask, method=method) * torch.arange(90.0).reshape(1, 1, 9, 10)).sum().backward()
        grads[method] = (query.grad, medium.grad)
    for grouped, matmul in zip(grads["grouped"], grads["matmul"]):
        torch.testing.assert_close(matmul, grouped, atol=1e-4, rtol=1e-4)


def test_zero_window_gives_zero_not_nan() -> None:
    score = correlate(torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 5, 5))
    assert torch.isfinite(score).all() and float(score.abs().max()) == 0.0


def test_projection_shapes_and_grad(gen: torch.Generator) -> None:
    proj = FeatureProjection(8, 4)
    query = proj(torch.randn(2, 8, 4, 4, generator=gen))
    medium = proj(torch.randn(2, 8, 12, 12, generator=gen))
    score = correlate(query, medium)
    score.sum().backward()
    assert score.shape == (2, 1, 12, 12)
    assert proj.proj[0].weight.grad is not None and proj.proj[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("query_batch", [1, 3])
def test_fft_and_shared_sizes_match_the_direct_correlation(gen: torch.Generator, masked: bool,
                                                           query_batch: int) -> None:
    """The search's path (one query at several sizes over one medium, through the FFT) equals one
    direct correlation per size, also for one query searched in a batch of media."""
    medium = torch.randn(3, 8, 17, 23, generator=gen)
    queries = []
    for u, v in ((3, 2), (6, 5), (12, 10)):  # odd and even sides: the 'same' offsets differ
        query = torch.randn(query_batch, 8, u, v, generator=gen)
        queries.append((query, torch.rand(query_batch, 1, u, v, generator=gen) if masked else None))
    for method in ("fft", "matmul"):
        shared = correlate_sizes(queries, medium, method=method)
        for (query, mask), score in zip(queries, shared):
            direct = correlate(query, medium, mask, method="matmul")
            assert score.shape == direct.shape == (3, 1, 17, 23)
            torch.testing.assert_close(score, direct, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(correlate(query, medium, mask, method="fft"), direct, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(direct, correlate_looped(query, medium, mask), atol=1e-5, rtol=1e-5)


def test_auto_uses_the_fft_only_for_large_kernels_without_gradients(gen: torch.Generator) -> None:
    from train.correlation import FFT_MIN_CELLS, _resolve_method

    cpu = torch.device("cpu")
    with torch.no_grad():
        assert _resolve_method("auto", cpu, FFT_MIN_CELLS) == "fft"
        assert _resolve_method("auto", cpu, FFT_MIN_CELLS - 1) == "matmul"
    assert _resolve_method("auto", cpu, FFT_MIN_CELLS) == "matmul"  # training keeps its path


def test_cached_query_transforms_give_the_same_scores(gen: torch.Generator) -> None:
    """One query searched in two frame batches: the second reuses the first's kernel transforms."""
    queries = [(torch.randn(1, 8, 9, 7, generator=gen), torch.rand(1, 1, 9, 7, generator=gen)),
               (torch.randn(1, 8, 4, 3, generator=gen), None)]
    cache: dict = {}
    for _ in range(2):
        medium = torch.randn(2, 8, 15, 19, generator=gen)
        fresh = correlate_sizes(queries, medium, method="fft")
        for cached, score in zip(correlate_sizes(queries, medium, method="fft", cache=cache), fresh):
            torch.testing.assert_close(cached, score, atol=0, rtol=0)
    assert len(cache) == 1  # one medium size


@pytest.mark.parametrize("query_batch", [1, 2])
def test_kept_query_terms_give_the_direct_correlation_to_the_bit(gen: torch.Generator, query_batch: int) -> None:
    """Small kernels (the direct path) with a cache at inference: the queries' own terms (masked
    kernel, norm, window kernel) are kept after the first medium, and every medium's maps are
    :func:`correlate`'s, bit for bit; with gradients the cache is not touched."""
    queries = [(torch.randn(query_batch, 8, 5, 2, generator=gen), torch.rand(query_batch, 1, 5, 2, generator=gen)),
               (torch.randn(query_batch, 8, 2, 1, generator=gen), None),
               (torch.randn(query_batch, 8, 4, 4, generator=gen), None)]
    cache: dict = {}
    with torch.no_grad():
        for _ in range(3):
            medium = torch.randn(2, 8, 10, 9, generator=gen)
            kept = correlate_sizes(queries, medium, method="auto", cache=cache)
            assert "kept" in cache and len(cache["kept"]) == 3
            for (query, mask), score in zip(queries, kept):
                direct = correlate(query, medium, mask, method="auto")
                assert score.shape == direct.shape == (2, 1, 10, 9)
                assert torch.equal(score, direct)
    fresh: dict = {}
    medium = torch.randn(2, 8, 10, 9, generator=gen, requires_grad=True)
    scores = correlate_sizes(queries, medium, method="auto", cache=fresh)
    assert fresh == {} and scores[0].requires_grad
