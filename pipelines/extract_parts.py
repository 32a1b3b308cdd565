"""Resuming `synth extract`: the photos are worked in chunks, each kept in ``--out`` when done.

A chunk of :data:`CHUNK_PHOTOS` photos writes its pseudo-labelled photos as one shard
(``pseudo-{chunk:05d}.parquet``, as :func:`augment.photo_shards.write_row_shards` writes them, with
the run's key in its footer), its cutouts (superpixels included) as ``.extract-parts/cutouts-NNNNN.parquet``
and then, last, its counts as ``.extract-parts/chunk-NNNNN.json``: a chunk is done when that file is
there and its shard is whole (:func:`augment.shards.verify_shard`). A rerun with the same key
(:func:`run_key`: the checkpoint's model id, the reference's, the filters, the round, the chunks'
size and the photos given, each with its size and time of change) skips the done chunks; another key starts over. The
folder's complete output (``objects.parquet``, ``manifest.json``, ``extract.json`` last) is written
only when every chunk is done, so a run killed at any moment leaves no ``objects.parquet`` or
``manifest.json`` a reader would take for a finished one; ``.extract-parts/`` goes once
``extract.json`` is written. ``extract.json`` keeps the key: a rerun of a finished run with the same
key keeps its output as it is (:meth:`ExtractParts.finished`), as `synth segment` and `synth expand`
keep theirs; another key starts over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from augment.atomic_files import atomic_write_text
from augment.cutouts import write_objects_table
from augment.outputs import remove_output_folder
from augment.schema import MANIFEST_FILE, OBJECTS_FILE, RENDERING_VERSION
from augment.shards import footer_problem, verify_shard
from pipelines.output_record import inputs_key

logger = logging.getLogger(__name__)

PARTS_FOLDER = ".extract-parts"
SUMMARY_FILE = "extract.json"  # written last: marks the folder complete
KEY_FILE = "key.json"
CHUNK_PHOTOS = 64  # photos per resumable chunk (and per pseudo-label shard)


def run_key(model_id: str, reference_id: str | None, config: Any, round_index: int, images: list[Path],
            chunk: int) -> str:
    """What a run's output depends on (and the chunks' size, which numbers them): another key never
    resumes this one's chunks."""
    return inputs_key({"model": model_id, "reference": reference_id, "config": asdict(config), "round": round_index,
                       "chunk": chunk, "rendering": RENDERING_VERSION}, images)


class ExtractParts:
    """The done chunks of run ``key`` in ``out`` (see the module's doc)."""

    def __init__(self, out: Path, key: str) -> None:
        self.out, self.key = out, key
        self.dir = out / PARTS_FOLDER

    def _stored_key(self) -> str | None:
        try:
            return json.loads((self.dir / KEY_FILE).read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def finished(self) -> dict | None:
        """The stored summary (``extract.json``) of a finished run of this key whose output is whole: its
        objects table of the counted cutouts, its manifest listing its shards, each shard's footer of
        this run. None otherwise (no finished run, another key's, or its output since damaged)."""
        try:
            summary = json.loads((self.out / SUMMARY_FILE).read_text(encoding="utf-8"))
            if summary.get("run_key") != self.key:
                return None
            if pq.read_metadata(self.out / OBJECTS_FILE).num_rows != summary["cutouts"]:
                return None
            shards = summary["shards"]
            if shards and json.loads((self.out / MANIFEST_FILE).read_text(encoding="utf-8"))["shards"] != shards:
                return None
            if any(footer_problem(self.out / shard["name"], shard["rows"], self.key) for shard in shards):
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException):
            return None
        return summary

    def done(self) -> dict[int, dict]:
        """Chunk index -> its record, for every chunk of this run that is whole on disk."""
        if self._stored_key() != self.key:
            return {}
        found: dict[int, dict] = {}
        for path in sorted(self.dir.glob("chunk-*.json")):
            try:
                record = json.loads(path.read_text())
                index = int(record["index"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if record.get("key") != self.key or not (self.dir / f"cutouts-{index:05d}.parquet").is_file():
                continue
            shard = record.get("shard")
            if shard and verify_shard(self.out / shard["name"], record["ids"], self.key) is not None:
                continue  # its shard was damaged or replaced: the chunk is redone
            found[index] = record
        return found

    def begin(self) -> None:
        """This run's parts from here on: another run's are removed."""
        if self._stored_key() != self.key or self.dir.is_symlink():
            remove_output_folder(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / KEY_FILE, json.dumps({"key": self.key}) + "\n")

    def save(self, index: int, record: dict, cutouts: list[dict], model_id: str) -> None:
        """Chunk ``index`` done: its cutouts, then its record (which marks it done)."""
        write_objects_table(cutouts, self.dir / f"cutouts-{index:05d}.parquet", model_id)
        atomic_write_text(self.dir / f"chunk-{index:05d}.json", json.dumps({**record, "index": index, "key": self.key}))

    def cutouts(self, index: int) -> list[dict]:
        return pq.read_table(self.dir / f"cutouts-{index:05d}.parquet").to_pylist()

    def remove(self) -> None:
        remove_output_folder(self.dir)
