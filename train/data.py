"""Training pairs streamed from the Parquet shards that `synth expand` writes.

A pair is what the search network sees at inference time:

* **query**: the clean cutout of one object (from ``objects.parquet``), lightly augmented (flip,
  scale, colour jitter) and centred on a plain background with a margin, like a catalogue photo;
  ``query_mask`` is its alpha.
* **medium**: a composite scene that contains it, resized to ``medium_size``×``medium_size``. The
  aspect ratio is *not* kept: composites are square by default and a plain resize keeps every
  pixel of the target, where a letterbox would waste input on padding.
* **target**: the union of the visible masks of *all* instances of that cutout in the composite.

With probability ``negative_fraction`` the query is instead a cutout absent from the composite and
the target is all zero.

Hold-out is by cutout: :func:`cutout_split` hashes the cutout id, so a cutout is in the same split
in every shard set and evaluation queries are objects never used as training queries (they may
still appear as distractors in training media).

Streaming: :class:`ShardPairs` is an ``IterableDataset`` whose unit of work is one Parquet row
group. Units are shuffled per epoch (same order on every process) and unit ``u`` goes to global
slot ``u mod (world_size · num_workers)``, slot = ``rank · num_workers + worker``, so every row is
read exactly once per epoch across DDP ranks and DataLoader workers. Each slot streams its rows
through a seeded shuffle buffer and decodes them inside the worker. Every sample carries the slot's
``worker`` id and a ``position`` in that slot's stream (the last row accounted for up to that
sample), which is what a checkpoint stores to resume the stream exactly (:meth:`ShardPairs.resume`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from augment.imageio import InputError, decode_image, resize_image
from augment.open_files import ready_for_loader_workers
from augment.schema import OBJECTS_FILE, box_outside, object_problem, stored_bytes
from augment.shards import COMPOSITE_COLUMNS, manifest_shards, one_line, open_shard
from augment.storage import Place, as_place, open_parquet
from augment.system import ignore_stop_signals
from augment.validation import check_instance, is_int, is_number, is_pair
from train.queries import CutoutLibrary, may_be_negative, pasted_cutouts, render_query
from train.resumable_stream import ResumableStream, checked_seed

logger = logging.getLogger(__name__)

SPLITS = ("train", "eval", "all")
OPEN_SHARDS = 4  # shards a loader process keeps open (ShardPairs._parquet; a file each)


def cutout_split(cutout_id: str, eval_fraction: float) -> str:
    """``"eval"`` for a stable ``eval_fraction`` of cutout ids, ``"train"`` for the rest.

    A hash rather than Python's ``hash()``: the latter is salted per process, and every DataLoader
    worker and DDP rank must agree.
    """
    digest = hashlib.sha1(cutout_id.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2.0**64 < eval_fraction else "train"


def in_split(cutout_id: str, split: str, eval_fraction: float) -> bool:
    return split == "all" or cutout_split(cutout_id, eval_fraction) == split


def list_shards(folder: Place | str) -> list[Place]:
    """The composite shards ``folder``'s manifest lists (checked readable), with ``objects.parquet`` beside them.

    ``folder`` may be an object-store URI (``s3://bucket/prefix``): row groups are then read with
    ranged requests, each by the rank and worker it belongs to."""
    folder = as_place(folder)
    if not folder.is_dir():  # a shard file named instead of its folder is told so, not called missing
        raise InputError(f"{folder}: " + ("a file; --shards takes the folder `synth expand` wrote"
                                          if folder.exists() else "no such shard folder"))
    shards = manifest_shards(folder)
    if not (folder / OBJECTS_FILE).is_file():
        raise InputError(f"{folder}: no {OBJECTS_FILE} beside the shards (queries come from it)")
    open_shard(folder / OBJECTS_FILE)
    return shards


# Largest side a medium (or a photo for segmentation) is resized or cropped to.
MAX_MEDIUM_SIZE = 4096

@dataclass
class PairConfig:
    """How training pairs are made."""

    query_size: int = 128  # query side in pixels (square)
    medium_size: int = 256  # medium side in pixels (square; composites are resized, not letterboxed)
    negative_fraction: float = 0.25  # chance that a pair's query is absent from the medium (all-zero target)
    eval_fraction: float = 0.1  # fraction of cutout ids held out for evaluation (by hash of the id)
    query_fill: tuple[float, float] = (0.6, 0.9)  # object's longer side / query side: the rest is margin
    colour_jitter: float = 0.1  # brightness, contrast and saturation change by up to ± this fraction
    shuffle_buffer: int = 256  # rows held per worker for shuffling (raw bytes: decoding happens after)
    categories: tuple[str, ...] = ()  # label-head classes: a sample's label is its query's index here, or -1
    hard_negative_fraction: float = 0.0  # share of negatives whose query shares a category with an object in the medium


def pair_checks(c: PairConfig) -> list[tuple[bool, str]]:
    """(ok, message) of each pair setting: :class:`train.config.TrainConfig`'s checks of these keys, and
    the datasets' of a PairConfig made in Python (see :func:`check_pairs`)."""
    sizes = [(name, getattr(c, name), low) for name, low in (("query_size", 32), ("medium_size", 32),
                                                             ("shuffle_buffer", 1))]
    fractions = [(name, getattr(c, name)) for name in ("negative_fraction", "colour_jitter", "hard_negative_fraction")]
    return [
        *((is_int(value) and value >= low, f"{name} must be a whole number, at least {low}, got {value!r}")
          for name, value, low in sizes),
        (not (is_int(c.query_size) and is_int(c.medium_size)) or (c.query_size <= 1024 and c.medium_size <= MAX_MEDIUM_SIZE),
         f"query_size must be at most 1024 and medium_size at most {MAX_MEDIUM_SIZE}"),
        *((is_number(value) and 0.0 <= value <= 1.0, f"{name} must lie in [0, 1], got {value!r}")
          for name, value in fractions),
        (is_number(c.eval_fraction) and 0.0 <= c.eval_fraction < 1.0, "eval_fraction must lie in [0, 1)"),
        (is_pair(c.query_fill) and 0.0 < c.query_fill[0] <= c.query_fill[1] <= 1.0,
         "query_fill must be 0 < lo <= hi <= 1"),
    ]


def check_pairs(config: PairConfig, name: str = "config") -> None:
    """A PairConfig given to a dataset: of its type (a TypeError naming ``name``) and range-checked as
    a training config's keys are (a ValueError naming the first bad one; a medium_size of 0 was
    OpenCV's assertion in every loader worker, a negative_fraction of 2 taken without a word)."""
    check_instance(config, PairConfig, name)
    for ok, message in pair_checks(config):
        if not ok:
            raise ValueError(f"{name}: {message}")


def _shuffled(rows: Iterator[tuple], size: int, rng: np.random.Generator) -> Iterator[tuple]:
    """A shuffle buffer: hold ``size`` rows and emit a random one as each new row arrives."""
    buffer: list[tuple] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = row
    rng.shuffle(buffer)
    yield from buffer


class ShardPairs(ResumableStream):
    """(query, query_mask, medium, target) pairs from a folder of composite shards.

    ``split``: ``train`` / ``eval`` keep queries whose cutout is in that hold-out split; ``all``
    keeps every cutout. ``rank`` / ``world_size`` shard the stream across DDP processes (the
    dataset does it itself; no ``DistributedSampler``).

    Samples are dicts of uint8 tensors (``query`` 3×q×q, ``query_mask`` 1×q×q, ``medium`` 3×M×M,
    ``target`` 1×M×M in {0, 1}; conversion to float happens on the training device, which keeps
    worker-to-main transfers 4× smaller), ``positive`` (bool) and the bookkeeping ints ``worker``,
    ``position``, ``corrupt`` (rows this worker skipped as undecodable so far in the epoch or since
    a resume, including those right after this sample), and
    ``unit`` / ``row`` (row group in :attr:`units` and row within it: where the medium came from).
    """

    def __init__(self, folder: Place | str, config: PairConfig, split: str = "train", seed: int = 0,
                 rank: int = 0, world_size: int = 1, instance_boxes: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        check_pairs(config)
        seed = checked_seed(seed)
        super().__init__(rank, world_size)
        self.folder = as_place(folder)
        self.shards = self._find_shards()
        self.config = config
        self.split = split
        self.seed = seed
        # Samples also carry ``boxes`` (K x 4 float, x0, y0, x1, y1 in medium pixels): each instance of the
        # query, whole where an occluder splits it (not the target's connected regions). Not batchable.
        self.instance_boxes = instance_boxes
        self._library: CutoutLibrary | None = None
        self._categories: dict[str, list[str]] | None = None
        self._parquets: dict[Place, pq.ParquetFile] = {}  # the shards last read, open (see _parquet)
        # One unit of work per row group. Reading only the footers keeps this cheap.
        self.units: list[tuple[Place, int]] = [
            (path, group) for path in self.shards for group in range(open_shard(path).num_row_groups)]
        # Counters of the current process (num_workers=0); with workers, read ``corrupt`` off the samples.
        self.stats = {"rows": 0, "samples": 0, "corrupt": 0, "no_query": 0}

    def _find_shards(self) -> list[Path]:
        """The shard files streamed (a subclass may read other folders)."""
        return list_shards(self.folder)

    def _by_category(self, cutouts: CutoutLibrary, pool: list[str]) -> dict[str, list[str]]:
        """The split's cutout ids per category (computed once per worker)."""
        if self._categories is None:
            self._categories = {}
            for cid in pool:
                self._categories.setdefault(cutouts.category(cid), []).append(cid)
        return self._categories

    def _cutouts(self) -> CutoutLibrary:
        if self._library is None:  # opened lazily, so each worker maps the file itself
            self._library = CutoutLibrary(self.folder / OBJECTS_FILE)
        return self._library

    # Optional columns read where a shard has them; _pair gets them as ``extra``. A composite's
    # ``params`` name every cutout pasted into it, also those too hidden to be labelled.
    extra_columns: tuple[str, ...] = ("params",)

    def _rows(self, units: list[int]) -> Iterator[tuple]:
        """(unit, row, id, image bytes, mask bytes, objects, extra) per row; a row group whose pages cannot
        be read gives its rows with ``None`` bytes, so they are counted as corrupt like undecodable rows."""
        for unit in units:
            path, group = self.units[unit]
            parquet = self._parquet(path)
            extra = [c for c in self.extra_columns if c in parquet.schema_arrow.names]
            try:
                table = parquet.read_row_group(group, columns=[*COMPOSITE_COLUMNS, *extra])
            except (pa.ArrowException, OSError) as error:
                logger.warning("%s: row group %d is unreadable (%s); its rows are skipped", path.name, group,
                               one_line(error))
                for index in range(parquet.metadata.row_group(group).num_rows):
                    yield unit, index, f"{path.name}:{group}:{index}", None, None, [], {}
                continue
            extras = {c: table.column(c).to_pylist() for c in extra}
            for index, row in enumerate(table.select(list(COMPOSITE_COLUMNS)).to_pylist()):
                # A null picture (a shard another tool wrote) is empty bytes, a null objects list none:
                # the row is then counted as corrupt, not a TypeError in the loader.
                yield (unit, index, row["id"], stored_bytes(row, "image"), stored_bytes(row, "mask"),
                       row["objects"] or [], {c: v[index] for c, v in extras.items()})

    def _parquet(self, path: Place) -> pq.ParquetFile:
        """``path`` open, its footer read once while it is among the last OPEN_SHARDS read: opened per row
        group, a 100,000-row shard's 7 MB footer (3,125 groups) took 90 ms to parse, its group 0.7 ms to read."""
        parquet = self._parquets.pop(path, None) or open_parquet(path)
        self._parquets[path] = parquet  # the most recent last
        while len(self._parquets) > OPEN_SHARDS:
            del self._parquets[next(iter(self._parquets))]
        return parquet

    def __getstate__(self) -> dict:
        # Open shards are no pickle's business (a spawned loader worker opens its own): a dataset read
        # in process first could not be sent to spawn / forkserver workers.
        return {**self.__dict__, "_parquets": {}}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, slot, slots, skip = self._worker_slot()
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.units))
        mine = [int(unit) for u, unit in enumerate(order) if u % slots == slot]
        cutouts = self._cutouts()
        pool = [cid for cid in cutouts.ids() if in_split(cid, self.split, self.config.eval_fraction)]
        corrupt = 0
        # A sample is held back until the next good row (or the stream's end), so the rows skipped
        # after it are accounted for in its ``position`` and ``corrupt``: a resume after it then
        # neither re-reads nor re-counts them, and trailing corrupt rows are still reported.
        held: dict[str, torch.Tensor] | None = None
        position = -1
        rows = _shuffled(self._rows(mine), self.config.shuffle_buffer,
                         np.random.default_rng([self.seed, self.epoch, slot, slots]))
        for position, (unit, index, composite_id, image, mask, objects, extra) in enumerate(rows):
            if position <= skip:
                continue
            self.stats["rows"] += 1
            # Seeded by the row itself, so a sample is the same whatever the worker count or resume point.
            rng = np.random.default_rng([self.seed, self.epoch, unit, index])
            try:
                if image is None:
                    raise InputError(f"composite {composite_id}: in an unreadable row group")
                sample = self._pair(image, mask, objects, composite_id, cutouts, pool, rng, extra)
            except InputError as error:
                corrupt += 1
                self.stats["corrupt"] += 1
                logger.warning("skipping corrupt row %s of %s: %s", composite_id, self.units[unit][0].name, error)
                continue
            if sample is None:
                self.stats["no_query"] += 1
                continue
            self.stats["samples"] += 1
            sample.update(worker=torch.tensor(worker), unit=torch.tensor(unit), row=torch.tensor(index))
            if held is not None:
                yield {**held, "position": torch.tensor(position - 1), "corrupt": torch.tensor(corrupt)}
            held = sample
        if held is not None:
            yield {**held, "position": torch.tensor(position), "corrupt": torch.tensor(corrupt)}

    @staticmethod
    def _check_objects(objects: list[dict], composite_id: str) -> None:
        """A hand-edited or another tool's object entry: the row is skipped (InputError), as export skips it."""
        for obj in objects:
            problem = object_problem(obj) or (None if obj.get("cutout_id") is None or isinstance(obj["cutout_id"], str)
                                              else "cutout_id is not text")
            if problem is not None:
                raise InputError(f"composite {composite_id}: an object's {problem}")

    def _pair(self, image_bytes: bytes, mask_bytes: bytes, objects: list[dict], composite_id: str,
              cutouts: CutoutLibrary, pool: list[str], rng: np.random.Generator,
              extra: dict[str, Any] | None = None) -> dict[str, torch.Tensor] | None:
        """Make one pair from a composite row; ``None`` when the row has no query of this split."""
        config = self.config
        self._check_objects(objects, composite_id)
        present = {o.get("cutout_id") for o in objects}
        # A negative's query is none of the cutouts the medium shows, labelled or not: an object
        # pasted and then mostly hidden (under ``min_visible``) is left out of ``objects`` but
        # still shows in part; nor is a positive's one of those (its target would lack that part).
        pasted, hidden = pasted_cutouts((extra or {}).get("params"))
        candidates = sorted(c for c in present - hidden
                            if c in cutouts and in_split(c, self.split, config.eval_fraction))
        query_id = None
        if rng.random() < config.negative_fraction and pool:
            shown = present | pasted
            # Nor a piece of an object the medium shows another piece of (the other half of that coat).
            origins = {cutouts.origin(c) for c in shown if c in cutouts} - {None}
            absent = functools.partial(may_be_negative, cutouts=cutouts, shown=shown, origins=origins)
            # A hard negative: another object of a category the medium holds (drawn only when asked
            # for, so configs without them keep their exact samples).
            hard = config.hard_negative_fraction > 0 and rng.random() < config.hard_negative_fraction
            if hard:
                alike = sorted(c for c in {c for o in present if o in cutouts for c in self._by_category(
                    cutouts, pool).get(cutouts.category(o), ())} if absent(c))
                query_id = alike[int(rng.integers(len(alike)))] if alike else None
            for _ in range(0 if query_id is not None else 16):  # rejection sampling: a composite holds few cutouts
                pick = pool[int(rng.integers(len(pool)))]
                if absent(pick):
                    query_id = pick
                    break
        positive = query_id is None
        if positive:
            if not candidates:
                return None
            query_id = candidates[int(rng.integers(len(candidates)))]
        if not image_bytes or not mask_bytes:  # rows that only reference files by path are not supported
            raise InputError(f"composite {composite_id}: image or mask bytes missing")
        image = decode_image(image_bytes, cv2.IMREAD_COLOR, f"composite {composite_id} image")
        ids = decode_image(mask_bytes, cv2.IMREAD_UNCHANGED, f"composite {composite_id} mask")
        if ids.ndim != 2 or ids.shape != image.shape[:2]:
            raise InputError(f"composite {composite_id}: mask {ids.shape} does not match image {image.shape[:2]}")
        outside = next(filter(None, (box_outside(obj["box"], ids.shape) for obj in objects)), None)  # (checked above)
        if outside is not None:  # a box past the image (hand-edited): skipped, as export skips the row
            raise InputError(f"composite {composite_id}: an object's {outside}")
        size = config.medium_size
        medium = resize_image(image, size, size)
        if positive:
            instances = [o["instance_id"] for o in objects if o.get("cutout_id") == query_id]
            target = resize_image(np.isin(ids, instances).astype(np.float32), size, size) >= 0.5
        else:
            target = np.zeros((size, size), bool)
        query, query_mask = render_query(cutouts.rgba(query_id), config.query_size, rng, config.query_fill,
                                         config.colour_jitter)
        sample = {
            "query": torch.from_numpy(query).permute(2, 0, 1).contiguous(),
            "query_mask": torch.from_numpy(query_mask)[None],
            "medium": torch.from_numpy(medium).permute(2, 0, 1).contiguous(),
            "target": torch.from_numpy(target.astype(np.uint8))[None],
            "positive": torch.tensor(positive),
            "label": torch.tensor(_label_index(cutouts.category(query_id), config.categories)),
        }
        if self.instance_boxes:
            height, width = ids.shape
            scale = torch.tensor([size / width, size / height] * 2)
            boxes = [o["box"] for o in objects if positive and o.get("cutout_id") == query_id]
            sample["boxes"] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale
        return sample


