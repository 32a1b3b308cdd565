"""The case makers of scripts/hardening_cases.py: one case a config, an option, an ``--out`` that is
already a file or folder, a changed COCO file or a search input, each given as its argument. Run
hardening_cases.py, not this."""

from __future__ import annotations

import json
from typing import Callable

# hardening_runner puts this checkout and its tests/ first on sys.path: the imports below need it.
from hardening_runner import Outcome, Runner, config_file, image_file, inputs, shards

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from augment.imageio import save_image  # noqa: E402
from sources_factory import make_coco  # noqa: E402


def config_case(text: str) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        objects, backgrounds, _ = inputs(r.work)
        out = r.work / "out"
        outcome = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config_file(r.work, text), "-w", 1,
                        "-n", 8)
        if outcome.code == 0:
            rows = [row for s in sorted(out.glob("train-*.parquet")) for row in pq.read_table(s).to_pylist()]
            outcome.note = f"{sum(1 for row in rows if not row['objects'])} of {len(rows)} composites have no object"
        else:
            outcome.note = f"objects.parquet made: {'yes' if (out / 'objects.parquet').exists() else 'no'}"
        return outcome
    return case


def out_case(kind: str, command: str) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        target = r.work / "target"
        if kind == "file":
            target.write_text("mine")
        else:
            target.mkdir()
        objects, backgrounds, config = inputs(r.work)
        folder = shards(r.work)
        query = image_file(r.work / "query.png", 40)
        args = {"expand": ["expand", objects, "-b", backgrounds, "-o", target, "-c", config, "-n", 4, "-w", 1],
                "train": ["train", "--shards", folder, "--out", target, "--steps", 1, "--device", "cpu"],
                "search": ["search", query, query, "--out", target, "--device", "cpu"],
                "eval": ["eval", "--shards", folder, "--untrained", "--out", target, "--device", "cpu",
                         "--split", "all", "--batch-size", 2],
                "calibrate": ["calibrate", "--shards", folder, "--out", target, "--cases", 4, "--device", "cpu"],
                "show": ["show", folder, "--out", target],
                "export-onnx": ["export-onnx", "--out", target, "--no-check"]}[command]
        return r.run(*args)
    return case


def train_config_case(text: str) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        folder = shards(r.work)
        return r.run("train", "--shards", folder, "--out", r.work / "run", "--config", config_file(r.work, text),
                     "--steps", 1, "--device", "cpu")
    return case


def coco_case(change: str) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        source = make_coco(r.work / "coco")
        instances = source / "instances.json"
        coco = json.loads(instances.read_text())
        if change == "annotation not an object":
            coco["annotations"].insert(0, 7)
        elif change == "annotations an object":
            coco["annotations"] = {"id": 1}
        else:
            coco["images"].append({"id": 99, "height": 10, "width": 10})
            coco["annotations"].append({**coco["annotations"][0], "id": 50, "image_id": 99})
        instances.write_text(json.dumps(coco))
        _, backgrounds, config = inputs(r.work)
        out = r.work / "out"
        outcome = r.run("expand", instances, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
        if (out / "manifest.json").exists():
            skipped = json.loads((out / "manifest.json").read_text())["skipped"]
            outcome.note = "skipped: " + "; ".join(s["reason"][:50] for s in skipped)
        return outcome
    return case


def search_case(kind: str) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        medium = image_file(r.work / "scene.jpg", 64)
        query = image_file(r.work / "query.png", 40)
        out = r.work / "out"
        if kind == "scales":
            outcome = r.run("search", query, medium, "--out", out, "--scales", "0.0001", "--device", "cpu")
        elif kind == "pairs":
            pairs = r.work / "pairs.jsonl"
            pairs.write_bytes(b'{"query": "q\xff\xfe.png", "medium": "scene.jpg"}\n')
            outcome = r.run("search", "--pairs", pairs, "--out", out, "--device", "cpu")
        else:
            tiny = r.work / "tiny.png"
            save_image(tiny, np.full((2, 2, 3), 200, np.uint8))
            outcome = r.run("search", tiny, medium, "--out", out, "--device", "cpu")
            if (out / "detections.jsonl").exists():
                lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
                outcome.note = f"{sum(len(line.get('detections', [])) for line in lines)} detections"
        return outcome
    return case


def option_case(*args: object) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        folder = shards(r.work)
        objects, backgrounds, config = inputs(r.work)
        filled = [folder if a == "SHARDS" else objects if a == "OBJECTS" else backgrounds if a == "BACKGROUNDS"
                  else config if a == "CONFIG" else r.work / str(a)[4:] if str(a).startswith("OUT:") else a
                  for a in args]
        return r.run(*filled)
    return case
