"""The outputs of `synth segment`: per image a label map, a confidence map and an overlay; classes.json.

``NAME.png``: 8-bit, value = class index (classes.json gives the names, in index order);
``NAME.confidence.png``: 8-bit, 255 x the winning class's probability; ``NAME.overlay.jpg``: the
photo with each class tinted. Images sharing a name, or whose outputs would overwrite a file already
in the folder that no earlier run wrote (a photo ``b.png`` segmented into its own folder), get ``-2``,
``-3`` ... suffixes. An unreadable image is skipped and reported, the others are written. A run
first removes what an earlier run wrote into the folder (:mod:`pipelines.output_record`), so the
folder holds this run's outputs only; but a rerun of a killed run with the same checkpoint and photos
keeps the photos it finished (listed, after their files, in ``.synth-segment-progress``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import numpy as np

from augment.atomic_files import naming_errors, record_file
from augment.imageio import InputError, is_image_path, read_image, save_image
from augment.outputs import OutputNames
from augment.pixel_limit import SEGMENT_WORK, pixel_work
from pipelines.output_record import OutputKinds, OutputRecord, inputs_key, made_ours, progress_entries
from pipelines.segmenter import Segmenter, overlay
from train.segment_config import CLASSES_FILE, write_classes

SEGMENT_OUTPUTS = OutputKinds("segment", (".png", ".confidence.png", ".overlay.jpg"), (CLASSES_FILE,))
# A record beside .synth-segment-outputs: the run's key, then a line per photo done ({"path", "stem"});
# a run of another key starts it afresh.
PROGRESS_FILE = ".synth-segment-progress"


@dataclass
class SegmentSummary:
    images: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    resumed: int = 0  # images whose outputs a killed run of the same key had written: kept, not redone


def done_photos(out: Path, key: str) -> dict[str, str]:
    """Photo path -> stem of each photo a run of ``key`` finished in ``out`` (none for another key)."""
    return {e["path"]: e["stem"] for e in progress_entries(out / PROGRESS_FILE, key)
            if isinstance(e.get("path"), str) and isinstance(e.get("stem"), str)}


def run_segment(segmenter: Segmenter, images: list[Path], out: Path,
                advance: Callable[[int], None] | None = None) -> SegmentSummary:
    """Segment ``images`` into ``out``. A rerun of a killed run (same checkpoint, same photos: their
    paths, sizes and times of change) keeps the photos it finished and goes on with the rest."""
    key = inputs_key({"model": segmenter.model_id}, images)
    done = done_photos(out, key)
    with OutputRecord(out, SEGMENT_OUTPUTS, images, keep=bool(done)) as record:
        write_classes(out / CLASSES_FILE, segmenter.classes)
        # What is left in the folder once an earlier run's outputs are cleared (or, resuming, set aside) is
        # the user's (an input b.png segmented into its own folder): never overwritten, b's outputs are
        # named b-2 instead.
        earlier = {p.name for p in record.earlier_outputs()} if done else set()
        names = OutputNames(record.add, SEGMENT_OUTPUTS.suffixes,
                            (child.name for child in out.iterdir() if child.name not in earlier))
        summary = SegmentSummary()
        started = time.perf_counter()
        made_ours(out / PROGRESS_FILE, bool(done))  # another team member's, 0644: as the record is
        with record_file(out / PROGRESS_FILE, "a" if done else "w") as progress:
            if not done:
                with naming_errors(out / PROGRESS_FILE):
                    progress.write(json.dumps({"key": key}) + "\n")
            for count, path in enumerate(images, 1):
                stem = done.get(str(path))
                if (stem is not None and names.peek(path) == stem
                        and all((out / f"{stem}{suffix}").is_file() for suffix in SEGMENT_OUTPUTS.suffixes)):
                    names.take(path)
                    summary.images += 1
                    summary.resumed += 1
                else:
                    _segment_one(segmenter, path, out, names, summary, progress)
                if advance:
                    advance(count)
    summary.seconds = time.perf_counter() - started
    return summary


def _segment_one(segmenter: Segmenter, path: Path, out: Path, names: OutputNames, summary: SegmentSummary,
                 progress: IO[str]) -> None:
    try:
        if not is_image_path(path):
            raise InputError(f"{path}: not an image file (unknown suffix {path.suffix or '(none)'!r})")
        with pixel_work(SEGMENT_WORK):
            image = read_image(path, "rgb")
    except InputError as error:
        summary.errors.append(str(error))
        return
    labels, confidence = segmenter.predict(image).at_photo_size()
    name = names.take(path)
    save_image(out / f"{name}.png", labels)
    save_image(out / f"{name}.confidence.png", np.clip(confidence * 255 + 0.5, 0, 255).astype(np.uint8))
    save_image(out / f"{name}.overlay.jpg", overlay(image, labels))
    with naming_errors(out / PROGRESS_FILE):  # a full disk: the progress file named, not "file system"
        progress.write(json.dumps({"path": str(path), "stem": name}) + "\n")
        progress.flush()  # after its files: a photo listed here is whole
    summary.images += 1
