"""The outputs of `synth segment`: per image a label map, a confidence map and an overlay; classes.json.

``NAME.png``: 8-bit, value = class index (classes.json gives the names, in index order);
``NAME.confidence.png``: 8-bit, 255 x the winning class's probability; ``NAME.overlay.jpg``: the
photo with each class tinted. Images sharing a name, or whose outputs would overwrite a file already
in the folder that no earlier run wrote (a photo ``b.png`` segmented into its own folder), get ``-2``,
``-3`` ... suffixes. An unreadable image is skipped and reported, the others are written. A run
first removes what an earlier run wrote into the folder (:mod:`pipelines.output_record`), so the
folder holds this run's outputs only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from augment.imageio import InputError, is_image_path, read_image, save_image
from augment.pixel_limit import SEGMENT_WORK, pixel_work
from pipelines.output_record import OutputKinds, OutputRecord
from pipelines.search_outputs import OutputNames
from pipelines.segmenter import Segmenter, overlay
from train.segment_config import CLASSES_FILE, write_classes

SEGMENT_OUTPUTS = OutputKinds("segment", (".png", ".confidence.png", ".overlay.jpg"), (CLASSES_FILE,))


@dataclass
class SegmentSummary:
    images: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_segment(segmenter: Segmenter, images: list[Path], out: Path,
                advance: Callable[[int], None] | None = None) -> SegmentSummary:
    with OutputRecord(out, SEGMENT_OUTPUTS, images) as record:
        write_classes(out / CLASSES_FILE, segmenter.classes)
        # What is left in the folder once an earlier run's outputs are cleared is the user's (an input
        # b.png segmented into its own folder): never overwritten, b's outputs are named b-2 instead.
        names = OutputNames(record.add, SEGMENT_OUTPUTS.suffixes, (child.name for child in out.iterdir()))
        summary = SegmentSummary()
        started = time.perf_counter()
        for done, path in enumerate(images, 1):
            try:
                if not is_image_path(path):
                    raise InputError(f"{path}: not an image file (unknown suffix {path.suffix or '(none)'!r})")
                with pixel_work(SEGMENT_WORK):
                    image = read_image(path, "rgb")
            except InputError as error:
                summary.errors.append(str(error))
            else:
                labels, confidence = segmenter.predict(image).at_photo_size()
                name = names.take(path)
                save_image(out / f"{name}.png", labels)
                save_image(out / f"{name}.confidence.png", np.clip(confidence * 255 + 0.5, 0, 255).astype(np.uint8))
                save_image(out / f"{name}.overlay.jpg", overlay(image, labels))
                summary.images += 1
            if advance:
                advance(done)
    summary.seconds = time.perf_counter() - started
    return summary
