"""What a self-tuning round produced: its line of ``metrics.jsonl`` (held-out scores, training rows,
masks extracted, composites, the search head's score), a function of the round's outputs only, so a
killed and resumed round writes the same line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augment.atomic_files import atomic_write_text, json_safe
from augment.imageio import InputError
from augment.schema import MANIFEST_FILE

if TYPE_CHECKING:
    from pipelines.selftune import SelfTune

METRICS_FILE = "metrics.jsonl"


def round_metrics(tune: "SelfTune", round_index: int) -> dict[str, Any]:
    """The metrics.jsonl line of a round (times apart, a function of the round's outputs only)."""
    score = tune.round_score(round_index)
    line: dict[str, Any] = {"round": round_index, "miou": score["miou"], "pixel_accuracy": score["pixel_accuracy"],
                            "per_class_iou": score["per_class_iou"], "held_out_photos": score["held_out_photos"],
                            "gain": score["miou"] - tune.round_miou(round_index - 1) if round_index > 1 else None,
                            "training_rows": _training_rows(tune.training_shards(round_index)),
                            "segmenter": tune.round_checkpoint(round_index).relative_to(tune.dir).as_posix()}
    extract_dir = tune.step_dir(round_index, "extract")
    if (extract_dir / "extract.json").is_file():
        summary = json.loads((extract_dir / "extract.json").read_text())
        line["extract"] = {k: summary[k] for k in ("images", "masks", "accepted", "rejected", "cutouts",
                                                    "accepted_by_class", "pseudo_photos", "labelled_fraction")}
        line["extract"]["skipped"] = len(summary["skipped"])
        line["extract"]["skipped_files"] = [s["path"] for s in summary["skipped"]]
    composites = tune.composites_dir(round_index) / MANIFEST_FILE
    if composites.is_file():
        manifest = json.loads(composites.read_text())
        line["composites"] = {"rows": manifest["num_rows"], "cutouts": manifest["objects"]["cutouts"]}
    search = tune.step_dir(round_index, "search") / "score.json"
    if search.is_file():
        line["search"] = json.loads(search.read_text())
    line["stopped"] = tune.state["stop_reason"]
    return line


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl`` (none where it is absent); one not a round's JSON object (a hand
    edit, a copy cut short: synth writes it whole) is one line naming the file and the line."""
    if not path.is_file():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not (isinstance(line, dict) and isinstance(line.get("round"), int)):
            raise InputError(f"{path}: line {number} is not a round's JSON object; restore the file or remove that line")
        lines.append(line)
    return lines


def record_metrics(tune: "SelfTune", round_index: int, seconds: dict[str, float]) -> list[dict[str, Any]]:
    """Rewrite metrics.jsonl with this round's line (replacing one left by a killed attempt)."""
    path = tune.dir / METRICS_FILE
    lines = read_metrics(path)
    lines = [x for x in lines if x["round"] < round_index]
    lines.append({**round_metrics(tune, round_index), "seconds": seconds})
    atomic_write_text(path, "".join(json.dumps(json_safe(x), allow_nan=False) + "\n" for x in lines))
    return lines


def _training_rows(folders: list[Path]) -> dict[str, int]:
    from augment.shards import find_shards
    from train.segment_data import rows_by_kind

    # As the segmentation run reads them (a shard named twice, once); a round with no shard folders yet: none.
    return rows_by_kind(find_shards(folders)) if folders else {}
