"""`synth search` and `synth segment` into a folder that holds an older run's output: the new run
leaves only its own outputs there (and the user's other files untouched); a second run at the same
time is refused; a killed run's files are found by the next one (pipelines/output_record.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.atomic_files import temporary_beside
from augment.imageio import save_image
from augment.locking import BUSY_EXIT_CODE, LOCK_FILE, folder_lock
from cli_checks import run_cli
from pipelines.output_record import OutputRecord
from pipelines.search_jobs import SEARCH_OUTPUTS

RECORDS = {LOCK_FILE, ".synth-search-outputs", ".synth-segment-outputs", ".synth-segment-progress",
           ".synth-search-progress"}


def _random(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _listing(out: Path) -> list[str]:
    """Every file and folder under ``out``, the lock and the output records aside."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name not in RECORDS)


def _user_files(out: Path) -> dict[str, bytes]:
    """Files of the user's in --out, two named like a command's outputs but written by no run."""
    files = {"notes.txt": b"mine", "mine.heat.png": b"not a heat map", "mine.png": b"not a label map",
             "sub/other.highlight.jpg": b"nested"}
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    return files


def _write_video(path: Path, frames: int = 4) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 72))
    for k in range(frames):
        writer.write(_random(10 + k, 72, 96))
    writer.release()


def _search(query: Path, media: list[Path], out: Path, *options: str):
    return run_cli("--verbose", "search", query, *media, "--out", out, "--device", "cpu", "--untrained", "--workers", 1,
                   "--no-verify", *options)


def test_a_second_search_leaves_only_its_own_outputs(tmp_path):
    query = tmp_path / "query.png"
    save_image(query, _random(1, 40, 40))
    first = [tmp_path / "a" / "first.jpg", tmp_path / "a" / "clip.avi"]
    save_image(first[0], _random(2, 72, 96))
    _write_video(first[1])
    second = tmp_path / "b" / "second.jpg"
    save_image(second, _random(3, 72, 96))
    out = tmp_path / "found"
    assert _search(query, first, out, "--save-heatmaps").exit_code == 0
    assert _listing(out) == ["clip.heat", *(f"clip.heat/{k:06d}.png" for k in range(4)), "clip.highlight.mp4",
                             "clip.summary.json", "detections.jsonl", "first.heat.png", "first.highlight.jpg"]
    user = _user_files(out)

    result = _search(query, [second], out)
    assert result.exit_code == 0, result.output
    assert _listing(out) == sorted(["detections.jsonl", "second.heat.png", "second.highlight.jpg", "sub", *user])
    assert all((out / name).read_bytes() == content for name, content in user.items())
    assert [json.loads(line)["source"] for line in (out / "detections.jsonl").read_text().splitlines()] \
        == [str(second)]
    assert "cleared 9 output file(s) of an earlier synth search run" in " ".join(result.output.split())


def test_a_search_into_a_folder_another_search_holds_is_refused_and_clears_nothing(tmp_path):
    query = tmp_path / "query.png"
    save_image(query, _random(1, 40, 40))
    medium = tmp_path / "scene.jpg"
    save_image(medium, _random(2, 72, 96))
    out = tmp_path / "found"
    assert _search(query, [medium], out).exit_code == 0
    before = _listing(out)
    with folder_lock(out, "search run"):  # as another process's run would
        result = _search(query, [medium], out)
    assert result.exit_code == BUSY_EXIT_CODE and "another search run is writing here" in result.output
    assert _listing(out) == before == ["detections.jsonl", "scene.heat.png", "scene.highlight.jpg"]


def test_a_killed_runs_outputs_and_temporaries_are_cleared_by_the_next(tmp_path):
    out = tmp_path / "found"
    with pytest.raises(RuntimeError):  # a kill runs no clean-up at all; the record is flushed per stem either way
        with OutputRecord(out, SEARCH_OUTPUTS) as record:
            record.add("done")
            save_image(out / "done.heat.png", _random(1, 8, 8))
            record.add("cut")  # stopped while writing its highlights: only temporaries are left
            temporary_beside(out / "cut.highlight.jpg").write_bytes(b"half")
            temporary_beside(out / "cut.highlight.mp4", suffix=".mp4").write_bytes(b"half")
            raise RuntimeError("killed")
    (tmp_path / "escape.heat.png").write_bytes(b"outside")
    (out / "link.heat.png").symlink_to(tmp_path / "escape.heat.png")
    (out / "input.heat.png").write_bytes(b"searched again")
    with (out / ".synth-search-outputs").open("a") as record_file:  # a damaged record reaches nothing else
        record_file.write('"../escape"\n"..\n"link"\n"input"\n')
    with OutputRecord(out, SEARCH_OUTPUTS, inputs=[out / "input.heat.png"]):
        pass
    assert sorted(p.name for p in out.iterdir()) == [".synth-search-outputs", "input.heat.png", "link.heat.png"]
    assert (tmp_path / "escape.heat.png").read_bytes() == b"outside"
    assert (out / ".synth-search-outputs").read_text() == ""  # the new run's record, empty so far


