"""Issue 7, the writing side: `synth expand` under concurrent runs, stale shards, bad configs and
inputs, interrupts and permissions. Each test names the numbered case of the issue it covers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from augment.atomic_files import atomic_write_text
from augment.locking import BUSY_EXIT_CODE, LOCK_FILE
from augment.schema import MANIFEST_FILE
from cli_checks import assert_one_line_error, error_lines, files_under, run_cli
from sources_factory import make_backgrounds, make_coco, make_rgba_source

TINY = "sources: {min_area: 50}\ncomposition: {width: 64, height: 64}\noutput: {shard_rows: 10, row_group_rows: 5}\n"


@pytest.fixture()
def inputs(tmp_path) -> tuple[Path, Path, Path]:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    return make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds"), config


def expand(inputs, out: Path, *extra: object):
    objects, backgrounds, config = inputs
    return run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-w", 1, *extra)


def shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("train-*.parquet"))


# ----------------------------------------------------------------- 1: two runs into one folder
def test_1_second_expand_into_a_busy_folder_exits_3_and_the_first_run_stays_whole(inputs, tmp_path):
    objects, backgrounds, config = inputs
    out = tmp_path / "out"
    slow = tmp_path / "slow.yaml"
    slow.write_text(TINY.replace("width: 64, height: 64", "width: 160, height: 160, min_objects: 3, max_objects: 5"))
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "expand", objects, "-b", backgrounds, "-o", out,
                              "-c", slow, "-n", "150", "-w", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            lock = out / LOCK_FILE
            held = lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]  # "PID WHAT"
            if held or (out / "objects.parquet").exists():
                break
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before the second started"
        started = time.monotonic()
        second = run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", "20", "-w", 1,
                         "--seed", 1)
        assert_one_line_error(second, BUSY_EXIT_CODE, str(out), f"pid {first.pid}")
        assert time.monotonic() - started < 5
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["config"]["seed"] == 0 and manifest["num_rows"] == 150
    ids = []
    for entry in manifest["shards"]:
        shard = pq.ParquetFile(out / entry["name"])
        assert shard.metadata.metadata[b"synth_run_hash"].decode() == manifest["run_hash"]
        ids += shard.read(columns=["id"]).column(0).to_pylist()
    assert ids == [f"train-{i:08d}" for i in range(150)]
    assert not list(out.glob(".*.tmp"))


def test_1_a_shard_with_an_intact_footer_but_damaged_pages_is_made_again(inputs, tmp_path):
    out = tmp_path / "out"
    assert expand(inputs, out, "-n", 20).exit_code == 0
    shard = out / "train-00000.parquet"
    good = shard.read_bytes()
    damaged = bytearray(good)
    damaged[4:400] = bytes(396)  # the first pages' headers: "Couldn't deserialize thrift" on read
    shard.write_bytes(bytes(damaged))
    with pytest.raises(Exception):
        pq.read_table(shard)
    result = expand(inputs, out, "-n", 20)
    assert result.exit_code == 0, result.output
    assert shard.read_bytes() == good
    assert "1 shard already done" in result.output


# ----------------------------------------------------------------- 2: stale shards
def test_2_another_seed_into_a_used_folder_is_refused_and_overwrite_replaces_it(inputs, tmp_path):
    out = tmp_path / "out"
    assert expand(inputs, out, "-n", 40, "--seed", 0).exit_code == 0
    assert shard_files(out) == [f"train-0000{i}.parquet" for i in range(4)]
    before = files_under(out, skip=out / LOCK_FILE)
    assert_one_line_error(expand(inputs, out, "-n", 20, "--seed", 1), 2, "another `synth expand` run", "--overwrite")
    assert files_under(out, skip=out / LOCK_FILE) == before  # refused before touching anything

    result = expand(inputs, out, "-n", 20, "--seed", 1, "--overwrite")
    assert result.exit_code == 0, result.output
    assert shard_files(out) == ["train-00000.parquet", "train-00001.parquet"]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert [s["name"] for s in manifest["shards"]] == shard_files(out) and manifest["config"]["seed"] == 1
    result = run_cli("export", out, "--out", tmp_path / "coco")
    assert result.exit_code == 0 and "20 images" in " ".join(result.output.split())


def test_2_the_same_config_with_a_smaller_num_removes_the_shards_beyond_it(inputs, tmp_path):
    out = tmp_path / "out"
    assert expand(inputs, out, "-n", 40).exit_code == 0
    result = expand(inputs, out, "-n", 20)
    assert result.exit_code == 0, result.output
    assert shard_files(out) == ["train-00000.parquet", "train-00001.parquet"]
    assert "2 shards already done" in result.output


# ----------------------------------------------------------------- 3, 9: config values
@pytest.mark.parametrize("yaml_text, key", [
    ("composition: {placement_tries: -1}", "composition.placement_tries"),
    ("composition: {feather_px: -3}", "composition.feather_px"),
    ("output: {shard_bytes: -5}", "output.shard_bytes"),
    ("composition: {object_scale: [a, b]}", "composition.object_scale"),
    ("distortions: {affine: {scale: big}}", "affine.scale"),
    ("distortions: {lens_blur: {radius: [-2, 1]}}", "lens_blur.radius"),
    ("sources: {drop_labels: [skin, null]}", "sources.drop_labels"),
])
def test_3_9_config_values_are_range_checked_at_load(inputs, tmp_path, yaml_text, key):
    objects, backgrounds, _ = inputs
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text + "\n")
    out = tmp_path / "out"
    result = run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-w", 1)
    assert_one_line_error(result, 2, str(config), key)
    assert not out.exists()  # refused before any cutout was made


def test_9_16_bad_numeric_options_are_one_line(inputs, tmp_path):
    objects, backgrounds, config = inputs
    base = ["expand", objects, "-b", backgrounds, "-o", tmp_path / "out", "-c", config]
    assert_one_line_error(run_cli(*base, "--seed", -3), 2, "--seed")
    assert_one_line_error(run_cli(*base, "--workers", -2), 2, "--workers")
    assert_one_line_error(run_cli(*base, "--num", 0), 2, "--num")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- 5: writes outside --out
def test_5_a_split_name_that_climbs_out_is_refused(inputs, tmp_path):
    objects, backgrounds, _ = inputs
    config = tmp_path / "split.yaml"
    config.write_text('output: {split: "../../x"}\n')
    run_root = tmp_path / "a" / "b"
    run_root.mkdir(parents=True)
    before = files_under(tmp_path)
    result = run_cli("expand", objects, "-b", backgrounds, "-o", run_root / "out", "-c", config, "-w", 1)
    assert_one_line_error(result, 2, "output.split")
    assert files_under(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "a", "backgrounds", "objects", "split.yaml", "tiny.yaml"]


# ----------------------------------------------------------------- 8: output paths checked first
def test_8_expand_out_that_is_a_file_is_one_line_before_any_work(inputs, tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    assert_one_line_error(expand(inputs, target, "-n", 4), 2, "must be a folder")
    assert target.read_text() == "mine"


def _read_only(out: Path) -> list[str]:
    """Make ``out`` read-only for the command run behind the returned prefix. Root ignores permission
    bits, so as root the command runs in a mount namespace of its own with a read-only file system
    mounted on ``out`` (gone with the process)."""
    if os.geteuid() != 0:
        os.chmod(out, 0o555)
        return []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip(reason="running as root without `unshare -m`: a read-only folder cannot be made for root")
    return ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o ro,size=64k tmpfs "$0" && exec "$@"', str(out)]


def test_8_read_only_out_is_refused_before_the_cutouts_are_made(inputs, tmp_path):
    objects, backgrounds, config = inputs
    out = tmp_path / "out"
    out.mkdir()
    command = [*_read_only(out), sys.executable, "-m", "pipelines.cli", "expand", str(objects), "-b", str(backgrounds),
               "-o", str(out), "-c", str(config), "-n", "4", "-w", "1"]
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(out, 0o755)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "read-only" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------- 10: COCO sources
def test_10_malformed_coco_entries_are_counted_skips_and_a_malformed_file_one_line(tmp_path):
    source = make_coco(tmp_path / "coco")
    instances = source / "instances.json"
    coco = json.loads(instances.read_text())
    coco["annotations"].insert(0, 7)  # an annotation that is not an object
    coco["images"].append({"id": 99, "height": 10, "width": 10})  # no file_name
    coco["annotations"].append({**coco["annotations"][1], "id": 50, "image_id": 99})
    instances.write_text(json.dumps(coco))
    backgrounds = make_backgrounds(tmp_path / "backgrounds")
    config = tmp_path / "c.yaml"
    config.write_text(TINY)
    out = tmp_path / "out"
    result = run_cli("expand", instances, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    reasons = [s["reason"] for s in json.loads((out / MANIFEST_FILE).read_text())["skipped"]]
    assert any("annotation #0 is not an object" in r for r in reasons), reasons
    assert any("image id 99 has no file_name" in r for r in reasons), reasons

    coco["annotations"] = {"id": 1}
    instances.write_text(json.dumps(coco))
    result = run_cli("expand", instances, "-b", backgrounds, "-o", tmp_path / "out2", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, "instances.json", '"annotations" must be a list')


# ----------------------------------------------------------------- 13: Ctrl-C with workers
def test_13_ctrl_c_during_expand_with_two_workers_prints_one_line_naming_expand(inputs, tmp_path):
    objects, backgrounds, _ = inputs
    config = tmp_path / "slow.yaml"
    config.write_text("sources: {min_area: 50}\ncomposition: {width: 160, height: 160, min_objects: 3, max_objects: 5}\n"
                      "output: {shard_rows: 50, row_group_rows: 5}\n")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "expand", objects, "-b", backgrounds, "-o", out,
                                "-c", config, "-n", "400", "-w", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               # A shell without job control starts background jobs with SIGINT
                               # ignored, and the child would inherit that (a nohup'd CI run did):
                               # the interrupt must reach it as a terminal's would.
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob(".train-00000.parquet*.tmp")):
        time.sleep(0.02)
    time.sleep(0.3)  # workers busy rendering
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    # All but the progress bars (named by their task; a bar interrupted early draws no "━").
    lines = [line for line in error_lines(stderr) if not re.match(r"\s*(cutouts|composites)\s", line)]
    assert len(lines) == 1 and "synth expand" in lines[0] and "synth train" not in lines[0], stderr
    assert not list(out.glob(".*.tmp"))


# ----------------------------------------------------------------- 14: file modes
def test_14_outputs_respect_the_umask(inputs, tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "note.txt", "hello")
        assert stat.S_IMODE((tmp_path / "note.txt").stat().st_mode) == 0o644
        out = tmp_path / "out"
        assert expand(inputs, out, "-n", 4).exit_code == 0
        assert run_cli("export", out, "--out", tmp_path / "coco").exit_code == 0
        os.umask(0o027)
        atomic_write_text(tmp_path / "private.txt", "hello")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o640
    finally:
        os.umask(previous)
    written = [out / MANIFEST_FILE, out / "objects.parquet", out / "train-00000.parquet",
               tmp_path / "coco" / "annotations.json", next((tmp_path / "coco" / "images").iterdir())]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "coco").stat().st_mode) == 0o755


# ----------------------------------------------------------------- 16: cosmetics
def test_16_empty_and_text_files_are_called_what_they_are(inputs, tmp_path):
    objects, backgrounds, config = inputs
    (backgrounds / "empty.jpg").write_bytes(b"")
    (backgrounds / "notes.jpg").write_text("these are my notes\n")
    out = tmp_path / "out"
    result = run_cli("expand", objects, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads((out / MANIFEST_FILE).read_text())["skipped"]}
    assert "empty file (0 bytes)" in reasons["empty.jpg"] and "truncated" not in reasons["empty.jpg"]
    assert "a text file" in reasons["notes.jpg"] and "truncated" not in reasons["notes.jpg"]


def test_16_a_failed_run_leaves_no_empty_out(inputs, tmp_path):
    objects, _, config = inputs
    nothing = tmp_path / "no-backgrounds"
    nothing.mkdir()
    out = tmp_path / "out"
    result = run_cli("expand", objects, "-b", nothing, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, "no usable background images")
    assert not out.exists()


def test_13b_sigterm_during_expand_is_an_interrupt_with_the_resume_line(inputs, tmp_path):
    """A scheduler's stop (SIGTERM to the process, as `kill PID` and systemd send) is handled as
    Ctrl-C: exit 130, one line saying how to resume, no temporary left; the rerun resumes."""
    objects, backgrounds, _ = inputs
    config = tmp_path / "slow.yaml"
    config.write_text("sources: {min_area: 50}\ncomposition: {width: 160, height: 160, min_objects: 3, max_objects: 5}\n"
                      "output: {shard_rows: 50, row_group_rows: 5}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.cli", "expand", objects, "-b", backgrounds, "-o", out, "-c", config,
               "-n", "400", "-w", "1"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob(".train-00000.parquet*.tmp")):
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = [line for line in error_lines(stderr) if not re.match(r"\s*(cutouts|composites)\s", line)]
    assert len(lines) == 1 and "rerun the same `synth expand`" in lines[0], stderr
    assert not list(out.glob(".*.tmp"))
