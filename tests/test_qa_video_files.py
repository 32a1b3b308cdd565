"""`synth search` on videos and frame folders as footage from phones, cameras and screen recorders comes
(the QA round on real-world video files): interrupted runs' heat maps, malformed --box values."""

from __future__ import annotations

import pytest

from tests.test_hardening_search import _interrupt_after, _search


@pytest.mark.parametrize("every_instance", [False, True])
def test_ctrl_c_mid_video_leaves_no_half_written_heat_map_folder(tmp_path, monkeypatch, every_instance):
    """The interrupted video's highlight was removed (it would pass for a complete one) but its
    NAME.heat/ kept the frames searched before Ctrl-C (3 of 400 on a real run): half a video's heat maps
    beside no highlight and no detections.jsonl, which a rerun searches again from the start anyway."""
    if every_instance:
        from pipelines.search_workers import SearchWorkers

        _interrupt_after(monkeypatch, SearchWorkers, "find_each")
    else:
        from pipelines.temporal import TemporalSearcher

        _interrupt_after(monkeypatch, TemporalSearcher, "step")
    result = _search(tmp_path, "--save-heatmaps", *(["--every-instance"] if every_instance else []))
    assert result.exit_code == 130, result.output
    left = sorted(str(p.relative_to(tmp_path / "found")) for p in (tmp_path / "found").rglob("*"))
    assert not [name for name in left if "heat" in name or "highlight" in name], left


@pytest.mark.parametrize("box", ["1e30,10,20,20", "10,1.7e308,20,1.7e308"])
def test_a_box_whose_width_vanishes_in_its_position_is_the_box_options_line_exit_2(tmp_path, box):
    """X = 1e30 swallows W = 20 (X + W == X): --box passed its own check, then each video failed on
    'initial_box must be four finite numbers x0, y0, x1, y1 ...' (the API's name, exit 1)."""
    from cli_checks import assert_one_line_error

    result = _search(tmp_path, "--box", box)
    assert_one_line_error(result, 2, "--box must be X,Y,W,H", box)
    assert "initial_box" not in result.output


@pytest.mark.parametrize("every_instance", [False, True])
def test_a_sequences_unreadable_last_file_keeps_its_frame_in_the_highlighted_video(tmp_path, every_instance):
    """An unreadable first or middle file of a --sequence folder is a dimmed placeholder in the highlighted
    video (its frame i the folder's file i), but an unreadable last file was no frame at all: 12 files, one
    broken at the end, gave an 11-frame video, the length depending on where the broken file lay."""
    import cv2

    from augment.imageio import save_image
    from cli_checks import run_cli
    from tests.test_hardening_search import _random

    frames = tmp_path / "frames"
    for k in range(5):
        save_image(frames / f"frame_{k}.png", _random(10 + k, 72, 96))
    (frames / "frame_5.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    save_image(tmp_path / "query.png", _random(1, 24, 24))
    result = run_cli("search", tmp_path / "query.png", frames, "--sequence", "--out", tmp_path / "found",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", 1,
                     *(["--every-instance"] if every_instance else []))
    assert result.exit_code == 0 and "frame_5.png" in result.output, result.output
    capture = cv2.VideoCapture(str(tmp_path / "found" / "frames.highlight.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 6


@pytest.mark.parametrize(("suffix", "fourcc", "kind"), [(".mp4", "mp4v", "MP4/MOV"), (".avi", "MJPG", "AVI"),
                                                         (".mkv", "MJPG", "Matroska/WebM")])
def test_a_video_named_as_an_image_is_called_a_video_not_a_corrupt_image(tmp_path, suffix, fourcc, kind):
    """A clip saved (or renamed) as .jpg / .png was 'not a readable image (corrupt, truncated or unknown
    format)': the user went looking for damage in a good video whose extension was wrong."""
    import cv2

    from augment.imageio import save_image
    from cli_checks import run_cli
    from tests.test_hardening_search import _random

    video = tmp_path / f"clip{suffix}"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    for k in range(3):
        writer.write(_random(10 + k, 48, 64))
    writer.release()
    named = video.rename(tmp_path / "clip.jpg")
    save_image(tmp_path / "query.png", _random(1, 24, 24))
    result = run_cli("search", tmp_path / "query.png", named, "--out", tmp_path / "found",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    line = next(line for line in result.stderr.splitlines() if "clip.jpg" in line)
    article = "a" if kind.startswith("Matroska") else "an"
    assert f"{article} {kind} video, not an image" in line and ".mp4" in line and "corrupt" not in line, line


@pytest.mark.parametrize(("content", "said"), [(b"", "empty file (0 bytes), not a video"),
                                               (b"moov atom? no: a note saved as clip.mp4\n", "a text file, not a video")])
def test_an_empty_or_text_file_named_as_a_video_is_said_to_be_so(tmp_path, content, said):
    """A 0-byte .mp4 (a copy or a phone recording that failed) was 'cannot open video (corrupt, truncated
    or unsupported format)', where an image's is 'empty file (0 bytes), not an image'."""
    from augment.imageio import save_image
    from cli_checks import run_cli
    from tests.test_hardening_search import _random

    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    save_image(tmp_path / "query.png", _random(1, 24, 24))
    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "found",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"clip.mp4: {said}" in result.stderr, result.stderr


def test_a_video_whose_first_ten_frames_are_damaged_is_read_from_the_eleventh(tmp_path):
    """Eight undecodable frames in a row ended a video: a camera clip whose first 10 frames were damaged
    was 'no frame could be decoded' though its other frames were whole. A video cut short still ends
    where it breaks, with its error."""
    from pipelines.video import FrameReader
    from tests.test_qa_search_api import _damage_frames
    from tests.test_search import _write_video

    video = tmp_path / "camera.avi"
    _write_video(video, frames=14)
    _damage_frames(video, tuple(range(10)))
    reader = FrameReader(video, batch_size=4)
    assert [i for batch, _ in reader for i in batch] == [10, 11, 12, 13]
    assert len(reader.skipped) == 10 and reader.error is None
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[:int(video.stat().st_size * 0.8)])
    reader = FrameReader(cut, batch_size=4)
    read = [i for batch, _ in reader for i in batch]
    assert read and read[0] == 10 and read[-1] < 13 and "video breaks after" in reader.error
