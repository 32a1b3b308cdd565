"""Normalised cross-correlation of a query feature map (the kernel) over a medium feature map.

For a query R1 (C x U x V) and medium R2 (C x H x W) the score at (x, y) is

    out(x, y) = sum_{l,m,c} R1(l, m, c) * R2(x+l, y+m, c) / (||R1|| * ||R2 window at (x, y)||)

i.e. the cosine between the query and the medium window it covers. With a query mask M (values in
[0, 1], e.g. the object's alpha on the feature grid) both sides are masked before the cosine:

    out = <R1*M, W*M> / (||R1*M|| * ||W*M||)

so the numerator's kernel is R1*M^2 and the window norm is sqrt(conv(sum_c R2^2, M^2)). For a
binary mask that is the plain masked cosine; for any mask the score stays within [-1, 1].

All N samples are correlated in one call, by one of two equivalent methods:

- ``grouped``: the grouped-convolution trick. The medium is reshaped to 1 x (N*C) x H x W and the
  N query maps are the weight (N x C x U x V, groups=N). Fastest where kernel launches are what
  costs (GPUs), and what ONNX export uses.
- ``matmul``: one batched matrix product over the channels gives, for every kernel offset (l, m),
  the dot products with every medium position; an ``as_strided`` view then lines up the shifted
  diagonals so one reduction sums them. Measured here on a 2-core CPU, 2-6x faster than a loop of
  plain convolutions and 7-9x faster than the grouped convolution (whose CPU kernels are slow for
  large kernels), forward and backward.

- ``fft``: the cross-correlation theorem; the medium and kernel spectra are multiplied and summed
  over the channels, so the cost hardly grows with the kernel's size. It equals the other methods up
  to float rounding (about 1e-7 of the largest score here). For the large kernels a big query's
  scaled-up kernel makes (24 x 24 cells over a 60 x 80 grid, 40 channels), it took the correlation
  from 115 ms to 24 ms for 4 frames on one core of this 2-core CPU.

``method="auto"`` picks matmul on the CPU and grouped elsewhere (and while exporting to ONNX); on the
CPU, kernels of at least :data:`FFT_MIN_CELLS` cells go through the FFT when no gradient is needed
(inference: the search), so training runs keep the matmul path they were measured with.
:func:`correlate_sizes` correlates one query at several sizes over one medium map with one
transform of the medium (the search's scale pairs).
On a CPU the per-sample loop is not slow for the reason the grouped trick addresses (launch
overhead): each convolution is compute-bound, so one call can only win by doing the arithmetic
better. At 16x16 kernels over 48x48 maps the matmul path already runs near this 2-core CPU's peak
(~46 GFLOP/s), 2.4x the loop forward and 7.9x forward + backward (benchmarks/train.py).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["same", "valid"]
Method = Literal["auto", "grouped", "matmul", "fft"]

# Kernels of at least this many feature cells are correlated through the FFT on the CPU at inference
# (method="auto"). The default pyramid's 18 maps for a batch of four 640x480 frames took, on one
# core here, 282 ms all by matmul, 162 ms with the FFT from 256 cells, 133 ms from 64, 131 ms from 30.
FFT_MIN_CELLS = 64

# Added to the denominator so empty windows (all-zero padding) give 0 instead of NaN.
EPS = 1e-6


def _same_pad(x: torch.Tensor, kernel_hw: tuple[int, int]) -> torch.Tensor:
    """Zero-pad so a stride-1 correlation with a U x V kernel keeps x's H x W."""
    u, v = kernel_hw
    return F.pad(x, ((v - 1) // 2, v // 2, (u - 1) // 2, u // 2))


def _check(query: torch.Tensor, medium: torch.Tensor, mask: torch.Tensor | None) -> None:
    if query.dim() != 4 or medium.dim() != 4:
        raise ValueError("query and medium features must be N x C x H x W")
    if query.shape[1] != medium.shape[1] or query.shape[0] not in (1, medium.shape[0]):
        raise ValueError(f"query {tuple(query.shape)} and medium {tuple(medium.shape)} must share "
                         "channels, and batch size unless the query's is 1")
    if mask is not None and (mask.shape[0] != query.shape[0] or mask.shape[1] != 1
                             or mask.shape[-2:] != query.shape[-2:]):
        raise ValueError(f"query_mask {tuple(mask.shape)} must be N x 1 x U x V matching "
                         f"the query {tuple(query.shape)}")


def _resolve_method(method: Method, device: torch.device, kernel_cells: int) -> str:
    if method == "auto":
        exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
        if device.type != "cpu" or exporting:
            return "grouped"
        return "fft" if kernel_cells >= FFT_MIN_CELLS and not torch.is_grad_enabled() else "matmul"
    if method not in ("grouped", "matmul", "fft"):
        raise ValueError(f"method must be 'auto', 'grouped', 'matmul' or 'fft', got {method!r}")
    return method


def _fft_size(n: int) -> int:
    """The smallest size >= n with no prime factor above 5 (where FFTs are fastest)."""
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


def batched_dot(medium: torch.Tensor, kernels: torch.Tensor, method: str) -> torch.Tensor:
    """Valid cross-correlation of medium[i] (C x H x W) with kernels[i] (C x U x V) for every i;
    a single kernel (batch 1) is correlated with every medium (one query searched in N frames).

    Returns N x 1 x (H-U+1) x (W-V+1). ``method`` is ``grouped``, ``matmul`` or ``fft`` (see the
    module doc).
    """
    n, c, h, w = (int(d) for d in medium.shape)
    u, v = int(kernels.shape[-2]), int(kernels.shape[-1])
    out_h, out_w = h - u + 1, w - v + 1
    if method == "grouped":
        if int(kernels.shape[0]) == 1:  # one kernel: a plain convolution with one output channel
            return F.conv2d(medium, kernels)
        return F.conv2d(medium.reshape(1, n * c, h, w), kernels, groups=n).reshape(n, 1, out_h, out_w)
    if method == "fft":
        # Circular correlation over at least H x W: the valid outputs never wrap around.
        size = (_fft_size(h), _fft_size(w))
        spectrum = torch.fft.rfft2(medium.contiguous(), s=size) * torch.fft.rfft2(kernels, s=size).conj()
        return torch.fft.irfft2(spectrum.sum(dim=1, keepdim=True), s=size)[..., :out_h, :out_w]
    # products[i, l, m, y, x] = sum_c kernels[i, c, l, m] * medium[i, c, y, x]
    products = torch.matmul(kernels.reshape(-1, c, u * v).transpose(1, 2), medium.reshape(n, c, h * w))
    products = products.reshape(n, u, v, h, w)
    s_n, s_l, s_m, s_y, s_x = products.stride()
    # shifted[i, l, m, y, x] = products[i, l, m, y + l, x + m]: summing over (l, m) is the correlation.
    shifted = products.as_strided((n, u, v, out_h, out_w), (s_n, s_l + s_y, s_m + s_x, s_y, s_x))
    return shifted.sum(dim=(1, 2)).unsqueeze(1)


def correlate(query_feats: torch.Tensor, medium_feats: torch.Tensor,
              query_mask: torch.Tensor | None = None, padding: Padding = "same",
              normalize: bool = True, method: Method = "auto") -> torch.Tensor:
    """Correlate each query map over its medium map (or one query map over every medium map);
    returns N x 1 x H' x W'.

    ``padding="same"`` keeps the medium's H x W (zero padding: (U-1)//2 top, U//2 bottom, same for
    the width); ``"valid"`` gives (H-U+1) x (W-V+1). With ``normalize`` the score is a cosine in
    [-1, 1]; otherwise the raw (masked) dot product. Always computed in float32, also under AMP,
    because sums of squares over large windows lose too much precision in bf16.
    """
    _check(query_feats, medium_feats, query_mask)
    # Python ints, so ONNX tracing sees constant shapes (it needs the kernel's static shape).
    n, c, u, v = (int(d) for d in query_feats.shape)  # n: the query's batch, N or 1
    method = _resolve_method(method, medium_feats.device, u * v)
    with torch.autocast(device_type=medium_feats.device.type, enabled=False):
        r = medium_feats.float()
        terms = _query_terms(query_feats, query_mask)
        if padding == "same":
            r = _same_pad(r, (u, v))
        elif padding != "valid":
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        score = batched_dot(r, terms.kernel, method)
        if not normalize:
            return score
        return _normalise(score, terms, r.square().sum(dim=1, keepdim=True), rounded=method == "fft")


def correlate_sizes(queries: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                    medium_feats: torch.Tensor, method: Method = "auto",
                    cache: dict[Any, Any] | None = None) -> list[torch.Tensor]:
    """:func:`correlate` (same padding, normalised) of several query maps, e.g. one query at several
    sizes, over one medium map, each N x 1 x H x W.

    Where the FFT is used (``method`` "fft", or "auto" at inference on the CPU for a kernel of at
    least :data:`FFT_MIN_CELLS` cells) all of them are computed together: each (masked) kernel is
    placed in a zero kernel of the largest size at the offset that lines its 'same' window up with
    the largest one's, so one padding, one transform of the medium, one stack of kernel transforms
    and one convolution for the windows' norms serve every query. Equal to one :func:`correlate`
    per query up to float rounding; otherwise it is exactly that. ``cache``: a dict kept with these
    queries (one query searched in many frame batches), where their transforms are kept per medium size.
    """
    for query, mask in queries:
        _check(query, medium_feats, mask)
    big_u = max(int(q.shape[-2]) for q, _ in queries)
    big_v = max(int(q.shape[-1]) for q, _ in queries)
    if _resolve_method(method, medium_feats.device, big_u * big_v) != "fft":
        if cache is None or torch.is_grad_enabled():
            return [correlate(query, medium_feats, mask, method=method) for query, mask in queries]
        return _correlate_kept(queries, medium_feats, method, cache)
    n, c, h, w = (int(d) for d in medium_feats.shape)
    n_query = max(int(q.shape[0]) for q, _ in queries)
    with torch.autocast(device_type=medium_feats.device.type, enabled=False):
        r = _same_pad(medium_feats.float(), (big_u, big_v)).contiguous()
        size = (_fft_size(int(r.shape[-2])), _fft_size(int(r.shape[-1])))
        key = (size, big_u, big_v)
        if cache is None or key not in cache:
            kernels = r.new_zeros((n_query, len(queries), c, big_u, big_v))
            windows = r.new_zeros((n_query, len(queries), big_u, big_v))
            norms = []
            for k, (query, mask) in enumerate(queries):
                u, v = int(query.shape[-2]), int(query.shape[-1])
                top, left = (big_u - 1) // 2 - (u - 1) // 2, (big_v - 1) // 2 - (v - 1) // 2
                terms = _query_terms(query, mask)
                kernels[:, k, :, top:top + u, left:left + v] = terms.kernel
                windows[:, k, top:top + u, left:left + v] = terms.window[:, 0]
                norms.append(terms.norm.flatten())
            transforms = (torch.fft.rfft2(kernels, s=size).conj(), torch.fft.rfft2(windows, s=size).conj(),
                          torch.stack(norms, dim=1).reshape(-1, len(queries), 1, 1))
            if cache is not None:
                cache[key] = transforms
        else:
            transforms = cache[key]
        kernel_spectra, window_spectra, q_norm = transforms
        spectrum = torch.fft.rfft2(r, s=size).unsqueeze(1) * kernel_spectra
        # Valid correlations of the padded medium: the top-left H x W of the circular ones. The
        # windows' squared norms likewise (one channel: the medium's squared norms).
        scores = torch.fft.irfft2(spectrum.sum(dim=2), s=size)[..., :h, :w]
        sq = torch.fft.rfft2(r.square().sum(dim=1, keepdim=True), s=size)
        window_sq = torch.fft.irfft2(sq * window_spectra, s=size)[..., :h, :w]
        return list(_cosines(scores, q_norm, window_sq, rounded=True).split(1, dim=1))


def _correlate_kept(queries: Sequence[tuple[torch.Tensor, torch.Tensor | None]], medium_feats: torch.Tensor,
                    method: Method, cache: dict[Any, Any]) -> list[torch.Tensor]:
    """:func:`correlate` (same padding, normalised) of each query over the medium, the queries' own
    terms (masked kernel, norm, window kernel) kept in ``cache`` (inference: one query, many media):
    the same operations on the same tensors as :func:`correlate`, so the same maps to the bit."""
    outs = []
    with torch.autocast(device_type=medium_feats.device.type, enabled=False):
        if "kept" not in cache:
            cache["kept"] = [_query_terms(query, mask) for query, mask in queries]
        medium = medium_feats.float()
        for terms in cache["kept"]:
            u, v = int(terms.kernel.shape[-2]), int(terms.kernel.shape[-1])
            r = _same_pad(medium, (u, v))
            resolved = _resolve_method(method, medium.device, u * v)
            score = batched_dot(r, terms.kernel, resolved)
            outs.append(_normalise(score, terms, r.square().sum(dim=1, keepdim=True), rounded=resolved == "fft"))
    return outs


def _masked_kernel(query_feats: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
    """The numerator's kernel, R1 * M^2 (float32)."""
    q = query_feats.float()
    return q if query_mask is None else q * query_mask.float().square()


class _QueryTerms(NamedTuple):
    """What a cosine needs of one (masked) query map, float32: the numerator's kernel R1 * M^2
    (n x c x u x v), ||R1 * M|| (n x 1 x 1 x 1) and the windows' kernel M^2 (ones without a mask,
    n x 1 x u x v)."""

    kernel: torch.Tensor
    norm: torch.Tensor
    window: torch.Tensor


def _query_terms(query_feats: torch.Tensor, query_mask: torch.Tensor | None) -> _QueryTerms:
    """The cosine's terms of one query map (N or 1 x C x U x V) and its mask (or None)."""
    n, c, u, v = (int(d) for d in query_feats.shape)
    masked = query_feats.float() if query_mask is None else query_feats.float() * query_mask.float()
    # No-op reshape to constant sizes: the ONNX exporter must know the kernel's static shape and
    # loses it through the backbone's Pad nodes.
    return _QueryTerms(_masked_kernel(query_feats, query_mask).reshape(n, c, u, v),
                       masked.flatten(1).norm(dim=1).reshape(n, 1, 1, 1),
                       torch.ones(n, 1, u, v, dtype=torch.float32, device=query_feats.device)
                       if query_mask is None else query_mask.float().square())


def _normalise(score: torch.Tensor, terms: _QueryTerms, sq: torch.Tensor, rounded: bool = False) -> torch.Tensor:
    """Dot products -> cosines: divided by ||R1*M|| and the masked norm of each medium window
    (``sq``: the padded medium's per-pixel squared norms, N x 1, whose valid windows are the score's).
    ``rounded``: the dot products came through the FFT (see :func:`_cosines`)."""
    # One channel: the (grouped) convolution is the cheap way here on every device (the matmul
    # path would materialise U*V outer products for a single channel).
    window_sq = batched_dot(sq, terms.window, "grouped")
    return _cosines(score, terms.norm, window_sq, rounded)


# Masked window norms (squared) under this fraction of the map's largest are FFT rounding, not data.
FFT_WINDOW_FLOOR = 1e-6


def _cosines(score: torch.Tensor, q_norm: torch.Tensor, window_sq: torch.Tensor, rounded: bool) -> torch.Tensor:
    """score / (||R1*M|| * ||window||), the windows' squared norms ``window_sq`` clamped away from 0 (windows
    over zero padding would give sqrt an infinite gradient: NaN).

    ``rounded`` (FFT dot products, or FFT window norms): the exact score of a window whose masked cells all
    lie in the zero padding is 0, but the FFT leaves ~1e-7 of the map's largest dot product there, which the
    clamped norm (1e-6) blew up to a score of 0.03 (unit features) to 0.5 and past 1 (features of tens):
    such windows (norm under :data:`FFT_WINDOW_FLOOR` of the map's largest) score 0, and every score is held
    to Cauchy-Schwarz's bound ||R1*M|| * ||window||, so a cosine stays in [-1, 1]."""
    if rounded:
        floor = window_sq.amax(dim=(-2, -1), keepdim=True) * FFT_WINDOW_FLOOR
        window_sq = torch.where(window_sq > floor, window_sq, torch.zeros_like(window_sq))
        bound = q_norm * window_sq.sqrt()
        score = torch.minimum(torch.maximum(score, -bound), bound)
    window_norm = window_sq.clamp_min(EPS * EPS).sqrt()
    return score / (q_norm * window_norm + EPS)


def correlate_looped(query_feats: torch.Tensor, medium_feats: torch.Tensor,
                     query_mask: torch.Tensor | None = None, padding: Padding = "same",
                     normalize: bool = True) -> torch.Tensor:
    """Reference implementation of :func:`correlate`, one plain convolution per sample."""
    _check(query_feats, medium_feats, query_mask)
    outs = []
    for i in range(medium_feats.shape[0]):
        j = i if query_feats.shape[0] > 1 else 0
        q = query_feats[j:j + 1].float()
        r = medium_feats[i:i + 1].float()
        m = None if query_mask is None else query_mask[j:j + 1].float()
        u, v = q.shape[-2:]
        if padding == "same":
            r = _same_pad(r, (u, v))
        kernel = q if m is None else q * m * m
        score = F.conv2d(r, kernel)
        if normalize:
            q_norm = (q if m is None else q * m).norm()
            ones = torch.ones(1, 1, u, v, dtype=r.dtype) if m is None else m * m
            window = F.conv2d(r.square().sum(1, keepdim=True), ones).clamp_min(EPS * EPS).sqrt()
            score = score / (q_norm * window + EPS)
        outs.append(score)
    return torch.cat(outs, dim=0)


class FeatureProjection(nn.Module):
    """Learned 1x1 conv (+BN+ReLU) applied to query and medium features before correlating.

    Sharing one projection between both sides keeps the correlation a comparison in one space.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                   nn.BatchNorm2d(out_channels)]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ResidualProjection(nn.Module):
    """``x + W2 relu(W1 x)`` (1x1 convs, same channels) applied to query and medium features alike.

    ``W2`` starts at zero, so the untrained network correlates the backbone's own features and
    training learns which directions tell one instance from another of its kind.
    """

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or channels
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.project = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(torch.relu(self.expand(x)))
