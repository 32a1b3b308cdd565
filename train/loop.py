"""The training loop: config, task, and ``train()``, readable top to bottom.

``train()`` knows nothing about query search. A *task* builds the model, makes the datasets and
turns a batch into a loss and metrics; :class:`QuerySearchTask` is the one shipped. Another task
(e.g. plain segmentation on the same backbone and shards) plugs into the same loop, checkpoints
and data path by implementing the :class:`Task` protocol.

Single process: ``synth train --shards DIR --out RUN``. Several: ``torchrun --nproc_per_node=N``
with the same command; each rank reads its own share of the shards (see :mod:`train.data`), DDP
averages gradients, and only rank 0 logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from augment.imageio import InputError
from train.checkpoint import (CHECKPOINT_FILE, check_compatible, load_checkpoint, load_model_state, restore_rng_state,
                              save_checkpoint, unwrap)
from train.data import PairConfig, ShardPairs, make_loader
from train.distributed import DistInfo, gather_objects, init_distributed, shutdown
from train.losses import box_loss, build_loss
from train.model import QuerySearchNet, SearchNetConfig

logger = logging.getLogger(__name__)

Metrics = dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (sum, count), summed over batches


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``configs/train_*.yaml`` document every key."""

    task: str = "query_search"
    model: dict[str, Any] = field(default_factory=dict)  # SearchNetConfig fields
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

    # Keys that may change between a run and its resumption: they do not change what is learned.
    RUNTIME_KEYS = frozenset({"steps", "num_workers", "device", "compile", "log_every", "eval_every",
                              "eval_batches", "checkpoint_every"})

    def __post_init__(self) -> None:
        if self.task != "query_search":
            raise InputError(f"unknown task {self.task!r} (known: query_search)")
        if self.amp not in ("auto", "bf16", "off"):
            raise InputError(f"amp must be auto, bf16 or off, not {self.amp!r}")
        if self.log_every < 1 or self.steps < 0 or self.batch_size < 1:
            raise InputError("log_every and batch_size must be at least 1, steps at least 0")
        self.query_fill = tuple(self.query_fill)
        self.betas = tuple(self.betas)
        try:
            num_labels = SearchNetConfig(**self.model).num_label_classes
        except (TypeError, ValueError) as error:
            raise InputError(f"model: {error}") from None
        self.label_categories = list(self.label_categories)
        if num_labels != len(self.label_categories) and (num_labels or self.label_categories):
            raise InputError(f"model.num_label_classes is {num_labels} but label_categories lists "
                             f"{len(self.label_categories)} names: list the categories the label head predicts")

    @classmethod
    def from_yaml(cls, path: Path | str, **overrides: Any) -> "TrainConfig":
        """Load a YAML config; unknown keys are an error naming the key, not a silent no-op."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise InputError(f"{path}: expected a mapping of config keys")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{path}: unknown config key(s) {', '.join(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: {error}") from None

    def model_config(self) -> SearchNetConfig:
        return SearchNetConfig(**self.model)

    def pair_config(self) -> PairConfig:
        return PairConfig(query_size=self.query_size, medium_size=self.medium_size,
                          negative_fraction=self.negative_fraction, eval_fraction=self.eval_fraction,
                          query_fill=self.query_fill, colour_jitter=self.colour_jitter,
                          shuffle_buffer=self.shuffle_buffer, categories=tuple(self.label_categories))

    def identity(self) -> dict[str, Any]:
        """The config minus runtime keys, with the model config resolved to all its fields."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_KEYS}
        values["model"] = dataclasses.asdict(self.model_config())
        return json.loads(json.dumps(values))  # tuples -> lists, so saved and fresh compare equal

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"values": json.loads(json.dumps(dataclasses.asdict(self))), "identity": self.identity()}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> "TrainConfig":
        return cls(**state["config"]["values"])


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr`` over ``decay_steps`` (default: ``steps``)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    horizon = config.decay_steps or config.steps
    if step >= horizon:
        return config.min_lr
    progress = (step - config.warmup_steps) / max(1, horizon - config.warmup_steps)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


# ----------------------------------------------------------------------------------------------
# Task


