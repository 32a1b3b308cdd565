"""`synth search` as a user meets it on videos and frame folders: interrupted runs, options that
cannot apply, the one-line errors. Small generated videos; the untrained network on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from augment.imageio import save_image
from cli_checks import assert_one_line_error, run_cli

STOPPED_AT = 2  # frames searched before the interrupt


def _random(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _write_video(path: Path, frames: int = 6) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 72))
    for k in range(frames):
        writer.write(_random(10 + k, 72, 96))
    writer.release()


def _interrupt_after(monkeypatch, owner: object, name: str) -> None:
    """``owner.name`` raises KeyboardInterrupt (a user's Ctrl-C) once it has run STOPPED_AT times."""
    real, calls = getattr(owner, name), []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) > STOPPED_AT:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, stopping)


def _search(tmp_path: Path, *options: str):
    query, video = tmp_path / "query.png", tmp_path / "clip.mp4"
    save_image(query, _random(1, 24, 24))
    _write_video(video)
    return run_cli("search", query, video, "--out", tmp_path / "found", "--device", "cpu", "--untrained",
                   "--no-verify", "--workers", 1, "--batch", 1, *options)


def test_ctrl_c_in_the_temporal_mode_leaves_no_highlighted_video_as_if_complete(tmp_path, monkeypatch):
    from pipelines.temporal import TemporalSearcher

    _interrupt_after(monkeypatch, TemporalSearcher, "step")
    result = _search(tmp_path)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert "interrupted; rerun the same `synth search` command" in " ".join(result.stderr.split())
    left = sorted(p.name for p in (tmp_path / "found").iterdir())
    assert not [name for name in left if "highlight" in name or name.endswith((".summary.json", ".jsonl"))], left


def test_ctrl_c_with_every_instance_leaves_no_highlighted_video_as_if_complete(tmp_path, monkeypatch):
    from pipelines.search_workers import SearchWorkers

    _interrupt_after(monkeypatch, SearchWorkers, "find_each")
    result = _search(tmp_path, "--every-instance")
    assert result.exit_code == 130, result.output
    left = sorted(p.name for p in (tmp_path / "found").iterdir())
    assert not [name for name in left if "highlight" in name or name.endswith(".jsonl")], left


def test_box_with_no_video_among_the_media_is_one_line_not_silently_ignored(tmp_path):
    query, photo = tmp_path / "query.png", tmp_path / "photos" / "scene.jpg"
    save_image(query, _random(1, 24, 24))
    save_image(photo, _random(2, 72, 96))
    result = run_cli("search", query, photo.parent, "--box", "10,10,20,20", "--out", tmp_path / "found",
                     "--device", "cpu", "--untrained", "--no-verify")
    assert_one_line_error(result, 2, "--box", "video")
    assert not (tmp_path / "found").exists()


def test_a_sequence_of_unpadded_frame_numbers_is_read_in_frame_order(tmp_path):
    """ffmpeg's default ``frame%d.png``: frame2 comes before frame10, as a file manager shows them."""
    from pipelines.frames import FolderFrames

    folder = tmp_path / "frames"
    for k in (1, 2, 3, 9, 10, 11, 20):
        save_image(folder / f"frame{k}.png", np.full((8, 8, 3), k, np.uint8))
    save_image(folder / "frame05.png", np.full((8, 8, 3), 5, np.uint8))  # zero-padded among them
    frames = [int(frame[0, 0, 0]) for _, batch in FolderFrames(folder, batch_size=3) for frame in batch]
    assert frames == [1, 2, 3, 5, 9, 10, 11, 20]


def test_a_box_beyond_the_frame_edge_is_clipped_to_an_ordered_box_not_inverted():
    """--box 350,230,50,50 on 360x240 Crossing gave [364, 212, 360, 240] in detections.jsonl."""
    from pipelines.window_geometry import box_from

    for center in ((375.0, 255.0), (-30.0, -40.0), (180.0, 120.0), (400.0, -10.0)):
        x0, y0, x1, y1 = box_from(center, (20.0, 30.0), 360, 240)
        assert 0 <= x0 <= x1 <= 360 and 0 <= y0 <= y1 <= 240, (center, (x0, y0, x1, y1))
    assert box_from((180.0, 120.0), (20.0, 30.0), 360, 240) == (170, 105, 190, 135)


def test_a_box_inside_the_frames_but_under_two_pixels_is_not_said_to_lie_outside(tmp_path):
    result = _search(tmp_path, "--box", "10,10,1,1")
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "10,10,1,1" in message and "outside" not in message and "2 px" in message, message


def test_a_missing_folder_is_named_as_missing_not_as_an_unknown_suffix(tmp_path):
    query = tmp_path / "query.png"
    save_image(query, _random(1, 24, 24))
    for options in ((), ("--sequence",)):
        result = run_cli("search", query, tmp_path / "frames_typo", "--out", tmp_path / "found", "--device", "cpu",
                         "--untrained", "--no-verify", *options)
        assert result.exit_code == 2, result.output  # the only MEDIA missing: refused before --out is touched
        message = " ".join(result.output.split())
        assert "frames_typo: no such file or folder" in message and "suffix" not in message, message


def test_a_busy_out_is_one_line_with_exit_code_3_and_no_progress_bar(tmp_path):
    from augment.locking import BUSY_EXIT_CODE, folder_lock

    with folder_lock(tmp_path / "found", "search run"):  # as another process's run would
        result = _search(tmp_path)
    assert_one_line_error(result, BUSY_EXIT_CODE, "found", "another search run is writing here")


