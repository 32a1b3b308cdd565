"""Multi-scale query search network.

Pipeline: a (siamese by default) backbone encodes the query and the medium; for each feature level
and each (query_scale, medium_scale) pair the query map is correlated over the medium map
(:func:`train.correlation.correlate`, cosine scores); all score maps are resized to the medium's
stride-8 grid, concatenated and turned into per-pixel logits at full resolution by a small
conversion network that also sees the medium's own stride-8 features (and, optionally, a light
stride-4 path from the raw image for sharp edges).

The conversion network starts as a fixed monotone readout of the mean correlation plus residual
branches whose last layers are zero, so an untrained network (pretrained backbone + correlation)
is already a usable baseline and training only has to learn corrections. The layers after the
correlation (conversion net, edge path, pooled heads) live in :mod:`train.model_heads`.

Inputs are float RGB in [0, 1], N x 3 x H x W (see :mod:`train.backbones`). Nothing in the forward
pass branches on tensor values, so the model works with ``torch.compile``, bf16 autocast (the
correlation itself runs in float32), ``channels_last`` and ONNX export at fixed input sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augment.validation import check_field_types, is_int, is_pair
from train.backbones import check_backbone_name, create_backbone
from train.correlation import FeatureProjection, ResidualProjection, correlate_sizes
from train.model_heads import ConversionNet, EdgeRefiner, PooledHeads, _hw, _is_zero, _resize

# Stride of the common grid the score maps are resized to (the backbone's first feature level).
GRID_STRIDE = 8


# Widths (and counts) a model config may ask for: past it a layer's weights, not its accuracy, grow
# (conversion_width 10**9 asked torch for petabytes as the network was built).
MAX_CHANNELS = 4096
# ...and together: each width and count alone under MAX_CHANNELS, 4096 layers of 4096 channels asked for
# 2.5 TB as the network was built (from a 1 KB checkpoint's config, before any of its tensors was read).
MAX_CONVERSION_WEIGHTS = 2**28  # 1 GB of float32: the defaults take 30 thousand
MAX_SCALE_PAIRS = 32
MAX_SCALE = 8.0  # a medium scale of 1000 up-samples a search's features a million times over


@dataclass
class SearchNetConfig:
    """Hyper-parameters of :class:`QuerySearchNet`.

    ``scale_pairs`` are (query_scale, medium_scale): query_scale resizes the query feature map
    (at least 1 x 1), medium_scale=2.0 bilinearly up-samples the medium features, i.e. zooms in on
    small objects. The default leaves out (1.0, 2.0): it covers the same object sizes as (0.5, 1.0)
    at 4x the correlation cost (searching 640x480 frames it took the search from 1.35x to 1.6-2.4x the
    backbone's time); add it for objects too small for the stride-8 grid. ``projection_channels`` = 0
    correlates raw backbone features. ``box_head``
    predicts the query's box in the medium as normalised (x0, y0, x1, y1); ``num_label_classes`` > 0
    adds a coarse label classifier.
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    shared_backbone: bool = True
    feature_strides: tuple[int, ...] = (8, 16)
    scale_pairs: tuple[tuple[float, float], ...] = ((1.0, 1.0), (0.5, 1.0), (2.0, 1.0))
    projection_channels: int = 0
    conversion_width: int = 32
    conversion_layers: int = 3
    skip_channels: int = 16
    edge_path: bool = True
    edge_channels: int = 16
    # Initial readout: logits = gain * (mean correlation - offset).
    readout_gain: float = 10.0
    readout_offset: float = 0.3
    box_head: bool = False
    num_label_classes: int = 0
    freeze_backbone: bool = False
    # Learned residual 1x1 projection of each correlated level (starts as the identity).
    residual_projection: bool = False
    # Its hidden width (0: as many as the level's channels); a few make it a low-rank correction.
    residual_hidden: int = 0
    # With a frozen backbone: train its last this many blocks up to the deepest correlated level.
    trainable_blocks: int = 0

    def __post_init__(self) -> None:
        # Checked here, not where the network is built: a width of -1 or "x" was torch's traceback there,
        # a readout_gain of nan trained to nan without a word, conversion_layers 0 built one layer.
        check_field_types(self, skip=("feature_strides", "scale_pairs"))
        if not (isinstance(self.feature_strides, (list, tuple)) and all(map(is_int, self.feature_strides))):
            raise ValueError(f"feature_strides: expected a list of whole numbers, got {self.feature_strides!r}")
        if not (isinstance(self.scale_pairs, (list, tuple)) and all(is_pair(p) and min(p) > 0 for p in self.scale_pairs)):
            raise ValueError(f"scale_pairs: expected a list of pairs of numbers above 0 like [[1.0, 1.0]], "
                             f"got {self.scale_pairs!r}")
        # Configs loaded from YAML/JSON arrive as lists; normalise so the dataclass stays hashable.
        self.feature_strides = tuple(int(s) for s in self.feature_strides)
        self.scale_pairs = tuple((float(q), float(m)) for q, m in self.scale_pairs)
        if not self.feature_strides or not self.scale_pairs:
            raise ValueError("feature_strides and scale_pairs must not be empty")
        for name, low in (("projection_channels", 0), ("conversion_width", 1), ("conversion_layers", 1),
                          ("skip_channels", 1), ("edge_channels", 1), ("num_label_classes", 0),
                          ("residual_hidden", 0), ("trainable_blocks", 0)):
            value = getattr(self, name)
            if not low <= value <= MAX_CHANNELS:
                raise ValueError(f"{name} must lie in [{low}, {MAX_CHANNELS}], got {value}")
        if len(self.scale_pairs) > MAX_SCALE_PAIRS or max(max(p) for p in self.scale_pairs) > MAX_SCALE:
            raise ValueError(f"scale_pairs: at most {MAX_SCALE_PAIRS} pairs of scales of at most {MAX_SCALE:g}, got "
                             f"{len(self.scale_pairs)} up to {max(max(p) for p in self.scale_pairs):g}")
        weights = 9 * self.conversion_width * (len(self.feature_strides) * len(self.scale_pairs) + self.skip_channels
                                               + (self.conversion_layers - 1) * self.conversion_width)
        if weights > MAX_CONVERSION_WEIGHTS:
            raise ValueError(f"conversion_width {self.conversion_width} x conversion_layers {self.conversion_layers} "
                             f"make {weights:,} weights ({weights * 4 / 1e9:.3g} GB); at most {MAX_CONVERSION_WEIGHTS:,}")
        check_backbone_name(self.backbone)

    @property
    def num_score_maps(self) -> int:
        return len(self.feature_strides) * len(self.scale_pairs)


class QueryFeatures(NamedTuple):
    """Per-level query feature maps and masks; compute once per query, reuse for many media."""

    feats: list[torch.Tensor]
    masks: list[torch.Tensor] | None
    # The correlation's transforms of these maps, per level and medium size (inference: one query,
    # many frame batches); see train.correlation.correlate_sizes.
    cache: dict[Any, Any] | None = None


class MediumFeatures(NamedTuple):
    """Everything :meth:`QuerySearchNet.search` needs from one batch of media."""

    feats: list[torch.Tensor]  # per configured level, projected if projection is on
    skip: torch.Tensor  # raw stride-8 backbone features (conversion-net skip input)
    edge: torch.Tensor | None  # stride-4 features of the raw image (edge path) or None
    size: tuple[int, int]  # medium H, W in pixels


class QuerySearchNet(nn.Module):
    """Finds a query object in media; see the module docstring for the architecture.

    Output dict of :meth:`forward` / :meth:`search`:
      ``logits``        N x 1 x H x W at the medium's input resolution (sigmoid -> probability),
      ``correlation``   N x S x h x w raw cosine maps on the stride-8 grid, S = levels x pairs,
                        ordered level-major (all pairs of the first level first),
      ``box``           N x 4 normalised (x0, y0, x1, y1), when ``cfg.box_head``,
      ``label_logits``  N x num_label_classes, when ``cfg.num_label_classes`` > 0.
    """

    def __init__(self, cfg: SearchNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SearchNetConfig()
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained)
        self.query_backbone = (None if cfg.shared_backbone else
                               create_backbone(cfg.backbone, pretrained=cfg.pretrained))
        strides: list[int] = list(self.backbone.feature_strides)
        channels: list[int] = list(self.backbone.feature_channels)
        if strides[0] != GRID_STRIDE:
            raise ValueError(f"backbone's first feature stride must be {GRID_STRIDE}")
        missing = [s for s in cfg.feature_strides if s not in strides]
        if missing:
            raise ValueError(f"feature strides {missing} not offered by {cfg.backbone} ({strides})")
        self.level_indices = [strides.index(s) for s in cfg.feature_strides]
        self.max_stride = max(cfg.feature_strides)
        if cfg.residual_projection and cfg.projection_channels > 0:
            raise ValueError("residual_projection and projection_channels > 0 are alternatives; pick one")
        self.projections: nn.ModuleList | None = None
        if cfg.projection_channels > 0:
            self.projections = nn.ModuleList(FeatureProjection(channels[i], cfg.projection_channels)
                                             for i in self.level_indices)
        elif cfg.residual_projection:
            self.projections = nn.ModuleList(ResidualProjection(channels[i], cfg.residual_hidden or None)
                                             for i in self.level_indices)
        self.conversion = ConversionNet(cfg.num_score_maps, channels[0], cfg)
        self.edge = EdgeRefiner(cfg.conversion_width, cfg.edge_channels) if cfg.edge_path else None
        self.heads = (PooledHeads(cfg.conversion_width, cfg.box_head, cfg.num_label_classes)
                      if cfg.box_head or cfg.num_label_classes > 0 else None)
        self.first_trainable_block = None
        if cfg.freeze_backbone:
            for backbone in self._backbones():
                backbone.requires_grad_(False)
            if cfg.trainable_blocks > 0:
                if not cfg.shared_backbone:
                    raise ValueError("trainable_blocks needs the shared (siamese) backbone")
                last = self.backbone.last_block(self.max_stride)
                self.first_trainable_block = max(0, last + 1 - cfg.trainable_blocks)
                for block in list(self.backbone._blocks)[self.first_trainable_block:last + 1]:
                    block.requires_grad_(True)

    def _backbones(self) -> list[nn.Module]:
        return [self.backbone] + ([self.query_backbone] if self.query_backbone is not None else [])

    def train(self, mode: bool = True) -> "QuerySearchNet":
        """Like ``nn.Module.train`` but a frozen backbone keeps its BatchNorm statistics."""
        super().train(mode)
        if self.cfg.freeze_backbone:
            for backbone in self._backbones():
                backbone.eval()
        return self

    def _backbone_features(self, backbone: nn.Module, image: torch.Tensor,
                           max_stride: int) -> list[torch.Tensor]:
        if self.first_trainable_block is not None:  # frozen blocks without a graph, the last ones with
            return backbone.forward_features(image, max_stride=max_stride,
                                             grad_from=self.first_trainable_block)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbone):
            return backbone.forward_features(image, max_stride=max_stride)

    def trained_backbone_keys(self) -> tuple[str, ...]:
        """State-dict keys of the backbone tensors training changes (the fine-tuned blocks)."""
        if self.first_trainable_block is None:
            return ()
        last = self.backbone.last_block(self.max_stride)
        prefixes = tuple(f"backbone._blocks.{i}." for i in range(self.first_trainable_block, last + 1))
        return tuple(k for k in self.state_dict() if k.startswith(prefixes))

    def _project(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [feats[i] for i in self.level_indices]
        if self.projections is None:
            return levels
        return [proj(f) for proj, f in zip(self.projections, levels)]

    def encode_query(self, query: torch.Tensor,
                     query_mask: torch.Tensor | None = None) -> QueryFeatures:
        """Encode N query images (and optional N x 1 x Hq x Wq masks in [0, 1]) once."""
        backbone = self.query_backbone if self.query_backbone is not None else self.backbone
        feats = self._project(self._backbone_features(backbone, query, self.max_stride))
        masks = None
        if query_mask is not None:
            # Area-average the alpha onto each feature grid: the fraction of a cell that is object.
            masks = [F.adaptive_avg_pool2d(query_mask.to(f.dtype), _hw(f)) for f in feats]
        return QueryFeatures(feats, masks, {})

    def encode_medium(self, medium: torch.Tensor) -> MediumFeatures:
        """Encode N media (also usable once per video frame batch)."""
        raw = self._backbone_features(self.backbone, medium, self.max_stride)
        edge = self.edge.encode(medium) if self.edge is not None and not self.edge.resize_only else None
        return MediumFeatures(self._project(raw), raw[0], edge, _hw(medium))

    def medium_from_backbone(self, raw: list[torch.Tensor], size: tuple[int, int]) -> MediumFeatures:
        """Medium features from backbone features computed elsewhere (a frozen backbone's cache:
        :mod:`train.feature_cache`, onnxruntime); the raw image's edge path is not available then
        (an edge path that only resizes needs nothing of it, as in :meth:`encode_medium`)."""
        if self.edge is not None and not self.edge.resize_only:
            raise ValueError("cached backbone features cannot feed the edge path; set edge_path: false")
        return MediumFeatures(self._project(raw), raw[0], None, (int(size[0]), int(size[1])))

    @staticmethod
    def _check_query_batch(query: QueryFeatures, batch: int) -> None:
        """A query batch must match the media's, or be a single query searched in every medium
        (correlated as one kernel over the batch, not copied per medium)."""
        if query.feats[0].shape[0] not in (1, batch):
            raise ValueError(f"query batch {query.feats[0].shape[0]} does not match medium batch "
                             f"{batch} and is not 1")

    @staticmethod
    def _scale_query(feat: torch.Tensor, mask: torch.Tensor | None,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        if scale == 1.0:
            return feat, mask
        h, w = _hw(feat)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        feat = _resize(feat, size)
        mask = None if mask is None else _resize(mask, size).clamp(0.0, 1.0)
        return feat, mask

    def _scaled_query(self, query: QueryFeatures, level: int,
                      pair: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The query's level-``level`` map (and mask) at scale pair ``pair``'s query scale. At
        inference (no gradient) kept in the query's cache: a query searched in many media (a
        video's frames) is resized once, not per medium (the same tensors, so the same maps)."""
        mask = None if query.masks is None else query.masks[level]
        scale = self.cfg.scale_pairs[pair][0]
        if query.cache is None or torch.is_grad_enabled():
            return self._scale_query(query.feats[level], mask, scale)
        key = ("scaled", level, pair)
        if key not in query.cache:
            query.cache[key] = self._scale_query(query.feats[level], mask, scale)
        return query.cache[key]

    def correlation_maps(self, query: QueryFeatures, medium: MediumFeatures) -> torch.Tensor:
        """All (level, scale pair) cosine maps on the stride-8 grid, N x S x h x w."""
        return self.correlation_maps_many([query], medium)[0]

    def correlation_maps_many(self, queries: Sequence[QueryFeatures], medium: MediumFeatures) -> list[torch.Tensor]:
        """:meth:`correlation_maps` of several queries (e.g. one as given and mirrored) over one
        medium: where the FFT correlates, the medium is transformed once for all of them. The
        first query's cache keeps the others' transforms too, so a first query must always come
        with the same others."""
        grid = _hw(medium.skip)
        maps: list[list[torch.Tensor]] = [[] for _ in queries]
        for level, m_feat in enumerate(medium.feats):
            scores: list[dict[int, torch.Tensor]] = [{} for _ in queries]
            # The pairs zooming the medium alike share one padded (and transformed) medium map.
            for m_scale in dict.fromkeys(m for _, m in self.cfg.scale_pairs):
                h, w = _hw(m_feat)
                zoomed = m_feat if m_scale == 1.0 else _resize(m_feat, (round(h * m_scale), round(w * m_scale)))
                pairs = [k for k, (_, m) in enumerate(self.cfg.scale_pairs) if m == m_scale]
                kernels = [self._scaled_query(query, level, k) for query in queries for k in pairs]
                first = queries[0].cache
                key = (level, m_scale) if len(queries) == 1 else (level, m_scale, len(queries))
                cache = None if first is None else first.setdefault(key, {})
                found = correlate_sizes(kernels, zoomed, cache=cache)
                for i in range(len(queries)):
                    scores[i].update(zip(pairs, found[i * len(pairs):(i + 1) * len(pairs)]))
            for i in range(len(queries)):
                for k in range(len(self.cfg.scale_pairs)):
                    maps[i].append(scores[i][k] if _hw(scores[i][k]) == grid else _resize(scores[i][k], grid))
        return [torch.cat(m, dim=1) for m in maps]

    def search(self, query_features: QueryFeatures,
               medium: MediumFeatures | torch.Tensor,
               medium_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Search encoded queries in media (raw images or :meth:`encode_medium` output).

        ``medium_size`` (H, W) sets the logits' resolution; default the medium's input size.
        """
        return self.search_many([query_features], medium, medium_size)[0]

    def search_many(self, queries: Sequence[QueryFeatures], medium: MediumFeatures | torch.Tensor,
                    medium_size: tuple[int, int] | None = None) -> list[dict[str, torch.Tensor]]:
        """:meth:`search` of several encoded queries in the same media, correlated together
        (:meth:`correlation_maps_many`); one output per query."""
        if isinstance(medium, torch.Tensor):
            medium = self.encode_medium(medium)
        for query in queries:
            self._check_query_batch(query, medium.skip.shape[0])
        outputs = []
        for scores in self.correlation_maps_many(queries, medium):
            dtype = medium.skip.dtype  # follow autocast / the backbone's dtype downstream
            logits, trunk = self.conversion(scores.to(dtype), medium.skip)
            out: dict[str, torch.Tensor] = {"correlation": scores}
            if self.heads is not None:
                out.update(self.heads(trunk, logits))
            if self.edge is not None:
                logits = self.edge(logits, trunk, medium.edge, medium.size)
            # float32 so losses/sigmoid stay precise when the body ran under bf16 autocast.
            out["logits"] = _resize(logits, medium_size or medium.size).float()
            outputs.append(out)
        return outputs

    def skip_inert_branches(self) -> list[str]:
        """For inference copies (never while training: the zero convs' gradients need the trunk).

        The conversion net's and the edge path's residual branches end in a zero-initialised conv;
        while it still holds zeros (the untrained network) the branch adds exactly 0 to the logits,
        so its convolutions (and the edge path's image encoder) are skipped. The logits are the
        same to the bit. Returns the names of the branches skipped."""
        skipped = []
        if self.edge is not None and _is_zero(self.edge.residual):
            self.edge.resize_only = True
            skipped.append("edge")
        trunk_used = self.heads is not None or (self.edge is not None and not self.edge.resize_only)
        if not trunk_used and _is_zero(self.conversion.residual):
            self.conversion.readout_only = True
            skipped.append("conversion")
        return skipped

    def forward(self, query: torch.Tensor, medium: torch.Tensor | list[torch.Tensor],
                query_mask: torch.Tensor | None = None,
                medium_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Encode queries (N or 1) and media (N) and search; see the class docstring. ``medium`` may
        also be the media's backbone features (a frozen backbone's cache) with their ``medium_size``."""
        if isinstance(medium, (list, tuple)):
            if medium_size is None:
                raise ValueError("cached medium features need medium_size")
            encoded = self.medium_from_backbone(list(medium), medium_size)
        else:
            encoded = self.encode_medium(medium)
        return self.search(self.encode_query(query, query_mask), encoded)