class Task(Protocol):
    """What the loop needs from a task."""

    def build_model(self) -> nn.Module: ...

    def dataset(self, shards: Path, split: str, rank: int = 0, world_size: int = 1) -> IterableDataset: ...

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]: ...

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scalar) and outputs for a batch already on the device."""
        ...

    def metrics(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Metrics: ...


def heatmap_metrics(logits: torch.Tensor, target: torch.Tensor, positive: torch.Tensor) -> Metrics:
    """IoU at 0.5 and hit rate over positive samples; false-alarm rate over negative ones.

    hit: the heat map's argmax lies inside the true mask. false alarm: some pixel exceeds 0.5
    although the query is absent. Sums and counts stay on the device (no sync per step).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    prob = logits.detach().float().sigmoid().flatten(1)
    truth = target.flatten(1) > 0.5
    predicted = prob > 0.5
    iou = (predicted & truth).sum(1) / (predicted | truth).sum(1).clamp_min(1)
    hit = truth.gather(1, prob.argmax(1, keepdim=True)).squeeze(1).float()
    alarm = (prob.amax(1) > 0.5).float()
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
        return QuerySearchNet(self.config.model_config())

    def dataset(self, shards: Path, split: str, rank: int = 0, world_size: int = 1) -> ShardPairs:
        return ShardPairs(shards, self.config.pair_config(), split=split, seed=self.config.seed, rank=rank,
                          world_size=world_size)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on conv/linear weights only; the pretrained backbone at a lower lr."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in unwrap(model).named_parameters():
            if param.requires_grad:
                key = (name.startswith(("backbone.", "query_backbone.")), param.dim() >= 2)
                groups.setdefault(key, []).append(param)
        return [{"params": params, "weight_decay": self.config.weight_decay if decay else 0.0,
                 "lr_scale": self.config.backbone_lr_scale if backbone else 1.0}
                for (backbone, decay), params in sorted(groups.items())]

    @staticmethod
    def _inputs(batch: dict[str, torch.Tensor], channels_last: bool) -> tuple[torch.Tensor, ...]:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        query = (batch["query"].float() / 255.0).contiguous(memory_format=fmt)
        medium = (batch["medium"].float() / 255.0).contiguous(memory_format=fmt)
        return query, medium, batch["query_mask"].float() / 255.0, batch["target"].float()

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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


def build_task(config: TrainConfig) -> QuerySearchTask:
    return QuerySearchTask(config)


# ----------------------------------------------------------------------------------------------
# Helpers of the loop


