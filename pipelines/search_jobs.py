"""What `synth search` is asked to do: one :class:`SearchJob` per (query, medium), from MEDIA
arguments (folders become their images and videos, leaving out what earlier searches wrote) or a
``--pairs`` file, and each job's share of the work for the progress bar. What the jobs write is
:mod:`pipelines.search_outputs`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from augment.imageio import VIDEO_EXTENSIONS, InputError, is_utf8, list_images, name_fix, shown_name
from augment.textfiles import loads_json, read_user_text
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


def expand_media(paths: list[Path], sequence: bool = False, out: Path | None = None,
                 earlier_in_out: set[Path] | None = None) -> list[Path]:
    """Files as given; folders become their images and videos (sorted, recursive), or with
    ``sequence`` stay one medium each (a folder of frames read as one video). A folder that holds
    ``out`` leaves out what an earlier search wrote there (it is cleared, not searched again;
    ``earlier_in_out``: those files, where the caller has them already), and
    what earlier searches wrote into other output folders inside it (:func:`earlier_outputs_below`).
    MEDIA that are all missing are one InputError (a typo in the only path must not clear ``out``)."""
    missing = [path for path in paths if not path.exists()]
    if paths and len(missing) == len(paths):  # refused before an earlier search's outputs are cleared
        raise InputError("; ".join(f"{path}: no such file or folder" for path in missing[:3])
                         + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""))
    if earlier_in_out is None:
        earlier_in_out = earlier_outputs_in(out)
    media: list[Path] = []
    for path in paths:
        if path.is_dir() and sequence:
            media.append(path)
        elif path.is_dir():
            images, others = list_images(path)
            earlier = earlier_in_out | earlier_outputs_below(path)
            videos = [p for p in others if p.suffix.lower() in VIDEO_EXTENSIONS]
            report_left_out([p for p in others if p.suffix.lower() not in VIDEO_EXTENSIONS
                              and (not earlier or p.resolve() not in earlier)], path)
            found = sorted(p for p in images + videos if not earlier or p.resolve() not in earlier)
            if not found:
                raise InputError(f"{path}: no images or videos in this folder")
            media.extend(found)
        else:
            media.append(path)
    return media


def earlier_outputs_in(out: Path | None) -> set[Path]:
    """The files an earlier search wrote into ``out`` (as its record names them), resolved."""
    return {p.resolve() for p in OutputRecord(out, SEARCH_OUTPUTS).earlier_outputs()} if out is not None else set()


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


def report_left_out(files: list[Path], folder: Path, one: str = "neither an image nor a video",
                    many: str = "neither images nor videos") -> None:
    """A folder's files that the command does not read (notes, a RAW photo, Thumbs.db): counted on the
    console, each one logged (-v), not silently dropped (`synth search`; `synth segment` and `extract`
    say 'not images')."""
    for path in files:
        logger.info("%s: %s; left out", path, one)
    if files:
        logger.warning("%s: %d file(s) that are %s left out (%s%s)", folder, len(files), many,
                       files[0].name, ", ..." if len(files) > 1 else "")


def read_pairs(path: Path) -> list[SearchJob]:
    """Jobs of a JSONL file of {"query": path, "medium": path[, "query_mask": path]} lines.

    Relative paths are taken from the file's folder. A bad line becomes a job with ``error``.
    """
    if not path.is_file():
        raise InputError(f"{path}: " + ("a folder; --pairs takes a JSONL file" if path.is_dir() else "no such pairs file"))
    text = read_user_text(path, "JSON lines")  # a byte-order mark (Notepad's, Excel's) is no JSON: line 1 failed
    jobs: list[SearchJob] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = loads_json(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) \
                    or not isinstance(entry.get("medium"), str):
                raise ValueError('expected {"query": path, "medium": path}')
            if entry.get("query_mask") is not None and not isinstance(entry["query_mask"], str):
                raise ValueError(f'"query_mask" must be a path, not {entry["query_mask"]!r}')  # else silently unmasked
            # An empty path is the pairs file's own folder: "medium": "" searched every image beside it.
            empty = [key for key in ("query", "medium", "query_mask") if isinstance(entry.get(key), str)
                     and not entry[key].strip()]
            if empty:
                raise ValueError(f'"{empty[0]}" is an empty path')
            # A name that is not UTF-8 ("m\\udcff.png"): refused when typed (pipelines.cli), left out of a
            # folder; from a line it was searched into an output file of that name and a lone surrogate in JSON.
            odd = [entry[key] for key in ("query", "medium", "query_mask") if isinstance(entry.get(key), str)
                   and not is_utf8(entry[key])]
            if odd:
                raise ValueError(f"{shown_name(odd[0])}: a name that is not UTF-8; {name_fix(odd[0])}")
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
    # Read once, not per line: an --out holding an earlier search of 2,000 images took 0.4 s a line to
    # read its record again (200 lines of one-image folders: 79 s before the first search, 0.07 s in a
    # new --out), and a folder named on many lines (queries searched in one shop/) was listed each time.
    earlier_in_out: set[Path] | None = None
    listed: dict[Path, list[Path] | InputError] = {}
    for job in jobs:
        if sequence or job.error is not None or job.medium is None or not job.medium.is_dir():
            expanded.append(job)
            continue
        if job.medium not in listed:
            if earlier_in_out is None:
                earlier_in_out = earlier_outputs_in(out)
            try:
                listed[job.medium] = expand_media([job.medium], False, out, earlier_in_out)
            except InputError as error:
                listed[job.medium] = error
        media = listed[job.medium]
        if isinstance(media, InputError):
            expanded.append(SearchJob(job.query, job.medium, job.query_mask, error=str(media)))
            continue
        expanded.extend(SearchJob(job.query, medium, job.query_mask) for medium in media)
    return expanded


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