def test_an_odd_sized_first_file_of_a_sequence_is_skipped_not_every_real_frame(tmp_path):
    """A thumbnail sorted first (0000.jpg) set the sequence's size, and every real frame was skipped."""
    from pipelines.frames import FolderFrames

    folder = tmp_path / "frames"
    save_image(folder / "0000.png", np.zeros((4, 6, 3), np.uint8))
    for k in range(1, 7):
        save_image(folder / f"{k:04d}.png", np.full((8, 8, 3), k, np.uint8))
    reader = FolderFrames(folder, batch_size=4)
    frames = [int(frame[0, 0, 0]) for _, batch in reader for frame in batch]
    assert frames == [1, 2, 3, 4, 5, 6] and (reader.info.width, reader.info.height) == (8, 8)
    assert len(reader.skipped) == 1 and "0000.png: frame is 6x4, the sequence is 8x8" in reader.skipped[0]


def test_the_best_guess_label_of_a_box_at_the_right_edge_stays_inside_the_picture():
    """Crossing, --every-instance: a best guess at the right edge was labelled 'bes'."""
    from pipelines.detections import Detection
    from pipelines.highlight import GUESS_RGB, highlight

    image, heat = np.zeros((120, 200, 3), np.uint8), np.zeros((120, 200), np.float32)

    def label_pixels(box: tuple[int, int, int, int]) -> int:
        drawn = highlight(image, heat, [], Detection(box=box, score=0.12, area=1, peak=(0, 0)))
        drawn[box[1]:box[3], box[0]:box[2]] = 0  # the box itself aside: the label's pixels only
        return int((np.abs(drawn.astype(int) - GUESS_RGB).sum(axis=2) < 120).sum())

    assert label_pixels((185, 60, 199, 100)) == label_pixels((10, 60, 24, 100)) > 0


def test_pairs_that_fail_still_advance_the_progress_to_its_total(tmp_path):
    """--pairs: a missing or unreadable medium and an unreadable query are errors (counted, the run goes
    on), and their share of the progress total (count_work, the bar's total) is advanced too: the bar
    ends full instead of stopping short."""
    from pipelines.search import Searcher
    from pipelines.search_jobs import count_work, read_pairs
    from pipelines.search_outputs import run_search

    save_image(tmp_path / "query.png", _random(1, 24, 24))
    save_image(tmp_path / "scene.png", _random(2, 72, 96))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    _write_video(tmp_path / "clip.mp4", frames=3)
    pairs = [("query.png", "scene.png"), ("query.png", "missing.jpg"), ("query.png", "broken.jpg"),
             ("bad.png", "clip.mp4"), ("query.png", "clip.mp4")]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"query": q, "medium": m}) + "\n" for q, m in pairs))
    jobs = read_pairs(tmp_path / "pairs.jsonl")
    advanced: list[int] = []
    summary = run_search(Searcher(device="cpu", untrained=True, verify=False), jobs, tmp_path / "out",
                         advance=advanced.append, workers=1)
    assert len(summary.errors) == 3 and summary.images == 1 and summary.frames == 3, summary
    assert sum(advanced) == count_work(jobs) == 3 + 3 + 3  # three images (two failed), two 3-frame videos


def test_an_unreadable_query_fails_each_of_its_pairs_but_is_read_once(tmp_path, monkeypatch):
    """--pairs: a bad query is read once (a huge corrupt file is not decoded again for every pair);
    each of its pairs still gets its error line, and the other query's pairs are searched."""
    from pipelines.search import Searcher
    from pipelines.search_jobs import read_pairs
    from pipelines.search_outputs import run_search

    save_image(tmp_path / "query.png", _random(1, 24, 24))
    save_image(tmp_path / "scene.png", _random(2, 72, 96))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    pairs = [("bad.png", "scene.png"), ("query.png", "scene.png"), ("bad.png", "scene.png"), ("bad.png", "scene.png")]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"query": q, "medium": m}) + "\n" for q, m in pairs))
    searcher = Searcher(device="cpu", untrained=True, verify=False)
    reads: list[str] = []
    prepare = searcher.prepare

    def counting(query, mask=None):
        if isinstance(query, (str, Path)):  # a file read (the search prepares prepared queries again)
            reads.append(str(query))
        return prepare(query, mask)

    monkeypatch.setattr(searcher, "prepare", counting)
    summary = run_search(searcher, read_pairs(tmp_path / "pairs.jsonl"), tmp_path / "out", workers=1)
    assert len(summary.errors) == 3 and summary.images == 1, summary
    assert all("bad.png" in error for error in summary.errors)
    assert sorted(Path(r).name for r in reads) == ["bad.png", "query.png"]  # each read once
    lines = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert [("error" in line) for line in lines] == [True, False, True, True]


def test_each_video_is_probed_once_for_the_progress(tmp_path, monkeypatch):
    """The bar's total and the top-up after a video share one probe of it (job_work keeps it)."""
    import pipelines.video as video
    from pipelines.search_jobs import SearchJob, count_work, job_work

    _write_video(tmp_path / "clip.mp4", frames=3)
    probes: list[str] = []
    probe = video.probe
    monkeypatch.setattr(video, "probe", lambda path: probes.append(str(path)) or probe(path))
    job = SearchJob(tmp_path / "q.png", tmp_path / "clip.mp4")
    assert count_work([job]) == 3 and job_work(job) == 3
    assert len(probes) == 1
