"""`synth expand` end to end: shards, manifest, determinism across workers, resume, bad input, show, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from augment.config import ExpandConfig
from augment.expand import run_expand
from augment.imageio import InputError, decode_image, save_image
from augment.schema import COMPOSITE_SCHEMA, RENDERING_VERSION
from pipelines.cli import app
from sources_factory import make_backgrounds, make_label_map, make_rgba_source

REPO = Path(__file__).resolve().parents[1]


def small_config(num: int = 20) -> ExpandConfig:
    config = ExpandConfig.from_dict(
        {
            "num": num,
            "seed": 5,
            "sources": {"min_area": 50},
            "composition": {"width": 96, "height": 80, "min_objects": 2, "max_objects": 4},
            "output": {"shard_rows": 8, "row_group_rows": 4},
        }
    )
    return config


@pytest.fixture()
def inputs(tmp_path) -> tuple[Path, Path]:
    return make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "backgrounds")


def read_rows(out: Path) -> list[dict]:
    rows = []
    for shard in sorted(out.glob("train-*.parquet")):
        rows.extend(pq.read_table(shard).to_pylist())
    return rows


def test_expand_writes_shards_objects_and_manifest(inputs, tmp_path):
    objects, backgrounds = inputs
    out = tmp_path / "out"
    result = run_expand([objects], backgrounds, out, small_config(), workers=1)
    shards = sorted(p.name for p in out.glob("train-*.parquet"))
    assert shards == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [f"train-{i:08d}" for i in range(20)]
    assert pq.read_schema(out / shards[0]).remove_metadata().equals(COMPOSITE_SCHEMA.remove_metadata())
    assert b"huggingface" in pq.read_schema(out / shards[0]).metadata
    assert pq.ParquetFile(out / shards[0]).metadata.row_group(0).num_rows == 4

    cutout_ids = set(pq.read_table(out / "objects.parquet", columns=["cutout_id"]).column(0).to_pylist())
    for row in rows:
        image = decode_image(row["image"]["bytes"])
        mask = decode_image(row["mask"]["bytes"])
        assert image.shape == (80, 96, 3) and mask.shape == (80, 96)
        assert set(np.unique(mask)) - {0} == {o["instance_id"] for o in row["objects"]}
        assert {o["cutout_id"] for o in row["objects"]} <= cutout_ids
        params = json.loads(row["params"])
        assert params["background"]["name"].startswith("background_")
        assert row["config_hash"] == result.manifest["config_hash"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_rows"] == 20 and sum(s["rows"] for s in manifest["shards"]) == 20
    assert manifest["objects"]["cutouts"] == 4 and manifest["config"]["seed"] == 5
    assert "numpy" in manifest["versions"] and manifest["rendering"] == RENDERING_VERSION


def test_the_manifest_records_the_opencv_that_is_installed_whichever_wheel_it_is(inputs, tmp_path, monkeypatch):
    """OpenCV makes every pixel of a row; with opencv-python (or a contrib build) providing cv2 instead of the
    headless wheel, the manifest's versions said nothing of it, and a row could not be replayed knowingly."""
    import importlib.metadata

    installed = {"opencv-python": "4.13.0.90", "numpy": np.__version__}

    def version(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    objects, backgrounds = inputs
    run_expand([objects], backgrounds, tmp_path / "out", small_config(num=2), workers=1)
    versions = json.loads((tmp_path / "out" / "manifest.json").read_text())["versions"]
    assert versions["opencv-python"] == "4.13.0.90" and versions["numpy"] == np.__version__


def test_same_seed_gives_identical_shards_on_one_and_two_workers(inputs, tmp_path):
    objects, backgrounds = inputs
    run_expand([objects], backgrounds, tmp_path / "one", small_config(), workers=1)
    run_expand([objects], backgrounds, tmp_path / "two", small_config(), workers=2)
    names = sorted(p.name for p in (tmp_path / "one").glob("train-*.parquet"))
    assert names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    other = small_config()
    other.seed = 6
    run_expand([objects], backgrounds, tmp_path / "other", other, workers=1)
    assert (tmp_path / "other" / names[0]).read_bytes() != (tmp_path / "one" / names[0]).read_bytes()


def test_rerun_skips_finished_shards_and_more_rows_extend_the_run(inputs, tmp_path):
    objects, backgrounds = inputs
    out = tmp_path / "out"
    run_expand([objects], backgrounds, out, small_config(), workers=1)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.parquet")}
    again = run_expand([objects], backgrounds, out, small_config(), workers=1)
    assert again.rows_written == 0 and again.shards_skipped_as_done == 3
    more = run_expand([objects], backgrounds, out, small_config(num=30), workers=1)
    # The last shard held 4 of 8 rows: it is redone with 8, then one more shard of 6.
    assert more.shards_skipped_as_done == 2 and more.rows_written == 14
    assert [r["id"] for r in read_rows(out)] == [f"train-{i:08d}" for i in range(30)]
    assert all(first[name] == (out / name).stat().st_mtime_ns for name in ("train-00000.parquet", "train-00001.parquet"))


def test_resume_after_a_run_killed_mid_shard(inputs, tmp_path):
    objects, backgrounds = inputs
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "num: 250\nseed: 5\nsources: {min_area: 50}\n"
        "composition: {width: 160, height: 160, min_objects: 3, max_objects: 5}\n"
        "output: {shard_rows: 50, row_group_rows: 5}\n"
    )
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pipelines.cli", "expand", str(objects), "-b", str(backgrounds), "-o", str(out), "-c", str(config_path), "-w", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("train-00001.parquet")):
        time.sleep(0.02)
    time.sleep(0.1)  # into the middle of the next shard
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(out.glob("train-*.parquet"))
    assert 1 <= len(finished) < 5, "the run should have been killed part-way"
    for shard in finished:  # whatever is there under a final name is complete
        assert pq.read_metadata(shard).num_rows == 50

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [f"train-{i:08d}" for i in range(250)]  # none missing, none twice
    assert not list(out.glob(".*.tmp"))

    clean = tmp_path / "clean"
    subprocess.run([*command[:-5], str(clean), *command[-4:]], cwd=REPO, check=True, capture_output=True, timeout=300)
    for shard in sorted(clean.glob("train-*.parquet")):
        assert shard.read_bytes() == (out / shard.name).read_bytes(), shard.name


