"""The training loop, readable top to bottom: ``train()``.

``train()`` knows nothing about any task. A *task* (:mod:`train.tasks`) builds the model, makes
the datasets and turns a batch into a loss and metrics; the loop runs the optimisation, logging,
evaluation and checkpoints around it. The run's config is :class:`train.config.TrainConfig`.

Single process: ``synth train --shards DIR --out RUN``. Several: ``torchrun --nproc_per_node=N``
with the same command; each rank reads its own share of the shards (see :mod:`train.data`), DDP
averages gradients, and only rank 0 logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from augment.atomic_files import atomic_write_text, naming_errors, remove_orphaned_temporaries
from augment.imageio import InputError
from augment.storage import Place, as_place
from train.checkpoint import (CHECKPOINT_FILE, check_compatible, load_checkpoint, load_model_state, restore_rng_state,
                              resuming, save_checkpoint, unwrap)
from train.config import TrainConfig, is_device_name
from train.data import make_loader
from train.distributed import DistInfo, gather_objects, init_distributed, shutdown
from train.shard_set import check_same_shards, reading_shards, shard_set
from train.stop import AgreedStop, Stopped
from train.stream import make_stream, restart_state
from train.tasks import Metrics, Task, build_task
from train.tensorboard_log import tensorboard_writer

logger = logging.getLogger(__name__)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr`` over ``decay_steps`` (default: ``steps``), the
    step counted from ``schedule_offset`` (a run that continues another's schedule)."""
    step += config.schedule_offset
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    horizon = config.decay_steps or config.steps
    if step >= horizon:
        return config.min_lr
    progress = (step - config.warmup_steps) / max(1, horizon - config.warmup_steps)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def note_short_schedule(config: TrainConfig) -> None:
    """An info line (``-v``) where the run ends inside its warm-up: not refused, nor warned about (a smoke
    run's ``--steps 5``, every short test run)."""
    if config.decay_steps is None and 0 < config.steps + config.schedule_offset <= config.warmup_steps:
        logger.info("steps (%d) do not exceed warmup_steps (%d): this run ends inside its warm-up, its "
                       "learning rate never reaches lr (%g) nor decays", config.steps, config.warmup_steps, config.lr)


# ----------------------------------------------------------------------------------------------
# Task

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
    """auto, cpu, cuda or cuda:N (``synth eval --device`` passes the user's text here unchecked)."""
    if not is_device_name(name):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, not {name!r}")
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


def summarize(task: Task, means: dict[str, float]) -> dict[str, float]:
    """The loss, then the metrics the task derives from the means (e.g. mIoU), then the means."""
    derive = getattr(task, "summarize", None)
    derived = derive(means) if derive is not None and means else {}
    return {k: v for k, v in means.items() if k == "loss"} | derived | means




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
        raise InputError(f"{loader.dataset.folder}: no {loader.dataset.split} pairs to evaluate")
    return summarize(task, meter.means())


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # per step taken in this call (this rank's batches under DDP)
    metrics: dict[str, float]  # last logged training metrics (over all ranks)
    eval_metrics: dict[str, float]  # last evaluation (empty if none ran)
    corrupt_rows: int
    checkpoint: Path | None


def _progress(enabled: bool) -> Progress:
    """The bar on stderr, beside the run's warnings and summary (rich's default console is stdout: `synth
    train ... > log` filled stdout with the bar's redraws, the only thing train wrote there), and only on a
    terminal: in a log file it was one line at the end, cut at 80 columns ('0:0…'), one per training of a
    `synth selftune` round where deploy/crontab's log promises one line a run."""
    console = Console(stderr=True)
    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeRemainingColumn(), disable=not enabled or not console.is_terminal, transient=False,
                    console=console)


