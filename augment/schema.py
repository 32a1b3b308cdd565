"""Arrow schemas of the two tables `synth expand` writes.

``objects.parquet``: one row per cutout (the clean object, fetchable later as a query).
``{split}-{index:05d}.parquet``: one row per composite scene.

Images follow the Hugging Face ``datasets`` Image convention (a struct of
``bytes`` and ``path``) and the schema carries the ``huggingface`` metadata key,
so ``datasets.load_dataset("parquet", ...)`` decodes them as images.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from augment.validation import is_number

IMAGE_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# Where an automatic cutout came from (`synth extract`); null for cutouts of hand-made masks.
PROVENANCE_STRUCT = pa.struct(
    [
        pa.field("source", pa.string()),  # "auto"
        pa.field("model_id", pa.string()),  # content hash of the checkpoint that predicted the mask
        pa.field("round", pa.int32()),  # self-tuning round (0 outside `synth selftune`)
        pa.field("confidence", pa.float32()),  # mean class probability inside the region
        pa.field("stability", pa.float32()),  # IoU of the region with the second view's prediction
    ]
)
_PROVENANCE_FEATURES = {
    "source": {"dtype": "string", "_type": "Value"},
    "model_id": {"dtype": "string", "_type": "Value"},
    "round": {"dtype": "int32", "_type": "Value"},
    "confidence": {"dtype": "float32", "_type": "Value"},
    "stability": {"dtype": "float32", "_type": "Value"},
}

OBJECT_STRUCT = pa.struct(
    [
        pa.field("instance_id", pa.int32()),  # value of this instance in the mask PNG
        pa.field("cutout_id", pa.string()),  # row of objects.parquet
        pa.field("category", pa.string()),
        pa.field("box", pa.list_(pa.int32(), 4)),  # x0, y0, x1, y1 (exclusive) of the visible mask
        pa.field("visible_fraction", pa.float32()),  # visible pixels / pixels of the pasted object
        pa.field("provenance", PROVENANCE_STRUCT),  # the cutout's provenance (null: a hand-made mask)
    ]
)


# The categories of a labelled background's label ids (see augment.labelled_backgrounds).
LABEL_STRUCT = pa.struct([pa.field("id", pa.int32()), pa.field("category", pa.string())])


def _hf_metadata(features: dict) -> dict[bytes, bytes]:
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


COMPOSITE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("image", IMAGE_STRUCT),  # JPEG, RGB
        pa.field("mask", IMAGE_STRUCT),  # PNG, 8-bit (16-bit past 255 instances) instance ids, 0 = background
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("objects", pa.list_(OBJECT_STRUCT)),
        pa.field("params", pa.string()),  # JSON of every sampled parameter: replays the row exactly
        pa.field("seed", pa.int64()),  # row seed = SeedSequence([run seed, row index])
        pa.field("config_hash", pa.string()),
        # Composites on labelled backgrounds (copy-paste): the background's label ids where it shows,
        # after the same crop, resize and scene distortions (PNG, 8- or 16-bit, 0 = no label), and the
        # category of each id present. Null for composites on plain images and for photo rows.
        pa.field("background_labels", IMAGE_STRUCT),
        pa.field("background_categories", pa.list_(LABEL_STRUCT)),
    ],
    metadata=_hf_metadata(
        {
            "id": {"dtype": "string", "_type": "Value"},
            "image": {"_type": "Image"},
            "mask": {"_type": "Image"},
            "width": {"dtype": "int32", "_type": "Value"},
            "height": {"dtype": "int32", "_type": "Value"},
            "objects": [
                {
                    "instance_id": {"dtype": "int32", "_type": "Value"},
                    "cutout_id": {"dtype": "string", "_type": "Value"},
                    "category": {"dtype": "string", "_type": "Value"},
                    "box": {"feature": {"dtype": "int32", "_type": "Value"}, "length": 4, "_type": "Sequence"},
                    "visible_fraction": {"dtype": "float32", "_type": "Value"},
                    "provenance": _PROVENANCE_FEATURES,
                }
            ],
            "params": {"dtype": "string", "_type": "Value"},
            "seed": {"dtype": "int64", "_type": "Value"},
            "config_hash": {"dtype": "string", "_type": "Value"},
            "background_labels": {"_type": "Image"},
            "background_categories": [
                {"id": {"dtype": "int32", "_type": "Value"}, "category": {"dtype": "string", "_type": "Value"}}
            ],
        }
    ),
)

OBJECTS_SCHEMA = pa.schema(
    [
        pa.field("cutout_id", pa.string()),  # content hash of the RGBA crop and category
        pa.field("category", pa.string()),
        pa.field("source", pa.string()),  # the source image file
        pa.field("box", pa.list_(pa.int32(), 4)),  # x0, y0, x1, y1 of the crop in the source image
        pa.field("image", IMAGE_STRUCT),  # PNG, RGBA: alpha is the object's mask
        pa.field("superpixels", IMAGE_STRUCT),  # PNG, 16-bit mean-shift superpixel labels (may be smaller)
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("area", pa.int64()),  # mask pixels
        pa.field("provenance", PROVENANCE_STRUCT),  # automatic cutouts: source auto, model, round, scores
        pa.field("source_size", pa.list_(pa.int32(), 2)),  # width, height of the source image (box's frame); null if unknown
    ],
    metadata=_hf_metadata(
        {
            "cutout_id": {"dtype": "string", "_type": "Value"},
            "category": {"dtype": "string", "_type": "Value"},
            "source": {"dtype": "string", "_type": "Value"},
            "box": {"feature": {"dtype": "int32", "_type": "Value"}, "length": 4, "_type": "Sequence"},
            "image": {"_type": "Image"},
            "superpixels": {"_type": "Image"},
            "width": {"dtype": "int32", "_type": "Value"},
            "height": {"dtype": "int32", "_type": "Value"},
            "area": {"dtype": "int64", "_type": "Value"},
            "provenance": _PROVENANCE_FEATURES,
            "source_size": {"feature": {"dtype": "int32", "_type": "Value"}, "length": 2, "_type": "Sequence"},
        }
    ),
)

OBJECTS_FILE = "objects.parquet"
MANIFEST_FILE = "manifest.json"
BACKGROUND_CATEGORY = "background"  # value 0 of a source (see train.segment_config)


def object_problem(obj: Any, size: tuple[int, int] | None = None) -> str | None:
    """What is wrong with one entry of a row's ``objects`` (None: nothing), as the schema types it: an
    integer instance id, a box of 4 integers, a category name, a visible fraction. A shard written by
    another tool (or edited by hand) gave `synth show` a TypeError traceback for a null box, and `synth
    export` a category named null. With the row's image ``size`` (height, width), the box must also lie in
    it, x0 <= x1 and y0 <= y1: `synth expand` boxes each object's visible pixels, and a hand-edited
    [0, 0, 1e9, 1e9] went into a COCO export's bbox as it was."""
    if not isinstance(obj, dict):
        return "not an object"
    box = obj.get("box")
    if not isinstance(obj.get("instance_id"), int) or isinstance(obj.get("instance_id"), bool) or obj["instance_id"] < 0:
        return "instance_id is not an integer of 0 or more"
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
        return "box is not 4 integers"
    if size is not None and (outside := box_outside(box, size)):
        return outside
    if not isinstance(obj.get("category"), str):
        return "category is not a name"
    if not is_number(obj.get("visible_fraction")):
        return "visible_fraction is not a number"
    return None


