"""The shards a training run reads, recorded in its checkpoints: ``--resume`` on other shards is refused.

A checkpoint's data position (epoch, the last row consumed per rank and worker) means something only
in the shards it was counted in, so a run resumed with other ``--shards`` would go on with another
data set at positions taken from the first, without a word. A shard set is known by a fingerprint
of what each ``--shards`` entry holds, in order: a folder's manifest (the run that wrote it and
its shards' names, rows and sizes), a shard file's name, rows and run hash. The same data moved to
another folder or bucket keeps its fingerprint; a folder that another ``synth expand`` run rewrote
does not. While a run trains, it holds a shared lock on each local folder it reads and a reader's
lease on each object-store prefix (:func:`reading_shards`), so ``synth expand --overwrite`` cannot
swap the data under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from augment.imageio import InputError
from augment.locking import reading_lock
from augment.reader_lease import reader_lease
from augment.schema import RUN_HASH_KEY
from augment.shards import open_shard, read_manifest
from augment.storage import Location, Place, as_place, file_size, is_remote

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "shards"  # {"paths": [...], "fingerprint": "..."} in a checkpoint


def shard_set(shards: Place | str | list[Place | str]) -> dict[str, Any]:
    """The record of ``shards`` (one entry or several, as ``train`` takes them): their paths as given
    and the fingerprint of what they hold."""
    places = [as_place(s) for s in (shards if isinstance(shards, (list, tuple)) else [shards])]
    digest = hashlib.sha256()
    for place in places:
        digest.update(json.dumps(_contents(place), sort_keys=True).encode() + b"\n")
    return {"paths": [str(p) for p in places], "fingerprint": digest.hexdigest()[:16]}


def _contents(place: Place) -> dict[str, Any]:
    if is_remote(place) or place.is_dir():
        manifest = read_manifest(place)
        # Sizes as listed, else as found: two folders of as many rows differ in their bytes.
        return {"run": manifest.get("run_hash") or manifest.get("fingerprint"),
                "shards": [[e["name"], e["rows"], e.get("bytes") or file_size(place / e["name"])]
                           for e in manifest["shards"]]}
    metadata = open_shard(place).metadata  # a shard file named itself (task segment)
    return {"file": place.name, "rows": metadata.num_rows,
            "run": (metadata.metadata or {}).get(RUN_HASH_KEY, b"").decode()}


def check_same_shards(state: dict[str, Any], current: dict[str, Any], path: Path | str) -> None:
    """Refuse to resume checkpoint ``state`` (read from ``path``) on shards other than its own; a
    checkpoint written before shard sets were recorded resumes with a warning."""
    saved = state.get(CHECKPOINT_KEY)
    now = ", ".join(current["paths"])
    if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), str):
        logger.warning("%s: the checkpoint does not record which shards it was trained on (written by an "
                       "older synth); resuming on %s unchecked", path, now)
        return
    if saved["fingerprint"] == current["fingerprint"]:
        return
    if saved.get("paths") == current["paths"]:
        # The same folders, rewritten since (an expand rerun with other sources, seed or --num):
        # "trained on X, not on X" named no difference.
        raise InputError(f"{path}: the shards in {now} changed since the run was trained on them (fingerprint "
                         f"{saved['fingerprint']}, now {current['fingerprint']}: rewritten, e.g. by another "
                         "synth expand); resume with the shards it started with, or start a new --out "
                         "(init_checkpoint: PATH fine-tunes its weights on these shards)")
    raise InputError(f"{path}: the run was trained on --shards {', '.join(map(str, saved.get('paths', [])))} "
                     f"(fingerprint {saved['fingerprint']}), not on {now} ({current['fingerprint']}); resume "
                     "with the shards it started with, or start a new --out (init_checkpoint: PATH fine-tunes "
                     "its weights on other shards)")


@contextlib.contextmanager
def reading_shards(*entries: Place | str | list[Place | str] | None, what: str = "synth train",
                   create_locks: bool = True) -> Iterator[None]:
    """Hold a shared lock (:func:`augment.locking.reading_lock`) on every local folder of shards in
    ``entries`` (folders, shard files: their folder), and a reader's lease
    (:func:`augment.reader_lease.reader_lease`, naming ``what`` reads) on every object-store prefix,
    until the block ends: writers into them stop meanwhile, and this stops while one writes there.
    ``create_locks=False``: no lock file is made in a local folder that has none (no writer ran there)."""
    folders: dict[Path, Path] = {}
    prefixes: dict[str, Location] = {}
    for entry in entries:
        for place in entry if isinstance(entry, (list, tuple)) else [entry]:
            if place is None:
                continue
            place = as_place(place)
            if isinstance(place, Location):
                # A shard file named itself is leased by its prefix, where its writer's lock is.
                prefix = place.parent if place.name.endswith(".parquet") else place
                prefixes.setdefault(prefix.uri, prefix)
                continue
            folder = place if place.is_dir() else place.parent
            folders.setdefault(folder.resolve(), folder)
    with contextlib.ExitStack() as held:
        for folder in folders.values():
            held.enter_context(reading_lock(folder, create=create_locks))
        for prefix in prefixes.values():
            held.enter_context(reader_lease(prefix, what))
        yield