@pytest.fixture()
def segment_checkpoint(tmp_path) -> Path:
    """A segmenter's checkpoint, untrained: what it labels does not matter here."""
    from segment_factory import save_untrained_segmenter

    return save_untrained_segmenter(tmp_path / "segment.pt")


def test_a_second_segment_leaves_only_its_own_outputs(tmp_path, segment_checkpoint):
    photos = [tmp_path / "a" / "one.jpg", tmp_path / "a" / "two.png", tmp_path / "b" / "three.jpg"]
    for seed, photo in enumerate(photos):
        save_image(photo, _random(seed, 48, 64))
    out = tmp_path / "labelled"

    def segment(*images: Path):
        return run_cli("--verbose", "segment", *images, "--checkpoint", segment_checkpoint, "--out", out, "--device", "cpu")

    assert segment(*photos[:2]).exit_code == 0
    outputs = lambda *names: [f"{n}{s}" for n in names for s in (".confidence.png", ".overlay.jpg", ".png")]
    assert _listing(out) == sorted(["classes.json", *outputs("one", "two")])
    user = _user_files(out)
    result = segment(photos[2])
    assert result.exit_code == 0, result.output
    assert _listing(out) == sorted(["classes.json", "sub", *outputs("three"), *user])
    assert all((out / name).read_bytes() == content for name, content in user.items())
    assert "cleared 7 output file(s) of an earlier synth segment run" in " ".join(result.output.split())


def test_only_inputs_inside_out_are_kept_not_everything_under_an_input_folder(tmp_path):
    photos = tmp_path / "photos"
    out = photos / "found"  # --out inside the folder searched: its outputs are still cleared
    with OutputRecord(out, SEARCH_OUTPUTS) as record:
        for stem in ("scene", "frames"):
            record.add(stem)
        save_image(out / "scene.heat.png", _random(1, 8, 8))
        save_image(out / "frames.heat" / "000000.png", _random(2, 8, 8))
        save_image(out / "frames.heat" / "000001.png", _random(3, 8, 8))
    with OutputRecord(out, SEARCH_OUTPUTS, inputs=[photos, out / "frames.heat"]):  # a --sequence of old heat maps
        pass
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.name.startswith(".")) == [
        "frames.heat", "frames.heat/000000.png", "frames.heat/000001.png"]


def test_a_search_of_the_folder_that_holds_out_does_not_search_the_earlier_runs_outputs(tmp_path):
    query = tmp_path / "query.png"
    save_image(query, _random(1, 40, 40))
    photos = tmp_path / "photos"
    save_image(photos / "one.jpg", _random(2, 72, 96))
    _write_video(photos / "clip.avi")
    out = photos / "found"  # `synth search query.png photos/ --out photos/found`, run again
    for _ in range(2):
        result = _search(query, [photos], out)
        assert result.exit_code == 0, result.output
        sources = {json.loads(line)["source"] for line in (out / "detections.jsonl").read_text().splitlines()}
        assert sources == {str(photos / "clip.avi"), str(photos / "one.jpg")}
        assert _listing(out) == ["clip.highlight.mp4", "clip.summary.json", "detections.jsonl", "one.heat.png",
                                 "one.highlight.jpg"]
    mine = out / "mine.highlight.jpg"  # a file of the user's named like an output is still searched
    save_image(mine, _random(3, 72, 96))
    result = _search(query, [photos], out)
    assert result.exit_code == 0, result.output
    assert str(mine) in (out / "detections.jsonl").read_text()


def test_a_segment_of_the_folder_that_holds_out_does_not_segment_the_earlier_runs_outputs(tmp_path,
                                                                                         segment_checkpoint):
    photos = tmp_path / "photos"
    save_image(photos / "one.jpg", _random(1, 48, 64))
    out = photos / "labelled"  # `synth segment photos/ --out photos/labelled`, run again
    for _ in range(2):
        result = run_cli("segment", photos, "--checkpoint", segment_checkpoint, "--out", out, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert "segmented 1 image in" in result.output
        assert _listing(out) == ["classes.json", "one.confidence.png", "one.overlay.jpg", "one.png"]


def test_a_busy_out_is_one_segment_line_with_exit_code_3_and_no_progress_bar(tmp_path, segment_checkpoint):
    """Another run writing into --out: one line (exit 3), without an empty progress bar after it."""
    from cli_checks import assert_one_line_error

    photo = tmp_path / "one.jpg"
    save_image(photo, _random(1, 48, 64))
    out = tmp_path / "labelled"
    with folder_lock(out, "segment run"):  # as another process's run would
        result = run_cli("segment", photo, "--checkpoint", segment_checkpoint, "--out", out, "--device", "cpu")
    assert_one_line_error(result, BUSY_EXIT_CODE, "labelled", "another segment run is writing here")
    assert "segment 0/1" not in result.output