def box_outside(box: list[int], size: tuple[int, int]) -> str | None:
    """What is wrong with an object's integer ``box`` (x0, y0, x1, y1) in an image of ``size`` (height, width):
    None where it lies in it, x0 <= x1 and y0 <= y1 (`synth expand` boxes each object's visible pixels)."""
    if 0 <= box[0] <= box[2] <= size[1] and 0 <= box[1] <= box[3] <= size[0]:
        return None
    return f"box {box} is inside out or not within the {size[1]}x{size[0]} image"


def stored_bytes(row: dict, column: str) -> bytes:
    """The bytes of a row's picture column (``image``, ``mask``): empty where the column or its bytes are
    null (a shard another tool wrote), which a decoder calls an empty file rather than raising TypeError."""
    return (row.get(column) or {}).get("bytes") or b""


def is_photo_region(obj: dict, category: str) -> bool:
    """Whether a row's object is a labelled photo's pixels named ``category`` (photo-shards, extract): a
    pasted cutout (one with a cutout_id) never is."""
    return not obj.get("cutout_id") and obj.get("category") == category


def is_photo_background(obj: dict) -> bool:
    """Whether a row's object is a labelled photo's value 0 (photo-shards, extract): what is not an object,
    named ``background``. `synth export` leaves it out, and `synth show` draws it not (it tinted the whole
    photo and boxed it, its label over the others')."""
    return is_photo_region(obj, BACKGROUND_CATEGORY)


# Footer metadata of a composite shard: which run wrote it (config, cutouts, backgrounds) and which
# config (what decides the rows' content), so a rerun tells its own shards from another run's.
RUN_HASH_KEY = b"synth_run_hash"
CONFIG_HASH_KEY = b"synth_config_hash"
# What today's code makes of the same inputs, config and seed: raised with every change to the rows'
# pixels, masks or labels. The run hashes and keys of expand, photo-shards and extract carry it, so a
# rerun after an upgrade makes its shards again rather than keeping an older synth's beside new ones
# (one run of two renderings, whose older rows no longer replay from their params).
# 2: masks and labels resized by pixel centres, centred motion blur, premultiplied cutout resizes,
# feathering on a cutout's border, superpixel occlusion by area.
# 3: sources read as other tools export them (stop 48): a soft-edged mask is one object, a mask drawn in
# its alpha is its alpha, a black-and-white palette PNG by its drawing, a premultiplied TIFF straight,
# a COCO image or category id listed twice skipped, box-only COCO objects no background in photo shards;
# a cutout over max_cutout_side shrunk weighted by alpha (no rim of the photo's background); an affine
# canvas bounded at MAX_CANVAS_PIXELS.
RENDERING_VERSION = 3
# Names `synth expand` gives its shards; other .parquet files in a folder are not its business.
SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*-\d{5}\.parquet")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.parquet"


def row_id(split: str, index: int) -> str:
    """The ``id`` of composite ``index`` of a run (also its file stem in exports)."""
    return f"{split}-{index:08d}"
