"""`synth train`, `synth eval` and `synth export-onnx`, registered onto the main typer app."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from augment.imageio import InputError
from augment.validation import whole_setting
from pipelines.shipped_configs import config_option
from pipelines.terminal import console as _console

# eval --batch-size at most: a pair takes ~23 MB while evaluated on the CPU at the default sizes (256-px
# medium, 128-px query; peak RSS of batches of 4 and 32 pairs), ~2.25 times that at 384 px, so 256 pairs
# are ~6 GB (~13 GB at 384 px); four times the largest training batch shipped (configs/train_gpu.yaml:
# 64). A --batch-size past the split's size collated the whole split into one batch.
MAX_EVAL_BATCH_SIZE = 256  # the same as a config's batch_size (train/config.py MAX_BATCH_SIZE)
# export-onnx: the export traces one forward pass of --batch items and --check runs it again in
# onnxruntime, each holding the items' activations: ~23 MB an item at the default sizes (as eval's pairs
# above), growing with the medium's pixels. --batch at most 64, the most video frames `synth search`
# passes at once (pipelines/search_outputs.py MAX_BATCH; ~1.5 GB at the default sizes); --medium-size
# and --query-size at most what a training config allows (train/config.py: 4096 and 1024; a 4096-px
# medium is 256 times the default's pixels, some GB an item). --batch 100000 or --medium-size 100000
# filled the memory while tracing instead of saying so.
MAX_EXPORT_BATCH = 64
MAX_EXPORT_MEDIUM_SIZE = 4096
MAX_EXPORT_QUERY_SIZE = 1024


def _no_config_with_checkpoint(config: Optional[Path], checkpoint: Optional[Path], applies: str, verb: str) -> None:
    """A checkpoint carries its own config: a --config beside it would be ignored without a word."""
    if config is not None and checkpoint is not None:
        raise InputError(f"--config applies {applies}; a checkpoint is {verb} with its own config")


def _config(config_path: Optional[Path], resume_from: Optional[Path] = None, **overrides: Any):
    """The run's config: --config FILE, else the one saved in the checkpoint being resumed, else defaults."""
    from train.checkpoint import load_checkpoint
    from train.config import TrainConfig

    if config_path is not None:
        return TrainConfig.from_yaml(config_path, **overrides)
    given = {k: v for k, v in overrides.items() if v is not None}
    if resume_from is not None:
        # through from_checkpoint: a value allowed when the run began (a batch_size past today's maximum,
        # a decay_steps inside the warm-up) resumes as it was, not refused by today's check
        state = load_checkpoint(resume_from)
        return TrainConfig.from_checkpoint({"config": {"values": {**state["config"]["values"], **given}}}, resume_from)
    return TrainConfig(**{**TrainConfig().__dict__, **given})


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    return table


def _check_shards(task: str, folder: str | Path) -> None:
    """The shards a task reads from ``folder`` are listed and readable: one line naming the problem otherwise.
    Query search needs composites with their cutouts table; segmentation reads any shard folder."""
    from augment.shards import find_shards
    from train.data import list_shards

    if task == "segment":
        find_shards([Path(folder)])
    else:
        list_shards(folder)


def _check_distinct(shards: list[str]) -> None:
    """One line when a --shards folder is given twice (by the same or another spelling): its rows would
    be trained on twice per epoch, as if it were two folders."""
    from augment.storage import as_place, is_remote

    seen: dict[str, str] = {}
    for entry in shards:
        place = as_place(entry)
        key = str(place).rstrip("/") if is_remote(place) else str(Path(place).resolve())
        if key in seen:
            raise InputError(f"{entry}: given twice as --shards (also as {seen[key]}); name each folder once")
        seen[key] = entry


