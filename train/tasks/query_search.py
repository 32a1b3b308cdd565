"""Query search as a training task: find the query object in the medium, per pixel.

Pairs come from :class:`train.data.ShardPairs`; the model is :class:`train.model.QuerySearchNet`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from augment.imageio import InputError
from train.config import TrainConfig
from train.data import ShardPairs
from train.losses import box_loss, build_loss
from train.model import QuerySearchNet
from train.tasks import Metrics, adamw_groups, single_folder

logger = logging.getLogger(__name__)


def heatmap_metrics(logits: torch.Tensor, target: torch.Tensor, positive: torch.Tensor) -> Metrics:
    """IoU at 0.5 and hit rate over positive samples; false-alarm rate over negative ones.

    hit: the heat map's argmax lies inside the true mask. false alarm: some pixel exceeds 0.5
    although the query is absent. Sums and counts stay on the device (no sync per step).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    # On the logits, not their sigmoid: float32's sigmoid is exactly 1 from a logit of ~17 up, so the
    # argmax of confident maps was the first saturated pixel, not the peak. prob > 0.5 is logit > 0.
    scores = logits.detach().float().flatten(1)
    truth = target.flatten(1) > 0.5
    predicted = scores > 0.0
    iou = (predicted & truth).sum(1) / (predicted | truth).sum(1).clamp_min(1)
    hit = truth.gather(1, scores.argmax(1, keepdim=True)).squeeze(1).float()
    alarm = (scores.amax(1) > 0.0).float()
    pos = positive.float()
    neg = 1.0 - pos
    return {"iou": ((iou * pos).sum(), pos.sum()), "hit_rate": ((hit * pos).sum(), pos.sum()),
            "false_alarm": ((alarm * neg).sum(), neg.sum())}


def mask_box(target: torch.Tensor) -> torch.Tensor:
    """Normalised (x0, y0, x1, y1) box of each N×1×H×W mask (zeros for an empty mask)."""
    n, _, h, w = target.shape
    rows = target.flatten(1, 2).amax(2) > 0.5  # N x H
    cols = target.amax(2).flatten(1) > 0.5  # N x W
    ys = torch.arange(h, device=target.device).expand(n, h)
    xs = torch.arange(w, device=target.device).expand(n, w)
    y0 = torch.where(rows, ys, h).amin(1)
    y1 = torch.where(rows, ys + 1, 0).amax(1)
    x0 = torch.where(cols, xs, w).amin(1)
    x1 = torch.where(cols, xs + 1, 0).amax(1)
    box = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], dim=1).float()
    return torch.where(rows.any(1, keepdim=True), box, torch.zeros_like(box))


class QuerySearchTask:
    """Find the query object in the medium: per-pixel logits against the union of its instances."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.loss_fn = build_loss(config.loss, **config.loss_params)

    def build_model(self) -> nn.Module:
        try:
            return QuerySearchNet(self.config.model_config())
        except ValueError as error:  # e.g. feature_strides the backbone does not offer: known only once it is built
            raise InputError(f"model: {error}") from None

    def dataset(self, shards: Path | list[Path], split: str, rank: int = 0, world_size: int = 1) -> ShardPairs:
        shards = single_folder(shards, self.config.task)
        return ShardPairs(shards, self.config.pair_config(), split=split, seed=self.config.seed, rank=rank,
                          world_size=world_size)

    def train_datasets(self, shards: Path | list[Path], rank: int = 0,
                       world_size: int = 1) -> list[tuple[IterableDataset, float]]:
        """The training streams and their shares of the batches: composites from the shards, and
        real media from labelled photos when ``real_fraction`` > 0."""
        config = self.config
        streams: list[tuple[IterableDataset, float]] = []
        if config.real_fraction < 1.0:
            streams.append((self.dataset(shards, "train", rank, world_size), 1.0 - config.real_fraction))
        if config.real_fraction > 0.0:
            from train.photo_data import PhotoPairs, describe_index

            model = config.model_config()
            if config.photo_cache_features and not (model.freeze_backbone and model.pretrained and
                                                    model.trainable_blocks == 0 and not model.edge_path):
                raise InputError("photo_cache_features needs a frozen pretrained backbone (no trainable_blocks) "
                                 "and edge_path: false")
            photos = PhotoPairs(config.photo_config(), config.pair_config(), seed=config.seed, rank=rank,
                                world_size=world_size, backbone=(model.backbone, max(model.feature_strides)))
            logger.info("real media from %s: %s", photos.folder, describe_index(photos.index))
            streams.append((photos, config.real_fraction))
        return streams

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return adamw_groups(model, self.config, ("backbone.", "query_backbone."))

    @staticmethod
    def _inputs(batch: dict[str, torch.Tensor], channels_last: bool) -> tuple[torch.Tensor, ...]:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        query = (batch["query"].float() / 255.0).contiguous(memory_format=fmt)
        medium = (batch["medium"].float() / 255.0).contiguous(memory_format=fmt)
        return query, medium, batch["query_mask"].float() / 255.0, batch["target"].float()

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = batch["target"].float()
        if "medium_feats_0" in batch:  # real media as cached backbone features (train/feature_cache.py)
            fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
            query = (batch["query"].float() / 255.0).contiguous(memory_format=fmt)
            raw = [batch[f"medium_feats_{i}"].float() for i in range(sum(k.startswith("medium_feats_") for k in batch))]
            outputs = model(query, raw, batch["query_mask"].float() / 255.0, tuple(target.shape[-2:]))
        else:
            query, medium, query_mask, target = self._inputs(batch, self.config.channels_last)
            outputs = model(query, medium, query_mask)
        logits = outputs["logits"].float()  # losses in float32, also under bf16 autocast
        loss = self.loss_fn(logits, target)
        if "box" in outputs:
            loss = loss + self.config.box_loss_weight * box_loss(outputs["box"].float(), mask_box(target),
                                                                 batch["positive"])
        if "label_logits" in outputs:
            loss = loss + self.config.label_loss_weight * label_loss(outputs["label_logits"].float(), batch["label"],
                                                                     batch["positive"])
        return loss, outputs

    def metrics(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Metrics:
        metrics = heatmap_metrics(outputs["logits"], batch["target"], batch["positive"])
        if "label_logits" in outputs:
            known = batch["positive"].bool() & (batch["label"] >= 0)
            correct = (outputs["label_logits"].argmax(1) == batch["label"]) & known
            metrics["label_accuracy"] = (correct.float().sum(), known.float().sum())
        return metrics


def label_loss(label_logits: torch.Tensor, labels: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the query's category, on positives whose category the head knows (label >= 0)."""
    known = positive.bool() & (labels >= 0)
    if not known.any():
        return label_logits.sum() * 0.0  # keeps the graph (DDP) without a NaN from an empty mean
    return F.cross_entropy(label_logits[known], labels[known])