class MetricMeter:
    """Sums (value, count) pairs over steps; :meth:`means` syncs once."""

    def __init__(self) -> None:
        self.sums: dict[str, list[torch.Tensor]] = {}

    def add(self, metrics: Metrics) -> None:
        for name, (total, count) in metrics.items():
            pair = self.sums.setdefault(name, [torch.zeros((), device=total.device)] * 2)
            self.sums[name] = [pair[0] + total.detach().float(), pair[1] + count.detach().float()]

    def means(self, all_ranks: bool = False) -> dict[str, float]:
        """Means over everything added; with ``all_ranks``, over every DDP process (a collective)."""
        if not self.sums:
            return {}
        totals = torch.stack([torch.stack(pair) for pair in self.sums.values()])  # metrics x (sum, count)
        if all_ranks:
            dist.all_reduce(totals)
        return {name: total / count if count else float("nan")
                for name, (total, count) in zip(self.sums, totals.tolist())}


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{info.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device cuda requested but CUDA is not available")
    return torch.device(name)


def autocast(device: torch.device, config: TrainConfig) -> torch.autocast:
    """bf16 autocast on CUDA when ``amp`` is auto or bf16; off on CPU unless asked for."""
    enabled = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class BatchStream:
    """Endless batches over epochs that remembers where it is, so a checkpoint can resume it exactly.

    The position is the epoch, per loader worker the last stream position consumed, and the worker
    whose batch is due next; rows a worker had prefetched but the loop had not yet used are read
    again after a resume.
    """

    def __init__(self, dataset: ShardPairs, loader: DataLoader, state: dict[str, Any] | None = None) -> None:
        self.dataset, self.loader = dataset, loader
        state = state or {}
        self.epoch: int = state.get("epoch", 0)
        self.positions: dict[int, int] = dict(state.get("positions", {}))
        self.next_worker: int = state.get("next_worker", 0)  # whose batch the loader's round-robin yields next
        self.corrupt: dict[int, int] = {}  # per worker, rows decoded in this epoch (since a resume)
        self.corrupt_total: int = state.get("corrupt", 0)  # everything counted before that
        self._iterator: Iterator | None = None

    def _start_epoch(self) -> None:
        if self.positions:
            self.dataset.resume(self.epoch, self.positions, self.next_worker)
        else:
            self.dataset.set_epoch(self.epoch)
        self._iterator = iter(self.loader)

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        for attempt in range(2):
            try:
                batch = next(self._iterator)
                break
            except StopIteration:
                if attempt == 1 or not self.positions:  # a fresh epoch gave nothing: no pairs at all
                    raise InputError(f"{self.dataset.folder}: no {self.dataset.split} pairs for a batch of "
                                     f"{self.loader.batch_size} (too few rows or hold-out cutouts)") from None
                self.corrupt_total += sum(self.corrupt.values())
                self.epoch, self.positions, self.corrupt, self.next_worker = self.epoch + 1, {}, {}, 0
                self._start_epoch()
        worker = int(batch["worker"][0])  # a batch comes from a single worker
        self.positions[worker] = int(batch["position"].max())
        self.next_worker = (worker + 1) % max(1, self.loader.num_workers)
        self.corrupt[worker] = int(batch["corrupt"].max())
        return batch

    @property
    def corrupt_rows(self) -> int:
        return self.corrupt_total + sum(self.corrupt.values())

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "positions": dict(self.positions), "next_worker": self.next_worker,
                "corrupt": self.corrupt_rows}


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, loader: DataLoader, device: torch.device, config: TrainConfig,
             max_batches: int | None = None) -> dict[str, float]:
    """Mean loss and metrics over (at most ``max_batches``) batches of ``loader``."""
    was_training = model.training
    model.eval()
    meter = MetricMeter()
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        batch = to_device(batch, device)
        with autocast(device, config):
            loss, outputs = task.step(model, batch)
        n = torch.tensor(float(batch["target"].shape[0]), device=device)
        meter.add({"loss": (loss.detach().float() * n, n), **task.metrics(outputs, batch)})
    model.train(was_training)
    if not meter.sums:
        raise InputError(f"{loader.dataset.folder}: no {loader.dataset.split} pairs to evaluate "
                         f"(fewer than {loader.batch_size} per worker)")
    return meter.means()


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # per step taken in this call (this rank's batches under DDP)
    metrics: dict[str, float]  # last logged training metrics (over all ranks)
    eval_metrics: dict[str, float]  # last evaluation (empty if none ran)
    corrupt_rows: int
    checkpoint: Path | None


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