def _remove_unstarted_run(out: Path) -> None:
    """A run this command began in a new folder that a user error (shards with no usable pairs, found
    once training reads them) ended before its first checkpoint: its config.yaml and tb/ go, so the
    folder lock's release removes the folder too and no half-made run is left (exit 2 writes nothing)."""
    import shutil

    from train.checkpoint import CHECKPOINT_FILE

    if (out / CHECKPOINT_FILE).exists():
        return
    (out / "config.yaml").unlink(missing_ok=True)
    shutil.rmtree(out / "tb", ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""
    from pipelines.cli import TRAIN_RESTART_HINT, TRAIN_RESUME_HINT  # here: pipelines.cli imports this
    from pipelines.command_errors import check_at_least, check_at_most, fail, run_guarded

    @app.command()
    def train(
        shards: list[str] = typer.Option(..., "--shards", help="Folder (or s3://, gs:// prefix) of shards written by "
                                         "`synth expand` (task segment: repeat for labelled photos, composites, "
                                         "pseudo-labels)."),
        out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, config.yaml, tb/ (TensorBoard)."),
        config: Optional[Path] = typer.Option(None, "--config", callback=config_option, help="YAML config (see configs/train_cpu.yaml, "
                                              "configs/segment_cpu.yaml); default: the resumed checkpoint's, else "
                                              "built-in defaults."),
        task: Optional[str] = typer.Option(None, "--task", help="query_search or segment (overrides the config)."),
        resume: bool = typer.Option(False, "--resume", help="Continue exactly from OUT/checkpoint.pt."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Total steps (overrides the config)."),
        eval_shards: Optional[str] = typer.Option(None, "--eval-shards",
                                                   help="Shards for periodic evaluation (default: --shards); "
                                                   "queries are always held-out cutouts."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda (overrides the config)."),
    ) -> None:
        """Train the query search network or a segmenter (--task segment); `torchrun --nproc_per_node=N` for DDP."""
        from augment.locking import claim_output_folder
        from augment.outputs import check_not_an_input, check_output_folder
        from train.checkpoint import CHECKPOINT_FILE
        from train.config import TASK_NAMES, is_device_name
        from train.loop import train as train_run
        from train.shard_set import reading_shards

        check_at_least(steps, 1, "--steps")  # 0 would end at once, with no checkpoint
        # Checked here, so the line names the option, not the --config file that does not hold the value.
        if task is not None and task not in TASK_NAMES:
            fail(f"--task must be {' or '.join(TASK_NAMES)}, not {task!r}")
        if device is not None and not is_device_name(device):
            fail(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")

        def run() -> None:
            check_output_folder(out)
            _check_distinct(shards)
            # The run folder's lock would stop the run's own reading lock on it: "busy", blaming itself.
            check_not_an_input(out, [*((s, "--shards") for s in shards), *([(eval_shards, "--eval-shards")]
                                                                             if eval_shards else [])],
                               "the run would write among the shards it reads")
            if resume and not (out / CHECKPOINT_FILE).exists():
                # A run killed before its first checkpoint left its folder (config.yaml, tb/) but nothing to
                # resume: say what to do instead of only "no such checkpoint".
                raise InputError(f"{out / CHECKPOINT_FILE}: no checkpoint to resume from; run the same command "
                                 "without --resume to start the run")
            run_config = _config(config, out / CHECKPOINT_FILE if resume else None, steps=steps, device=device,
                                 task=task)
            # Checked under the shards' reading lock (or lease): a folder that an expand is writing (no
            # manifest.json until it ends) is busy, exit code 3 naming the writer, not a broken folder.
            with reading_shards(shards, eval_shards):
                for folder in [*shards, eval_shards] if eval_shards else shards:  # unreadable: one line before the model loads
                    _check_shards(run_config.task, folder)
            made = not out.exists()
            with ExitStack() as held:
                # Two runs into one folder would overwrite each other's checkpoints: the run folder is
                # locked, by the first process only under torchrun (RANK 0; the others share its run).
                if whole_setting("RANK", 0) == 0:
                    held.enter_context(claim_output_folder(out, "train run"))
                try:
                    result = train_run(run_config, shards, out, eval_shards=eval_shards, resume=resume)
                except InputError:
                    if made and whole_setting("RANK", 0) == 0:
                        _remove_unstarted_run(out)
                    raise
            if result.checkpoint is not None:
                _console.print(_metrics_table(f"step {result.step}: last training window", result.metrics))
                if result.eval_metrics:
                    _console.print(_metrics_table("held-out evaluation", result.eval_metrics))
                _console.print(f"checkpoint: {result.checkpoint}; corrupt rows skipped: {result.corrupt_rows}")

        def interrupt_hint() -> str:
            # The checkpoint is only there once the run wrote its first one (a run into a folder holding
            # one is refused without --resume): before that, --resume has nothing to continue from.
            return TRAIN_RESUME_HINT if (out / CHECKPOINT_FILE).exists() else TRAIN_RESTART_HINT

        run_guarded(run, interrupt_hint=interrupt_hint)

    @app.command("eval")
    def evaluate_command(
        shards: str = typer.Option(..., "--shards", help="Folder (or s3://, gs:// prefix) of shards written by "
                                   "`synth expand`."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint.pt of a training run, or "
                                                  "its run folder."),
        untrained: bool = typer.Option(False, "--untrained", help="Evaluate the untrained network "
                                       "(pretrained backbone + correlation): the baseline."),
        config: Optional[Path] = typer.Option(None, "--config", callback=config_option, help="With --untrained: sizes and model config."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics as JSON to this file."),
        split: str = typer.Option("eval", "--split", help="eval (held-out cutouts), train or all."),
        batches: Optional[int] = typer.Option(None, "--batches", help="Evaluate this many batches (default: all)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Pairs per batch (default: the "
                                                 f"config's batch_size; at most {MAX_EVAL_BATCH_SIZE})."),
        device: str = typer.Option("auto", "--device"),
    ) -> None:
        """Loss, IoU@0.5, hit rate and false alarms on held-out cutouts; a segmenter's: mIoU, per-class IoU."""
        from augment.locking import file_lock
        from augment.outputs import check_report_file
        from train.evaluate import evaluate_shards, load_trained, write_report
        from train.shard_set import reading_shards

        check_at_least(batches, 1, "--batches")
        check_at_least(batch_size, 1, "--batch-size")
        check_at_most(batch_size, MAX_EVAL_BATCH_SIZE, "--batch-size", "the pairs of a batch are held in memory")

        def run() -> None:
            if out is not None:
                check_report_file(out, "eval", ("metrics", "checkpoint"))
            with ExitStack() as held:
                if out is not None:  # a second eval into this file stops at once, before its model loads
                    held.enter_context(file_lock(out, "eval run"))
                evaluate_into_out()

        def evaluate_into_out() -> None:
            if (checkpoint is None) == (not untrained):
                raise InputError("pass either --checkpoint CKPT or --untrained")
            _no_config_with_checkpoint(config, checkpoint, "with --untrained", "evaluated")
            if split not in ("eval", "train", "all"):
                raise InputError(f"--split must be eval, train or all, not {split!r}")
            model, run_config = load_trained(checkpoint, _config(config) if untrained else None)
            # Checked once held: an expand at work (no manifest.json yet) is busy, not a broken folder.
            with reading_shards(shards, what="synth eval"):  # no expand --overwrite swaps them meanwhile
                _check_shards(run_config.task, shards)
                report = evaluate_shards(model, run_config, shards, split=split, batches=batches,
                                         batch_size=batch_size, device=device)
            report["checkpoint"] = str(checkpoint) if checkpoint else "untrained"
            _console.print(_metrics_table(f"{report['checkpoint']} on {shards} ({split})", report["metrics"]))
            if out is not None:
                write_report(report, out)
                _console.print(f"wrote {out}")

        run_guarded(run)

    @app.command("export-head")
    def export_head_command(
        checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt of the training run, or its run "
                                        "folder."),
        calibration: Path = typer.Option(..., "--calibration", help="JSON written by `synth calibrate` for this "
                                         "checkpoint: its threshold ships with the head."),
        out: Path = typer.Option(..., "--out", help="Folder for search_head.pt and search_head.json "
                                 "(pipelines/weights makes it the default of synth search)."),
        made_by: str = typer.Option(..., "--made-by",
                                    help="The command that reproduces this head (recorded in the manifest)."),
    ) -> None:
        """Write a trained network's head (not its pretrained backbone) with its calibrated threshold."""
        from augment.locking import claim_output_folder
        from pipelines.calibration import read_calibration, same_network
        from pipelines.calibration_report import check_head_calibration
        from pipelines.shipped import write_head
        from pipelines.search_inputs import load_checkpoint_model
        from train.checkpoint import load_checkpoint

        def run() -> None:
            # Two exports into one folder would pair one's head file with the other's manifest: the
            # second stops at once, before its checkpoint loads (a failed first export leaves no
            # empty --out).
            with claim_output_folder(out, "export-head run"):
                export_head_into_out()

        def export_head_into_out() -> None:
            model = load_checkpoint_model(checkpoint)
            report = read_calibration(calibration)
            threshold = report["threshold"]
            calibrated = report.get("model")
            if not same_network(calibrated, checkpoint, str(checkpoint)):
                raise InputError(f"{calibration}: calibrates {calibrated}, not {checkpoint}; run `synth calibrate "
                                 f"--checkpoint {checkpoint}` first")
            check_head_calibration(report, calibration)
            state = load_checkpoint(checkpoint)
            manifest = write_head(model, threshold, out, {
                "made_by": made_by, "training_steps": int(state["step"]), "config_hash": state["config_hash"],
                "calibration": {k: report.get(k) for k in ("f1", "precision", "recall", "cases", "photos",
                                                           "include", "verify", "fusion")}},
                trained_backbone_keys=model.trained_backbone_keys())
            _console.print(f"wrote {out / manifest['file']} ({manifest['bytes'] / 2**20:.2f} MB, sha256 "
                           f"{manifest['sha256'][:12]}...), threshold {threshold:.2f}")

        run_guarded(run)

    @app.command("export-onnx")
    def export_command(
        out: Path = typer.Option(..., "--out", help="The .onnx file to write."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint.pt, or its run folder; without "
                                                  "it the untrained network is exported."),
        config: Optional[Path] = typer.Option(None, "--config", callback=config_option, help="Without --checkpoint: the model config."),
        query_size: Optional[int] = typer.Option(None, "--query-size", help="Default: the config's query_size "
                                                 f"(at most {MAX_EXPORT_QUERY_SIZE})."),
        medium_size: Optional[int] = typer.Option(None, "--medium-size", help="Default: the config's medium_size "
                                                  f"(at most {MAX_EXPORT_MEDIUM_SIZE})."),
        batch: int = typer.Option(1, "--batch", help=f"Batch size baked into the graph (at most {MAX_EXPORT_BATCH})."),
        check: bool = typer.Option(True, "--check/--no-check", help="Compare onnxruntime with PyTorch."),
    ) -> None:
        """Export the network (query, query_mask, medium -> heatmap) to ONNX at fixed sizes."""
        from augment.locking import file_lock
        from augment.outputs import check_output_file
        from train.evaluate import load_trained
        from train.export import check_onnx_installed, check_replaceable_onnx, export_onnx, max_difference

        check_at_least(batch, 1, "--batch")
        check_at_least(query_size, 32, "--query-size")
        check_at_least(medium_size, 32, "--medium-size")
        check_at_most(batch, MAX_EXPORT_BATCH, "--batch", "the items are traced and checked in memory at once")
        check_at_most(query_size, MAX_EXPORT_QUERY_SIZE, "--query-size", "a training config's maximum")
        check_at_most(medium_size, MAX_EXPORT_MEDIUM_SIZE, "--medium-size", "a training config's maximum; "
                      "memory grows with its pixels")

        def run() -> None:
            check_output_file(out)
            # A second export into this file stops at once: two would each replace the other's graph
            # and check theirs against what the other wrote.
            with file_lock(out, "export-onnx run"):
                export_to_out()

        def export_to_out() -> None:
            check_onnx_installed(with_runtime=check)
            check_replaceable_onnx(out)
            _no_config_with_checkpoint(config, checkpoint, "without --checkpoint", "exported")
            model, run_config = load_trained(checkpoint, _config(config) if checkpoint is None else None)
            if run_config.task != "query_search":  # a segmenter takes one image, not the graph's three inputs
                raise InputError(f"{checkpoint}: a {run_config.task} checkpoint; export-onnx exports the query "
                                 "search network (task query_search)")
            q_size, m_size = query_size or run_config.query_size, medium_size or run_config.medium_size
            exported = export_onnx(model.eval(), out, q_size, m_size, batch)
            _console.print(f"wrote {out} (query {q_size}, medium {m_size}, batch {batch})")
            if check:
                difference = max_difference(out, exported.model, q_size, m_size, batch)
                _console.print(f"onnxruntime vs PyTorch: max |difference| {difference:.2e}")

        run_guarded(run)