# ----------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig, shards: Place | str | list[Place | str], out: Path | str, *,
          eval_shards: Place | str | None = None, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Train ``config`` on ``shards`` (a folder or object-store prefix, or several for a task that
    mixes them), writing checkpoints and TensorBoard logs to ``out``."""
    shards = [as_place(s) for s in shards] if isinstance(shards, (list, tuple)) else as_place(shards)
    out = Path(out)
    info = init_distributed(config.device)
    try:
        with reading_shards(shards, eval_shards):  # no expand --overwrite swaps them meanwhile
            return _train(config, shards, out, as_place(eval_shards) if eval_shards else shards, resume,
                          show_progress, info)
    except Stopped as stop:
        # Caught here, not left to the caller: leaving this block frees the loop's frames, so that
        # shutdown() frees the DDP wrapper before it leaves the process group, as after a normal end.
        if info.is_main:
            logger.warning("stopped by signal %d after step %d; its checkpoint %s resumes it", stop.signum,
                           stop.step, stop.path)
    finally:
        shutdown(info)
    raise KeyboardInterrupt  # only a stop gets here: the run ends as the interrupt would have


def _train(config: TrainConfig, shards: Place | list[Place], out: Path, eval_shards: Place | list[Place], resume: bool,
           show_progress: bool, info: DistInfo) -> TrainResult:
    device = resolve_device(config.device, info)
    if info.is_main:
        note_short_schedule(config)
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    task = build_task(config)
    checkpoint_path = out / CHECKPOINT_FILE

    # Model and optimizer.
    model = task.build_model().to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(task.parameter_groups(model), lr=config.lr, betas=config.betas,
                                  fused=device.type == "cuda")

    # Data: this rank's share of each training stream (composites, real media) mixed by their
    # weights; evaluation on held-out cutouts (rank 0 only).
    parts = []
    workers = max(1, config.num_workers)  # loader workers per rank: data positions are theirs
    slots = info.world_size * workers
    for train_data, weight in task.train_datasets(shards, info.rank, info.world_size):
        if len(train_data.units) < info.world_size:  # checked on every rank alike, so none is left waiting
            raise InputError(f"{train_data.folder}: {len(train_data.units)} units of work cannot feed "
                             f"{info.world_size} processes")
        if len(train_data.units) < slots and info.is_main:
            logger.warning("%d units of work for %d loader workers in all: some workers will idle",
                           len(train_data.units), slots)
        loader = make_loader(train_data, config.batch_size, config.num_workers, pin_memory=device.type == "cuda")
        parts.append((train_data, loader, weight))
    eval_loader = None
    if info.is_main and config.eval_every > 0:
        eval_loader = make_loader(task.dataset(eval_shards, "eval"), config.batch_size, config.num_workers,
                                  drop_last=False)

    # Resume: weights, optimizer, step, RNG states and the data stream's position.
    step, data_state = 0, None
    shards_record = shard_set(shards)
    if resume:
        state = load_checkpoint(checkpoint_path)
        check_compatible(state, config.hash(), config.identity(), checkpoint_path)
        check_same_shards(state, shards_record, checkpoint_path)
        load_model_state(model, state, checkpoint_path)
        with resuming(checkpoint_path, "optimizer"):
            optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        with resuming(checkpoint_path, "rng"):
            restore_rng_state(state["rng"])
        # A stream position belongs to one loader worker of one rank: another world size or number of
        # workers splits the rows differently (the positions skipped rows never trained on and replayed
        # others), so the run continues at the next epoch. (Older checkpoints: their config's count.)
        with resuming(checkpoint_path, "data"):
            ranks = list(state["data"].get("ranks", []))
            saved_workers = state["data"].get("workers", state["config"].get("values", {}).get("num_workers"))
            if len(ranks) == info.world_size and (saved_workers is None or max(1, int(saved_workers)) == workers):
                data_state = ranks[info.rank]
            else:
                data_state = restart_state(ranks)
                logger.warning("checkpoint has data positions for %d ranks of %s loader workers, not %d of %d: "
                               "starting the next epoch afresh", len(ranks), saved_workers, info.world_size, workers)
        if info.is_main:
            logger.info("resumed from %s at step %d", checkpoint_path, step)
    elif checkpoint_path.exists():
        raise InputError(f"{checkpoint_path}: a run is already there; pass --resume or choose another --out")
    elif config.init_checkpoint:
        state = load_checkpoint(config.init_checkpoint)
        task_name = state["config"]["values"].get("task")
        if task_name != config.task:
            raise InputError(f"{config.init_checkpoint}: init_checkpoint is a {task_name!r} checkpoint, not {config.task!r}")
        load_model_state(model, state, config.init_checkpoint)
        if config.init_optimizer:
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (KeyError, ValueError) as error:
                raise InputError(f"{config.init_checkpoint}: its optimizer state does not fit this run ({error})") from None
        if info.is_main:
            logger.info("weights from %s (its step %d)", config.init_checkpoint, state["step"])
    with resuming(checkpoint_path, "data") if data_state is not None else nullcontext():
        stream = make_stream(parts, config.seed, data_state)
    if step >= config.steps and info.is_main:
        logger.warning("%s is already at step %d of %d: nothing to train; pass --steps above %d to train "
                       "longer", checkpoint_path, step, config.steps, step)

    if info.enabled:
        # static_graph: the backbone's classifier and the blocks past the deepest correlated level never
        # get gradients; DDP learns that set in the first step instead of searching for it every step.
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    static_graph=True)
    train_model = torch.compile(model) if config.compile else model
    writer = None
    if info.is_main:

        out.mkdir(parents=True, exist_ok=True)
        # A killed run's checkpoint temporary: also where no lock clears them (selftune's training steps).
        remove_orphaned_temporaries(out)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict()["values"], sort_keys=False))
        # purge_step: TensorBoard hides what earlier writers logged past the step this run starts from
        # (a killed run's steps after its last checkpoint, a run stopped before its first), so no step
        # shows twice. Step s is logged as s + 1 once done: s's own (in the checkpoint) is kept.
        writer = tensorboard_writer(out / "tb", step + 1)

    losses: list[float] = []
    pending: list[torch.Tensor] = []  # detached losses, synced to floats only when logging
    meter = MetricMeter()
    train_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    saved: Path | None = None
    samples = 0
    clock = time.perf_counter()
    train_model.train()

    def save() -> Path | None:
        """The checkpoint at this step (written by the main rank; the path there, None elsewhere)."""
        data_state = {"ranks": gather_objects(stream.state(), info),  # collective: all ranks call it
                      "workers": workers}
        if not info.is_main:
            return None
        save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, step=step, config=config.to_dict(),
                        config_hash=config.hash(), data_state=data_state, shards=shards_record)
        return checkpoint_path

    # A stop (Ctrl-C, a scheduler's SIGTERM) is held to the end of the step under way, which every
    # rank agrees on and which is checkpointed: `--resume` then loses no steps. The TensorBoard
    # writer is closed however the block ends, so the last scalars reach the disk.
    stop = AgreedStop(info)
    with _progress(show_progress and info.is_main) as progress, stop, writer or nullcontext():
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
                train_metrics = summarize(task, meter.means(all_ranks=info.enabled))  # a collective: every rank calls it
                meter = MetricMeter()
                elapsed = time.perf_counter() - clock
                if info.is_main:
                    rate = samples * info.world_size / max(elapsed, 1e-9)
                    with naming_errors(out / "tb"):  # a full disk: TensorBoard's writer names no file
                        for name, value in train_metrics.items():
                            writer.add_scalar(f"train/{name}", value, step)
                        writer.add_scalar("train/lr", lr, step)
                        writer.add_scalar("train/samples_per_s", rate, step)
                        writer.add_scalar("data/corrupt_rows", stream.corrupt_rows, step)
                    headline = " ".join(f"{k} {v:.3f}" for k, v in list(train_metrics.items())[:3])
                    progress.update(bar, completed=step, info=f"{headline} lr {lr:.2e} {rate:.1f}/s")
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
                    with naming_errors(out / "tb"):
                        for name, value in eval_metrics.items():
                            writer.add_scalar(f"eval/{name}", value, step)
                    logger.info("eval at step %d: %s", step, " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))

            # Every rank takes the same branch: agreed() is a collective under DDP (skipped at the
            # last step, which ends the run anyway), and its checkpoint is the periodic one's if both fall here.
            stopping = step < config.steps and stop.agreed()
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps or stopping:
                saved = save() or saved
            if stopping:
                raise Stopped(stop.signal, step, saved)
            clock += time.perf_counter() - pause

    return TrainResult(step=step, losses=losses, metrics=train_metrics, eval_metrics=eval_metrics,
                       corrupt_rows=stream.corrupt_rows, checkpoint=saved)
