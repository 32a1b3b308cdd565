"""`synth photo-shards`, `synth segment`, `synth extract` and `synth selftune`, registered onto the typer app.

Exit codes (README, deploy/README.md): 0 done; 1 done, but some inputs were skipped as unreadable
(segment) or a step failed on an I/O error such as a full disk (selftune: rerun to redo that
step); 2 a user error (bad path, config or file), one line naming it; 3 busy: another run holds
the output or state folder's lock; 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer

from augment.imageio import InputError, list_images
from pipelines.search_jobs import report_left_out
from pipelines.shipped_configs import config_option

IO_ERROR_EXIT_CODE = 1


def images_of(paths: list[Path], out: Path | None = None, outputs: Path | None = None) -> tuple[list[Path], list[str]]:
    """Image files as given; folders become their images. Missing paths and non-images are errors.
    A folder that holds ``out`` leaves out what an earlier `synth segment` wrote there, and the images
    under ``outputs`` (an earlier `synth extract`'s previews: the run removes them before it reads)."""
    earlier: set[Path] = set()
    if out is not None:
        from pipelines.output_record import OutputRecord
        from pipelines.segment_outputs import SEGMENT_OUTPUTS

        earlier = {p.resolve() for p in OutputRecord(out, SEGMENT_OUTPUTS).earlier_outputs()}
    skipped = outputs.resolve() if outputs is not None else None

    def not_ours(path: Path) -> bool:
        return (not earlier or path.resolve() not in earlier) and (skipped is None or skipped not in path.resolve().parents)

    images: list[Path] = []
    given: list[str] = []  # how each image was named: as itself or in a folder
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            listed, others = list_images(path)
            found = [p for p in listed if not_ours(p)]
            report_left_out([p for p in others if not_ours(p)], path, "not an image", "not images")
            if not found:
                raise InputError(f"{path}: no images in this folder")
            images.extend(found)
            given.extend([f"in folder {path}"] * len(found))
        elif not path.exists():
            errors.append(f"{path}: no such file")
        else:
            images.append(path)
            given.append(f"as {path}")
    seen: dict[Path, tuple[Path, str]] = {}
    for image, named in zip(images, given):  # twice would segment it twice, extract its masks and photo twice
        real = image.resolve()
        if real in seen:
            first, first_named = seen[real]
            also = "" if first == image or first_named == f"as {first}" else f" {first}"
            raise InputError(f"{image}: named twice ({named} and{also} {first_named}; the same file); name each "
                             "image or folder once")
        seen[real] = image, named
    return images, errors


def register(app: typer.Typer) -> None:
    """Add the segmentation and self-tuning commands to ``app``."""

    @app.command("photo-shards")
    def photo_shards(
        sources: list[Path] = typer.Argument(..., help="Labelled photo sources: label_map, mask_pairs, COCO, LabelMe, YOLO or CVAT mask folders."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for photos-*.parquet and manifest.json."),
        include: list[str] = typer.Option([], "--include", help="Glob on photo names (without extension) to keep; repeatable."),
        exclude: list[str] = typer.Option([], "--exclude", help="Glob on photo names to leave out; repeatable."),
        short_side: int = typer.Option(384, "--short-side", help="Photos are stored at most this size on the shorter side."),
        source_format: str = typer.Option("auto", "--source-format", help="auto | label_map | mask_pairs | coco | labelme | yolo | cvat_mask."),
    ) -> None:
        """Write whole labelled photos as shards, for `synth train --task segment` (labels and held-out sets)."""
        from augment.config import SourceConfig
        from augment.locking import claim_output_folder
        from augment.outputs import check_output_folder
        from augment.photo_shards import write_photo_shards
        from pipelines.cli import console, counted
        from pipelines.command_errors import run_guarded

        def run() -> dict:
            if short_side < 32:
                raise InputError("--short-side must be at least 32")
            check_output_folder(out)
            config = SourceConfig(format=source_format, include=list(include), exclude=list(exclude))
            with claim_output_folder(out, "photo-shards run"):  # a run that writes nothing leaves no new folder
                return write_photo_shards(sources, out, config, short_side)

        manifest = run_guarded(run, interrupt_hint="rerun the same `synth photo-shards` command to resume (its "
                               "finished shards are kept)")
        console.print(f"wrote {counted(manifest['num_rows'], 'labelled photo')} to {out} "
                      f"({counted(len(manifest['shards']), 'shard')}, {counted(len(manifest['skipped']), 'input')} skipped)",
                      highlight=False)

    @app.command()
    def segment(
        images: list[Path] = typer.Argument(..., help="Images or folders of images."),
        checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt of `synth train --task segment`, "
                                        "or its run folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (bf16 autocast on CUDA)."),
    ) -> None:
        """Label every pixel: NAME.png (class index), NAME.confidence.png, NAME.overlay.jpg and classes.json."""
        from augment.locking import claim_output_folder
        from pipelines.cli import console, counted, make_progress, say
        from pipelines.command_errors import run_guarded
        from pipelines.segment_outputs import run_segment
        from pipelines.segmenter import Segmenter

        def prepare() -> tuple[Segmenter, list[Path], list[str]]:
            paths, errors = images_of(list(images), out)
            if not paths:  # every path named is missing: refused before an earlier run's outputs are cleared
                raise InputError("; ".join(errors))
            return Segmenter(checkpoint, device), paths, errors

        segmenter, paths, errors = run_guarded(prepare)
        # The lock is taken before the progress bar, so a busy --out is its one line alone.
        with ExitStack() as held:
            run_guarded(held.enter_context, claim_output_folder(out, "segment run"))
            progress = held.enter_context(make_progress())
            task = progress.add_task("segment", total=len(paths), rate="")
            started = time.perf_counter()

            def advance(done: int) -> None:
                progress.update(task, completed=done, rate=f"{done / max(time.perf_counter() - started, 1e-9):.1f} images/s")

            summary = run_guarded(run_segment, segmenter, paths, out, advance,
                                  interrupt_hint="rerun the same `synth segment` command to resume (the images "
                                  "it finished are kept)")
        errors += summary.errors
        kept = f", {summary.resumed} kept from an earlier run of these images" if summary.resumed else ""
        console.print(f"segmented {counted(summary.images, 'image')} in {summary.seconds:.1f} s -> {out} "
                      f"({len(errors)} skipped{kept})", highlight=False)
        for error in errors:
            say("skipped", error)
        if errors:
            raise typer.Exit(1)

    @app.command()
    def extract(
        images: list[Path] = typer.Argument(..., help="Unlabeled images or folders of them."),
        checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt of `synth train --task segment`, "
                                        "or its run folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Objects folder: objects.parquet, pseudo-*.parquet, "
                                 "extract.json, previews/."),
        config_file: Optional[Path] = typer.Option(None, "--config", callback=config_option, help="YAML of extract keys (min_area, "
                                                   "min_confidence, min_stability, cut_classes, pseudo_labels...)."),
        reference: Optional[Path] = typer.Option(None, "--reference", help="An earlier checkpoint as the second view "
                                                 "of the stability filter (default: the mirrored photo)."),
        round_index: int = typer.Option(0, "--round", help="Round recorded in the cutouts' provenance."),
        device: str = typer.Option("auto", "--device"),
        workers: int = typer.Option(1, "--workers", help="Processes for the cutouts' superpixels."),
    ) -> None:
        """Automatic masks -> cutouts with provenance (a source for `synth expand`) and pseudo-labelled photos."""
        from augment.config import read_yaml_mapping
        from augment.locking import claim_output_folder
        from augment.outputs import check_output_folder
        from augment.shards import check_manifest_kind
        from pipelines.cli import console, make_progress
        from pipelines.command_errors import check_at_least, run_guarded
        from pipelines.extract import (PREVIEWS_FOLDER, check_cut_classes, check_reference, extract_config, run_extract,
                                       summary_counts)
        from pipelines.segmenter import Segmenter

        check_at_least(workers, 1, "--workers")
        check_at_least(round_index, 0, "--round")

        def prepare():
            values = read_yaml_mapping(config_file) if config_file is not None else {}
            config = extract_config(values, str(config_file))
            paths, errors = images_of(list(images), outputs=out / PREVIEWS_FOLDER)
            if not paths:  # every path named is missing: nothing to extract from
                raise InputError("; ".join(errors))
            segmenter = Segmenter(checkpoint, device)
            check_cut_classes(segmenter, config, f"{config_file}: ")
            second = Segmenter(reference, device) if reference else None
            check_reference(segmenter, second, f"--reference {reference}")
            check_output_folder(out)
            check_manifest_kind(out, "pseudo")  # as run_extract does, before the lock and the progress bar
            return segmenter, second, paths, errors, config

        segmenter, second, paths, errors, config = run_guarded(prepare)
        # The lock is taken before the progress bar, so a busy --out is its one line alone (as segment's).
        with ExitStack() as held:
            run_guarded(held.enter_context, claim_output_folder(out, "extract run"))
            progress = held.enter_context(make_progress())
            task = progress.add_task("extract", total=len(paths), rate="")
            summary = run_guarded(run_extract, segmenter, paths, out, config, round_index=round_index,
                                  reference=second, workers=workers, advance=lambda n: progress.advance(task, n),
                                  interrupt_hint="rerun the same `synth extract` command to resume (its done "
                                  "chunks of photos are kept)")
        kept = (" (kept: an earlier run of these photos with this checkpoint and config finished there; nothing "
                "redone)" if summary.kept else "")
        console.print(summary_counts({**summary.to_dict(), "skipped": summary.skipped + errors}) + f" -> {out}{kept}",
                      highlight=False)

    @app.command()
    def selftune(
        state: Path = typer.Option(..., "--state", help="State folder (created on the first run)."),
        labeled: Path = typer.Option(..., "--labeled", help="Labelled photos (label_map, mask_pairs, COCO, LabelMe, YOLO or CVAT masks)."),
        unlabeled: Path = typer.Option(..., "--unlabeled", help="Folder of unlabeled photos."),
        backgrounds: Path = typer.Option(..., "--backgrounds", help="Folder of background images for composites."),
        rounds: Optional[int] = typer.Option(None, "--rounds", help="End after this many rounds (cron: 1); "
                                             "default: until the stop rule or max_rounds."),
        config_file: Optional[Path] = typer.Option(None, "--config", callback=config_option, help="Self-tuning YAML (configs/ccp_selftune.yaml); "
                                                   "default: the state's."),
        force_config: bool = typer.Option(False, "--force-config", help="Adopt a changed --config (or --search on a state made without it) from the next round."),
        search: bool = typer.Option(False, "--search", help="Also retrain the search network on each round's composites."),
        workers: int = typer.Option(1, "--workers", help="Processes for expansion and superpixels."),
    ) -> None:
        """Rounds of: train the segmenter -> score held-out photos -> extract automatic masks -> expand."""
        from augment.locking import claim_output_folder
        from augment.outputs import check_output_folder
        from pipelines import selftune_config
        from pipelines.cli import console, say
        from pipelines.command_errors import check_at_least, run_guarded
        from pipelines.selftune import Inputs, SelfTune, state_config
        from pipelines.selftune_metrics import METRICS_FILE, read_metrics

        check_at_least(rounds, 1, "--rounds")
        check_at_least(workers, 1, "--workers")  # expansion takes 0 as "one per core"; here it is a count

        def run() -> dict:
            check_output_folder(state, "--state")
            if force_config and config_file is None and not search:  # else silently a no-op
                raise InputError("--force-config adopts a changed --config; pass the --config FILE to adopt")
            config = None
            if config_file is not None:
                config = selftune_config.load(config_file, {"search": True} if search else None)
            elif search:  # the state's config (checked; the one waiting for the next round if any), searching too
                stored = state_config(state)
                if stored is None:
                    raise InputError("--search on a new state needs --config")
                config = {**stored, "search": True}
            with claim_output_folder(state, "selftune run"):  # a first run that fails leaves no empty state
                tuner = SelfTune(state, Inputs(labeled, unlabeled, backgrounds), config, force_config=force_config,
                                 workers=workers, show_progress=True)
                try:
                    return tuner.run(rounds)
                except OSError as error:  # a full disk, an I/O error: the step is redone on the next run
                    if isinstance(error, FileNotFoundError):
                        raise
                    say("error", f"round {tuner.state['round']} step {tuner.state['step']}: {error}; rerun to redo "
                        "this step")
                    raise typer.Exit(IO_ERROR_EXIT_CODE)

        result = run_guarded(run, interrupt_hint="rerun the same `synth selftune` command to resume (finished steps are kept)")
        metrics = state / METRICS_FILE
        last = (run_guarded(read_metrics, metrics) or [None])[-1]
        where = "finished" if result["finished"] else f"next: round {result['round']} {result['step']}"
        summary = f"; round {last['round']} held-out mIoU {last['miou']:.4f}" if last else ""
        reason = f" ({result['stop_reason']})" if result["finished"] and result["stop_reason"] else ""
        console.print(f"selftune {state}: {where}{reason}{summary}; report: {state / 'report.md'}", highlight=False)