def _label_index(category: str, categories: tuple[str, ...]) -> int:
    return categories.index(category) if category in categories else -1


def make_loader(dataset: ShardPairs, batch_size: int, num_workers: int, pin_memory: bool = False,
                drop_last: bool = True) -> DataLoader:
    """A DataLoader over ``dataset``; each worker batches its own stream and (``drop_last``, for
    training) drops its last partial batch.

    Dropping keeps every training batch the same shape (``torch.compile`` and bf16 kernels like
    that); the rows lost are at most ``batch_size - 1`` per worker per epoch. Evaluation keeps them
    (``drop_last=False``): a held-out set is scored whole, and one smaller than a batch at all.

    The workers ignore Ctrl-C and any SIGTERM but their loader's (:func:`augment.system.ignore_stop_signals`):
    a stop is the training loop's to take at a step's end, and the loader ends its workers when the
    loop lets it go.

    The loader draws its workers' base seed from a generator of its own, not torch's global one: each
    new iterator (an epoch, a resumed run's first batch) took a number from the global generator,
    which moved the training's dropout masks after ``--resume`` (the samples depend on no torch seed).
    """
    generator = torch.Generator().manual_seed(int(getattr(dataset, "seed", 0)))
    ready_for_loader_workers(num_workers)  # a low ulimit -n: each batch in flight holds descriptors
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
                      pin_memory=pin_memory, prefetch_factor=4 if num_workers else None, generator=generator,
                      worker_init_fn=functools.partial(ignore_stop_signals, loader_pid=os.getpid()))
