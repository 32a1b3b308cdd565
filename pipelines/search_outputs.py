"""The outputs of `synth search`: every job searched and written (:func:`run_search`), so it can be
driven from Python as well as from the command line (:mod:`pipelines.search_commands`).

Per image ``<name>.heat.png`` and ``<name>.highlight.jpg``, per video ``<name>.highlight.mp4``
(and with ``save_heatmaps`` ``<name>.heat/<frame>.png``), and ``detections.jsonl`` with one line
per image, frame or failed input, in input order. Media sharing a name get ``-2``, ``-3`` ...
suffixes instead of overwriting each other. A run first removes what an earlier run wrote into the
folder (:mod:`pipelines.output_record`), so the folder holds this run's outputs only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from augment.atomic_files import NAME_MAX, atomic_write_text
from augment.imageio import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputError, list_images, read_image, save_image
from pipelines.output_record import OutputKinds, OutputRecord

logger = logging.getLogger(__name__)

DETECTIONS_FILE = "detections.jsonl"
# Everything a search writes (the summary: pipelines/temporal_run.py); an earlier run's are cleared.
SEARCH_OUTPUTS = OutputKinds("search", (".heat.png", ".highlight.jpg", ".highlight.mp4", ".summary.json"),
                             (DETECTIONS_FILE,), frame_folder=".heat")


@dataclass
class SearchJob:
    """One query searched in one medium (image or video); ``error`` set when the job is invalid."""

    query: Path | None
    medium: Path | None
    query_mask: Path | None = None
    error: str | None = None
    # Its share of the progress total (job_work), measured once: the bar's total and the top-up of
    # a failed or short job both use it (a video is probed, a frame folder listed, only once).
    work: int | None = field(default=None, compare=False, repr=False)


@dataclass
class RunSummary:
    images: int = 0
    frames: int = 0
    detections: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tracks: list[dict[str, Any]] = field(default_factory=list)  # temporal mode: one per video
    skipped: list[str] = field(default_factory=list)  # frames of frame folders, with the reason


def expand_media(paths: list[Path], sequence: bool = False, out: Path | None = None) -> list[Path]:
    """Files as given; folders become their images and videos (sorted, recursive), or with
    ``sequence`` stay one medium each (a folder of frames read as one video). A folder that holds
    ``out`` leaves out what an earlier search wrote there (it is cleared, not searched again), and
    what earlier searches wrote into other output folders inside it (:func:`earlier_outputs_below`)."""
    earlier_in_out = ({p.resolve() for p in OutputRecord(out, SEARCH_OUTPUTS).earlier_outputs()}
                      if out is not None else set())
    media: list[Path] = []
    for path in paths:
        if path.is_dir() and sequence:
            media.append(path)
        elif path.is_dir():
            images, others = list_images(path)
            earlier = earlier_in_out | earlier_outputs_below(path)
            videos = [p for p in others if p.suffix.lower() in VIDEO_EXTENSIONS]
            _report_left_out([p for p in others if p.suffix.lower() not in VIDEO_EXTENSIONS
                              and (not earlier or p.resolve() not in earlier)], path)
            found = sorted(p for p in images + videos if not earlier or p.resolve() not in earlier)
            if not found:
                raise InputError(f"{path}: no images or videos in this folder")
            media.extend(found)
        else:
            media.append(path)
    return media


def earlier_outputs_below(folder: Path) -> set[Path]:
    """Heat maps, highlights and the rest that earlier searches wrote into output folders inside
    ``folder`` (a ``--out`` kept among the photos), resolved: a search of ``folder`` (its images, or
    its frames with ``--sequence``) leaves them out instead of searching them as photos or frames.
    Each left out is logged (-v), their number once per folder."""
    earlier = OutputRecord.outputs_below(folder, SEARCH_OUTPUTS)
    for path in sorted(earlier):
        logger.info("%s: written by an earlier synth search; left out", path)
    if earlier:
        logger.info("%s: %d file(s) written by earlier synth searches into folders inside it left out",
                    folder, len(earlier))
    return earlier


def _report_left_out(files: list[Path], folder: Path) -> None:
    """A folder's files that are neither images nor videos (notes, a RAW photo): counted on the console,
    each one logged (-v), not silently dropped."""
    for path in files:
        logger.info("%s: neither an image nor a video; left out", path)
    if files:
        logger.warning("%s: %d file(s) that are neither images nor videos left out (%s%s)", folder, len(files),
                       files[0].name, ", ..." if len(files) > 1 else "")


def read_pairs(path: Path) -> list[SearchJob]:
    """Jobs of a JSONL file of {"query": path, "medium": path[, "query_mask": path]} lines.

    Relative paths are taken from the file's folder. A bad line becomes a job with ``error``.
    """
    if not path.is_file():
        raise InputError(f"{path}: " + ("a folder; --pairs takes a JSONL file" if path.is_dir() else "no such pairs file"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a UTF-8 text file (byte {error.start}); expected JSON lines") from None
    jobs: list[SearchJob] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) \
                    or not isinstance(entry.get("medium"), str):
                raise ValueError('expected {"query": path, "medium": path}')
            if entry.get("query_mask") is not None and not isinstance(entry["query_mask"], str):
                raise ValueError(f'"query_mask" must be a path, not {entry["query_mask"]!r}')  # else silently unmasked
        except ValueError as error:
            jobs.append(SearchJob(None, None, error=f"{path}:{number}: {error}"))
            continue
        resolve = (lambda p: p if p.is_absolute() else path.parent / p)
        mask = entry.get("query_mask")
        jobs.append(SearchJob(resolve(Path(entry["query"])), resolve(Path(entry["medium"])),
                              resolve(Path(mask)) if isinstance(mask, str) else None))
    if not jobs:
        raise InputError(f"{path}: no pairs in this file")
    return jobs


def expand_pair_media(jobs: list[SearchJob], sequence: bool = False, out: Path | None = None) -> list[SearchJob]:
    """``--pairs`` jobs whose medium is a folder become one job per image and video in it, as a
    MEDIA folder does (:func:`expand_media`); with ``sequence`` the folder stays one medium, its
    frames read as one video. A folder with nothing to search is that line's error."""
    expanded: list[SearchJob] = []
    for job in jobs:
        if sequence or job.error is not None or job.medium is None or not job.medium.is_dir():
            expanded.append(job)
            continue
        try:
            media = expand_media([job.medium], False, out)
        except InputError as error:
            expanded.append(SearchJob(job.query, job.medium, job.query_mask, error=str(error)))
            continue
        expanded.extend(SearchJob(job.query, medium, job.query_mask) for medium in media)
    return expanded


