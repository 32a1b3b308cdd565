"""`synth search` and `synth calibrate`, registered onto the main typer app, with their option
parsers. Running the search jobs and writing their outputs is :mod:`pipelines.search_outputs`
(its names are re-exported here).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import typer

from augment.atomic_files import atomic_write_text
from augment.imageio import VIDEO_EXTENSIONS, InputError
from pipelines.calibration_report import (check_calibrated_network, parse_threshold,  # noqa: F401
                                         search_settings)
from pipelines.search_levels import DEFAULT_MAX_SIDE
from pipelines.search_jobs import (DETECTIONS_FILE, SearchJob, count_work, expand_media,  # noqa: F401
                                   expand_pair_media, is_video, read_pairs)
from pipelines.search_outputs import (MAX_BATCH, MAX_WORKERS, ONNX_MIN_WORK, check_batch_and_workers,  # noqa: F401
                                      run_search)

logger = logging.getLogger(__name__)


SCALES_HELP = ("Object sizes searched, relative to the query's, e.g. 0.25,0.5,1 (as given). 'default': "
               "0.5,1,2 less the sizes at which the object would be under 1/16 of the medium's shorter "
               "side (and smaller than the query), and, where these find nothing and the query is large "
               "against the medium, the object 8x smaller than the query. 'auto': 0.5,1,2, and for a query large against the "
               "medium smaller sizes down to that bound (slower for large queries).")


DEFAULT_MIN_AREA = 600  # calibrate --min-area: mask pixels of an object that may be a query or look-alike
# calibrate --cases at most: the cases are made up front and held decoded, ~1.3 MB each on the CCP
# photos (1.7 MB at most: a 416-px-high scene of three photos and its query; --photos ccp --include
# '05[0-4][0-9]', 20 cases), so 2000 cases are ~2.6-3.4 GB; ten times the default, and --cases 10**9
# would have filled any memory before searching one.
MAX_CASES = 2000


def parse_scales(text: str | None) -> tuple[float, ...] | str | None:
    """``--scales``: comma-separated relative sizes, searched as given; None or ``auto``: chosen per
    query and medium size (pipelines.search_levels.auto_scales); ``default``: the default sizes less
    the implausibly small (pipelines.search_levels.DEFAULT_SCALES)."""
    from pipelines.search import DEFAULT_SCALES, MAX_QUERY_SCALE, MIN_QUERY_SCALE

    if text is None or text.strip().lower() == "auto":
        return None
    if text.strip().lower() == DEFAULT_SCALES:
        return DEFAULT_SCALES
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise InputError(f"--scales must be comma-separated numbers or 'auto', not {text!r}") from None
    if not scales or any(not MIN_QUERY_SCALE <= s <= MAX_QUERY_SCALE for s in scales):
        raise InputError(f"--scales must be numbers in [{MIN_QUERY_SCALE:g}, {MAX_QUERY_SCALE:g}], not {text!r}")
    return scales


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``X,Y,W,H`` (pixels; W, H > 0) as (x0, y0, x1, y1)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise InputError(f"--box must be X,Y,W,H: four numbers, W and H above 0, not {text!r}")
    x, y, w, h = values
    box = (x, y, x + w, y + h)
    # A width lost to X's magnitude (1e30 + 20 == 1e30) or a sum past the float range: no box, as
    # check_start_box would tell the tracker later in its own x0,y0,x1,y1 terms, per video (exit 1).
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"--box must be X,Y,W,H: four numbers, W and H above 0, not {text!r} "
                         "(X+W and Y+H must be numbers past X and Y)")
    return box


MAX_SIDE_HELP = ("Pixels on a medium's longer side it is searched at (larger media shrunk to it; larger finds "
                 "smaller objects in large media, slower: the cost follows the area).")


def check_search_options(max_side: int, fusion: Optional[Path], no_verify: bool) -> None:
    """``--max-side`` (a whole number of pixels, at least a query's smallest side: Searcher's own check,
    named by its option) and ``--fusion`` (the verified search's) as `search` and `calibrate` take them;
    one line, before the model loads."""
    from pipelines.command_errors import fail
    from pipelines.search_inputs import MIN_QUERY_INPUT_SIDE

    if fusion is not None and no_verify:
        fail("--fusion fuses the verified search's scores; it does not apply with --no-verify")
    if max_side < MIN_QUERY_INPUT_SIDE:
        fail(f"--max-side must be a whole number of pixels, at least {MIN_QUERY_INPUT_SIDE}, not {max_side}")


def register(app: typer.Typer) -> None:
    """Add the search commands to ``app``."""

    @app.command()
    def search(
        query: Optional[Path] = typer.Argument(None, help="Query image (an alpha channel marks the object)."),
        media: Optional[list[Path]] = typer.Argument(None, help="Images (a GIF: an animated one is a video), folders of images, videos ("
                                                 + ", ".join(sorted(e[1:] for e in VIDEO_EXTENSIONS)) + ")."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint.pt of `synth train`, or its run "
                                                  "folder; default: the head shipped with synth if one ships (none does yet), else the untrained network."),
        untrained: bool = typer.Option(False, "--untrained", help="The untrained network (pretrained backbone + "
                                       "correlation): the baseline the shipped head is measured against."),
        query_mask: Optional[Path] = typer.Option(None, "--query-mask", help="Mask image of the query's object "
                                                  "(non-zero = object)."),
        threshold: Optional[str] = typer.Option(None, "--threshold", help="Heat threshold of a detection, "
                                                "or the JSON `synth calibrate` wrote for this network and search "
                                                "(default: the verified search's calibrated one, from its fusion "
                                                "model; with --no-verify the network's own)."),
        pairs: Optional[Path] = typer.Option(None, "--pairs", help='JSONL of {"query": path, "medium": path[, "query_mask": path]} '
                                             "lines (relative paths from the file's folder)."),
        save_heatmaps: bool = typer.Option(False, "--save-heatmaps", help="Also write per-frame heat maps of videos."),
        batch: int = typer.Option(4, "--batch", help=f"Video frames per forward pass (at most {MAX_BATCH})."),
        workers: int = typer.Option(0, "--workers", help="CPU: still images and --every-instance video "
                                    "frames searched this many at a time, the CPU threads shared among "
                                    "them (0: one per CPU thread, at most 4; 1: one at a time on all threads; "
                                    f"at most {MAX_WORKERS})."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (bf16 autocast on CUDA)."),
        scales: str = typer.Option("default", "--scales", help=SCALES_HELP),
        max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", help=MAX_SIDE_HELP + " --threshold's report must be "
                                     "of the same."),
        no_verify: bool = typer.Option(False, "--no-verify", help="Heat map alone: no geometric verification "
                                       "of candidates, no fused score (issue 13)."),
        no_mirror: bool = typer.Option(False, "--no-mirror", help="Search the query only as given, not also "
                                       "mirrored (faster; misses objects facing the other way)."),
        fusion: Optional[Path] = typer.Option(None, "--fusion", help="Fusion model JSON (default: the model's "
                                              "own: CKPT.fusion.json, or the untrained network's)."),
        sequence: bool = typer.Option(False, "--sequence", help="Read each MEDIA folder as one video "
                                      "(its frames in name order, numbers compared as numbers: frame2 before frame10)."),
        every_instance: bool = typer.Option(False, "--every-instance", help="Videos: every instance in "
                                            "every frame on its own, instead of holding one target "
                                            "(the temporal mode, default)."),
        box: Optional[str] = typer.Option(None, "--box", help="Videos: the target's box X,Y,W,H in the "
                                          "first frame (pixels); the temporal mode starts from it "
                                          "instead of finding the query there."),
    ) -> None:
        """Find QUERY in MEDIA: heat maps, highlighted images/videos and OUT/detections.jsonl."""
        from augment.locking import folder_lock
        from augment.outputs import check_output_folder
        from pipelines.cli import SEARCH_RESUME_HINT, make_progress
        from pipelines.command_errors import fail, run_guarded
        from pipelines.search import Searcher, load_query

        if not 0 <= workers <= MAX_WORKERS:  # the option's own range: 0 is its default
            fail(f"--workers must be between 0 (one per CPU thread) and {MAX_WORKERS} (media searched side "
                 f"by side, each holding its own search), got {workers}")
        run_guarded(check_batch_and_workers, batch, workers or None)  # one line, before the model loads
        if pairs is not None and (query is not None or media):
            fail("pass either QUERY MEDIA... or --pairs FILE, not both")
        if pairs is None and (query is None or not media):
            fail("pass QUERY and at least one MEDIA (or --pairs FILE)")
        if pairs is not None and query_mask is not None:
            fail('--query-mask applies to QUERY; in --pairs give "query_mask" per line')
        check_search_options(max_side, fusion, no_verify)
        if box is not None and every_instance:
            fail("--box starts the temporal mode; it does not apply with --every-instance")
        initial_box = run_guarded(parse_box, box) if box is not None else None
        calibration = run_guarded(parse_threshold, threshold, not no_verify) if threshold is not None else None

        def prepare() -> tuple[Any, list[SearchJob]]:
            check_output_folder(out)
            if pairs is not None:
                jobs = expand_pair_media(read_pairs(pairs), sequence, out)
            else:
                assert query is not None and media
                jobs = [SearchJob(query, m, query_mask) for m in expand_media(list(media), sequence, out)]
                load_query(query, query_mask)  # a bad query fails here, before the model loads
            if initial_box is not None and not any(job.medium is not None and is_video(job.medium) for job in jobs):
                raise InputError("--box gives the target's box in a video's first frame, but no MEDIA is a video "
                                 "(or a folder with --sequence)")
            searcher = Searcher(checkpoint=checkpoint, device=device,
                                threshold=None if calibration is None else calibration["threshold"],
                                query_scales=parse_scales(scales), untrained=untrained, verify=not no_verify,
                                fusion=fusion, mirror=not no_mirror, max_side=max_side)
            if calibration is not None:
                check_calibrated_network(calibration, checkpoint, searcher)
            return searcher, jobs

        searcher, jobs = run_guarded(prepare)
        # Two searches into one folder would clear and overwrite each other's outputs; the lock is
        # taken before the progress bar, so a busy --out is its one line alone.
        with ExitStack() as held:
            run_guarded(held.enter_context, folder_lock(out, "search run"))
            progress = held.enter_context(make_progress())
            task = progress.add_task("search", total=count_work(jobs) or None, rate="")
            started = time.perf_counter()
            done = 0
            # The rate's unit: images where no medium is a video (a photo folder is not "frames")
            unit = "frames/s" if any(job.medium is not None and is_video(job.medium) for job in jobs) else "images/s"

            def advance(n: int) -> None:
                nonlocal done
                done += n
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, advance=n, rate=f"{rate:.1f} {unit}")

            summary = run_guarded(run_search, searcher, jobs, out, save_heatmaps=save_heatmaps, batch=batch,
                                  advance=advance, temporal=not every_instance, initial_box=initial_box,
                                  workers=workers or None, interrupt_hint=SEARCH_RESUME_HINT)

        from pipelines.cli import console, counted, say

        kept = f" ({summary.resumed} kept from an earlier run of this search)" if summary.resumed else ""
        console.print(f"searched {counted(summary.images, 'image')}{kept} and {counted(summary.frames, 'video frame')} in "
                      f"{summary.seconds:.1f} s: {counted(summary.detections, 'detection')} -> "
                      f"{out / DETECTIONS_FILE}", highlight=False, soft_wrap=True)
        for track in summary.tracks:
            console.print(f"{track['source']}: target tracked in {track['tracked']}, "
                          f"re-detected in {track['re_detected']}, lost in {track['lost']} of "
                          f"{counted(track['frames'], 'frame')}; {counted(track['skipped'], 'frame')} skipped",
                          highlight=False, soft_wrap=True)
            if track['frames'] and not track['tracked'] and not track['re_detected'] and initial_box is None:
                # Never acquired: the boxes drawn are best guesses; a known box starts tracking at once.
                console.print(f"  the query was not found with confidence in {track['source']}; its "
                              "boxes are best guesses. If it is there, pass --box X,Y,W,H (its box in the "
                              "first frame) to track it from there.", highlight=False, soft_wrap=True)
        for skipped in summary.skipped:
            say("skipped frame", skipped, "yellow")
        if summary.errors:
            for error in summary.errors:
                say("error", error)
            raise typer.Exit(1)

    @app.command()
    def calibrate(
        out: Path = typer.Option(..., "--out", "-o", help="JSON file for the threshold and its F1 table."),
        photos: Optional[list[Path]] = typer.Option(None, "--photos", help="Labelled photos (label maps, mask "
                                                    "pairs or COCO; repeatable): catalogue -> scene cases."),
        shards: Optional[str] = typer.Option(None, "--shards", help="Folder (or s3://, gs:// prefix) of shards "
                                             "written by `synth expand`."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint.pt, or its run folder; default: as "
                                                  "synth search."),
        untrained: bool = typer.Option(False, "--untrained", help="Calibrate the untrained network."),
        cases: int = typer.Option(200, "--cases", help="Cases to calibrate on (a quarter of photo cases are "
                                  f"negatives; at most {MAX_CASES})."),
        include: Optional[list[str]] = typer.Option(None, "--include", help="With --photos: glob patterns on photo "
                                                    "file stems to use (repeatable), e.g. photos no training saw."),
        categories: Optional[str] = typer.Option(None, "--categories", help="With --photos: comma-separated "
                                                 "categories used as queries (default: all)."),
        drop_labels: Optional[str] = typer.Option(None, "--drop-labels", help="With --photos: comma-separated "
                                                  "labels that are never objects (e.g. skin,hair)."),
        source_format: str = typer.Option("auto", "--source-format", help="auto, label_map, mask_pairs, coco, labelme, yolo or cvat_mask."),
        min_area: int = typer.Option(DEFAULT_MIN_AREA, "--min-area", help="With --photos: objects with fewer mask pixels are "
                                     "neither queries nor look-alikes."),
        seed: int = typer.Option(0, "--seed", help="Seed of the photo cases."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        scales: str = typer.Option("default", "--scales", help=SCALES_HELP),
        max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", help=MAX_SIDE_HELP + " Recorded, and checked by "
                                     "--threshold."),
        no_mirror: bool = typer.Option(False, "--no-mirror", help="Calibrate the search of the query only as "
                                       "given (as `synth search --no-mirror`)."),
        no_verify: bool = typer.Option(False, "--no-verify", help="Calibrate the heat map alone (as `synth "
                                       "search --no-verify`); by default the fused, verified search."),
        fusion: Optional[Path] = typer.Option(None, "--fusion", help="Calibrate the verified search with this "
                                              "fusion model JSON (as `synth search --fusion`; recorded, and checked by "
                                              "--threshold); default: the model's own."),
    ) -> None:
        """Pick the heat threshold that maximises detection F1 (IoU >= 0.5).

        Cases are catalogue shots of labelled photos' objects searched in those photos tiled with
        others (--photos; the same transform as training and the benchmarks), or held-out pairs
        of shards (--shards). Pass the JSON to `synth search --threshold` (the same --checkpoint and --no-verify).
        """
        from augment.locking import file_lock
        from augment.outputs import check_report_file
        from pipelines.cli import console, counted, say
        from pipelines.command_errors import check_at_least, check_at_most, run_guarded
        from pipelines.calibration import held_out_fraction, photo_cases, shard_cases
        from pipelines.search import Searcher, calibrate_threshold
        from train.checkpoint import load_checkpoint
        from train.data import list_shards

        check_at_least(cases, 1, "--cases")
        check_at_most(cases, MAX_CASES, "--cases", "the cases are held in memory, ~1.5 MB each")
        check_at_least(seed, 0, "--seed")
        check_at_least(min_area, 0, "--min-area")
        check_search_options(max_side, fusion, no_verify)

        def run() -> None:
            if (shards is None) == (not photos):
                raise InputError("pass --photos SOURCE... (labelled photos) or --shards DIR, one of them")
            photo_only = [name for name, given in (("--include", include), ("--categories", categories),
                                                   ("--drop-labels", drop_labels),
                                                   ("--source-format", source_format != "auto"),
                                                   ("--min-area", min_area != DEFAULT_MIN_AREA)) if given]
            if shards is not None and photo_only:  # else silently ignored: the cases would not be the ones asked for
                raise InputError(f"{', '.join(photo_only)} apply with --photos, not --shards")
            check_report_file(out, "calibrate", ("threshold", "table"))
            # Two calibrations into one file would each replace the other's report: the second stops at
            # once, before its model loads.
            with file_lock(out, "calibrate run"):
                calibrate_into_out()

        def calibrate_into_out() -> None:
            with ExitStack() as held:
                if shards is not None:
                    from train.shard_set import reading_shards

                    # Held from the check on (no expand --overwrite swaps them meanwhile): an expand at
                    # work (no manifest.json yet) is busy, exit code 3, not a broken folder.
                    held.enter_context(reading_shards(shards, what="synth calibrate"))
                    list_shards(shards)  # unreadable shards: one line before the model loads
                calibrate_with(held)

        def calibrate_with(held: ExitStack) -> None:
            # The pairs the network's training held out (a checkpoint trained at eval_fraction 0.05 had
            # trained on half the default 0.1's, at 0 on all of them), before its model loads.
            # The checkpoint is read once, for both (it was read twice: its time, and two copies at once).
            state = load_checkpoint(checkpoint) if checkpoint is not None and not untrained else None
            held_out = held_out_fraction(shards, checkpoint, state) if shards is not None else None
            searcher = Searcher(checkpoint=checkpoint, device=device, query_scales=parse_scales(scales),
                                untrained=untrained, mirror=not no_mirror, verify=not no_verify, fusion=fusion,
                                checkpoint_state=state, max_side=max_side)
            del state  # the model holds its weights: the read state's tensors are freed
            if cases >= ONNX_MIN_WORK:  # as a long search job encodes its media
                searcher.network.use_onnx()
            skipped: list[Any] = []
            if photos:
                found = photo_cases(list(photos), cases, seed=seed, source_format=source_format,
                                    include=list(include or []), categories=_names(categories),
                                    drop_labels=_names(drop_labels), min_area=min_area, skips=skipped)
                origin = {"photos": [str(p) for p in photos], "include": list(include or []),
                          "skipped": [f"{skip.path}: {skip.reason}" for skip in skipped]}
            else:
                assert shards is not None
                found = shard_cases(shards, cases, eval_fraction=held_out)
                held.close()  # the cases are read: the shards are free again
                origin = {"shards": str(shards)}
            result = calibrate_threshold(searcher, found)
            report = {"threshold": result.threshold, "f1": result.f1, "precision": result.precision,
                      "recall": result.recall, "cases": len(found), **origin,
                      # A checkpoint as an absolute path: as typed ('run/checkpoint.pt'), a search from
                      # another folder found no such file, which counts as the same network (any checkpoint).
                      "model": str(checkpoint.absolute()) if checkpoint is not None and not untrained
                      else searcher.model_name, **search_settings(searcher), "table": result.table}
            atomic_write_text(out, json.dumps(report, indent=2) + "\n")
            console.print(f"threshold {result.threshold:.2f}: F1 {result.f1:.3f} (precision "
                          f"{result.precision:.3f}, recall {result.recall:.3f}) over "
                          f"{counted(len(found), 'case')} -> {out}", highlight=False)
            if result.f1 <= 0:  # no threshold found anything: the report's threshold is no calibration
                say("warning", f"no threshold found a single object in these {counted(len(found), 'case')} (F1 0 at every "
                    f"one); {out}'s threshold {result.threshold:.2f} is a placeholder, not calibrated: "
                    "check the cases (their objects' size against the media, the categories)", "yellow")
            if skipped:  # each one is logged (-v); the count and the first few always shown
                for skip in skipped:
                    logger.info("skipped %s: %s", skip.path, skip.reason)
                shown = "; ".join(f"{skip.path}: {skip.reason}" for skip in skipped[:3])
                console.print(f"{len(skipped)} input(s) skipped (all in {out}): {shown}"
                              + (" ..." if len(skipped) > 3 else ""), highlight=False, soft_wrap=True)

        run_guarded(run)


def _names(text: Optional[str]) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]
