"""The outputs of `synth search`: every job (:mod:`pipelines.search_jobs`) searched and written
(:func:`run_search`), so it can be driven from Python as well as from the command line
(:mod:`pipelines.search_commands`).

Per image ``<name>.heat.png`` and ``<name>.highlight.jpg``, per video ``<name>.highlight.mp4``
(and with ``save_heatmaps`` ``<name>.heat/<frame>.png``), and ``detections.jsonl`` with one line
per image, frame or failed input, in input order. Media sharing a name get ``-2``, ``-3`` ...
suffixes instead of overwriting each other. A run first removes what an earlier run wrote into the
folder (:mod:`pipelines.output_record`), so the folder holds this run's outputs only; but a rerun of
a killed run of the same search keeps the still images it finished (:mod:`pipelines.search_resume`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from augment.atomic_files import naming_errors, remove_made, replace_into_place, temporary_beside
from augment.imageio import IMAGE_EXTENSIONS, InputError, read_image, save_image
from augment.outputs import OutputNames, unlinked
from pipelines.output_record import OutputRecord
from pipelines.search_jobs import DETECTIONS_FILE, SEARCH_OUTPUTS, JobProgress, SearchJob, count_work, is_video
from pipelines.search_resume import SearchProgress, file_stats, search_key

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    images: int = 0
    frames: int = 0
    detections: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tracks: list[dict[str, Any]] = field(default_factory=list)  # temporal mode: one per video
    skipped: list[str] = field(default_factory=list)  # frames of frame folders, with the reason
    resumed: int = 0  # still images a killed run of the same search had finished: kept, not searched again


# Video frames per forward pass at most (--batch; on CUDA or with one worker, consecutive stills too):
# that many frames are held decoded, and a video's reader keeps up to six batches in flight (four
# queued, one being decoded, one searched: pipelines/video.py FrameReader). 64, 16 times the default
# 4, is ~2.4 GB of RGB frames at 1080p, ~9.6 GB at 4K; --batch 100000 held a whole video at once.
MAX_BATCH = 64
# Workers at most (--workers; pipelines/search_workers.py): past the CPU's threads more workers run no
# faster (each has one torch thread at least) and only hold more memory: each its search (~0.3 GB at
# 1024 px) and four decoded stills waiting (ImageBatch), so --workers 100000 decoded a whole folder
# before searching any of it. 32: one per thread on machines up to 32 threads, ~10 GB at most.
MAX_WORKERS = 32


def check_batch_and_workers(batch: int, workers: int | None) -> None:
    """An InputError naming the option when ``batch`` (frames per forward pass) or ``workers`` (media
    side by side; None: the default) is out of its range: both bound the media held in memory."""
    if not 1 <= batch <= MAX_BATCH:
        raise InputError(f"--batch must be between 1 and {MAX_BATCH} (video frames held and searched at "
                         f"once), got {batch}")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers must be between 1 and {MAX_WORKERS} (media searched side by side, "
                         f"each holding its own search), got {workers}")


# Images plus frames from which a job's media are encoded by onnxruntime (pipelines/onnx_backbone.py):
# ~27 ms less per scene with the object and ~42 without at one thread (CCP, benchmarks/search.py),
# against ~1.3 s to export its graph once per process and thread count.
ONNX_MIN_WORK = 50
# Prepared queries kept (their pixels and their features per kernel size, ~10 MB for a 48 px query
# against 96 px media, more for larger ones) while a --pairs run goes on: the most recently used. A run
# kept every distinct query it met to its end: 200 pairs of 200 queries peaked at 2.6 GB, 2,000 at ~20.
PREPARED_QUERIES = 32


class PreparedQueries:
    """Each query prepared once while the run still uses it: dropped after its last job (known up front),
    and the least recently used dropped past :data:`PREPARED_QUERIES` (an LRU alone re-prepared every
    query of 5 shelf photos x 20 products listed photo by photo: 100 preparations for 20 queries)."""

    def __init__(self, prepare: Callable[..., Any], jobs: list[SearchJob]) -> None:
        self.prepare = prepare
        self.last_use = {(job.query, job.query_mask): index for index, job in enumerate(jobs)}
        self.kept: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def __call__(self, key: tuple, index: int) -> Any:
        if key in self.kept:
            self.kept.move_to_end(key)
            prepared = self.kept[key]
        else:
            prepared = self.kept[key] = self.prepare(*key)
            while len(self.kept) > PREPARED_QUERIES:
                self.kept.popitem(last=False)
        if self.last_use.get(key) == index:
            self.kept.pop(key, None)
        return prepared


def run_search(searcher: Any, jobs: list[SearchJob], out: Path, *, save_heatmaps: bool = False,
               batch: int = 4, advance: Callable[[int], None] | None = None,
               temporal: bool = True, initial_box: tuple[float, float, float, float] | None = None,
               workers: int | None = None) -> RunSummary:
    """Search every job, write the outputs into ``out``; errors are recorded, not raised.

    ``searcher`` is a :class:`pipelines.search.Searcher`; ``advance(n)`` is called after every
    n images/frames searched (progress display). Videos and frame folders are searched in the
    temporal mode (pipelines/temporal.py: one target held) unless ``temporal`` is False (every
    instance in every frame on its own); ``initial_box`` (x0, y0, x1, y1) is the target's box in
    each video's first frame (the temporal mode then starts from it instead of searching).
    Still images and the frames of ``temporal=False`` videos are searched ``workers`` at a time
    (pipelines/search_workers.py; None: one per CPU thread, one on CUDA). ``batch`` above
    :data:`MAX_BATCH` or ``workers`` above :data:`MAX_WORKERS` is an InputError, raised before
    anything is written. A rerun of a killed run of the same search (searcher, settings, jobs) keeps
    the still images it finished (:mod:`pipelines.search_resume`; counted in ``resumed``).
    """
    from pipelines.search_workers import SearchWorkers

    check_batch_and_workers(batch, workers)  # before an earlier run's outputs are cleared
    resume = SearchProgress(out, search_key(searcher, jobs, save_heatmaps=save_heatmaps, batch=batch, temporal=temporal,
                                            initial_box=None if initial_box is None else list(initial_box)))
    record = OutputRecord(out, SEARCH_OUTPUTS, [p for job in jobs for p in (job.query, job.medium, job.query_mask)],
                          keep=bool(resume.earlier))
    names = OutputNames(record.add, (*SEARCH_OUTPUTS.suffixes, str(SEARCH_OUTPUTS.frame_folder)))
    prepare = PreparedQueries(searcher.prepare, jobs)
    failed: dict[tuple[Path, Path | None], str] = {}  # a bad query fails each of its pairs, read once
    lines = LineFile(out / DETECTIONS_FILE)
    summary = RunSummary()
    start = time.perf_counter()
    advance = advance or (lambda n: None)
    if count_work(jobs) >= ONNX_MIN_WORK:
        searcher.network.use_onnx()
    try:
        with record, resume.opened(), SearchWorkers(searcher, workers) as side_by_side:
            pending = ImageBatch(side_by_side, out, names, summary, lines, batch, advance, resume)
            for index, job in enumerate(jobs):
                if job.error is not None:
                    pending.flush()
                    summary.errors.append(job.error)
                    lines.append({"source": None, "query": None, "frame": None, "error": job.error})
                    continue
                assert job.query is not None and job.medium is not None
                base = {"source": str(job.medium), "query": str(job.query), "frame": None}
                progress = JobProgress(job, advance)  # a still that is searched advances in its batch
                if not is_video(job.medium) and (kept := resume.resumed(index, job, names.peek(job.medium))) is not None:
                    names.take(job.medium)
                    pending.add_done(kept)
                    continue
                try:
                    key = (job.query, job.query_mask)
                    if key in failed:
                        raise InputError(failed[key])
                    try:
                        prepared = prepare(key, index)
                    except InputError as error:
                        failed[key] = str(error)
                        raise
                    if is_video(job.medium):
                        pending.flush()
                    if is_video(job.medium) and temporal:
                        from pipelines.temporal_run import search_temporal

                        for line in search_temporal(searcher, prepared, job.medium, out, names.take(job.medium),
                                                    save_heatmaps=save_heatmaps, batch=batch,
                                                    advance=progress, reports=summary.tracks,
                                                    skipped_files=summary.skipped, initial_box=initial_box):
                            summary.frames += 1
                            summary.detections += len(line["detections"])
                            lines.append(line)
                    elif is_video(job.medium):
                        for line in _search_video(side_by_side, prepared, job.medium, out, names, save_heatmaps,
                                                  batch, progress, summary):
                            lines.append(line)
                    else:
                        stats = file_stats(job)  # as read: a file changed while it is searched is searched again
                        pending.add(prepared, job.medium, _read_still(job.medium), index, stats)
                    if is_video(job.medium):
                        progress.finish()
                except InputError as error:
                    pending.flush()
                    progress.finish()
                    summary.errors.append(str(error))
                    lines.append({**base, "error": str(error)})
            pending.flush()

        lines.write()
    finally:
        lines.close()
    summary.resumed = resume.kept
    summary.seconds = time.perf_counter() - start
    return summary


class LineFile:
    """detections.jsonl's lines in order, each written as it comes to its hidden temporary beside it in
    ``--out`` and renamed into place by :meth:`write` (a list held every line, ~1.3 kB a frame: 130 MB for
    a 100,000-frame video, until the run's end); a write error names detections.jsonl. :meth:`close`
    removes the temporary of a run that failed (a killed run's is removed by the next run's record)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary: Path | None = None
        self._made: list[Path] = []  # the temporary's name before it is made: close() removes it after a stop
        self.file: IO[str] | None = None

    def _opened(self) -> IO[str]:
        if self.file is None:  # at the first line: --out exists by then
            self.temporary = temporary_beside(self.path, made=self._made)
            self.file = open(self.temporary, "w", encoding="utf-8", newline="")
        return self.file

    def append(self, line: dict[str, Any]) -> None:
        with naming_errors(self.path):
            self._opened().write(json.dumps(line) + "\n")

    def write(self) -> None:
        """The lines into place, atomically (an empty file where there were none)."""
        with naming_errors(self.path):
            self._opened().close()
        assert self.temporary is not None
        replace_into_place(self.temporary, self.path)
        self.temporary, self._made = None, []

    def close(self) -> None:
        """The temporary of a run that failed removed (the run's own error is the one raised)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
        remove_made(self._made)
        self.temporary, self._made = None, []


def _read_still(medium: Path) -> Any:
    if medium.suffix.lower() not in IMAGE_EXTENSIONS and not medium.exists():  # e.g. a folder's name mistyped
        raise InputError(f"{medium}: no such file or folder")
    if medium.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(f"{medium}: not an image or video file (unknown suffix "
                         f"{medium.suffix or '(none)'!r})")
    from pipelines.search import check_min_side

    image = read_image(medium, "rgb")  # upright, as displayed: boxes in its frame
    check_min_side(str(medium), image.shape[1], image.shape[0], what="image")
    from pipelines.video import still_frames

    if (frames := still_frames(medium)) > 1:  # an animated WebP or PNG, a multi-page TIFF: not a video
        logger.warning("%s: %d frames or pages; only the first is searched (an animated GIF or a video "
                       "is searched frame by frame: convert it to one)", medium, frames)
    return image


class ImageBatch:
    """Consecutive still images searched together: side by side on the CPU's workers (any
    queries and sizes), else consecutive images of one query and one size in one batch like video
    frames (on CUDA the network's cost per image drops with the batch); lines keep input order."""

    def __init__(self, workers: Any, out: Path, names: OutputNames, summary: RunSummary,
                 lines: LineFile, size: int, advance: Callable[[int], None],
                 progress: SearchProgress) -> None:
        self.workers, self.out, self.names, self.summary, self.progress = workers, out, names, summary, progress
        # Side by side, a few media per worker: one slow medium (a scene without the object is
        # searched again for a smaller one) does not leave the other workers idle for long.
        self.lines, self.advance = lines, advance
        self.size = max(1, size) if workers.workers == 1 else max(size, 4 * workers.workers)
        # (prepared query, medium, image, job index, its files' stats, output stem), or a kept still's line
        self.items: list[tuple[Any, Path, Any, int, Any, str] | dict[str, Any]] = []

    def add(self, prepared: Any, medium: Path, image: Any, index: int, stats: Any) -> None:
        # Named now, in input order as before (at the flush): a kept still after it is named as the killed run named it.
        self.items.append((prepared, medium, image, index, stats, self.names.take(medium)))
        if len(self.items) == self.size:
            self.flush()

    def add_done(self, line: dict[str, Any]) -> None:
        """A still the killed run this one resumes finished: its line keeps its place in the order."""
        self.items.append(line)
        if len(self.items) == self.size:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        searched = [item for item in items if isinstance(item, tuple)]
        results = iter(self.workers.find_pairs([item[0] for item in searched], [item[2] for item in searched],
                                               sources=[str(item[1]) for item in searched]) if searched else [])
        for item in items:
            if isinstance(item, dict):
                self.summary.images += 1
                self.summary.detections += len(item.get("detections") or [])
                self.lines.append(item)
                continue
            _, medium, _, index, stats, name = item
            result = next(results)
            save_image(self.out / f"{name}.heat.png", result.heat_png())
            save_image(self.out / f"{name}.highlight.jpg", result.highlight())
            self.summary.images += 1
            self.summary.detections += len(result.detections)
            line = {**result.to_json(), "highlight": f"{name}.highlight.jpg"}
            self.lines.append(line)
            self.progress.done(index, stats, name, line)
        self.advance(len(items))


def _search_video(workers: Any, prepared: Any, medium: Path, out: Path, names: OutputNames,
                  save_heatmaps: bool, batch: int, advance: Callable[[int], None],
                  summary: RunSummary) -> Iterator[dict[str, Any]]:
    from pipelines.frames import frames_and_highlights

    name = names.take(medium)
    heat = unlinked(out / f"{name}.heat") if save_heatmaps else out / f"{name}.heat"  # (a link of the user's kept)
    with frames_and_highlights(medium, out / f"{name}.highlight.mp4", batch,
                               heat if save_heatmaps else None) as (reader, writer):
        for indices, frames in reader:
            results = workers.find_each(prepared, frames, sources=[str(medium)] * len(frames),
                                        frames=indices)
            for result in results:
                writer.write(result.highlight(), result.frame)
                if save_heatmaps:
                    writer.heat(result.heat_png(), result.frame)
                summary.detections += len(result.detections)
                yield {**result.to_json(), "highlight": f"{name}.highlight.mp4"}
            summary.frames += len(frames)
            advance(len(frames))
    summary.skipped.extend(getattr(reader, "skipped", []))  # unreadable frames (files), also of a video that breaks
    if reader.error is not None:
        raise InputError(reader.error)