def test_label_map_source_end_to_end(tmp_path):
    source = make_label_map(tmp_path / "ccp_like")
    out = tmp_path / "out"
    result = run_expand([source], make_backgrounds(tmp_path / "bg"), out, small_config(num=6), workers=1)
    assert result.manifest["objects"]["cutouts"] == 3
    categories = {o["category"] for r in read_rows(out) for o in r["objects"]}
    assert categories <= {"jacket", "skirt"} and categories


def test_loads_with_huggingface_datasets_when_installed(inputs, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed")
    objects, backgrounds = inputs
    out = tmp_path / "out"
    run_expand([objects], backgrounds, out, small_config(num=6), workers=1)
    loaded = datasets.load_dataset("parquet", data_files=str(out / "train-*.parquet"), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 6
    assert loaded[0]["image"].size == (96, 80) and loaded[0]["mask"].size == (96, 80)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_are_clear_errors_or_counted_skips(inputs, tmp_path):
    objects, backgrounds = inputs
    (backgrounds / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    (backgrounds / "readme.txt").write_text("hello")
    result = run_expand([objects], backgrounds, tmp_path / "out", small_config(num=4), workers=1)
    skipped = {Path(s["path"]).name for s in result.manifest["skipped"]}
    assert skipped == {"broken.jpg", "readme.txt"}
    assert result.manifest["backgrounds"]["count"] == 3

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no usable background images"):
        run_expand([objects], empty, tmp_path / "out2", small_config(num=4), workers=1)
    with pytest.raises(InputError, match="missing: no such file or directory"):
        run_expand([tmp_path / "missing"], backgrounds, tmp_path / "out3", small_config(num=4), workers=1)


def run_cli(*args: str) -> "CliRunner.Result":
    return CliRunner().invoke(app, list(args))


def test_cli_reports_user_errors_in_one_line(inputs, tmp_path):
    objects, backgrounds = inputs
    result = run_cli("expand", str(tmp_path / "nope"), "-b", str(backgrounds), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "nope: no such file or directory" in result.output and "Traceback" not in result.output

    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("composition:\n  widht: 3\n")
    result = run_cli("expand", str(objects), "-b", str(backgrounds), "-o", str(tmp_path / "o"), "-c", str(bad_config))
    assert result.exit_code == 2 and "unknown key 'widht'" in result.output

    result = run_cli("show", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "s.png"))
    assert result.exit_code == 2 and "no such file or directory" in result.output


def test_cli_expand_show_and_coco_export(inputs, tmp_path):
    from pycocotools.coco import COCO

    objects, backgrounds = inputs
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text("sources: {min_area: 50}\ncomposition: {width: 96, height: 96}\noutput: {shard_rows: 5}\n")
    result = run_cli("expand", str(objects), "-b", str(backgrounds), "-o", str(out), "-n", "12", "-w", "2", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "composites" in result.output

    result = run_cli("show", str(out), "--out", str(tmp_path / "sheet.png"), "--rows", "2", "--columns", "3", "--tile", "64")
    assert result.exit_code == 0, result.output
    sheet = decode_image((tmp_path / "sheet.png").read_bytes())
    assert sheet.shape == (128, 192, 3) and sheet.std() > 10

    result = run_cli("export", str(out), "--format", "coco", "--out", str(tmp_path / "coco"))
    assert result.exit_code == 0, result.output
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    assert len(coco.getImgIds()) == 12
    rows = read_rows(out)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    mask = decode_image(rows[0]["mask"]["bytes"])
    assert len(annotations) == len(rows[0]["objects"])
    for annotation, obj in zip(annotations, rows[0]["objects"]):
        np.testing.assert_array_equal(coco.annToMask(annotation), (mask == obj["instance_id"]).astype(np.uint8))
    assert (tmp_path / "coco" / "images" / f"{rows[0]['id']}.jpg").read_bytes() == rows[0]["image"]["bytes"]


def test_example_config_documents_every_default():
    from augment.config import example_yaml

    text = (REPO / "configs" / "expand.yaml").read_text()
    assert text == example_yaml(), "configs/expand.yaml is stale: regenerate with `synth expand --print-config`"
    assert ExpandConfig.from_yaml(REPO / "configs" / "expand.yaml").to_dict() == ExpandConfig().to_dict()
    assert ExpandConfig.from_yaml(REPO / "configs" / "ccp.yaml").sources.format == "label_map"


def test_help_names_every_source_format_and_the_ray_extra():
    from augment.config import SOURCE_FORMATS

    result = CliRunner().invoke(app, ["expand", "--help"], env={"COLUMNS": "300"}, terminal_width=300)
    assert result.exit_code == 0, result.output
    source_format = next(line for line in result.output.splitlines() if "--source-format" in line)
    assert all(name in source_format for name in SOURCE_FORMATS), source_format
    assert 'pip install "synth[ray]"' in result.output  # rich markup took "[ray]" for a style tag


def test_expand_reports_progress_while_it_checks_backgrounds_and_reads_sources(inputs, tmp_path):
    """Reading and decoding thousands of sources (CCP's 700 photos) was a long silent phase: only the
    superpixels and the composites had a progress bar."""
    objects, backgrounds = inputs
    calls: list[tuple[str, int, int]] = []
    run_expand([objects], backgrounds, tmp_path / "out", small_config(4), progress=lambda *c: calls.append(c))
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == ["backgrounds", "sources", "cutouts", "composites"]
    assert [c for c in calls if c[0] == "backgrounds"][-1] == ("backgrounds", 3, 3)
    read = [c for c in calls if c[0] == "sources"]
    assert [done for _, done, _ in read] == [1, 2, 3, 4, 4] and read[0][2] == 0 and read[-1][2] == 4
    calls.clear()  # a rerun reuses the table: its count is said at once
    run_expand([objects], backgrounds, tmp_path / "out", small_config(4), progress=lambda *c: calls.append(c))
    assert ("sources", 4, 4) in calls


# ----------------------------------------------------------------- rendered groups waiting to be written
_RENDERED_MARKS = "SYNTH_TEST_RENDERED_MARKS"


def _marked_render_range(bounds: tuple[int, int]):
    """render_range, leaving a file per rendered group (the workers are forked: a counter is not shared)."""
    from augment.render_rows import render_range

    result = render_range(bounds)
    Path(os.environ[_RENDERED_MARKS], f"{bounds[0]}").touch()
    return result


def test_local_workers_render_a_bounded_number_of_groups_ahead_of_the_writer(inputs, tmp_path, monkeypatch):
    """Pool.imap sent every row group to the workers at once: with the shard writer slower than the
    workers (one process writing and verifying for many), rendered groups piled up in the parent's
    memory until the run's end (O(rows)). Now a few groups per worker are in flight, the bytes unchanged."""
    import augment.engines.local_engine as local_engine
    from augment.render_rows import GROUPS_IN_FLIGHT_PER_CPU

    objects, backgrounds = inputs
    config = small_config(48)
    config.output.shard_rows, config.output.row_group_rows = 48, 1
    run_expand([objects], backgrounds, tmp_path / "reference", config, workers=1)
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv(_RENDERED_MARKS, str(marks))
    monkeypatch.setattr(local_engine, "render_range", _marked_render_range)
    ahead: list[int] = []  # groups rendered but not yet written, as each group is written
    real_write_shard = local_engine.write_shard

    def slow_write_shard(target, tables, *args):  # the parent's part of each group, made slow
        def slowly():
            for table in tables:
                time.sleep(0.05)
                ahead.append(len(list(marks.iterdir())) - len(ahead))
                yield table
        return real_write_shard(target, slowly(), *args)

    monkeypatch.setattr(local_engine, "write_shard", slow_write_shard)
    run_expand([objects], backgrounds, tmp_path / "out", config, workers=2)
    assert len(ahead) == 48 and max(ahead) <= GROUPS_IN_FLIGHT_PER_CPU * 2 + 1, ahead
    assert (tmp_path / "out" / "train-00000.parquet").read_bytes() == (tmp_path / "reference" / "train-00000.parquet").read_bytes()


def test_the_rows_read_from_the_sources_are_not_held_while_the_composites_are_rendered(tmp_path):
    """A first run kept every cutout's row (its PNG and superpixels, ~28 kB a 384-px cutout) for the whole
    rendering, beside the bank's own copy of those bytes; a rerun, reusing the table, held none."""
    import tracemalloc

    rng = np.random.default_rng(0)
    for index in range(24):  # noisy pixels: PNGs of ~77 kB each
        rgba = rng.integers(0, 255, (120, 160, 4), dtype=np.uint8)
        rgba[:, :, 3] = 255
        save_image(tmp_path / "objects" / "thing" / f"o{index}.png", rgba)
    backgrounds = make_backgrounds(tmp_path / "backgrounds")
    config = small_config(2)
    config.sources.superpixel_max_side = 16
    held = []
    for out in ("warm-up", "out", "out"):  # a first run (lazy imports); a run making its table, one reusing it
        rendering = []
        tracemalloc.start()
        run_expand([tmp_path / "objects"], backgrounds, tmp_path / out, config, workers=1, overwrite=True,
                   progress=lambda stage, done, total: rendering.append(tracemalloc.get_traced_memory()[0])
                   if stage == "composites" else None)
        tracemalloc.stop()
        held.append(rendering[0])
        config.seed += 1
    assert held[1] - held[2] < 600_000, held  # the rows: +1.7 MB
