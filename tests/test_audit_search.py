"""`synth search` robustness found by an audit as a demanding user: absurd option values, odd inputs.
Small generated images and videos; the untrained network on the CPU."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from augment.imageio import save_image
from cli_checks import run_cli
from tests.test_hardening_search import _random, _write_video


def _video(path: Path, frames: int = 3) -> Path:
    _write_video(path, frames)
    return path


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_box_many_times_the_frame_is_one_line_not_a_cv2_traceback(tmp_path):
    """--box 0,0,1e9,1e9 shrank the frame to nothing: cv2.resize's assertion as a traceback."""
    query, video = tmp_path / "query.png", _video(tmp_path / "clip.avi")
    save_image(query, _random(1, 24, 24))
    for box in ("0,0,1e9,1e9", "0,0,1e300,1e300"):
        result = run_cli("search", query, video, "--out", tmp_path / "found", "--device", "cpu", "--untrained",
                         "--no-verify", "--batch", 1, "--box", box)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        errors = _error_lines(" ".join(result.output.split()).replace(" error:", "\nerror:"))
        assert len(errors) == 1 and "--box 0,0,1e+" in errors[0] and "times the size" in errors[0], result.output


def test_a_window_of_a_target_far_larger_than_the_frame_is_sampled_not_refused():
    from pipelines.window_geometry import crop_affine, sample_window

    frame = _random(3, 72, 96)
    affine = crop_affine((48.0, 36.0), 1e-6, 64, 64, 0.0)
    window = sample_window(frame, affine, 64, 64)
    assert window.shape == (64, 64, 3)


def test_an_image_under_8_px_a_side_is_an_error_line_not_a_page_of_noise_detections(tmp_path):
    """A 5000x1 image gave 132 'detections' of a query shrunk below a pixel (exit 0)."""
    query, thin, photo = tmp_path / "query.png", tmp_path / "thin.png", tmp_path / "photo.png"
    save_image(query, _random(1, 24, 24))
    save_image(thin, _random(2, 1, 600))
    save_image(photo, _random(3, 72, 96))
    result = run_cli("search", query, thin, photo, "--out", tmp_path / "found", "--device", "cpu", "--untrained",
                     "--no-verify", "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "thin.png: image is 600x1 px; at least 8 px" in " ".join(result.output.split())
    lines = [json.loads(line) for line in (tmp_path / "found" / "detections.jsonl").read_text().splitlines()]
    assert "error" in lines[0] and "detections" not in lines[0] and "detections" in lines[1]


def test_files_of_a_media_folder_that_are_neither_images_nor_videos_are_counted_not_silently_dropped(tmp_path, caplog):
    """A folder's notes and PDFs were left out without a word (the rule: a counted, logged skip); GIFs
    are media now (tests/test_open_defects_search.py)."""
    import logging

    from pipelines.search_jobs import expand_media

    folder = tmp_path / "media"
    save_image(folder / "photo.png", _random(2, 32, 32))
    (folder / "notes.txt").write_text("where I took these")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4")
    with caplog.at_level(logging.INFO, logger="pipelines.search_jobs"):
        assert expand_media([folder]) == [folder / "photo.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 file(s) that are neither images nor videos" in warnings[0], warnings
    assert sum("scan.pdf: neither" in r.getMessage() for r in caplog.records) == 1


def test_options_that_cannot_apply_are_refused_not_silently_ignored(tmp_path):
    """search --no-verify --fusion F ignored F (not even read); calibrate --shards ignored the
    --photos-only --include, --categories, --drop-labels, --source-format and --min-area."""
    from cli_checks import assert_one_line_error
    from shard_factory import make_shards

    query = tmp_path / "query.png"
    save_image(query, _random(1, 24, 24))
    result = run_cli("search", query, query, "--out", tmp_path / "found", "--untrained", "--no-verify",
                     "--fusion", tmp_path / "fusion.json")
    assert_one_line_error(result, 2, "--fusion", "--no-verify")
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    result = run_cli("calibrate", "--shards", tmp_path / "shards", "--untrained", "--out", tmp_path / "cal.json",
                     "--include", "photo1*", "--min-area", 50)
    assert_one_line_error(result, 2, "--include, --min-area apply with --photos, not --shards")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query.png", "shards"]


def test_a_pairs_line_whose_query_mask_is_not_a_path_is_an_error_line_not_searched_unmasked(tmp_path):
    from pipelines.search_jobs import read_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q.png", "medium": "m.png", "query_mask": 5}\n'
                     '{"query": "q.png", "medium": "m.png", "query_mask": "mask.png"}\n')
    bad, good = read_pairs(pairs)
    assert bad.error is not None and "pairs.jsonl:1" in bad.error and "query_mask" in bad.error
    assert good.error is None and good.query_mask == tmp_path / "mask.png"



@pytest.mark.parametrize("key", ["query", "medium", "query_mask"])
def test_a_pairs_line_with_an_empty_path_is_an_error_line_not_the_pairs_files_folder(tmp_path, key):
    """"medium": "" was Path("") under the file's folder: every image beside the pairs file searched."""
    from pipelines.search_jobs import read_pairs

    entry = {"query": "q.png", "medium": "m.png", "query_mask": "mask.png", key: " "}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(entry) + "\n" + '{"query": "q.png", "medium": "m.png"}\n')
    bad, good = read_pairs(pairs)
    assert bad.error is not None and "pairs.jsonl:1" in bad.error and f'"{key}" is an empty path' in bad.error
    assert good.error is None and good.medium == tmp_path / "m.png"


