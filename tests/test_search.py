"""Search API and CLI on generated media, with the untrained network (the baseline: pretrained
backbone + correlation), so these tests do not depend on what the shipped head learned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from augment.imageio import save_image
from pipelines.cli import app
from pipelines.search import Searcher, box_iou, find

QUERY_SIDE = 80
SIZE = (240, 320)  # medium height, width


def _query() -> np.ndarray:
    """A distinctive textured patch: the astronaut's helmet and face."""
    return cv2.resize(data.astronaut()[30:190, 150:310], (QUERY_SIDE, QUERY_SIDE),
                      interpolation=cv2.INTER_AREA)


def _background() -> np.ndarray:
    return cv2.resize(data.coffee(), SIZE[::-1], interpolation=cv2.INTER_AREA)


def _paste(medium: np.ndarray, patch: np.ndarray, x: int, y: int, scale: float) -> tuple[int, ...]:
    h, w = patch.shape[:2]
    scaled = cv2.resize(patch, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    medium[y:y + scaled.shape[0], x:x + scaled.shape[1]] = scaled
    return (x, y, x + scaled.shape[1], y + scaled.shape[0])


def _scene() -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Two instances: 1x, with a grey occluder over ~16% of it, and 0.6x."""
    medium = _background()
    big = _paste(medium, _query(), 30, 40, 1.0)
    small = _paste(medium, _query(), 220, 150, 0.6)
    medium[40:70, 30:65] = (90, 90, 90)
    return medium, [big, small]


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return Searcher(device="cpu", untrained=True)


def _matched(detections, boxes) -> list[float]:
    return [max((box_iou(d.box, box) for d in detections), default=0.0) for box in boxes]


def test_finds_both_instances_at_different_scales_one_occluded(searcher: Searcher) -> None:
    medium, boxes = _scene()
    result = searcher.find(_query(), medium)
    assert min(_matched(result.detections, boxes)) >= 0.5, result.detections
    assert len(result.detections) == 2
    assert result.heatmap.shape == SIZE and 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    scores = [d.score for d in result.detections]
    assert scores == sorted(scores, reverse=True)
    line = result.to_json()
    assert (line["width"], line["height"]) == (SIZE[1], SIZE[0]) and len(line["detections"]) == 2
    assert line["best"] == line["detections"][0]
    assert result.highlight().shape == medium.shape


def test_absent_query_gives_no_detection_but_a_best_peak(searcher: Searcher) -> None:
    result = searcher.find(_query(), _background())
    assert result.detections == [] and result.best is not None
    written = result.to_json()["best"]["score"]  # the score as written: its first four significant digits
    assert result.best.heat < searcher.threshold and float(f"{result.best.score:.4g}") == written


def test_alpha_mask_limits_the_kernel(searcher: Searcher, tmp_path: Path) -> None:
    """A catalogue-style query (object on white, alpha marks the object) is found by its object."""
    medium, boxes = _scene()
    query = np.full((QUERY_SIDE + 40, QUERY_SIDE + 40, 4), 255, np.uint8)
    query[20:-20, 20:-20, :3] = _query()
    query[:, :, 3] = 0
    query[20:-20, 20:-20, 3] = 255
    path = tmp_path / "query.png"
    save_image(path, query)
    result = find(path, medium, device="cpu", untrained=True)
    assert min(_matched(result.detections, boxes)) >= 0.5, result.detections


def _write_video(path: Path, frames: int = 12) -> list[tuple[int, ...]]:
    """The query (0.6x) moving right over the coffee scene, 160x120."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG")),
                             10.0, (160, 120))
    patch = cv2.resize(_query(), (48, 48), interpolation=cv2.INTER_AREA)
    background = cv2.resize(data.coffee(), (160, 120), interpolation=cv2.INTER_AREA)
    boxes = []
    for k in range(frames):
        frame = background.copy()
        boxes.append(_paste(frame, patch, 8 + 8 * k, 36, 1.0))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return boxes


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]


def _search_clip(tmp_path: Path, *options: str) -> tuple[list[tuple[int, ...]], Path, Any]:
    """The moving-query clip searched by the CLI with ``options``: (true boxes, out, result)."""
    video = tmp_path / "clip.mp4"
    boxes = _write_video(video)
    query = tmp_path / "query.png"
    save_image(query, _query())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["search", str(query), str(video), "--out", str(out),
                                      "--device", "cpu", "--untrained", *options])
    return boxes, out, result


