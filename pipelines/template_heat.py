"""The search network on the temporal mode's windows: one medium encoding (or a batch of same-size
windows), the query's template at several sizes (their features cached), the heat of each and
the medium's raw stride-8 features (which the online filter learns on)."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch

from pipelines.onnx_backbone import encode_medium, medium_encoder


class TemplateHeat:
    """Heat maps of one template at several sizes in a medium, encoding the medium once.

    Uses the search network of a :class:`pipelines.search.Searcher` (its model, device, autocast);
    template features are cached per size.
    """

    def __init__(self, searcher: Any, rgb: np.ndarray, mask: np.ndarray | None) -> None:
        network = searcher.network  # pipelines.search_maps.NetworkSearch: the folded model, device, autocast
        self.model = network.model
        self.device: torch.device = network.device
        self.amp: bool = network.amp
        self.channels_last: bool = network.channels_last
        # The media encoded by onnxruntime (pipelines/onnx_backbone.py), once use_onnx is called.
        self.onnx = False
        self.set_template(rgb, mask)

    def use_onnx(self) -> bool:
        """Encode media with onnxruntime from now on (TemporalConfig.onnx_backbone); the graph is
        exported here (once per process), not on the first frame. False (PyTorch keeps encoding)
        where it cannot: see pipelines/onnx_backbone.py's medium_encoder."""
        self.onnx = not self.amp and medium_encoder(self.model) is not None
        return self.onnx

    def _encode(self, batch: torch.Tensor) -> Any:
        """The media's MediumFeatures, by onnxruntime after use_onnx, else PyTorch."""
        return encode_medium(self.model, batch, self.onnx)

    def set_template(self, rgb: np.ndarray, mask: np.ndarray | None) -> None:
        self.rgb, self.mask = rgb, mask
        self._features: dict[tuple[int, int], Any] = {}

    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return batch.contiguous(memory_format=torch.channels_last if self.channels_last else
                                torch.contiguous_format)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def features(self, size: tuple[int, int]) -> Any:
        if size not in self._features:
            rgb = cv2.resize(self.rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            with torch.inference_mode(), self._autocast():
                mask = None
                if self.mask is not None:
                    mask = torch.from_numpy(cv2.resize(self.mask, (size[1], size[0]),
                                                       interpolation=cv2.INTER_LINEAR))
                    mask = mask.to(self.device)[None, None]
                self._features[size] = self.model.encode_query(self._tensor([rgb]), mask)
        return self._features[size]

    def peak_offset(self, size: tuple[int, int], side: int) -> np.ndarray:
        """Where the heat of the template at ``size`` (h, w) peaks, relative to the object's
        centre, in pixels (x, y) of a ``side`` x ``side`` window.

        The network's heat comes from a stride-8 grid and even-sized kernels, so its peak sits a
        few pixels off the object's centre; measured once on the template pasted in the middle of
        a window of its own mean colour, and taken off every peak."""
        th, tw = size
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = self.rgb.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        y0, x0 = (side - th) // 2, (side - tw) // 2
        canvas[y0:y0 + th, x0:x0 + tw] = cv2.resize(self.rgb, (tw, th), interpolation=cv2.INTER_AREA)
        heat = self.heat(canvas, [size])[0]
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        return np.array([x + 0.5 - (x0 + tw / 2), y + 0.5 - (y0 + th / 2)])

    def heat(self, medium: np.ndarray, sizes: Sequence[tuple[int, int]]) -> np.ndarray:
        """S x H x W heat (sigmoid of the network's logits) of each template size in ``medium``."""
        return self.heat_and_features(medium, sizes)[0]

    def heat_and_features(self, medium: np.ndarray, sizes: Sequence[tuple[int, int]]
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The heat of :meth:`heat` and the medium's raw stride-8 features (C x h x w, float32)."""
        heat, features = self.heat_and_features_many([medium], sizes)
        return heat[0], features[0]

    def heat_and_features_many(self, media: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
                               ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`heat_and_features` of same-size media in one batch: N x S x H x W heat and
        N x C x h x w features."""
        with torch.inference_mode(), self._autocast():
            encoded = self._encode(self._tensor(media))
            maps = [self.model.search(self.features(size), encoded)["logits"].float().sigmoid()
                    for size in sizes]
            features = encoded.skip.float().contiguous().cpu().numpy()
        return torch.cat(maps, dim=1).cpu().numpy(), features

    def features_many(self, media: Sequence[np.ndarray]) -> np.ndarray:
        """The stride-8 features alone (N x C x h x w float32) of same-size media in one batch."""
        with torch.inference_mode(), self._autocast():
            return self._encode(self._tensor(media)).skip.float().contiguous().cpu().numpy()
