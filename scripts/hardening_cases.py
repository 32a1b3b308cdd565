"""Run every case of issue 7 against the `synth` CLI of one or two checkouts and print what happens.

    python scripts/hardening_cases.py                                   # this checkout
    python scripts/hardening_cases.py --before /tmp/main --after .      # a before/after table

Each case runs the CLI in a process of its own (``python -m pipelines.cli`` with the checkout first
on PYTHONPATH) in a fresh temporary folder, on inputs made by the test factories of *this* checkout,
and reports the exit code, the first error line or the exception of a traceback, and what the case
is about (rows exported, files written outside --out, file modes...). The checkouts share this
interpreter and its packages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

# hardening_runner puts this checkout and its tests/ first on sys.path: the imports below need it.
from hardening_runner import ROOT, Outcome, Runner, all_files, config_file, image_file, inputs, shards

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from shard_factory import damage_pages, rewrite_rows  # noqa: E402
from hardening_case_makers import (coco_case, config_case, option_case, out_case, search_case,  # noqa: E402
                                   train_config_case)

SLOW = ("sources: {min_area: 50}\ncomposition: {width: 160, height: 160, min_objects: 3, max_objects: 5}\n"
        "output: {shard_rows: 50, row_group_rows: 5}\n")


# ----------------------------------------------------------------- cases
def case_1_concurrent(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    slow = config_file(r.work, SLOW)
    out = r.work / "out"
    first = r.start("expand", objects, "-b", backgrounds, "-o", out, "-c", slow, "-n", 150, "-w", 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "objects.parquet").exists() and not (
            (out / ".synth.lock").exists() and (out / ".synth.lock").read_text().split()[:1] == [str(first.pid)]):
        time.sleep(0.02)
    second = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 20, "-w", 1, "--seed", 1)
    first.communicate(timeout=600)
    manifest = json.loads((out / "manifest.json").read_text())
    consistent = all(pq.read_metadata(out / s["name"]).metadata[b"synth_run_hash"].decode() == manifest["run_hash"]
                     for s in manifest["shards"])
    second.note = (f"first run exit {first.returncode}; folder ends with the manifest of seed "
                   f"{manifest['config']['seed']}, {'every shard of its run' if consistent else 'shards of another run'}")
    return second


def case_1_damaged_pages(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    out = r.work / "out"
    r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 20, "-w", 1)
    damage_pages(out / "train-00000.parquet")
    outcome = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 20, "-w", 1)
    try:
        pq.read_table(out / "train-00000.parquet")
        outcome.note = "damaged shard made again (readable)"
    except Exception:  # noqa: BLE001 - any failure to read is the finding
        outcome.note = "damaged shard kept as done (unreadable)"
    return outcome


def case_2_stale(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    out = r.work / "out"
    r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 40, "-w", 1)
    outcome = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 20, "--seed", 1, "-w", 1)
    r.run("export", out, "--out", r.work / "coco")
    exported = len(list((r.work / "coco" / "images").glob("*.jpg"))) if (r.work / "coco" / "images").is_dir() else 0
    listed = len(json.loads((out / "manifest.json").read_text())["shards"])
    outcome.note = (f"{len(list(out.glob('train-*.parquet')))} shards in the folder, {listed} in the manifest; "
                    f"export then reads {exported} rows")
    return outcome


def case_4_bad_rows(r: Runner) -> Outcome:
    folder = shards(r.work)
    rewrite_rows(folder / "train-00000.parquet", {2: {"image": {"bytes": b"\xff\xd8\xff not a jpeg", "path": None}},
                                                  4: {"mask": {"bytes": b"garbage", "path": None}}})
    outcome = r.run("export", folder, "--out", r.work / "coco")
    images = sorted((r.work / "coco" / "images").glob("*.jpg")) if (r.work / "coco" / "images").is_dir() else []
    bad = sum(1 for p in images if cv2.imread(str(p)) is None)
    outcome.note = f"{len(images)} images written, {bad} of them unreadable"
    return outcome


def case_4_midway(r: Runner) -> Outcome:
    folder = shards(r.work)
    damage_pages(folder / "train-00001.parquet")
    outcome = r.run("export", folder, "--out", r.work / "coco")
    left = len(list((r.work / "coco" / "images").glob("*.jpg"))) if (r.work / "coco" / "images").is_dir() else 0
    outcome.note = f"left behind: {left} images" + (", no annotations.json" if left else "")
    return outcome


def case_5_export_ids(r: Runner) -> Outcome:
    folder = shards(r.work)
    rewrite_rows(folder / "train-00000.parquet", {0: {"id": "../../x"}})
    out = r.work / "a" / "b" / "coco"
    out.parent.mkdir(parents=True)
    before = all_files(r.work)
    outcome = r.run("export", folder, "--out", out)
    outside = sorted(p for p in all_files(r.work) - before if not p.startswith("a/b/coco"))
    outcome.note = f"written outside --out: {outside or 'nothing'}"
    return outcome


def case_5_split(r: Runner) -> Outcome:
    objects, backgrounds, _ = inputs(r.work)
    out = r.work / "a" / "b" / "out"
    out.parent.mkdir(parents=True)
    config = config_file(r.work, 'output: {split: "../../x"}')
    before = all_files(r.work)
    outcome = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    outside = sorted(p for p in all_files(r.work) - before if not p.startswith("a/b/out"))
    outcome.note = f"written outside --out: {outside[:3] or 'nothing'}"
    return outcome


def broken_shard_case(command: str) -> Callable[[Runner], Outcome]:
    def case(r: Runner) -> Outcome:
        folder = shards(r.work)
        broken = folder / "train-00001.parquet"
        broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
        args = {"train": ["train", "--shards", folder, "--out", r.work / "run", "--steps", 1, "--device", "cpu"],
                "eval": ["eval", "--shards", folder, "--untrained", "--device", "cpu"],
                "calibrate": ["calibrate", "--shards", folder, "--out", r.work / "c.json", "--device", "cpu"]}[command]
        return r.run(*args)
    return case


def case_7_onnx(r: Runner) -> Outcome:
    code = "import sys; sys.modules['onnx'] = None; sys.argv[0] = 'synth'; from pipelines.cli import app; app()"
    return r.run(python=[sys.executable, "-c", code, "export-onnx", "--out", str(r.work / "net.onnx")])


def case_8_read_only(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    out = r.work / "out"
    out.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: a read-only mount in a namespace of its own
        prefix = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o ro,size=64k tmpfs "$0" && exec "$@"', str(out)]
    else:
        out.chmod(0o555)
        prefix = []
    started = time.perf_counter()
    outcome = r.run(prefix=prefix, python=r.command("expand", objects, "-b", backgrounds, "-o", out, "-c", config,
                                                     "-n", 4, "-w", 1))
    outcome.note = f"{time.perf_counter() - started:.1f} s"
    out.chmod(0o755)
    return outcome


def case_9_seed(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    return r.run("expand", objects, "-b", backgrounds, "-o", r.work / "out", "-c", config, "-n", 2, "-w", 1,
                 "--seed", -3)


def case_13_ctrl_c(r: Runner) -> Outcome:
    objects, backgrounds, _ = inputs(r.work)
    out = r.work / "out"
    process = r.start("expand", objects, "-b", backgrounds, "-o", out, "-c", config_file(r.work, SLOW), "-n", 400,
                      "-w", 2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob(".train-00000.parquet*tmp")):
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    outcome = Outcome(process.returncode, r.short(stderr))
    workers = sum(1 for line in stderr.splitlines() if line.startswith("Process ForkPoolWorker"))
    outcome.note = f"{workers} worker message(s) ('Process ForkPoolWorker-N:' and their tracebacks)"
    return outcome


def case_14_modes(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    out = r.work / "out"
    outcome = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 4, "-w", 1)
    r.run("export", out, "--out", r.work / "coco")
    modes = {name: oct(stat.S_IMODE(path.stat().st_mode)) for name, path in [
        ("manifest.json", out / "manifest.json"), ("objects.parquet", out / "objects.parquet"),
        ("exported image", next((r.work / "coco" / "images").glob("*.jpg")))]}
    outcome.note = "umask 022: " + ", ".join(f"{k} {v}" for k, v in modes.items())
    return outcome


def case_16_reasons(r: Runner) -> Outcome:
    objects, backgrounds, config = inputs(r.work)
    (backgrounds / "empty.jpg").write_bytes(b"")
    (backgrounds / "notes.jpg").write_text("these are my notes\n")
    out = r.work / "out"
    outcome = r.run("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    reasons = {Path(s["path"]).name: s["reason"].split(": ", 1)[-1]
               for s in json.loads((out / "manifest.json").read_text())["skipped"]}
    outcome.note = f"empty.jpg: {reasons.get('empty.jpg')!r}; notes.jpg: {reasons.get('notes.jpg')!r}"
    return outcome


def case_16_empty_out(r: Runner) -> Outcome:
    objects, _, config = inputs(r.work)
    nothing = r.work / "no-backgrounds"
    nothing.mkdir()
    outcome = r.run("expand", objects, "-b", nothing, "-o", r.work / "out", "-c", config, "-n", 2, "-w", 1)
    outcome.note = f"--out left: {'yes' if (r.work / 'out').exists() else 'no'}"
    return outcome


def case_16_ffmpeg(r: Runner) -> Outcome:
    video = r.work / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for index in range(20):
        writer.write(np.full((48, 64, 3), index * 10, np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[len(data) // 3:])
    outcome = r.run("search", image_file(r.work / "query.png", 32), video, "--out", r.work / "out", "--device", "cpu")
    foreign = [line for line in outcome.stderr.splitlines() if line.lstrip().startswith("[")]
    outcome.note = f"{len(foreign)} FFmpeg line(s) on stderr" + (f", e.g. {foreign[0][:50]!r}" if foreign else "")
    return outcome


CASES: list[tuple[str, str, Callable[[Runner], Outcome]]] = [
    ("1", "second expand into a folder being written (--seed 1)", case_1_concurrent),
    ("1", "rerun after a shard's pages are damaged (footer intact)", case_1_damaged_pages),
    ("2", "--num 40 --seed 0, then --num 20 --seed 1 into the same --out", case_2_stale),
    ("3", "placement_tries: -1", config_case("composition: {placement_tries: -1}")),
    ("3", "feather_px: -3", config_case("composition: {feather_px: -3}")),
    ("3", "shard_bytes: -5", config_case("output: {shard_bytes: -5}")),
    ("4", "export: a bad image row and a bad mask row", case_4_bad_rows),
    ("4", "export: a shard whose pages are damaged", case_4_midway),
    ("5", "export: a row whose id is ../../x", case_5_export_ids),
    ("5", 'expand: output.split "../../x"', case_5_split),
    ("6", "truncated shard: train", broken_shard_case("train")),
    ("6", "truncated shard: eval", broken_shard_case("eval")),
    ("6", "truncated shard: calibrate", broken_shard_case("calibrate")),
    ("7", "export-onnx without the onnx package", case_7_onnx),
    ("8", "expand --out an existing file", out_case("file", "expand")),
    ("8", "train --out an existing file", out_case("file", "train")),
    ("8", "search --out an existing file", out_case("file", "search")),
    ("8", "eval --out an existing folder", out_case("dir", "eval")),
    ("8", "calibrate --out an existing folder", out_case("dir", "calibrate")),
    ("8", "show --out an existing folder", out_case("dir", "show")),
    ("8", "export-onnx --out an existing folder", out_case("dir", "export-onnx")),
    ("8", "expand --out read-only", case_8_read_only),
    ("9", 'object_scale: ["a", "b"]', config_case("composition: {object_scale: [a, b]}")),
    ("9", "affine.scale: big", config_case("distortions: {affine: {scale: big}}")),
    ("9", "lens_blur.radius: [-2, 1]", config_case("distortions: {lens_blur: {radius: [-2, 1], p: 1.0}}")),
    ("9", "train lr: -1", train_config_case("lr: -1")),
    ("9", "train batch_size: eight", train_config_case("batch_size: eight")),
    ("9", "expand --seed -3", case_9_seed),
    ("10", "COCO: an annotation that is not an object", coco_case("annotation not an object")),
    ("10", "COCO: annotations is an object", coco_case("annotations an object")),
    ("10", "COCO: an image without file_name", coco_case("image without file_name")),
    ("11", "search --scales 0.0001", search_case("scales")),
    ("11", "search --pairs file not UTF-8", search_case("pairs")),
    ("12", "show --rows 0", option_case("show", "SHARDS", "--out", "OUT:s.png", "--rows", 0)),
    ("12", "show --tile 0", option_case("show", "SHARDS", "--out", "OUT:s.png", "--tile", 0)),
    ("12", "export-onnx --batch 0", option_case("export-onnx", "--out", "OUT:n.onnx", "--batch", 0, "--no-check")),
    ("13", "Ctrl-C during expand --workers 2", case_13_ctrl_c),
    ("14", "file modes of outputs", case_14_modes),
    ("15", "search with a 2x2 px query", search_case("tiny")),
    ("16", "0-byte and text files as backgrounds", case_16_reasons),
    ("16", "expand --workers -2", option_case("expand", "OBJECTS", "-b", "BACKGROUNDS", "-o", "OUT:out", "-c",
                                               "CONFIG", "-n", 2, "--workers", -2)),
    ("16", "calibrate --cases 0", option_case("calibrate", "--shards", "SHARDS", "--out", "OUT:c.json", "--cases", 0,
                                              "--device", "cpu")),
    ("16", "eval --batches 0", option_case("eval", "--shards", "SHARDS", "--untrained", "--batches", 0,
                                           "--split", "all", "--batch-size", 2, "--device", "cpu")),
    ("16", "failed expand (no usable backgrounds)", case_16_empty_out),
    ("16", "search a video with a damaged header", case_16_ffmpeg),
]


def run_all(repo: Path, only: set[str]) -> list[str]:
    results = []
    for number, title, case in CASES:
        if only and number not in only:
            continue
        work = Path(tempfile.mkdtemp(prefix="synth-case-"))
        previous = os.umask(0o022)
        try:
            outcome = case(Runner(repo, work))
            results.append(outcome.summary())
        except Exception as error:  # noqa: BLE001 - a case that cannot even be run is reported as such
            results.append(f"case failed to run: {type(error).__name__}: {error}"[:120])
        finally:
            os.umask(previous)
            shutil.rmtree(work, ignore_errors=True)
        print(f"  [{repo.name}] {number:>2} {title}: {results[-1]}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout to compare with (e.g. a worktree of main)")
    parser.add_argument("--after", type=Path, default=ROOT, help="the checkout to test (default: this one)")
    parser.add_argument("--cases", default="", help="comma-separated case numbers to run (default: all)")
    args = parser.parse_args()
    only = {c.strip() for c in args.cases.split(",") if c.strip()}
    selected = [(n, t) for n, t, _ in CASES if not only or n in only]
    after = run_all(args.after.resolve(), only)
    if args.before:
        before = run_all(args.before.resolve(), only)
        print("| # | case | before | after |\n| --- | --- | --- | --- |")
        for (number, title), old, new in zip(selected, before, after):
            print(f"| {number} | {title} | {old} | {new} |")
    else:
        print("| # | case | outcome |\n| --- | --- | --- |")
        for (number, title), new in zip(selected, after):
            print(f"| {number} | {title} | {new} |")


if __name__ == "__main__":
    main()
