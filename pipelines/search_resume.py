"""A killed `synth search` goes on where it stopped: each still image's ``detections.jsonl`` line is
appended, with its output stem and its files' sizes and times of change, to ``.synth-search-progress``
in ``--out`` once its heat map and highlight are written (flushed: a kill loses at most the media
under way). A rerun with the same key (:func:`search_key`: the network, the settings that decide the
results and the jobs in order) keeps those stills' outputs and lines, unless the medium, the query or
its mask changed since (their size or time of change) or an output is missing; the rest is searched
again. Another key starts over (:class:`pipelines.output_record.OutputRecord` clears the older run's
outputs). Videos, failed media and bad ``--pairs`` lines are not recorded: a rerun does them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Iterator

from augment.atomic_files import naming_errors, record_file
from augment.system import OPENCV_DISTRIBUTIONS, package_versions
from pipelines.output_record import inputs_key, made_ours, progress_entries
from pipelines.search_jobs import SearchJob

logger = logging.getLogger(__name__)

PROGRESS_FILE = ".synth-search-progress"
STILL_OUTPUTS = (".heat.png", ".highlight.jpg")  # a still's outputs beside its stem
# Attributes of the network search that are how it runs, not what it finds (chosen per run from the
# job list, which the key holds already), or what it has said (a warning given once a search).
_RUNTIME = {"onnx", "warned_unseen"}


def search_key(searcher: Any, jobs: list[SearchJob], **settings: Any) -> str:
    """The key of a search run: the network's weights, the searcher's settings (thresholds, sizes,
    mirror, fusion model, device type), ``settings`` (heat maps saved, batch, temporal mode, initial
    box) and the jobs in order. Files' sizes and times are checked per medium instead, so one photo
    edited between the runs is searched again, not all of them."""
    from pipelines.segmenter import weights_digest

    network = {name: value for name, value in vars(searcher.network).items()
               if isinstance(value, (str, int, float, bool, tuple, type(None))) and name not in _RUNTIME}
    verification = getattr(searcher, "verification", None)
    model_name = getattr(searcher, "model_name", None)
    model = getattr(searcher.network, "model", None)
    device = getattr(searcher.network, "device", getattr(searcher, "device", None))
    return inputs_key({
        # The untrained network's own layers (its conversion trunk, its edge head) are drawn at random
        # in each process but read out as nothing (its conversion's residual is zero): its results are
        # the pretrained backbone's, the same in every run. A trained network is its weights.
        "model": None if model is None or model_name == "untrained" else weights_digest(model),
        "model_name": model_name, "device": str(getattr(device, "type", device)),
        "threshold": getattr(searcher, "threshold", None),
        "heat_map_threshold": getattr(searcher, "heat_map_threshold", None),
        "heat_boxes": getattr(searcher, "heat_boxes", None), "network": network,
        # The model's own fields, not the file it was read from (the same model from another path).
        "fusion": None if verification is None else verification.model.to_json(),
        "settings": settings, "versions": _versions(),
        "jobs": [[str(job.query), str(job.medium), str(job.query_mask), job.error] for job in jobs],
    }, [])


def _versions() -> dict[str, str | None]:
    """synth's version and those of the packages whose arithmetic the search runs on: after an upgrade
    the same command starts over rather than keeping an older synth's lines beside new ones. OpenCV's
    is whichever of its wheels provides cv2 (the headless one always named, as before: a headless-only
    install's key is what it was)."""
    versions = package_versions(("synth", "torch", "onnxruntime", "opencv-python-headless", "numpy"))
    others = package_versions(tuple(name for name in OPENCV_DISTRIBUTIONS if name not in versions))
    return {**versions, **{name: version for name, version in others.items() if version is not None}}


def file_stats(job: SearchJob) -> list[list[int] | None]:
    """Size and time of change (ns) of the job's medium, query and query mask (None: none or missing)."""
    stats: list[list[int] | None] = []
    for path in (job.medium, job.query, job.query_mask):
        try:
            stat = os.stat(path) if path is not None else None
        except OSError:
            stat = None
        stats.append(None if stat is None else [stat.st_size, stat.st_mtime_ns])
    return stats


class SearchProgress:
    """The progress file of one run: the done stills a killed run of the same key left
    (:meth:`resumed`), and each still this run finishes (:meth:`done`)."""

    def __init__(self, out: Path, key: str) -> None:
        self.out, self.key = out, key
        self.path = out / PROGRESS_FILE
        self.earlier = {entry["job"]: entry for entry in progress_entries(self.path, key)
                        if type(entry.get("job")) is int and isinstance(entry.get("stem"), str)
                        and isinstance(entry.get("line"), dict)}
        self.kept = 0  # stills whose outputs and line the killed run left: kept, not searched again
        self._file: IO[str] | None = None

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        """The progress file open for :meth:`done` (once the output record is set: an older run's
        outputs cleared), appended to where a killed run is resumed, else started afresh."""
        made_ours(self.path, bool(self.earlier))
        with record_file(self.path, "a" if self.earlier else "w") as file:
            if not self.earlier:
                with naming_errors(self.path):
                    file.write(json.dumps({"key": self.key}) + "\n")
                    file.flush()
            self._file = file
            try:
                yield
            finally:
                self._file = None

    def resumed(self, index: int, job: SearchJob, stem: str) -> dict[str, Any] | None:
        """The detections.jsonl line of job ``index`` as the killed run wrote it, where that run
        finished it under ``stem`` (the name this run gives it), its files unchanged and its outputs
        there; else None (searched again)."""
        entry = self.earlier.pop(index, None)
        if entry is None:
            return None
        outputs = [self.out / f"{entry['stem']}{suffix}" for suffix in STILL_OUTPUTS]
        if entry["stem"] != stem or entry.get("stats") != file_stats(job) or not all(p.is_file() for p in outputs):
            # Not kept: its outputs go now, as a new run's clearing would take them (the medium may fail
            # this time, or be named otherwise: an edited photo's old heat map stayed beside its error).
            for path in outputs:
                path.unlink(missing_ok=True)
            return None
        self.kept += 1
        logger.info("%s: searched by the killed run this one resumes; kept", job.medium)
        return entry["line"]

    def done(self, index: int, stats: list[list[int] | None], stem: str, line: dict[str, Any]) -> None:
        """Job ``index`` is done: its outputs are written (``stats``: its files' as read)."""
        assert self._file is not None
        with naming_errors(self.path):  # a full disk: the progress file named, not "file system"
            self._file.write(json.dumps({"job": index, "stats": stats, "stem": stem, "line": line}) + "\n")
            self._file.flush()  # after its files: a still listed here is whole