def test_a_pairs_line_naming_a_file_that_is_not_utf8_is_its_error_not_an_output_of_that_name(tmp_path):
    """"m\\udcff.png" (JSON's escape of a name read with surrogateescape) was searched: its heat map and
    highlight written under a name that is not UTF-8, a lone surrogate in detections.jsonl; typed, such a
    name is refused, and one in a folder left out."""
    import os

    query = tmp_path / "q.png"
    save_image(query, _random(1, 24, 24))
    save_image(tmp_path / "m.png", _random(2, 48, 64))
    (tmp_path / os.fsdecode(b"m\xff.png")).write_bytes((tmp_path / "m.png").read_bytes())
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q.png", "medium": "m\\udcff.png"}\n{"query": "q.png", "medium": "m.png"}\n')
    out = tmp_path / "found"
    result = run_cli("search", "--pairs", pairs, "--out", out, "--untrained", "--no-verify", "--device", "cpu")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1 and "pairs.jsonl:1" in errors[0] and "m\\xff.png: a name that is not UTF-8" in errors[0]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("m")) == ["m.heat.png", "m.highlight.jpg"]
    assert "udcff" not in (out / "detections.jsonl").read_text()

# ----------------------------------------------------------------- option maxima that bound memory
def test_a_batch_or_workers_past_its_maximum_is_one_line_before_the_model_loads(tmp_path):
    """--batch 100000 had no bound: a video's reader held up to six batches of decoded frames (the
    whole video); --workers 100000 decoded four stills per worker (a whole folder) before searching."""
    from cli_checks import assert_one_line_error

    query, photo = tmp_path / "query.png", tmp_path / "photo.png"
    save_image(query, _random(1, 24, 24))
    save_image(photo, _random(2, 48, 64))
    for option, value, low, maximum in (("--batch", 100000, 1, 64), ("--workers", 100000, "0 (one per CPU thread)", 32),
                                        ("--batch", 0, 1, 64), ("--workers", -1, "0 (one per CPU thread)", 32)):
        result = run_cli("search", query, photo, "--out", tmp_path / "found", "--untrained", "--no-verify",
                         option, value)
        assert_one_line_error(result, 2, f"{option} must be between {low} and {maximum}", str(value))
    result = run_cli("calibrate", "--shards", tmp_path / "no-shards", "--untrained", "--out", tmp_path / "c.json",
                     "--cases", 10**9)
    assert_one_line_error(result, 2, "--cases must be at most 2000", str(10**9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "query.png"]


def test_run_search_refuses_a_batch_or_workers_past_its_maximum_before_clearing_anything(tmp_path):
    """The Python API has the same bounds as the options, checked before an earlier run's outputs go."""
    import pytest

    from augment.imageio import InputError
    from pipelines.search_jobs import SearchJob
    from pipelines.search_outputs import run_search
    from pipelines.search_workers import SearchWorkers

    out = tmp_path / "found"
    out.mkdir()
    (out / "detections.jsonl").write_text("earlier\n")
    job = SearchJob(tmp_path / "query.png", tmp_path / "clip.avi")
    with pytest.raises(InputError, match="--batch must be between 1 and 64"):
        run_search(None, [job], out, batch=100000)
    with pytest.raises(InputError, match="--workers must be between 1 and 32"):
        run_search(None, [job], out, workers=100000)
    assert (out / "detections.jsonl").read_text() == "earlier\n"
    with pytest.raises(ValueError, match="between 1 and 32"):
        SearchWorkers(None, workers=100000)


# ----------------------------------------------------------------- temporaries of killed writes
def test_a_search_removes_the_temporaries_killed_writes_left_in_out_and_keeps_a_live_writers(tmp_path):
    """A write killed mid-way (here a `synth calibrate --out found/threshold.json`, SIGKILLed) left
    its hidden temporary in the folder for good; another process still writing there keeps its own."""
    from augment.atomic_files import temporary_beside
    from cli_checks import killed_write

    query, photo, out = tmp_path / "query.png", tmp_path / "photo.png", tmp_path / "found"
    save_image(query, _random(1, 24, 24))
    save_image(photo, _random(2, 48, 64))
    out.mkdir()
    dead = killed_write(out / "threshold.json")
    live = temporary_beside(out / "threshold.json")  # this process: still writing
    result = run_cli("search", query, photo, "--out", out, "--device", "cpu", "--untrained", "--no-verify",
                     "--workers", 1)
    assert result.exit_code == 0, result.output
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in out.iterdir() if p != live) == [
        ".synth-search-outputs", ".synth-search-progress", ".synth.lock", "detections.jsonl", "photo.heat.png", "photo.highlight.jpg"]