class OutputNames:
    """Unique output stems in one folder: a second ``photo`` becomes ``photo-2``. ``record`` is
    told each stem before anything is written under it (:class:`pipelines.output_record.OutputRecord`).
    A stem is cut so that it with each of ``suffixes`` is a legal file name (NAME_MAX bytes): a
    medium's own name may be that long already."""

    def __init__(self, record: Callable[[str], None] | None = None, suffixes: tuple[str, ...] = ()) -> None:
        self.used: set[str] = set()
        self.record = record
        self.room = NAME_MAX - max((len(os.fsencode(s)) for s in suffixes), default=0)

    def take(self, medium: Path) -> str:
        stem, k = medium.stem, 2
        name = _cut_name(stem, self.room)
        while name.lower() in self.used:
            name, k = f"{_cut_name(stem, self.room - len(f'-{k}'))}-{k}", k + 1
        self.used.add(name.lower())
        if self.record is not None:
            self.record(name)
        return name


def _cut_name(name: str, limit: int) -> str:
    """``name`` less its last characters until it takes at most ``limit`` bytes on disk."""
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


def is_video(path: Path) -> bool:
    """A video file, an animated GIF, or a folder of frames (only ever a medium with ``--sequence``)."""
    from pipelines.video import is_animated_gif

    return path.suffix.lower() in VIDEO_EXTENSIONS or path.is_dir() or is_animated_gif(path)


