"""A killed `synth search` resumes: the stills it finished are kept (not searched again), the rest
searched, and detections.jsonl is the uninterrupted run's byte for byte; another setting starts over.
Small generated images; the untrained network on the CPU, one image at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from augment.imageio import save_image
from tests.cli_checks import run_cli

OPTIONS = ("--device", "cpu", "--untrained", "--no-verify", "--workers", "1", "--batch", "1")
PROGRESS = ".synth-search-progress"


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    media = tmp_path / "photos"
    media.mkdir()
    for i in range(12):
        save_image(media / f"p{i:02d}.png", rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    query = tmp_path / "query.png"
    save_image(query, rng.integers(0, 255, (40, 32, 3), dtype=np.uint8))
    return query, media


def _search(query: Path, media: Path, out: Path, *options: str) -> str:
    result = run_cli("search", query, media, "--out", out, *OPTIONS, *options)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _heat_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.heat.png"))}


def _done_jobs(out: Path) -> list[int]:
    """The images the progress file lists as done (a line a kill cut short is none)."""
    done = []
    for line in (out / PROGRESS).read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "job" in entry:
            done.append(entry["job"])
    return done


def test_a_search_killed_with_sigkill_resumes_keeping_the_images_it_finished(photos, tmp_path):
    query, media = photos
    whole, out = tmp_path / "whole", tmp_path / "found"
    _search(query, media, whole)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "search", str(query), str(media),
                                "--out", str(out), *OPTIONS], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if (out / PROGRESS).is_file() and (out / PROGRESS).read_text().count('"job"') >= 3:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the search ended before it was killed"
    assert not (out / "detections.jsonl").exists()
    finished = _done_jobs(out)
    assert 3 <= len(finished) < 12
    kept = {name: t for name, t in _heat_times(out).items() if int(name[1:3]) in finished}

    said = _search(query, media, out)

    assert f"searched 12 images ({len(finished)} kept from an earlier run of this search)" in said
    assert (out / "detections.jsonl").read_bytes() == (whole / "detections.jsonl").read_bytes()
    times = _heat_times(out)
    assert len(times) == 12
    assert all(times[name] == t for name, t in kept.items())  # the finished images were not searched again
    assert sorted(_done_jobs(out)) == list(range(12))  # each image searched once over both runs
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())


def test_a_progress_line_cut_short_by_a_kill_is_ignored_and_its_image_searched_again(photos, tmp_path):
    query, media = photos
    whole, out = tmp_path / "whole", tmp_path / "found"
    _search(query, media, whole)
    _search(query, media, out)
    progress = (out / PROGRESS).read_bytes()
    (out / PROGRESS).write_bytes(progress[:-40])  # the last image's line torn mid-way, as a kill leaves it
    (out / "detections.jsonl").unlink()  # written only at the end
    before = _heat_times(out)

    _search(query, media, out)

    assert (out / "detections.jsonl").read_bytes() == (whole / "detections.jsonl").read_bytes()
    after = _heat_times(out)
    assert [name for name in after if after[name] != before[name]] == ["p11.heat.png"]
    assert sorted(_done_jobs(out)) == list(range(12))
    # The redone image's line is a line of its own, not glued to the torn one (and lost with it): a
    # third run keeps all twelve.
    assert "12 kept" in _search(query, media, out)


def test_changed_settings_start_over_and_a_changed_image_is_searched_again(photos, tmp_path):
    query, media = photos
    out = tmp_path / "found"
    _search(query, media, out)
    first = _heat_times(out)

    # Another threshold decides other detections: nothing of the earlier run is kept.
    _search(query, media, out, "--threshold", "0.6")
    second = _heat_times(out)
    assert all(second[name] != first[name] for name in first)
    assert sorted(_done_jobs(out)) == list(range(12))
    assert '"threshold": 0.6' in (out / "detections.jsonl").read_text()

    # The same command again, one photo replaced since: that photo alone is searched again.
    save_image(media / "p05.png", np.zeros((96, 128, 3), np.uint8))
    _search(query, media, out, "--threshold", "0.6")
    third = _heat_times(out)
    assert [name for name in third if third[name] != second[name]] == ["p05.heat.png"]
    whole = tmp_path / "whole"
    _search(query, media, whole, "--threshold", "0.6")
    assert (out / "detections.jsonl").read_bytes() == (whole / "detections.jsonl").read_bytes()


def test_a_resumed_search_removes_what_killed_writes_left_in_a_videos_heat_map_folder(photos, tmp_path):
    """A resumed run keeps the earlier run's outputs, but not the temporaries its killed writes left:
    a half-written frame heat map in ``<video>.heat/`` stayed there for good (a run that starts over
    clears them)."""
    import cv2

    from tests.cli_checks import killed_write

    query, media = photos
    writer = cv2.VideoWriter(str(media / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 72))
    for k in range(3):
        writer.write(np.random.default_rng(10 + k).integers(0, 255, (72, 96, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "found"
    _search(query, media, out, "--save-heatmaps", "--every-instance")
    left = killed_write(out / "clip.heat" / "000001.png")
    (out / "detections.jsonl").unlink()
    before = _heat_times(out)

    _search(query, media, out, "--save-heatmaps", "--every-instance")

    assert not left.exists()
    assert sorted(p.name for p in (out / "clip.heat").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert _heat_times(out) == before  # the stills were kept: this was a resumed run


def test_a_fifo_named_as_the_progress_file_is_one_line_not_a_wait(photos, tmp_path):
    """A FIFO under the progress file's name (a shared --out) was read to learn the earlier run: the
    search waited for a writer for ever."""
    from tests.cli_checks import error_lines, run_cli_process

    query, media = photos
    out = tmp_path / "found"
    out.mkdir()
    os.mkfifo(out / PROGRESS)
    result = run_cli_process(["search", query, media / "p00.png", "--out", out, *OPTIONS], cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [f"error: {out / PROGRESS}: is not a plain file; synth writes it only as "
                                          "a plain file of its own: remove it"]


def test_a_kept_image_that_fails_on_the_rerun_leaves_no_outputs_of_the_earlier_run(photos, tmp_path):
    """The same command again after p01.png was damaged: its error was reported, but the heat map and
    highlight of the photo it was stayed beside it (the folder held two runs' outputs)."""
    query, media = photos
    out = tmp_path / "found"
    _search(query, media, out)
    (media / "p01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run_cli("search", query, media, "--out", out, *OPTIONS)
    assert result.exit_code == 1 and "p01.png" in result.output
    assert not (out / "p01.heat.png").exists() and not (out / "p01.highlight.jpg").exists()
    assert (out / "p00.heat.png").is_file() and (out / "p02.highlight.jpg").is_file()


def test_an_upgrade_between_the_runs_starts_over(photos, tmp_path, monkeypatch):
    """The resume key held no version: after an upgrade that changes what the search finds, the same
    command kept the older synth's lines (a finished run's too) beside new ones."""
    from importlib import metadata

    query, media = photos
    out = tmp_path / "found"
    _search(query, media, out)
    first = _heat_times(out)
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "99.0" if name == "torch" else real(name))
    said = _search(query, media, out)
    assert "kept from an earlier run" not in said
    assert all(_heat_times(out)[name] != first[name] for name in first)


def test_the_key_holds_what_the_search_finds_not_what_it_said_or_where_its_fusion_model_was_read(tmp_path, monkeypatch):
    """The key took the network's 'said the small-query warning' flag (a search that warned had another
    key than its rerun) and the fusion model's source path (the same model copied elsewhere was another
    key); its OpenCV version was the headless wheel's alone (another wheel providing cv2: none)."""
    import shutil

    import pipelines.search_resume as search_resume
    from pipelines.fusion import FusionModel
    from pipelines.search import Searcher
    from pipelines.search_resume import search_key

    searcher = Searcher(untrained=True, device="cpu")
    before = search_key(searcher, [])
    searcher.network.warned_unseen = True  # as after a find() whose query was small in a large medium
    assert search_key(searcher, []) == before
    assert searcher.verification is not None
    shutil.copy(searcher.verification.model.source, tmp_path / "elsewhere.json")
    searcher.verification.model = FusionModel.load(tmp_path / "elsewhere.json")
    assert search_key(searcher, []) == before
    # A headless-only install keys as before; another OpenCV wheel's version is in the key.
    installed = {"opencv-python-headless": "4.10.0.84"}
    monkeypatch.setattr(search_resume, "package_versions",
                        lambda names: {name: installed.get(name, "1.0") if name in installed or "opencv" not in name
                                       else None for name in names})
    assert search_resume._versions() == {"synth": "1.0", "torch": "1.0", "onnxruntime": "1.0",
                                         "opencv-python-headless": "4.10.0.84", "numpy": "1.0"}
    installed = {"opencv-python": "4.10.0.84"}
    assert search_resume._versions()["opencv-python"] == "4.10.0.84"