def test_video_round_trip(tmp_path: Path) -> None:
    # The per-frame search; the temporal mode: the next test and test_temporal.py.
    boxes, out, result = _search_clip(tmp_path, "--batch", "4", "--save-heatmaps", "--every-instance")
    assert result.exit_code == 0, result.output
    lines = _lines(out)
    assert [line["frame"] for line in lines] == list(range(12))
    hits = [bool(line["detections"]) and box_iou(line["detections"][0]["box"], box) >= 0.5
            for line, box in zip(lines, boxes)]
    assert sum(hits) >= 10, lines
    capture = cv2.VideoCapture(str(out / "clip.highlight.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    capture.release()
    assert len(list((out / "clip.heat").glob("*.png"))) == 12


def test_video_temporal_mode_follows_the_moving_query(tmp_path: Path) -> None:
    """The default for a video: the temporal mode finds the query whole in frame 0 (0.6x its
    size, so the first box is too large) and then follows it as it moves right; every line has a
    state and a best box."""
    boxes, out, result = _search_clip(tmp_path)
    assert result.exit_code == 0, result.output
    lines = _lines(out)
    assert [line["state"] for line in lines] == ["re-detected"] + ["tracking"] * 11
    errors = [np.hypot((line["best"]["box"][0] + line["best"]["box"][2] - box[0] - box[2]) / 2,
                       (line["best"]["box"][1] + line["best"]["box"][3] - box[1] - box[3]) / 2)
              for line, box in zip(lines, boxes)]
    assert max(errors) <= 16, errors  # the object moves 8 px a frame, 88 px in all


def test_broken_video_keeps_frames_before_the_break(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    _write_video(video)
    data_bytes = video.read_bytes()
    video.write_bytes(data_bytes[:int(len(data_bytes) * 0.8)])
    query = tmp_path / "query.png"
    save_image(query, _query())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["search", str(query), str(video), "--out", str(out), "--device", "cpu",
                                      "--untrained"])
    assert result.exit_code == 1
    assert "clip.avi: video breaks after" in result.output and "Traceback" not in result.output
    lines = _lines(out)
    frames = [line for line in lines if "error" not in line]
    assert 0 < len(frames) < 12 and lines[-1]["error"].startswith(str(video))
    capture = cv2.VideoCapture(str(out / "clip.highlight.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    capture.release()


def test_images_folders_pairs_and_name_clashes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # the progress bar (its total checked below) is drawn on a terminal only
    medium, boxes = _scene()
    for folder in ("a", "b"):
        save_image(tmp_path / folder / "scene.jpg", medium, quality=95)
    query = tmp_path / "query.png"
    save_image(query, _query())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["search", str(query), str(tmp_path / "a"), str(tmp_path / "b" / "scene.jpg"),
                                      "--out", str(out), "--device", "cpu", "--untrained"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [  # the lock, the run's record
        "detections.jsonl", "scene-2.heat.png", "scene-2.highlight.jpg", "scene.heat.png", "scene.highlight.jpg"]
    heat = cv2.imread(str(out / "scene.heat.png"), cv2.IMREAD_UNCHANGED)
    assert heat.shape == SIZE and heat.dtype == np.uint8
    for line in _lines(out):
        assert min(_matched([type("D", (), {"box": d["box"]}) for d in line["detections"]], boxes)) >= 0.5

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(p) for p in [
        {"query": "query.png", "medium": "a/scene.jpg"},
        {"query": "query.png", "medium": "missing.jpg"},
        {"query": "query.png", "medium": "b/scene.jpg"}]) + "\n")
    out = tmp_path / "pairs_out"
    result = CliRunner().invoke(app, ["search", "--pairs", str(pairs), "--out", str(out), "--device", "cpu",
                                      "--untrained"])
    assert result.exit_code == 1
    assert "missing.jpg: no such file" in result.output
    assert "3/3" in result.output, result.output  # the failed pair is counted in the progress total, and reached
    lines = _lines(out)
    assert len(lines) == 3 and "error" in lines[1] and "missing.jpg" in lines[1]["error"]
    assert all("error" not in lines[i] and len(lines[i]["detections"]) == 2 for i in (0, 2))


def test_each_line_names_the_bar_its_scores_passed(tmp_path: Path) -> None:
    """A line's ``threshold`` is the bar its detections' scores were compared with (fused scores by
    default: the heat threshold carried through the fusion model, not the heat threshold itself),
    for a folder's images and --every-instance video frames alike: every detection scores at
    least it, and a line without detections has its best below it."""
    medium, _ = _scene()  # its second instance is reported unverified, fused below the heat threshold
    save_image(tmp_path / "media" / "scene.jpg", medium, quality=95)
    save_image(tmp_path / "media" / "empty.jpg", _background(), quality=95)
    _write_video(tmp_path / "clip.avi", frames=2)
    save_image(tmp_path / "query.png", _query())
    for flags, kind, heat_threshold in (([], "fused", 0.52), (["--no-verify"], "heat", 0.36)):
        out = tmp_path / kind
        result = CliRunner().invoke(app, ["search", str(tmp_path / "query.png"), str(tmp_path / "media"),
                                          str(tmp_path / "clip.avi"), "--every-instance", "--out", str(out),
                                          "--device", "cpu", "--untrained", *flags])
        assert result.exit_code == 0, result.output
        lines = _lines(out)
        assert len(lines) == 4 and any(l["detections"] for l in lines) and any(not l["detections"] for l in lines)
        for line in lines:
            assert all(d["score"] >= line["threshold"] for d in line["detections"]), line
            if not line["detections"]:
                assert line["best"]["score"] < line["threshold"], line
        for line in lines:  # which scores, and the heat level the bar was carried from
            assert line["score_kind"] == kind and line["heat_threshold"] == heat_threshold, line
            assert kind == "fused" or line["threshold"] == heat_threshold


def test_bad_queries_are_one_line_errors(tmp_path: Path) -> None:
    medium = tmp_path / "scene.jpg"
    save_image(medium, _background())
    broken = tmp_path / "query.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["search", str(broken), str(medium), "--out", str(out)])
    assert result.exit_code == 2
    assert "query.png" in result.output and "Traceback" not in result.output
    assert not (out / "detections.jsonl").exists()

    query = tmp_path / "good.png"
    save_image(query, _query())
    empty = tmp_path / "mask.png"
    save_image(empty, np.zeros((QUERY_SIDE, QUERY_SIDE), np.uint8))
    result = CliRunner().invoke(app, ["search", str(query), str(medium), "--out", str(out),
                                      "--query-mask", str(empty)])
    assert result.exit_code == 2
    assert "mask.png: the query mask is empty" in result.output


def test_query_larger_than_medium_is_shrunk(searcher: Searcher, caplog: pytest.LogCaptureFixture) -> None:
    medium, boxes = _scene()
    big_query = cv2.resize(_query(), (600, 600), interpolation=cv2.INTER_LINEAR)  # 300 px at scale 0.5
    narrow = medium[:, :200].copy()
    given = Searcher(device="cpu", untrained=True, verify=False, query_scales=(0.5, 1.0, 2.0))
    with caplog.at_level("WARNING"):
        result = given.find(big_query, narrow)
    assert "larger than the medium" in caplog.text  # given scales: the smallest is shrunk to fit
    assert result.heatmap.shape == (SIZE[0], 200)
    caplog.clear()
    auto = Searcher(device="cpu", untrained=True, verify=False, query_scales=None)
    with caplog.at_level("WARNING"):  # automatic scales: only sizes at which the object fits
        result = auto.find(big_query, narrow)
        scales = auto.network.scales(auto.prepare(big_query), *narrow.shape[:2])
    assert "larger than the medium" not in caplog.text
    assert max(scales) * 600 <= 200 and result.heatmap.shape == (SIZE[0], 200)


def test_calibrate_threshold_and_command(searcher: Searcher, tmp_path: Path) -> None:
    from pipelines.search import CalibrationCase, calibrate_threshold
    from shard_factory import make_shards

    medium, boxes = _scene()
    cases = [CalibrationCase(_query(), medium, boxes), CalibrationCase(_query(), _background(), [])]
    calibration = calibrate_threshold(searcher, cases, thresholds=[0.05, 0.4, 0.99])
    assert calibration.threshold == 0.4 and calibration.f1 == 1.0
    assert [row["threshold"] for row in calibration.table] == [0.05, 0.4, 0.99]

    shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=8).folder
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(app, ["calibrate", "--shards", str(shards), "--out", str(out),
                                      "--cases", "4", "--device", "cpu", "--untrained"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert 0.0 < report["threshold"] < 1.0 and report["cases"] >= 1


def test_calibrate_on_labelled_photos(tmp_path: Path) -> None:
    from pipelines.calibration import photo_cases
    from sources_factory import make_street_photos

    photos = make_street_photos(tmp_path / "photos", count=6)
    cases = photo_cases([photos], 4, seed=2, categories=["skirt"], min_area=50)
    assert sum(bool(c.boxes) for c in cases) == 3 and sum(not c.boxes for c in cases) == 1
    for case in cases:
        assert case.query.shape[2] == 4  # a catalogue shot: RGBA, the object in its alpha
        for x0, y0, x1, y1 in case.boxes:  # the skirt: rows 100-150 of 160, in the lower part
            assert 0 <= x0 < x1 <= case.medium.shape[1] and y0 >= 0.55 * case.medium.shape[0]
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(app, ["calibrate", "--photos", str(photos), "--out", str(out), "--cases", "4",
                                      "--categories", "skirt", "--min-area", "50", "--device", "cpu",
                                      "--untrained"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert 0.0 < report["threshold"] < 1.0 and report["cases"] == 4 and report["model"] == "untrained"
    both = CliRunner().invoke(app, ["calibrate", "--photos", str(photos), "--shards", str(tmp_path),
                                    "--out", str(out)])
    assert both.exit_code == 2 and "one of them" in both.output


def test_calibrate_on_labelled_photos_counts_and_names_what_it_skipped(tmp_path: Path) -> None:
    """A truncated photo and a label map of another size are left out, counted on the console and
    named in the report (they were dropped silently)."""
    from sources_factory import make_street_photos

    photos = make_street_photos(tmp_path / "photos", count=6)
    data = (photos / "photos" / "0001.jpg").read_bytes()
    (photos / "photos" / "0001.jpg").write_bytes(data[: len(data) // 3])  # truncated
    cv2.imwrite(str(photos / "labels" / "0002.png"), np.zeros((40, 30), np.uint8))  # not the photo's size
    out = tmp_path / "calibration.json"
    # What is searched is not the point here (the test above calibrates the default search): one size, no
    # mirror, no verification.
    result = CliRunner().invoke(app, ["calibrate", "--photos", str(photos), "--out", str(out), "--cases", "4",
                                      "--categories", "skirt", "--min-area", "50", "--device", "cpu",
                                      "--untrained", "--scales", "1", "--no-mirror", "--no-verify"])
    assert result.exit_code == 0, result.output
    skipped = json.loads(out.read_text())["skipped"]
    assert len(skipped) == 2 and any("0001" in line for line in skipped) and any("0002" in line for line in skipped)
    assert "2 input(s) skipped" in " ".join(result.output.split())


def test_numpy_blas_is_limited_to_one_thread() -> None:
    """The search sets numpy's OpenBLAS (and OpenCV's) to one thread: its spinning threads starve
    torch's. numpy's wheels bundle scipy-openblas, which reports its thread count."""
    from augment.blas_threads import blas_threads, limit_blas_threads

    np.ones((64, 64)) @ np.ones((64, 64))  # OpenBLAS loaded and started
    assert limit_blas_threads(1) >= 1
    counts = blas_threads()
    assert any("openblas" in path for path in counts)
    assert set(counts.values()) == {1}


@pytest.mark.parametrize("package", ["augment", "train.model", "pipelines.search"])
def test_openmp_waits_passively_whichever_package_loads_first(package: str) -> None:
    """Spinning OpenMP threads slow the search 10x on a shared CPU: every synth package sets the
    passive wait policy before torch loads; a policy the user set is kept."""
    import os
    import subprocess
    import sys

    # What counts is the policy when torch is first imported (torch's OpenMP reads it as it loads): a finder
    # placed first on sys.meta_path prints it then and refuses torch, so no process pays a torch load (four
    # of them did, ~2 s each); a package that never imports torch (augment) prints it at the end.
    code = ("import os, sys\n"
            "class RefuseTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            print(os.environ.get('OMP_WAIT_POLICY'), flush=True)\n"
            "            os._exit(0)\n"
            "sys.meta_path.insert(0, RefuseTorch())\n"
            f"import {package}\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    root = str(Path(__file__).resolve().parents[1])
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "PASSIVE"
    run = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, cwd=root,
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "ACTIVE"


def test_a_mirrored_instance_is_found_by_default_not_with_mirror_off(searcher: Searcher) -> None:
    """The query is searched as given and mirrored (a garment faces either way): the heat over a
    mirrored instance is the as-given query's over an upright one; searching as given only, the
    mirrored instance heats less."""
    medium = _background()
    box = _paste(medium, np.ascontiguousarray(_query()[:, ::-1]), 120, 60, 1.0)
    as_given = Searcher(device="cpu", untrained=True, verify=False, mirror=False)
    x0, y0, x1, y1 = box
    mirrored_heat = searcher.maps(searcher.prepare(_query()), [medium]).heat[0][y0:y1, x0:x1].max()
    plain_heat = as_given.maps(as_given.prepare(_query()), [medium]).heat[0][y0:y1, x0:x1].max()
    upright = _background()
    _paste(upright, _query(), 120, 60, 1.0)
    upright_heat = as_given.maps(as_given.prepare(_query()), [upright]).heat[0][y0:y1, x0:x1].max()
    assert mirrored_heat > 1.1 * plain_heat, (mirrored_heat, plain_heat)
    assert mirrored_heat == pytest.approx(upright_heat, rel=0.1)
    assert box_iou(searcher.find(_query(), medium).best.box, box) >= 0.5
