"""The label (category) names a source can give its objects, known before any photo is read, so that
a ``keep_labels`` or ``drop_labels`` name that no source has is caught at once instead of matching
nothing without a word (``keep_labels: [shirt, jaket]`` kept shirts and silently no jackets).

Each format names its labels up front: a label map's ``label_list.json``, a mask pairs source's
``categories.json`` (and ``object`` for values it does not name), an RGBA source's sub-folders
(``object`` for files at its top), a COCO file's categories, an objects table's column, LabelMe
files' shape labels, YOLO's ``data.yaml`` or ``classes.txt``, CVAT's ``labelmap.txt``. An unknown
``keep_labels`` name is an :class:`InputError` naming the key, the name and the names known; an
unknown ``drop_labels`` name is a warning (a drop list is often shared by configs of other data sets,
where the labels it names are simply absent).
"""

from __future__ import annotations

import logging
import json
from pathlib import Path
from typing import Any, Iterable

from augment.config import SourceConfig
from augment.imageio import InputError, list_images
from augment.schema import OBJECTS_FILE

log = logging.getLogger(__name__)


def named_values(data: Any, path: Path, expected: str, by_index: bool = False) -> dict[int, str]:
    """A names file's JSON ``data`` as mask value -> name: an object of integer keys (with ``by_index``, a
    list too: a value's name at its index) whose names are text. Anything else is one line naming ``path``
    and ``expected``: a number or null was a traceback, a string was split into one-letter names, a name of
    null, a number or a list was taken as 'None', '1' or "['hat']"."""
    if isinstance(data, dict):
        entries: Iterable[tuple[Any, Any]] = data.items()
    elif by_index and isinstance(data, list):
        entries = enumerate(data)
    else:
        raise InputError(f"{path}: expected {expected}, not {json.dumps(data)[:40]}")
    names: dict[int, str] = {}
    for key, name in entries:
        try:
            value = int(key)
        except ValueError:
            raise InputError(f"{path}: {json.dumps(key)} is no mask value (expected {expected})") from None
        if not isinstance(name, str):
            raise InputError(f"{path}: the name of value {value} is {json.dumps(name)[:40]}, not text (expected {expected})")
        names[value] = name
    return names


def source_label_names(source: Path, config: SourceConfig) -> set[str]:
    """Every label name ``source`` (read as ``config.format``) can give an object."""
    from augment.coco_source import load_coco_index
    from augment.sources import detect_format, label_map_files, load_categories

    source = Path(source)
    fmt = config.format if config.format != "auto" else detect_format(source)
    if fmt == "label_map":
        return set(label_map_files(source)[0].values())
    if fmt == "mask_pairs":
        return set(load_categories(source / "categories.json").values()) | {"object"}
    if fmt == "rgba":
        return {p.parent.name if p.parent != source else "object" for p in list_images(source)[0]}
    if fmt == "coco":
        return set(load_coco_index(source).categories.values())  # an annotation of another category is skipped
    if fmt == "labelme":
        from augment.labelme_source import labelme_label_names

        return labelme_label_names(source)
    if fmt == "yolo":
        from augment.yolo_source import yolo_names

        return set(yolo_names(source).values())
    if fmt == "cvat_mask":
        from augment.cvat_masks import cvat_label_names

        return cvat_label_names(source)
    if fmt == "objects":
        from augment.objects_table import read_objects_table

        path = source / OBJECTS_FILE
        return {str(c) for c in read_objects_table(path, ["category"]).column(0).unique().to_pylist()}
    raise InputError(f"{source}: unknown source format {fmt!r}")


def check_label_names(sources: Iterable[Path], config: SourceConfig, section: str = "sources",
                      keys: tuple[str, str] | None = None) -> None:
    """Every ``keep_labels`` name of ``config`` is a label of at least one of ``sources`` (else one
    InputError line naming ``section``'s key, the unknown names and the known ones); a ``drop_labels``
    name that none has is warned of, once. ``keys``: what the user called the two lists, where not
    ``section``'s keys (a command's options: ``("--categories", "--drop-labels")``)."""
    if not config.keep_labels and not config.drop_labels:
        return
    keep_key, drop_key = keys or (f"{section}.keep_labels", f"{section}.drop_labels")
    both = [name for name in config.keep_labels if name in config.drop_labels]
    if both:  # dropped wins: `calibrate --categories coat,dress --drop-labels coat` had no coat query, without a word
        raise InputError(f"{keep_key} and {drop_key} both name {', '.join(map(repr, both))}: a label dropped is "
                         f"never an object, so it is never kept; name it in one of them")
    known: set[str] = set()
    for source in sources:
        known |= source_label_names(Path(source), config)
    listed = ", ".join(sorted(known)) or "none"
    unknown = [name for name in config.keep_labels if name not in known]
    if unknown:
        raise InputError(f"{keep_key}: {', '.join(map(repr, unknown))} not a label of the sources "
                         f"(known: {listed})")
    unused = [name for name in config.drop_labels if name not in known]
    if unused:
        log.warning("%s: %s not a label of the sources, so nothing is dropped for %s (known: %s)",
                    drop_key, ", ".join(map(repr, unused)), "it" if len(unused) == 1 else "them", listed)
