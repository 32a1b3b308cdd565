"""`synth segment` resumes: a rerun of a killed run with the same checkpoint and photos keeps the photos
it finished (the folder then holds what one uninterrupted run writes); other photos or another
checkpoint start over, clearing the killed run's outputs."""

from __future__ import annotations

import pytest

from pipelines.segment_outputs import PROGRESS_FILE, run_segment
from pipelines.segmenter import Segmenter
from segment_factory import make_unlabeled, save_untrained_segmenter


class Killed(Exception):
    pass


class Counting(Segmenter):
    calls = 0

    def predict(self, image):
        Counting.calls += 1
        return super().predict(image)


def _kill_after(count: int):
    def advance(done: int) -> None:
        if done > count:
            raise Killed
    return advance


def _files(folder):
    """The folder's files (the progress record's lines in the order photos were finished: left out)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name not in (".synth.lock", PROGRESS_FILE)}


@pytest.fixture
def setup(tmp_path):
    photos = make_unlabeled(tmp_path / "photos", count=5, size=40)
    (photos / "sub").mkdir()  # a second unlabeled001: its outputs are unlabeled001-2, on a rerun too
    (photos / "sub" / "unlabeled001.png").write_bytes((photos / "unlabeled003.png").read_bytes())
    (photos / "bad.png").write_bytes(b"not a png")
    images = [photos / "bad.png", *sorted(photos.glob("unlabeled*.png")), photos / "sub" / "unlabeled001.png"]
    Counting.calls = 0
    return Counting(save_untrained_segmenter(tmp_path / "model.pt"), "cpu"), images, tmp_path


def test_a_killed_segment_run_resumes_with_the_photos_it_had_not_finished(setup):
    segmenter, images, tmp_path = setup
    whole = tmp_path / "whole"
    whole.mkdir()
    (whole / "unlabeled002.png").write_bytes(b"a file of the user's")  # never overwritten: unlabeled002-2
    run_segment(segmenter, images, whole)
    expected = _files(whole)
    assert "unlabeled001-2.png" in expected and "unlabeled002-2.png" in expected

    out = tmp_path / "out"
    out.mkdir()
    (out / "unlabeled002.png").write_bytes(b"a file of the user's")
    with pytest.raises(Killed):
        run_segment(segmenter, images, out, _kill_after(4))  # killed after bad.png and four photos
    (out / "unlabeled002-2.overlay.jpg").unlink()  # killed between a photo's files: that photo is redone
    Counting.calls = 0
    summary = run_segment(segmenter, images, out)
    assert Counting.calls == 3 and summary.resumed == 3 and summary.images == 6 and len(summary.errors) == 1
    assert _files(out) == expected

    # Another set of photos (or checkpoint) never keeps the killed run's outputs: it starts over.
    with pytest.raises(Killed):
        run_segment(segmenter, images, out, _kill_after(4))
    Counting.calls = 0
    summary = run_segment(segmenter, images[1:4], out)
    assert Counting.calls == 3 and summary.resumed == 0
    assert sorted(p for p in _files(out) if p.endswith(".overlay.jpg")) == [
        "unlabeled000.overlay.jpg", "unlabeled001.overlay.jpg", "unlabeled002-2.overlay.jpg"]
    assert (out / "unlabeled002.png").read_bytes() == b"a file of the user's"


def test_a_finished_run_rerun_keeps_everything_and_a_damaged_progress_record_starts_over(setup):
    segmenter, images, tmp_path = setup
    out = tmp_path / "out"
    run_segment(segmenter, images, out)
    before = _files(out)
    Counting.calls = 0
    assert run_segment(segmenter, images, out).resumed == 6 and Counting.calls == 0
    assert _files(out) == before
    (out / PROGRESS_FILE).write_text("{not json\n")
    Counting.calls = 0
    assert run_segment(segmenter, images, out).resumed == 0 and Counting.calls == 6
    assert _files(out).keys() == before.keys()
