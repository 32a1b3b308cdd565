"""`synth extract`: automatic masks from unlabeled photos, written as cutouts (and pseudo-labelled photos).

Per photo, a trained segmenter (:class:`pipelines.segmenter.Segmenter`) predicts class
probabilities for the photo and for a second view: its mirror image (default) or the photo under
an earlier checkpoint (``reference``), as ST++ ranks pseudo-labels by the agreement of
predictions. Every connected region of each class is then scored:

* ``area``: its share of the photo (``min_area``);
* ``confidence``: the mean probability of its class inside it (``min_confidence``);
* ``stability``: the IoU of the region with the second view's regions of the same class that
  overlap it (``min_stability``).

A region failing a test is rejected for the first one it fails (``small``, ``low_confidence``,
``unstable``). Accepted regions of the cut classes become cutouts in ``objects.parquet``, the same
table hand-made masks give (:mod:`augment.cutouts`), with provenance ``{source: auto, model_id,
round, confidence, stability}``; `synth expand` takes the folder as a source. With
``pseudo_labels`` each photo is also written as a labelled photo (``pseudo-*.parquet``, the
format of :mod:`augment.photo_shards`): accepted regions and confident background keep their
class, every other pixel is ``__ignore__`` (no loss), so `synth train --task segment` can learn
from it. ``extract.json`` counts the masks extracted, accepted and rejected (by reason) and lists
the photos skipped as unreadable; ``previews/`` shows a few photos with accepted regions tinted
and rejected ones outlined in red.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from augment.atomic_files import atomic_write_text
from augment.config import SourceConfig
from augment.cutouts import add_superpixels, write_objects_table
from augment.imageio import InputError, read_image, save_image
from augment.outputs import OutputNames, remove_output_folder
from augment.pixel_limit import SEGMENT_WORK, pixel_work
from augment.photo_shards import IGNORE_CATEGORY, LabelledPhoto, photo_row, remove_row_shards, write_row_shards
from augment.resizing import resize_labels
from augment.schema import MANIFEST_FILE, OBJECTS_FILE, shard_name
from augment.shards import check_manifest_kind, write_manifest
from augment.sources import Skip, skipped_summary
from augment.validation import is_int, is_number
from pipelines.extract_parts import CHUNK_PHOTOS, SUMMARY_FILE, ExtractParts, run_key
from pipelines.extract_regions import cutout_row, preview_image, pseudo_label_values, score_regions
from pipelines.segmenter import Segmenter
from pipelines.terminal import counted

logger = logging.getLogger(__name__)

PREVIEWS_FOLDER = "previews"  # drawings of the first photos' regions
REJECT_REASONS = ("small", "low_confidence", "unstable")


@dataclass
class ExtractConfig:
    """Filters of `synth extract` (the ``extract:`` keys of a selftune config)."""

    min_area: float = 0.002  # a region's share of the photo's pixels, at least
    min_confidence: float = 0.75  # mean probability of the region's class inside it, at least
    min_stability: float = 0.75  # IoU with the second view's prediction, at least
    cut_classes: list[str] = field(default_factory=list)  # classes cut out as objects; empty = all but the background
    pseudo_labels: bool = True  # also write the photos with their trusted pixels labelled (pseudo-*.parquet)
    background_confidence: float = 0.9  # background pixels labelled in pseudo-labels where its probability is at least this
    max_cutout_side: int = 384  # cutouts are stored downscaled so their longer side is at most this
    superpixel_max_side: int = 128  # as `synth expand`'s sources.superpixel_max_side
    previews: int = 6  # photos drawn into previews/

    def __post_init__(self) -> None:
        self._check_types()
        checks = [
            (0.0 <= self.min_area < 1.0, "min_area must lie in [0, 1)"),
            (0.0 <= self.min_confidence <= 1.0 and 0.0 <= self.min_stability <= 1.0,
             "min_confidence and min_stability must lie in [0, 1]"),
            (0.0 <= self.background_confidence <= 1.0, "background_confidence must lie in [0, 1]"),
            (self.max_cutout_side >= 16 and self.superpixel_max_side >= 16, "max_cutout_side and superpixel_max_side >= 16"),
            (self.previews >= 0, "previews must be at least 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _check_types(self) -> None:
        """Each value of its field's type: a string where a number belongs is one line naming the key,
        not a failed comparison of the range checks."""
        special = {"cut_classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
                                   "a list of class names"),
                   "pseudo_labels": (lambda v: isinstance(v, bool), "true or false")}
        for spec in fields(self):
            check, expected = special.get(spec.name) or (
                (is_int, "a whole number") if spec.type == "int" else (is_number, "a number"))
            value = getattr(self, spec.name)
            if not check(value):
                raise ValueError(f"{spec.name}: expected {expected}, got {value!r}")


@dataclass
class ExtractSummary:
    images: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    masks: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {reason: 0 for reason in REJECT_REASONS})
    cutouts: int = 0
    accepted_by_class: dict[str, int] = field(default_factory=dict)
    pseudo_photos: int = 0
    labelled_fraction: float = 0.0  # share of pseudo-labelled pixels that carry a label (not ignored)
    model_id: str = ""
    reference_model_id: str | None = None
    round: int = 0
    seconds: float = 0.0
    kept: bool = False  # a finished run of the same key was in the folder: its output kept, nothing redone

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> "ExtractSummary":
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})


def _read_ahead(paths: list[Path]) -> Iterator[tuple[Path, np.ndarray | InputError]]:
    """Decode the next photo on a thread while the network runs on this one."""
    def load(path: Path) -> np.ndarray | InputError:
        try:
            with pixel_work(SEGMENT_WORK):
                return read_image(path, "rgb")
        except InputError as error:
            return error

    with ThreadPoolExecutor(1) as pool:
        yield from zip(paths, pool.map(load, paths))


def extract_config(values: dict[str, Any], origin: str) -> ExtractConfig:
    """An :class:`ExtractConfig` from a YAML mapping; a bad key or value is one InputError line
    starting with ``origin`` (the file, and the section where it is one)."""
    known = [spec.name for spec in fields(ExtractConfig)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"{origin}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    try:
        return ExtractConfig(**values)
    except (TypeError, ValueError) as error:
        raise InputError(f"{origin}: {error}") from None


def check_cut_classes(segmenter: Segmenter, config: ExtractConfig, origin: str) -> None:
    """``config.cut_classes`` must be classes of the checkpoint (``origin`` starts the error line)."""
    names = [c.name for c in segmenter.classes]
    unknown = sorted(set(config.cut_classes) - set(names))
    if unknown:
        raise InputError(f"{origin}cut_classes: {', '.join(unknown)} not among the checkpoint's classes "
                         f"({', '.join(names)})")


def check_reference(segmenter: Segmenter, reference: Segmenter | None, origin: str) -> None:
    """The second view's checkpoint must have the checkpoint's classes, in order: its regions are matched
    by class index (``origin``, the reference's name, starts the error line)."""
    if reference is None:
        return
    names, other = [c.name for c in segmenter.classes], [c.name for c in reference.classes]
    if names != other:
        raise InputError(f"{origin}: its classes ({', '.join(other)}) are not the checkpoint's ({', '.join(names)}); "
                         "the reference must be an earlier checkpoint of the same class map")


def run_extract(segmenter: Segmenter, images: list[Path], out: Path, config: ExtractConfig, *, round_index: int = 0,
                reference: Segmenter | None = None, workers: int = 1,
                advance: Callable[[int], None] | None = None) -> ExtractSummary:
    """Extract automatic masks of ``images`` into ``out`` (see the module's doc). The photos are worked
    in chunks kept as they are done, so a rerun of a killed run goes on from its last whole chunk
    (:mod:`pipelines.extract_parts`)."""
    started = time.perf_counter()
    check_cut_classes(segmenter, config, "extract.")  # before anything of an earlier run is removed
    check_reference(segmenter, reference, "reference")
    check_manifest_kind(out, "pseudo")  # an expansion's or photo-shards' folder: its manifest and objects kept
    out.mkdir(parents=True, exist_ok=True)
    names = [c.name for c in segmenter.classes]
    cut = {names.index(n) for n in config.cut_classes} if config.cut_classes else set(range(1, len(names)))
    cutter = SourceConfig(min_area=1, max_cutout_side=config.max_cutout_side)
    summary = ExtractSummary(model_id=segmenter.model_id, round=round_index,
                             reference_model_id=reference.model_id if reference else None)
    labelled = [0, 0]  # labelled pixels, all pixels of the pseudo-labels
    advance = advance or (lambda n: None)
    previews = out / PREVIEWS_FOLDER
    preview_names = OutputNames(suffixes=(".jpg",))  # a/x.jpg and b/x.jpg: x.jpg and x-2.jpg, not one over the other
    row_ids = OutputNames()  # so too the pseudo-label rows' ids: x and x-2, never one id twice (export skips one)
    key = run_key(segmenter.model_id, summary.reference_model_id, config, round_index, images, CHUNK_PHOTOS)
    parts = ExtractParts(out, key)
    finished = parts.finished()
    if finished is not None:  # a rerun of a finished run (same key): its output stays, as segment's and expand's
        logger.info("%s: a finished extract of these photos with this checkpoint and config; kept", out)
        parts.remove()  # left only by a kill between extract.json and their removal
        advance(len(images))
        return replace(ExtractSummary.from_dict(finished), kept=True)
    done = parts.done()
    if done:  # a killed run of the same key: its whole chunks stay, the rest is redone
        logger.info("%d of %d chunks of photos already done; resuming with the rest", len(done),
                    -(-len(images) // CHUNK_PHOTOS))
        _clear_complete_output(out)
        # Pseudo-label shards of chunks not done (a killed run's): redone or, where a chunk now has no
        # readable photo, gone; with the temporaries killed writes left.
        remove_row_shards(out, "pseudo", keep=[shard_name("pseudo", index) for index in done])
        parts.begin()
    state = {"images": 0, "cleared": bool(done)}

    def take_names(path: Path) -> tuple[str, str | None]:
        """The row id and preview name of the next readable photo (replayed for done chunks)."""
        state["images"] += 1
        return row_ids.take(path), preview_names.take(path) if state["images"] <= config.previews else None

    def work(index: int, chunk: list[Path]) -> dict:
        part = ExtractSummary()
        rows: list[dict] = []
        counts = [0, 0]
        ids: list[str] = []
        photos: list[str] = []

        def pseudo_rows() -> Iterator[dict]:
            for path, image in _read_ahead(chunk):
                advance(1)
                if isinstance(image, InputError):
                    part.skipped.append({"path": str(path), "reason": str(image)})
                    logger.warning("skipped %s", image)
                    continue
                if not state["cleared"]:  # a readable photo: only now can this run replace an earlier one's output
                    _clear_earlier_output(out)
                    parts.begin()
                    state["cleared"] = True
                part.images += 1
                row_id, preview = take_names(path)
                photos.append(str(path))
                first, second = segmenter.views(image)
                if reference is not None:
                    second = reference.predict(image)
                regions = score_regions(first, second, config)
                part.masks += len(regions)
                for region in regions:
                    if region.rejected is not None:
                        part.rejected[region.rejected] += 1
                        continue
                    part.accepted += 1
                    name = names[region.class_index]
                    part.accepted_by_class[name] = part.accepted_by_class.get(name, 0) + 1
                    if region.class_index in cut:
                        rows.append(cutout_row(image, path, region, name, cutter, segmenter.model_id, round_index))
                if preview is not None:
                    save_image(previews / f"{preview}.jpg", preview_image(image, first, regions))
                if config.pseudo_labels:
                    values = pseudo_label_values(first, regions, config)
                    counts[0] += int((values < len(names)).sum())
                    counts[1] += values.size
                    full = resize_labels(values, *image.shape[:2])
                    photo = LabelledPhoto(path, image, full, {**dict(enumerate(names)), len(names): IGNORE_CATEGORY},
                                          {"origin": "auto", "model_id": segmenter.model_id, "round": round_index})
                    part.pseudo_photos += 1
                    ids.append(row_id)
                    yield photo_row(row_id, photo, segmenter.segment.store_short_side)

        shards = write_row_shards(pseudo_rows(), out, "pseudo", key, first=index)  # drives the chunk
        add_superpixels(rows, config.superpixel_max_side, workers)
        record = {"summary": part.to_dict(), "labelled": counts, "ids": ids, "photos": photos,
                  "shard": shards[0] if shards else None}
        if state["cleared"]:  # else no photo was readable yet, nothing is written, and the chunk is redone
            parts.save(index, record, rows, segmenter.model_id)
        return record

    saved: dict[int, dict] = {}  # the records of the chunks kept in the parts folder
    for index, start in enumerate(range(0, len(images), CHUNK_PHOTOS)):
        chunk = images[start:start + CHUNK_PHOTOS]
        record = done.get(index)
        if record is None:
            record = work(index, chunk)
        else:
            for path in record["photos"]:
                take_names(Path(path))
            advance(len(chunk))
        if state["cleared"]:
            saved[index] = record
        _add_counts(summary, record["summary"])
        labelled = [labelled[0] + record["labelled"][0], labelled[1] + record["labelled"][1]]
    if summary.images == 0:
        raise InputError(f"no readable photo among the {len(images)} given "
                         f"({skipped_summary([Skip(**s) for s in summary.skipped], 'photo')})")
    rows = [row for index in saved for row in parts.cutouts(index)]
    write_objects_table(rows, out / OBJECTS_FILE, segmenter.model_id)
    shards = [record["shard"] for record in saved.values() if record["shard"]]
    if shards:  # the pseudo-labelled photos' shard list, as every shard folder has one (readers read only these)
        write_manifest(out, {"kind": "pseudo", "shards": shards, "num_rows": sum(s["rows"] for s in shards),
                             "run_hash": key})
    summary.cutouts = len(rows)
    summary.labelled_fraction = labelled[0] / labelled[1] if labelled[1] else 0.0
    summary.seconds = time.perf_counter() - started
    atomic_write_text(out / SUMMARY_FILE, json.dumps({**summary.to_dict(), "config": asdict(config),
                                                      "shards": shards, "run_key": key}, indent=2) + "\n")
    parts.remove()  # extract.json marks the folder complete: a rerun of this key keeps it, another starts over
    return summary


def _add_counts(summary: ExtractSummary, part: dict) -> None:
    """Add a chunk's counts to the run's."""
    summary.images += part["images"]
    summary.skipped.extend(part["skipped"])
    summary.masks += part["masks"]
    summary.accepted += part["accepted"]
    summary.pseudo_photos += part["pseudo_photos"]
    for reason, count in part["rejected"].items():
        summary.rejected[reason] += count
    for name, count in part["accepted_by_class"].items():
        summary.accepted_by_class[name] = summary.accepted_by_class.get(name, 0) + count


def _clear_complete_output(out: Path) -> None:
    """What marks a folder complete (extract.json, the objects table, the manifest): written again at the end."""
    for stale in [out / SUMMARY_FILE, out / OBJECTS_FILE, out / MANIFEST_FILE]:
        stale.unlink(missing_ok=True)


def _clear_earlier_output(out: Path) -> None:
    """Remove an earlier run's output from ``out``: it must not mix with this one's (extract.json, written
    last, marks a complete folder). Called at the first readable photo, so a run given none (exit 2)
    leaves the earlier output as it was."""
    _clear_complete_output(out)
    remove_row_shards(out, "pseudo")  # and the temporaries of killed writes, not those of live ones
    remove_output_folder(out / PREVIEWS_FOLDER)


def summary_counts(summary: dict) -> str:
    """One line of counts for the CLI and the report."""
    rejected = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in summary["rejected"].items())
    return (f"{counted(summary['images'], 'photo')} ({len(summary['skipped'])} skipped): "
            f"{counted(summary['masks'], 'mask')}, {summary['accepted']} accepted, rejected: {rejected}; "
            f"{counted(summary['cutouts'], 'cutout')}")
