"""The search network run at one zoom of the media (a mixin of :class:`pipelines.search_maps.NetworkSearch`):
the query's kernels encoded once per size (and mirrored), the zoomed medium encoded whole or in
overlapping tiles (or only given windows), each level's kernels correlated with it, and the maps moved
back by the half cell even-sized kernels shift them (:mod:`pipelines.alignment`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.alignment import kernel_offset, translate
from pipelines.onnx_backbone import encode_medium
from pipelines.search_inputs import PreparedQuery, resize_hw, to_tensor, zoom_media
from pipelines.search_levels import Level
from pipelines.search_tiles import owned_span, tiles
from train.model import GRID_STRIDE, MediumFeatures, QueryFeatures


class ZoomSearch:
    """One zoom's search for :class:`pipelines.search_maps.NetworkSearch`, which sets what these methods
    read: ``model``, ``device``, ``channels_last``, ``mirror``, ``max_tile_pixels``, ``onnx`` and
    ``autocast``."""

    def query_features(self, query: PreparedQuery, size: tuple[int, int], mirrored: bool) -> QueryFeatures:
        key, features = (size, mirrored), query.features.setdefault(self, {})  # this network's own
        if key not in features:
            rgb = resize_hw(query.rgb, *size)
            mask = None if query.mask is None else resize_hw(query.mask, *size)
            if mirrored:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
                mask = None if mask is None else np.ascontiguousarray(mask[:, ::-1])
            with torch.inference_mode(), self.autocast():
                tensor = to_tensor([rgb], self.device, self.channels_last)
                mask_t = None if mask is None else torch.from_numpy(mask).to(self.device)[None, None]
                features[key] = self.model.encode_query(tensor, mask_t)
        return features[key]

    def _zoom(self, query: PreparedQuery, batch: torch.Tensor, zoom: float, levels: list[Level],
              grid: tuple[int, int], encoded: dict[float, MediumFeatures] | None = None,
              windows: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] | None = None
              ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, Level]], torch.Tensor | None]:
        """Per level of one zoom: (probabilities N x 1 x work size, per-pair cosines N x P x grid),
        the medium encoded once (per tile where the zoomed medium is too large, or only ``windows``,
        see :meth:`_search`); and the medium's raw stride-8 features where it was encoded whole
        (None when tiled)."""
        n, _, work_h, work_w = batch.shape
        if windows is None:
            overlap = math.ceil(max(max(l.query_size) for l in levels) / zoom) + 32
            parts = tiles(work_h, work_w, zoom, overlap=overlap, max_pixels=self.max_tile_pixels)
            if len(parts) == 1:
                found, skip = self._window(query, batch, zoom, levels, (work_h, work_w), grid, encoded)
                return [(p, c, level) for (p, c), level in zip(found, levels)], skip
            rows = sorted({(y0, y1) for y0, y1, _, _ in parts})
            cols = sorted({(x0, x1) for _, _, x0, x1 in parts})
            windows = [((y0, y1, x0, x1), (*owned_span(y0, y1, work_h, rows), *owned_span(x0, x1, work_w, cols)))
                       for y0, y1, x0, x1 in parts]
        pairs = len(self.model.cfg.scale_pairs)
        probs = [batch.new_zeros((n, 1, work_h, work_w), dtype=torch.float32) for _ in levels]
        corr = [batch.new_zeros((n, pairs, *grid), dtype=torch.float32) for _ in levels]
        for (y0, y1, x0, x1), (oy0, oy1, ox0, ox1) in windows:
            h, w = y1 - y0, x1 - x0
            found, _ = self._window(query, batch[:, :, y0:y1, x0:x1], zoom, levels, (h, w),
                                    (-(-h // GRID_STRIDE), -(-w // GRID_STRIDE)))
            gy0, gy1 = oy0 // GRID_STRIDE, -(-oy1 // GRID_STRIDE)
            gx0, gx1 = ox0 // GRID_STRIDE, -(-ox1 // GRID_STRIDE)
            for k, (p, c) in enumerate(found):
                probs[k][:, :, oy0:oy1, ox0:ox1] = p[:, :, oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
                corr[k][:, :, gy0:gy1, gx0:gx1] = c[:, :, gy0 - y0 // GRID_STRIDE:gy1 - y0 // GRID_STRIDE,
                                                    gx0 - x0 // GRID_STRIDE:gx1 - x0 // GRID_STRIDE]
        return list(zip(probs, corr, levels)), None

    def _window(self, query: PreparedQuery, batch: torch.Tensor, zoom: float, levels: list[Level],
                size: tuple[int, int], grid: tuple[int, int], cache: dict[float, MediumFeatures] | None = None
                ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Search one (window of the) working medium at one zoom, for each of its levels; also
        the window's raw stride-8 features. ``cache``: encodings of this whole medium per zoom."""
        encoded = cache.get(zoom) if cache is not None else None
        if encoded is None:
            encoded = encode_medium(self.model, zoom_media(batch, size, zoom), self.onnx)
            if cache is not None:
                cache[zoom] = encoded
        num_pairs = len(self.model.cfg.scale_pairs)
        found = []
        for level in levels:
            probs = corr = None
            # The query as given and mirrored, correlated together (one transform of the medium).
            kernels = [self.query_features(query, level.query_size, mirrored)
                       for mirrored in ((False, True) if self.mirror else (False,))]
            for out in self.model.search_many(kernels, encoded, medium_size=size):
                p = out["logits"].float().sigmoid()
                c = out["correlation"].float()
                c = c.reshape(c.shape[0], -1, num_pairs, *c.shape[-2:]).mean(dim=1)
                probs = p if probs is None else torch.maximum(probs, p)
                corr = c if corr is None else torch.maximum(corr, c)
            assert probs is not None and corr is not None
            if corr.shape[-2:] != grid:
                corr = F.interpolate(corr, size=grid, mode="bilinear", align_corners=False)
            # Even kernels peak half a cell up-left of the object (pipelines/alignment.py).
            dy, dx = kernel_offset([tuple(f.shape[-2:]) for f in kernels[0].feats], self.model.cfg.feature_strides,
                                   self.model.cfg.scale_pairs)
            probs = translate(probs, dy / zoom, dx / zoom, whole=True)  # working pixels
            corr = translate(corr, dy / zoom / GRID_STRIDE, dx / zoom / GRID_STRIDE)  # grid cells
            found.append((probs, corr))
        return found, encoded.skip