# ----------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig, shards: Path | str, out: Path | str, *, eval_shards: Path | str | None = None,
          resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Train ``config`` on ``shards``, writing checkpoints and TensorBoard logs to ``out``."""
    shards, out = Path(shards), Path(out)
    info = init_distributed(config.device)
    try:
        return _train(config, shards, out, Path(eval_shards) if eval_shards else shards, resume, show_progress, info)
    finally:
        shutdown(info)


def _train(config: TrainConfig, shards: Path, out: Path, eval_shards: Path, resume: bool, show_progress: bool,
           info: DistInfo) -> TrainResult:
    device = resolve_device(config.device, info)
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    task = build_task(config)
    checkpoint_path = out / CHECKPOINT_FILE

    # Model and optimizer.
    model = task.build_model().to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(task.parameter_groups(model), lr=config.lr, betas=config.betas,
                                  fused=device.type == "cuda")

    # Data: this rank's share of the training stream; evaluation on held-out cutouts (rank 0 only).
    train_data = task.dataset(shards, "train", info.rank, info.world_size)
    train_loader = make_loader(train_data, config.batch_size, config.num_workers, pin_memory=device.type == "cuda")
    slots = info.world_size * max(1, config.num_workers)
    if len(train_data.units) < info.world_size:  # checked on every rank alike, so none is left waiting
        raise InputError(f"{shards}: {len(train_data.units)} row groups cannot feed {info.world_size} processes")
    if len(train_data.units) < slots and info.is_main:
        logger.warning("%d row groups for %d loader workers in all: some workers will idle", len(train_data.units), slots)
    eval_loader = None
    if info.is_main and config.eval_every > 0:
        eval_loader = make_loader(task.dataset(eval_shards, "eval"), config.batch_size, config.num_workers)

    # Resume: weights, optimizer, step, RNG states and the data stream's position.
    step, data_state = 0, None
    if resume:
        state = load_checkpoint(checkpoint_path)
        check_compatible(state, config.hash(), config.identity(), checkpoint_path)
        load_model_state(model, state, checkpoint_path)
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        restore_rng_state(state["rng"])
        ranks = state["data"].get("ranks", [])
        if len(ranks) == info.world_size:
            data_state = ranks[info.rank]
        else:  # another world size shards the data differently: continue at the next epoch
            data_state = {"epoch": max((r["epoch"] for r in ranks), default=-1) + 1}
            logger.warning("checkpoint has data positions for %d ranks, not %d: starting epoch %d afresh",
                           len(ranks), info.world_size, data_state["epoch"])
        if info.is_main:
            logger.info("resumed from %s at step %d", checkpoint_path, step)
    elif checkpoint_path.exists():
        raise InputError(f"{checkpoint_path}: a run is already there; pass --resume or choose another --out")
    stream = BatchStream(train_data, train_loader, data_state)
    if step >= config.steps and info.is_main:
        logger.warning("%s is already at step %d of %d: pass --steps to train longer", checkpoint_path, step,
                       config.steps)

    if info.enabled:
        # static_graph: the backbone's classifier and the blocks past the deepest correlated level never
        # get gradients; DDP learns that set in the first step instead of searching for it every step.
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    static_graph=True)
    train_model = torch.compile(model) if config.compile else model
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in TensorBoard

        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict()["values"], sort_keys=False))
        writer = SummaryWriter(str(out / "tb"))

    losses: list[float] = []
    pending: list[torch.Tensor] = []  # detached losses, synced to floats only when logging
    meter = MetricMeter()
    train_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    saved: Path | None = None
    samples = 0
    clock = time.perf_counter()
    train_model.train()
    with _progress(show_progress and info.is_main) as progress:
        bar = progress.add_task("train", total=config.steps, completed=step, info="")
        while step < config.steps:
            # Learning rate of this step (the schedule is a function of the step, nothing to save).
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]

            batch = to_device(next(stream), device)
            with autocast(device, config):
                loss, outputs = task.step(train_model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            samples += batch["target"].shape[0]
            pending.append(loss.detach())
            meter.add({"loss": (loss.detach(), torch.ones((), device=device)), **task.metrics(outputs, batch)})

            if step % config.log_every == 0 or step == config.steps:
                losses.extend(torch.stack(pending).float().tolist())
                pending = []
                train_metrics = meter.means(all_ranks=info.enabled)  # every rank calls it: a collective
                meter = MetricMeter()
                elapsed = time.perf_counter() - clock
                if info.is_main:
                    rate = samples * info.world_size / max(elapsed, 1e-9)
                    for name, value in train_metrics.items():
                        writer.add_scalar(f"train/{name}", value, step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/samples_per_s", rate, step)
                    writer.add_scalar("data/corrupt_rows", stream.corrupt_rows, step)
                    progress.update(bar, completed=step, info=(
                        f"loss {train_metrics['loss']:.4f} iou {train_metrics['iou']:.3f} hit {train_metrics['hit_rate']:.3f} "
                        f"lr {lr:.2e} {rate:.1f}/s"))
                    logger.info("step %d %s lr %.2e %.1f samples/s corrupt rows %d", step,
                                " ".join(f"{k} {v:.4f}" for k, v in train_metrics.items()), lr, rate,
                                stream.corrupt_rows)
                samples, clock = 0, time.perf_counter()

            pause = time.perf_counter()  # evaluation and checkpoints are left out of samples/s
            if eval_loader is not None and (step % config.eval_every == 0 or step == config.steps):
                try:
                    eval_metrics = evaluate(unwrap(model), task, eval_loader, device, config, config.eval_batches)
                except InputError as error:  # too few held-out pairs must not end a training run
                    logger.warning("evaluation disabled: %s", error)
                    eval_loader = None
                else:
                    for name, value in eval_metrics.items():
                        writer.add_scalar(f"eval/{name}", value, step)
                    logger.info("eval at step %d: %s", step, " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))

            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps:
                data_state = {"ranks": gather_objects(stream.state(), info)}  # collective: all ranks call it
                if info.is_main:
                    save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, step=step,
                                    config=config.to_dict(), config_hash=config.hash(), data_state=data_state)
                    saved = checkpoint_path
            clock += time.perf_counter() - pause

    if writer is not None:
        writer.close()
    return TrainResult(step=step, losses=losses, metrics=train_metrics, eval_metrics=eval_metrics,
                       corrupt_rows=stream.corrupt_rows, checkpoint=saved)
