"""The training run's configuration: one dataclass, loaded from YAML, hashed for resumption.

``configs/train_*.yaml`` document every key. The keys a task reads (sizes, pair making, the
model's fields) live here too, so one file describes one run; the task named by ``task`` decides
which of them matter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augment.config import read_yaml_mapping
from augment.imageio import InputError
from augment.validation import check_field_types, is_int, is_number
from train.data import MAX_MEDIUM_SIZE, PairConfig, pair_checks
from train.resumable_stream import MAX_SEED
from train.losses import build_loss
from train.model import SearchNetConfig
from train.segment_config import SegmentConfig
from train.segment_model import SegmentNetConfig

if TYPE_CHECKING:
    from train.photo_data import PhotoMediaConfig

TASK_NAMES = ("query_search", "segment")
# batch_size at most: the pairs of a step are held in memory with their activations for the backward
# pass, more than eval's ~23 MB a pair on the CPU at the default sizes (256-px medium, 128-px query;
# ~2.25 times that at 384 px), so 256 pairs are upwards of ~6 GB; four times the largest batch shipped
# (configs/train_gpu.yaml: 64) and the same as `synth eval --batch-size` (pipelines/train_commands.py
# MAX_EVAL_BATCH_SIZE). batch_size: 100000 filled the memory at the first step instead of saying so.
MAX_BATCH_SIZE = 256
# Stand-ins that pass the checks while a checkpoint's older, allowed value is loaded (from_checkpoint)
GRANDFATHERED: dict[str, Any] = {"batch_size": MAX_BATCH_SIZE, "decay_steps": None}


def is_device_name(name: str) -> bool:
    """auto, cpu, cuda or cuda:N: what a config's ``device`` and ``--device`` take."""
    return re.fullmatch(r"auto|cpu|cuda(:\d+)?", name) is not None


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``configs/train_*.yaml`` document every key."""

    task: str = "query_search"
    model: dict[str, Any] = field(default_factory=dict)  # SearchNetConfig fields (SegmentNetConfig for task segment)
    segment: dict[str, Any] = field(default_factory=dict)  # task segment: SegmentConfig fields (classes, sizes, mix)
    loss: str = "bce+dice"
    loss_params: dict[str, float] = field(default_factory=dict)
    box_loss_weight: float = 1.0  # used when the model has a box head
    label_categories: list[str] = field(default_factory=list)  # classes of the label head, in order (model.num_label_classes of them)
    label_loss_weight: float = 0.2  # used when the model has a label head
    # data
    query_size: int = 128
    medium_size: int = 256
    negative_fraction: float = 0.25
    eval_fraction: float = 0.1
    query_fill: tuple[float, float] = (0.6, 0.9)
    colour_jitter: float = 0.1
    shuffle_buffer: int = 256
    num_workers: int = 2
    hard_negative_fraction: float = 0.0  # composites: share of negatives whose query's category is in the medium
    # real media: labelled photos as media, catalogue shots of their objects as queries (train/photo_data.py)
    real_fraction: float = 0.0  # share of batches made from photo_sources (0 = composites only, 1 = photos only)
    photo_sources: list[str] = field(default_factory=list)  # labelled photo folders/COCO files (any format with masks)
    photo_format: str = "auto"
    photo_include: list[str] = field(default_factory=list)  # glob patterns on photo stems: the training photos
    photo_exclude: list[str] = field(default_factory=list)
    photo_min_area: int = 2500  # objects with fewer pixels are neither queries nor look-alikes
    photo_drop_labels: list[str] = field(default_factory=list)  # labels that are never objects (skin, hair ...)
    photo_query_categories: list[str] = field(default_factory=list)  # categories used as queries; empty = all
    photo_medium: tuple[int, int] = (192, 384)  # real medium height, width
    photo_per_scene: tuple[int, int] = (2, 3)  # photos tiled into one medium
    photo_look_alike: float = 0.5  # chance each other photo holds an object of the query's category
    photo_epoch_size: int = 2000  # real pairs per epoch
    photo_cache_features: bool = False  # encode each photo once (frozen backbone): most of a CPU step saved
    # optimisation
    batch_size: int = 16
    steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-5
    backbone_lr_scale: float = 0.1
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    decay_steps: int | None = None
    grad_clip: float = 1.0
    # speed
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    # cadence
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 20
    checkpoint_every: int = 200
    seed: int = 0
    # A checkpoint of the same model whose weights start this run (fine-tuning, e.g. on real photos
    # after training on composites); the optimizer, schedule, step and data position start afresh.
    init_checkpoint: str = ""
    # With init_checkpoint: also its optimizer's moments (the run continues that one's optimisation,
    # e.g. on other data), and ``schedule_offset``: step s of this run takes the learning rate of
    # step s + schedule_offset (0: the schedule starts afresh, warm-up included).
    init_optimizer: bool = False
    schedule_offset: int = 0

    # Keys that may change between a run and its resumption: they do not change the network or its
    # data (num_workers changes the order rows come in: a resume with another count starts the next epoch).
    RUNTIME_KEYS = frozenset({"steps", "num_workers", "device", "compile", "log_every", "eval_every",
                              "eval_batches", "checkpoint_every"})

    def __post_init__(self) -> None:
        self._check_types()
        if self.task not in TASK_NAMES:
            raise InputError(f"unknown task {self.task!r} (known: {', '.join(TASK_NAMES)})")
        self.query_fill = tuple(self.query_fill)
        self.betas = tuple(self.betas)
        for key in ("photo_medium", "photo_per_scene"):  # 192.9 was cut to 192 without a word
            if not all(is_int(v) or (isinstance(v, float) and v.is_integer()) for v in getattr(self, key)):
                raise InputError(f"{key}: expected two whole numbers, got {list(getattr(self, key))}")
        self.photo_medium = tuple(int(v) for v in self.photo_medium)
        self.photo_per_scene = tuple(int(v) for v in self.photo_per_scene)
        if not 0.0 <= self.real_fraction <= 1.0:  # hard_negative_fraction: with the pairs' keys (pair_checks)
            raise InputError(f"real_fraction must lie in [0, 1], got {self.real_fraction!r}")
        if self.real_fraction > 0 and not self.photo_sources:
            raise InputError("real_fraction > 0 needs photo_sources (labelled photos to make real media from)")
        if self.photo_epoch_size < 1 or not 32 <= min(self.photo_medium) <= max(self.photo_medium) <= MAX_MEDIUM_SIZE:
            raise InputError(f"photo_epoch_size must be at least 1, photo_medium sides in [32, {MAX_MEDIUM_SIZE}]")
        if self.photo_min_area < 1:
            raise InputError(f"photo_min_area must be at least 1, got {self.photo_min_area}")
        self._check_ranges()
        # The photo pairs' own checks, as this config names their keys (they were checked, under their
        # own names, only once the photos were read: 'photo pairs: look_alike_probability must ...').
        self.photo_config().pair_config(self.negative_fraction).validate(
            "photo settings", names={"scene_height": "photo_medium", "photos_per_scene": "photo_per_scene",
                                     "look_alike_probability": "photo_look_alike"})
        if self.task == "segment":
            self._check_segment()
            return
        self._check_model_keys(SearchNetConfig)
        try:
            model = SearchNetConfig(**self.model)
        except (TypeError, ValueError) as error:
            raise InputError(f"model: {error}") from None
        num_labels = model.num_label_classes
        stride = max(model.feature_strides)
        if self.real_fraction > 0 and self.photo_cache_features and any(side % stride for side in self.photo_medium):
            # PhotoFeatureCache's ValueError traceback once the photos were read (a height), features
            # narrower than the target, stretched over it (a width)
            raise InputError(f"photo_medium {list(self.photo_medium)}: with photo_cache_features both sides must be "
                             f"multiples of the backbone's deepest stride, {stride} (model.feature_strides)")
        not_numbers = sorted(key for key, value in self.loss_params.items() if not is_number(value))
        if not_numbers:  # the loss would take them as they come and fail mid-step
            listed = ", ".join(f"{key}: {self.loss_params[key]!r}" for key in not_numbers)
            raise InputError(f"loss_params: expected numbers, got {listed}")
        try:  # built here, not at the first step, so a typo is one line naming the key
            build_loss(self.loss, **self.loss_params)
        except (TypeError, ValueError) as error:
            raise InputError(f"loss: {error}") from None
        self.label_categories = list(self.label_categories)
        if num_labels != len(self.label_categories) and (num_labels or self.label_categories):
            raise InputError(f"model.num_label_classes is {num_labels} but label_categories lists "
                             f"{len(self.label_categories)} names: list the categories the label head predicts")

    def _check_types(self) -> None:
        """Every value of the type its default has; one line naming the key otherwise."""
        try:
            check_field_types(self)
        except ValueError as error:
            raise InputError(str(error)) from None

    def _check_ranges(self) -> None:
        """Every value in its range; one line naming the key otherwise."""
        at_least = {"num_workers": 0, "batch_size": 1,
                    "steps": 1, "min_lr": 0, "backbone_lr_scale": 0, "weight_decay": 0, "warmup_steps": 0,
                    "decay_steps": 1, "grad_clip": 0, "box_loss_weight": 0, "label_loss_weight": 0, "log_every": 1,
                    "eval_every": 0, "eval_batches": 1, "checkpoint_every": 0, "seed": 0, "schedule_offset": 0}
        for key, low in at_least.items():
            value = getattr(self, key)
            if value is not None and value < low:
                raise InputError(f"{key} must be at least {low}, got {value!r}")
        if self.batch_size > MAX_BATCH_SIZE:
            raise InputError(f"batch_size must be at most {MAX_BATCH_SIZE} (the pairs of a step are held in "
                             f"memory), got {self.batch_size!r}")
        checks = [
            (self.lr > 0, f"lr must be positive, got {self.lr!r}"),
            (self.seed <= MAX_SEED, f"seed must be at most 2**63 - 1, got {self.seed!r}"),
            (self.init_checkpoint or not self.init_optimizer, "init_optimizer needs an init_checkpoint"),
            (self.min_lr <= self.lr, f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})"),
            # learning_rate() ramped to lr over the warm-up, then fell straight to min_lr: no cosine decay
            (self.decay_steps is None or self.decay_steps > self.warmup_steps,
             f"decay_steps ({self.decay_steps}) must exceed warmup_steps ({self.warmup_steps}): the cosine decay "
             f"runs from the warm-up's end to decay_steps"),
            (all(0.0 <= b < 1.0 for b in self.betas), "betas must lie in [0, 1)"),
            *pair_checks(self.pair_config()),  # the pairs' keys: the datasets' own checks
            (self.amp in ("auto", "bf16", "off"), f"amp must be auto, bf16 or off, not {self.amp!r}"),
            (is_device_name(self.device), f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def _check_model_keys(self, kind: type) -> None:
        """``model``'s keys are the model config's fields: one line naming the unknown ones and the known,
        not Python's "__init__() got an unexpected keyword argument"."""
        if not isinstance(self.model, dict):
            raise InputError(f"model: expected a mapping of {kind.__name__} fields, got {self.model!r}")
        known = sorted(f.name for f in dataclasses.fields(kind))
        unknown = sorted(str(key) for key in self.model if key not in known)
        if unknown:
            raise InputError(f"model: unknown key(s) {', '.join(unknown)} for task {self.task} "
                             f"(known: {', '.join(known)})")

    def _check_segment(self) -> None:
        self._check_model_keys(SegmentNetConfig)
        try:
            SegmentNetConfig(**self.model)
        except (TypeError, ValueError) as error:
            raise InputError(f"model: {error}") from None
        try:
            segment = self.segment_config()
        except (TypeError, ValueError) as error:
            raise InputError(f"segment: {error}") from None
        if not segment.classes:
            raise InputError("segment.classes: task segment needs a class map (see configs/segment_cpu.yaml)")

    def segment_config(self) -> SegmentConfig:
        return SegmentConfig.from_dict(self.segment)

    @classmethod
    def from_yaml(cls, path: Path | str, **overrides: Any) -> "TrainConfig":
        """Load a YAML config; unknown keys are an error naming the key, not a silent no-op."""
        path = Path(path)
        values = read_yaml_mapping(path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{path}: unknown config key(s) {', '.join(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except (TypeError, ValueError, InputError) as error:
            raise InputError(f"{path}: {error}") from None

    def model_config(self) -> SearchNetConfig | SegmentNetConfig:
        return SegmentNetConfig(**self.model) if self.task == "segment" else SearchNetConfig(**self.model)

    def pair_config(self) -> PairConfig:
        return PairConfig(query_size=self.query_size, medium_size=self.medium_size,
                          negative_fraction=self.negative_fraction, eval_fraction=self.eval_fraction,
                          query_fill=self.query_fill, colour_jitter=self.colour_jitter,
                          shuffle_buffer=self.shuffle_buffer, categories=tuple(self.label_categories),
                          hard_negative_fraction=self.hard_negative_fraction)

    def photo_config(self) -> "PhotoMediaConfig":
        from train.photo_data import PhotoMediaConfig

        return PhotoMediaConfig(
            sources=tuple(self.photo_sources), format=self.photo_format, include=tuple(self.photo_include),
            exclude=tuple(self.photo_exclude), min_area=self.photo_min_area,
            drop_labels=tuple(self.photo_drop_labels), query_categories=tuple(self.photo_query_categories),
            medium_hw=self.photo_medium, photos_per_scene=self.photo_per_scene,
            look_alike_probability=self.photo_look_alike, epoch_size=self.photo_epoch_size,
            cache_features=self.photo_cache_features)

    def identity(self) -> dict[str, Any]:
        """The config minus runtime keys, with the model config resolved to all its fields."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_KEYS}
        values["model"] = dataclasses.asdict(self.model_config())
        if self.task == "segment":
            values["segment"] = self.segment_config().to_dict()
        return json.loads(json.dumps(values))  # tuples -> lists, so saved and fresh compare equal

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"values": json.loads(json.dumps(dataclasses.asdict(self))), "identity": self.identity()}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], origin: Path | str = "checkpoint") -> "TrainConfig":
        """The config a checkpoint (read from ``origin``) was trained with. A batch_size above
        :data:`MAX_BATCH_SIZE` (a run saved before the maximum) or a decay_steps not past warmup_steps (saved
        before that check) still loads, unchanged (its hash too), for search, evaluation and --resume. A key this synth does not know is an InputError naming it."""
        values = state["config"]["values"]
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"{origin}: unknown config key(s) {', '.join(map(str, unknown))[:200]} in the checkpoint "
                             "(written by another version of synth?)")
        # Values a run was allowed before a check was added load as they were (and hash alike): a
        # checkpoint that trained is searched, evaluated and resumed, not refused.
        kept: dict[str, Any] = {}
        batch_size = values.get("batch_size")
        if is_int(batch_size) and batch_size > MAX_BATCH_SIZE:
            kept["batch_size"] = batch_size
        decay, warmup = values.get("decay_steps"), values.get("warmup_steps", cls.warmup_steps)
        if is_int(decay) and is_int(warmup) and decay <= warmup:  # decay_steps's check came at stop 48
            kept["decay_steps"] = decay
        try:
            config = cls(**{**values, **{key: GRANDFATHERED[key] for key in kept}})
        except (TypeError, ValueError, InputError) as error:
            raise InputError(f"{origin}: {error}") from None
        for key, value in kept.items():
            setattr(config, key, value)
        return config
