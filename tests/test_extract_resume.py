"""`synth extract` resumes: a killed run leaves nothing a reader takes for complete output, and a rerun
goes on from its whole chunks of photos (the same output as one uninterrupted run); another model,
config or set of photos starts over."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

import pipelines.extract as extract_module
from augment.schema import MANIFEST_FILE, OBJECTS_FILE
from pipelines.extract import SUMMARY_FILE, ExtractConfig, run_extract
from pipelines.extract_parts import PARTS_FOLDER
from pipelines.segmenter import Prediction, Segmenter
from segment_factory import make_unlabeled, save_untrained_segmenter

LENIENT = dict(min_area=0.0, min_confidence=0.0, min_stability=0.0, superpixel_max_side=32, previews=3)


class Killed(Exception):
    pass


class Counting(Segmenter):
    """A segmenter that counts the photos it is run on and finds the red discs and blue boxes by their
    colour (the untrained network finds nothing)."""

    calls = 0

    def views(self, image):
        Counting.calls += 1
        height, width = image.shape[:2]
        work_h, work_w = self.working_size(height, width)
        small = cv2.resize(image, (work_w, work_h), interpolation=cv2.INTER_AREA).astype(np.float32)
        red, blue = small[..., 0] - small[..., 2], small[..., 2] - small[..., 0]
        scores = np.stack([np.full(red.shape, 60.0), red, blue]) / 20.0
        probabilities = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
        prediction = Prediction(probabilities.astype(np.float32), (height, width))
        return prediction, prediction


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(extract_module, "CHUNK_PHOTOS", 2)
    photos = make_unlabeled(tmp_path / "photos", count=7, size=48)
    (photos / "sub").mkdir()  # a second x.png: row ids and preview names x and x-2 must be replayed alike
    (photos / "sub" / "unlabeled000.png").write_bytes((photos / "unlabeled001.png").read_bytes())
    images = sorted(photos.glob("*.png")) + [photos / "sub" / "unlabeled000.png"]
    Counting.calls = 0
    return Counting(save_untrained_segmenter(tmp_path / "model.pt"), "cpu"), images, tmp_path


def _kill_after(count: int):
    seen = [0]

    def advance(n: int) -> None:
        seen[0] += n
        if seen[0] > count:
            raise Killed

    return advance


def _output(out):
    table = pq.read_table(out / OBJECTS_FILE).to_pylist()
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    ids = [i for s in manifest["shards"] for i in pq.read_table(out / s["name"], columns=["id"]).column("id").to_pylist()]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    counts = {k: summary[k] for k in ("images", "masks", "accepted", "rejected", "cutouts", "pseudo_photos",
                                      "accepted_by_class", "labelled_fraction")}
    return [r["cutout_id"] for r in table], [r["superpixels"] is not None for r in table], ids, counts, \
        sorted(p.name for p in (out / "previews").iterdir()), table


def test_killed_extract_leaves_no_complete_output_and_resumes(setup, monkeypatch):
    segmenter, images, tmp_path = setup
    config = ExtractConfig(**LENIENT)
    whole = tmp_path / "whole"
    run_extract(segmenter, images, whole, config)
    expected = _output(whole)
    assert expected[0] and all(expected[1])  # cutouts, with their superpixels
    assert not (whole / PARTS_FOLDER).exists() and len(expected[2]) == 8 and "unlabeled000-2" in expected[2]

    out = tmp_path / "out"
    run_extract(segmenter, images[:3], out, config)  # an earlier, complete run of other photos
    Counting.calls = 0
    with pytest.raises(Killed):
        run_extract(segmenter, images, out, config, advance=_kill_after(5))  # killed in its third chunk
    # Nothing a reader (expand's objects source, train's manifest, selftune) takes for a finished run.
    assert not any((out / name).exists() for name in (OBJECTS_FILE, MANIFEST_FILE, SUMMARY_FILE))
    from cli_checks import assert_one_line_error, run_cli  # and the readers name the command to rerun, not expand alone
    assert_one_line_error(run_cli("export", out, "-o", tmp_path / "coco"), 2, "not a finished output of",
                          "`extract` (rerun the command that wrote it")
    Counting.calls = 0
    summary = run_extract(segmenter, images, out, config)
    assert Counting.calls == 4  # chunks 0 and 1 (4 photos) were kept: the other 4 photos only
    assert _output(out) == expected and summary.images == 8
    assert not (out / PARTS_FOLDER).exists()

    # A changed config (or model, or photo set) never mixes with the killed run's chunks: it starts over.
    with pytest.raises(Killed):
        run_extract(segmenter, images, out, config, advance=_kill_after(5))
    Counting.calls = 0
    run_extract(segmenter, images, out, ExtractConfig(**{**LENIENT, "min_area": 0.5}))
    assert Counting.calls == 8
    with pytest.raises(Killed):
        run_extract(segmenter, images, out, config, advance=_kill_after(5))
    Counting.calls = 0
    run_extract(segmenter, images[1:], out, config)
    assert Counting.calls == 7
    with pytest.raises(Killed):  # another size of chunks numbers them otherwise: it starts over too
        run_extract(segmenter, images, out, config, advance=_kill_after(5))
    monkeypatch.setattr(extract_module, "CHUNK_PHOTOS", 3)
    Counting.calls = 0
    run_extract(segmenter, images, out, config)
    assert Counting.calls == 8 and _output(out) == expected


def test_a_damaged_chunk_is_redone(setup):
    segmenter, images, tmp_path = setup
    config = ExtractConfig(**LENIENT)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run_extract(segmenter, images, out, config, advance=_kill_after(5))
    (out / "pseudo-00001.parquet").write_bytes(b"torn")  # its chunk record says done, its shard is not whole
    Counting.calls = 0
    run_extract(segmenter, images, out, config)
    assert Counting.calls == 6
    whole = tmp_path / "whole"
    run_extract(segmenter, images, whole, config)
    assert _output(out) == _output(whole)


def test_an_interrupted_extract_says_a_rerun_resumes(setup, monkeypatch):
    segmenter, images, tmp_path = setup
    from cli_checks import run_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "run_extract", interrupted)
    result = run_cli("extract", *images[:2], "--checkpoint", tmp_path / "model.pt", "--out", tmp_path / "out",
                     "--device", "cpu")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "interrupted; rerun the same `synth extract` command to resume" in result.stderr


KILLED_RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
import pipelines.extract as extract_module
from pathlib import Path
from pipelines.extract import ExtractConfig, run_extract
from test_extract_resume import LENIENT, Counting
extract_module.CHUNK_PHOTOS = 2

def advance(n):
    print("photo", flush=True)
    time.sleep(0.2)  # killed (SIGKILL) by the test somewhere in here or in the next photo's work

run_extract(Counting(sys.argv[2], "cpu"), [Path(p) for p in sys.argv[4:]], Path(sys.argv[3]), ExtractConfig(**LENIENT),
            advance=advance)
"""


def test_a_sigkilled_extract_resumes_to_the_same_output(setup):
    import subprocess
    import sys
    from pathlib import Path

    segmenter, images, tmp_path = setup
    out = tmp_path / "out"
    killed = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(Path(__file__).parent), str(tmp_path / "model.pt"),
                               str(out), *map(str, images)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(5):
            assert killed.stdout is not None and killed.stdout.readline().strip() == "photo"
    finally:
        killed.kill()
        killed.wait()
    assert not any((out / name).exists() for name in (OBJECTS_FILE, MANIFEST_FILE, SUMMARY_FILE))
    Counting.calls = 0
    run_extract(segmenter, images, out, ExtractConfig(**LENIENT))
    assert Counting.calls < len(images)  # whole chunks were kept
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    whole = tmp_path / "whole"
    run_extract(segmenter, images, whole, ExtractConfig(**LENIENT))
    assert _output(out) == _output(whole)