def count_work(jobs: list[SearchJob]) -> int:
    """Images plus declared video frames, for the progress bar (unreadable videos count 0)."""
    return sum(job_work(job) for job in jobs)


def job_work(job: SearchJob) -> int:
    """One job's share of :func:`count_work`: 1 for an image (readable or not), a video's declared
    frames or a frame folder's images, 0 for a bad pairs line or an unreadable video (kept in
    ``job.work``)."""
    if job.work is None:
        job.work = _measure_work(job)
    return job.work


def _measure_work(job: SearchJob) -> int:
    from pipelines.video import probe

    if job.error or job.medium is None:
        return 0
    if job.medium.is_dir():
        from pipelines.frames import frame_files

        return len(frame_files(job.medium))
    if is_video(job.medium):
        try:
            return probe(job.medium).frame_count
        except InputError:
            return 0
    return 1


class JobProgress:
    """One job's progress: passes on the work the job reports, and :meth:`finish` advances the rest
    of its share of the total, so the bar ends full when a job fails (a missing or unreadable
    medium or query) or is cut short (a broken video, a frame folder's skipped files)."""

    def __init__(self, job: SearchJob, advance: Callable[[int], None]) -> None:
        self.job, self.advance, self.done = job, advance, 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.advance(n)

    def finish(self) -> None:
        rest = job_work(self.job) - self.done
        if rest > 0:
            self.advance(rest)


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
    anything is written.
    """
    from pipelines.search_workers import SearchWorkers

    check_batch_and_workers(batch, workers)  # before an earlier run's outputs are cleared
    record = OutputRecord(out, SEARCH_OUTPUTS, [p for job in jobs for p in (job.query, job.medium, job.query_mask)])
    names = OutputNames(record.add, (*SEARCH_OUTPUTS.suffixes, str(SEARCH_OUTPUTS.frame_folder)))
    queries: dict[tuple[Path, Path | None], Any] = {}
    lines: list[dict[str, Any]] = []
    summary = RunSummary()
    start = time.perf_counter()
    advance = advance or (lambda n: None)
    if count_work(jobs) >= ONNX_MIN_WORK:
        searcher.network.use_onnx()
    with record, SearchWorkers(searcher, workers) as side_by_side:
        pending = ImageBatch(side_by_side, out, names, summary, lines, batch, advance)
        for job in jobs:
            if job.error is not None:
                pending.flush()
                summary.errors.append(job.error)
                lines.append({"source": None, "query": None, "frame": None, "error": job.error})
                continue
            assert job.query is not None and job.medium is not None
            base = {"source": str(job.medium), "query": str(job.query), "frame": None}
            progress = JobProgress(job, advance)  # a still that is searched advances in its batch
            try:
                key = (job.query, job.query_mask)
                if key not in queries:  # each query's pixels and features are prepared once
                    try:
                        queries[key] = searcher.prepare(job.query, job.query_mask)
                    except InputError as error:  # a bad query fails each of its pairs, read once
                        queries[key] = error
                prepared = queries[key]
                if isinstance(prepared, InputError):
                    raise prepared
                if is_video(job.medium):
                    pending.flush()
                if is_video(job.medium) and temporal:
                    from pipelines.temporal_run import search_temporal

                    for line in search_temporal(searcher, prepared, job.medium, out, names.take(job.medium),
                                                save_heatmaps=save_heatmaps, batch=batch,
                                                advance=progress, reports=summary.tracks,
                                                initial_box=initial_box):
                        summary.frames += 1
                        summary.detections += len(line["detections"])
                        lines.append(line)
                    summary.skipped.extend(summary.tracks[-1]["skipped_files"] if summary.tracks else [])
                elif is_video(job.medium):
                    for line in _search_video(side_by_side, prepared, job.medium, out, names, save_heatmaps,
                                              batch, progress, summary):
                        lines.append(line)
                else:
                    pending.add(prepared, job.medium, _read_still(job.medium))
                if is_video(job.medium):
                    progress.finish()
            except InputError as error:
                pending.flush()
                progress.finish()
                summary.errors.append(str(error))
                lines.append({**base, "error": str(error)})
        pending.flush()

    atomic_write_text(out / DETECTIONS_FILE, "".join(json.dumps(line) + "\n" for line in lines))
    summary.seconds = time.perf_counter() - start
    return summary


def _read_still(medium: Path) -> Any:
    if medium.suffix.lower() not in IMAGE_EXTENSIONS and not medium.exists():  # e.g. a folder's name mistyped
        raise InputError(f"{medium}: no such file or folder")
    if medium.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(f"{medium}: not an image or video file (unknown suffix "
                         f"{medium.suffix or '(none)'!r})")
    from pipelines.search import check_min_side

    image = read_image(medium, "rgb")  # upright, as displayed: boxes in its frame
    check_min_side(str(medium), image.shape[1], image.shape[0], what="image")
    return image


class ImageBatch:
    """Consecutive still images searched together: side by side on the CPU's workers (any
    queries and sizes), else consecutive images of one query and one size in one batch like video
    frames (on CUDA the network's cost per image drops with the batch); lines keep input order."""

    def __init__(self, workers: Any, out: Path, names: OutputNames, summary: RunSummary,
                 lines: list[dict[str, Any]], size: int, advance: Callable[[int], None]) -> None:
        self.workers, self.out, self.names, self.summary = workers, out, names, summary
        # Side by side, a few media per worker: one slow medium (a scene without the object is
        # searched again for a smaller one) does not leave the other workers idle for long.
        self.lines, self.advance = lines, advance
        self.size = max(1, size) if workers.workers == 1 else max(size, 4 * workers.workers)
        self.items: list[tuple[Any, Path, Any]] = []

    def add(self, prepared: Any, medium: Path, image: Any) -> None:
        self.items.append((prepared, medium, image))
        if len(self.items) == self.size:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        results = self.workers.find_pairs([prepared for prepared, _, _ in items],
                                          [image for _, _, image in items],
                                          sources=[str(medium) for _, medium, _ in items])
        for (_, medium, _), result in zip(items, results):
            name = self.names.take(medium)
            save_image(self.out / f"{name}.heat.png", result.heat_png())
            save_image(self.out / f"{name}.highlight.jpg", result.highlight())
            self.summary.images += 1
            self.summary.detections += len(result.detections)
            self.lines.append({**result.to_json(), "highlight": f"{name}.highlight.jpg"})
        self.advance(len(items))


def _search_video(workers: Any, prepared: Any, medium: Path, out: Path, names: OutputNames,
                  save_heatmaps: bool, batch: int, advance: Callable[[int], None],
                  summary: RunSummary) -> Iterator[dict[str, Any]]:
    from pipelines.frames import frames_and_highlights

    name = names.take(medium)
    with frames_and_highlights(medium, out / f"{name}.highlight.mp4", batch) as (reader, writer):
        for indices, frames in reader:
            results = workers.find_each(prepared, frames, sources=[str(medium)] * len(frames),
                                        frames=indices)
            for result in results:
                writer.write(result.highlight())
                if save_heatmaps:
                    save_image(out / f"{name}.heat" / f"{result.frame:06d}.png", result.heat_png())
                summary.detections += len(result.detections)
                yield {**result.to_json(), "highlight": f"{name}.highlight.mp4"}
            summary.frames += len(frames)
            advance(len(frames))
    if reader.error is not None:
        raise InputError(reader.error)
    summary.skipped.extend(getattr(reader, "skipped", []))  # a frame folder's unreadable/mis-sized files
