"""Rendering the rows of `synth expand`: the per-process rendering state (a :class:`RenderJob`
activated once per worker process), each row's seed, and a composite encoded as a shard row.

Row ``i`` is made from ``SeedSequence([seed, i])`` alone (:func:`row_seed`), so the same seed gives
the same row whichever worker or engine renders it (:mod:`augment.engines`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from augment.composite import BackgroundStore, Scene, compose_scene
from augment.config import ExpandConfig
from augment.cutouts import Cutout, warm_cutouts
from augment.imageio import encode_jpeg, encode_label_png
from augment.labelled_backgrounds import LabelledBackground
from augment.schema import row_id
from augment.storage import Place

# Row groups in flight per worker (a local process, a cluster CPU): enough to keep every worker busy
# while a shard is being written, few enough that rendered groups do not pile up waiting for the writer.
GROUPS_IN_FLIGHT_PER_CPU = 3


@dataclass
class RenderJob:
    """Everything a worker needs to render rows; made once per run (the Ray engine ships it through
    Ray's object store, so the cutouts and their superpixels are never recomputed by a worker)."""

    cutouts: list[Cutout]
    backgrounds: list[Place | LabelledBackground]
    config: ExpandConfig
    config_hash: str
    schema: pa.Schema  # the composite schema with this run's hashes in its metadata
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def activate(self) -> None:
        """Make this job the process's rendering state (once per process: a worker reuses its caches)."""
        if _STATE.get("job_id") != self.job_id:
            _init_state(self.cutouts, self.backgrounds, self.config, self.config_hash)
            _STATE["job_id"] = self.job_id



def row_seed(seed: int, index: int) -> int:
    """The seed of row ``index``: independent streams for every (run seed, row)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))



# ----------------------------------------------------------------- per-process state
# Set in the parent before forking the worker pool, so workers share it copy-on-write.
_STATE: dict[str, Any] = {}


def _init_state(cutouts: list[Cutout], background_paths: list[Place | LabelledBackground], config: ExpandConfig, config_hash: str) -> None:
    max_side = int(max(config.composition.width, config.composition.height) / config.composition.background_crop[0])
    provenance = {c.cutout_id: c.provenance for c in cutouts if c.provenance}
    warm_cutouts(cutouts)  # (in the parent of forked workers: those decoded here are shared)
    _STATE.update(cutouts=cutouts, backgrounds=BackgroundStore(background_paths, max_side), config=config, config_hash=config_hash,
                  provenance=provenance)


def render_row(index: int) -> dict[str, Any]:
    """Make and encode composite ``index`` (uses the per-process state)."""
    config: ExpandConfig = _STATE["config"]
    seed = row_seed(config.seed, index)
    scene = compose_scene(_STATE["cutouts"], _STATE["backgrounds"], config.composition, config.distortions, rng=np.random.default_rng(seed))
    return scene_to_row(scene, index, seed, config, _STATE["config_hash"], _STATE["provenance"])


def scene_to_row(scene: Scene, index: int, seed: int, config: ExpandConfig, config_hash: str,
                 provenance: dict[str, dict] | None = None) -> dict[str, Any]:
    """A shard row; ``provenance`` (cutout id -> provenance of automatic cutouts) is carried into its objects."""
    provenance = provenance or {}
    name = row_id(config.output.split, index)
    return {
        "id": name,
        "image": {"bytes": encode_jpeg(scene.image, config.output.jpeg_quality), "path": f"{name}.jpg"},
        "mask": {"bytes": encode_label_png(scene.instances), "path": f"{name}.png"},
        "width": int(scene.image.shape[1]),
        "height": int(scene.image.shape[0]),
        "objects": [
            {
                "instance_id": o.instance_id,
                "cutout_id": o.cutout_id,
                "category": o.category,
                "box": list(o.box),
                "visible_fraction": o.visible_fraction,
                "provenance": provenance.get(o.cutout_id),
            }
            for o in scene.objects
        ],
        "params": json.dumps(scene.params, separators=(",", ":")),
        "seed": seed,
        "config_hash": config_hash,
        **background_columns(scene, name),
    }


def background_columns(scene: Scene, name: str) -> dict[str, Any]:
    """The row's background label columns (null on a plain background)."""
    if scene.background_labels is None:
        return {"background_labels": None, "background_categories": None}
    return {"background_labels": {"bytes": encode_label_png(scene.background_labels), "path": f"{name}-background.png"},
            "background_categories": [{"id": k, "category": v} for k, v in sorted((scene.background_categories or {}).items())]}


def render_range(bounds: tuple[int, int]) -> tuple[int, list[dict[str, Any]]]:
    start, stop = bounds
    return start, [render_row(i) for i in range(start, stop)]


def render_table(start: int, stop: int, schema: pa.Schema) -> pa.Table:
    """Rows ``start``..``stop`` as one row group's table (uses the per-process state)."""
    return pa.Table.from_pylist(render_range((start, stop))[1], schema=schema)