def test_a_long_videos_detection_lines_are_not_held_in_memory_until_the_end(tmp_path, monkeypatch):
    """run_search kept every detections.jsonl line in a list until the run's end (~1.3 kB a frame:
    130 MB for a 100,000-frame video), then the whole file as one string; now each line goes to a
    scratch file as it comes. The file is the same. (A stand-in searcher; the video's lines made up.)"""
    import tracemalloc
    import types

    import pipelines.search_outputs as search_outputs
    from pipelines.search_jobs import SearchJob

    def line(medium: Path, i: int) -> dict:
        return {"source": str(medium), "query": "q", "frame": i,
                "detections": [{"box": [i, 2.5, 3.5, 4.5], "score": 0.5 + i * 1e-9, "category": "thing"}] * 3}

    def made_up_video(workers, prepared, medium, out, names, save_heatmaps, batch, progress, summary):
        return (line(medium, i) for i in range(int(medium.stem)))

    monkeypatch.setattr(search_outputs, "_search_video", made_up_video)
    searcher = types.SimpleNamespace(network=types.SimpleNamespace(use_onnx=lambda: None), device="cpu",
                                     prepare=lambda query, mask=None: "prepared")
    peaks = {}
    for count in (10, 500, 5000):  # the first: a warm-up (lazy imports)
        (tmp_path / "q.png").write_bytes(b"q")
        medium = tmp_path / f"{count}.mp4"
        medium.write_bytes(b"v")
        tracemalloc.start()
        search_outputs.run_search(searcher, [SearchJob(tmp_path / "q.png", medium, work=count)], tmp_path / f"out{count}",
                                  temporal=False, workers=1)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        written = (tmp_path / f"out{count}" / "detections.jsonl").read_text()
        assert written == "".join(json.dumps(line(medium, i)) + "\n" for i in range(count))
    assert peaks[5000] - peaks[500] < 1_000_000, peaks  # a list: +6 MB


def test_a_full_disk_while_detection_lines_are_written_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """The lines streamed to an unnamed scratch file: a full disk said 'file system: No space left on
    device' naming no file, and a failed run held the scratch file open; now the error names
    detections.jsonl and the temporary beside it is removed."""
    import errno
    import types

    import pipelines.search_outputs as search_outputs
    from pipelines.search_jobs import SearchJob

    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(search_outputs, "open", lambda *args, **kwargs: FullDisk(), raising=False)
    monkeypatch.setattr(search_outputs, "_search_video", lambda *args: iter([{"frame": 0, "detections": []}]))
    searcher = types.SimpleNamespace(network=types.SimpleNamespace(use_onnx=lambda: None), device="cpu",
                                     prepare=lambda query, mask=None: "prepared")
    (tmp_path / "q.png").write_bytes(b"q")
    (tmp_path / "v.mp4").write_bytes(b"v")
    with pytest.raises(OSError) as raised:
        search_outputs.run_search(searcher, [SearchJob(tmp_path / "q.png", tmp_path / "v.mp4", work=1)], tmp_path / "out",
                                  temporal=False, workers=1)
    assert raised.value.filename == str(tmp_path / "out" / "detections.jsonl")
    assert not [p for p in (tmp_path / "out").iterdir() if "detections" in p.name], list((tmp_path / "out").iterdir())
