"""`Segmenter`, `synth segment` and `synth extract` given what a user really has, found by QA: arrays
of every picture kind (16-bit, float 0-1, grey, RGBA, CMYK and palette PIL images) read as the search
reads them (:mod:`augment.picture_arrays`), arrays that are not pictures refused with one ValueError,
paths read upright; a strip of pixels enlarged to gigabytes; outputs that overwrote each other or an
input; previews of photos sharing a name; a busy extract's progress bar. Small generated images and
an untrained segmenter on the CPU; the test on real photos reads ../shared/data/ccp and skips
without it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from augment.imageio import read_image, save_image
from augment.locking import BUSY_EXIT_CODE, folder_lock
from cli_checks import assert_one_line_error, run_cli
from segment_factory import save_untrained_segmenter

CCP = Path(__file__).resolve().parents[2] / "shared" / "data" / "ccp"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A segmenter's checkpoint, untrained: the tests compare its outputs on one picture given in
    several forms, and those differ (slightly, untrained) wherever the network saw other numbers."""
    return save_untrained_segmenter(tmp_path_factory.mktemp("segmenter") / "segment.pt")


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    from pipelines.segmenter import Segmenter

    return Segmenter(checkpoint, "cpu")


def _photo(seed: int = 0, height: int = 40, width: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 1.5)


def _same(segmenter, image, expected: np.ndarray) -> None:
    """``image`` is labelled as the uint8 RGB array ``expected`` is, by predict and by views."""
    want = segmenter.predict(expected).probabilities
    assert np.array_equal(segmenter.predict(image).probabilities, want)
    first, mirrored = segmenter.views(image)
    want_first, want_mirrored = segmenter.views(expected)
    assert np.array_equal(first.probabilities, want_first.probabilities)
    assert np.array_equal(mirrored.probabilities, want_mirrored.probabilities)


# ----------------------------------------------------------------- Segmenter: values as files of that kind
@pytest.mark.parametrize("convert", [
    lambda a: a.astype(np.uint16) * 257,      # a 16-bit PNG read with IMREAD_UNCHANGED
    lambda a: a.astype(np.float64) / 255.0,   # skimage's [0, 1]
], ids=["uint16", "float-0-1"])
def test_a_16_bit_or_0_1_float_array_is_segmented_as_its_picture_not_257x_too_bright_or_black(segmenter, convert):
    """The network was fed the array's numbers / 255: a uint16 photo as values up to 257 (white), a
    [0, 1] float photo as values up to 1/255 (black)."""
    photo = _photo()
    _same(segmenter, convert(photo), photo)


@pytest.mark.parametrize("kind", ["grey-2d", "grey-hw1", "rgba", "cmyk", "palette"])
def test_grey_rgba_cmyk_and_palette_pictures_are_segmented_in_their_colours(segmenter, kind):
    """Grey arrays were a torch RuntimeError (permute), an RGBA one a conv error (4 channels), PIL
    images an AttributeError ('shape')."""
    photo = _photo(1)
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    if kind == "grey-2d":
        _same(segmenter, grey, np.dstack([grey] * 3))
    elif kind == "grey-hw1":
        _same(segmenter, grey[:, :, None], np.dstack([grey] * 3))
    elif kind == "rgba":  # the alpha is dropped, as `synth segment` drops a PNG's
        _same(segmenter, np.dstack([photo, np.full(photo.shape[:2], 9, np.uint8)]), photo)
    else:
        picture = Image.fromarray(photo).convert("CMYK" if kind == "cmyk" else "P")
        _same(segmenter, picture, np.asarray(picture.convert("RGB")))


@pytest.mark.parametrize("shape_of", [
    lambda a: np.transpose(a, (2, 0, 1)),  # channels first (a torch tensor's layout)
    lambda a: a[None],                     # a batch of one
    lambda a: a[:0],                       # no pixels
    lambda a: np.array(5),                 # a number
], ids=["channels-first", "batch", "empty", "scalar"])
def test_an_array_that_is_not_a_picture_is_one_value_error_naming_the_argument(segmenter, shape_of):
    """Was a conv RuntimeError (60 'channels'), an OpenCV assertion, a ZeroDivisionError."""
    image = shape_of(_photo())
    for call in (segmenter.predict, segmenter.views):
        with pytest.raises(ValueError, match=r"^image: an array of shape \(.*\) is not an image; expected H x W"):
            call(image)


def test_a_path_is_segmented_upright_as_synth_segment_reads_it(segmenter, tmp_path):
    """A phone photo stored turned (EXIF orientation 6) is labelled in the frame a viewer shows."""
    upright = _photo(2, 40, 24)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # turned left; 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    stored.save(path, exif=exif.tobytes())
    prediction = segmenter.predict(path)
    assert prediction.size == (40, 24)
    assert np.array_equal(prediction.probabilities, segmenter.predict(upright).probabilities)
    assert segmenter.views(str(path))[0].size == (40, 24)


def test_a_strip_of_pixels_is_not_enlarged_until_it_takes_gigabytes(segmenter):
    """The shorter side was scaled to ``short_side`` whatever the longer became: a 156-byte PNG of
    2 x 12000 px went to the network as 160 x 960000 px and `synth segment` was killed at 24 GB
    (4 x 3000 px: 5 GB, 15 s). The longer side is held to MAX_WORKING_ASPECT x short_side."""
    from pipelines.segmenter import MAX_WORKING_ASPECT

    short = segmenter.segment.short_side
    assert segmenter.working_size(2, 12000) == (max(1, round(2 * short * MAX_WORKING_ASPECT / 12000)),
                                                short * MAX_WORKING_ASPECT)
    assert segmenter.working_size(600, 400) == (round(600 * short / 400), short)  # a photo: as before
    prediction = segmenter.predict(np.full((2, 1200, 3), 90, np.uint8))
    assert prediction.probabilities.shape[1:] == (1, short * MAX_WORKING_ASPECT)
    labels, confidence = prediction.at_photo_size()
    assert labels.shape == confidence.shape == (2, 1200)


def test_a_ccp_street_photo_as_16_bit_0_1_float_or_cmyk_is_segmented_as_its_jpeg(segmenter):
    path = CCP / "photos" / "0001.jpg"
    if not path.is_file():
        pytest.skip(f"CCP photos not found under {CCP} (../shared/data/ccp)")
    photo = read_image(path, "rgb")
    want = segmenter.predict(photo).probabilities
    for given in (photo.astype(np.uint16) * 257, photo / 255.0, path, str(path)):
        assert np.array_equal(segmenter.predict(given).probabilities, want)
    cmyk = Image.fromarray(photo).convert("CMYK")
    _same(segmenter, cmyk, np.asarray(cmyk.convert("RGB")))


# ----------------------------------------------------------------- synth segment: no output overwrites another
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_photo_named_like_anothers_confidence_map_does_not_overwrite_it(tmp_path, checkpoint):
    """a.jpg's confidence map and a.confidence.jpg's label map are both a.confidence.png: the second
    overwrote the first (2 photos segmented, 5 files)."""
    photos = tmp_path / "photos"
    save_image(photos / "a.jpg", _photo(3))
    save_image(photos / "a.confidence.jpg", _photo(4))
    out = tmp_path / "labelled"
    result = run_cli("segment", photos, "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    outputs = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "classes.json")
    assert outputs == ["a-2.confidence.png", "a-2.overlay.jpg", "a-2.png", "a.confidence.confidence.png",
                       "a.confidence.overlay.jpg", "a.confidence.png"]
    assert cv2.imread(str(out / "a.confidence.png"), cv2.IMREAD_UNCHANGED).max() < 3  # a label map (3 classes)


def test_a_png_photo_segmented_into_its_own_folder_is_not_overwritten_by_its_label_map(tmp_path, checkpoint):
    """`synth segment photos/ --out photos/`: b.png's label map was written over the photo b.png."""
    photos = tmp_path / "photos"
    save_image(photos / "a.jpg", _photo(5))
    save_image(photos / "b.png", _photo(6))
    before = _digest(photos / "b.png")
    for _ in range(2):  # and again: the earlier outputs are cleared, the photos kept
        result = run_cli("segment", photos, "--checkpoint", checkpoint, "--out", photos, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert "segmented 2 images" in result.output
        assert _digest(photos / "b.png") == before
        assert (photos / "b-2.png").is_file() and (photos / "b-2.overlay.jpg").is_file()
        assert (photos / "a.png").is_file() and (photos / "a.jpg").is_file()


# ----------------------------------------------------------------- synth extract
def test_extract_previews_of_photos_sharing_a_name_are_both_kept(tmp_path, checkpoint):
    """a/x.jpg and b/x.jpg both drew previews/x.jpg: one photo's preview was lost."""
    photos = tmp_path / "photos"
    save_image(photos / "a" / "x.jpg", _photo(7, 48, 64))
    save_image(photos / "b" / "x.jpg", _photo(8, 48, 64))
    out = tmp_path / "auto"
    result = run_cli("extract", photos, "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["x-2.jpg", "x.jpg"]


def test_a_busy_out_is_one_extract_line_with_exit_code_3_and_no_progress_bar(tmp_path, checkpoint, monkeypatch):
    """Another run writing into --out: one line (exit 3), as segment's, without an empty progress bar."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # a terminal, where a progress bar would be drawn
    photo = tmp_path / "one.jpg"
    save_image(photo, _photo(9))
    out = tmp_path / "auto"
    with folder_lock(out, "extract run"):  # as another process's run would
        result = run_cli("extract", photo, "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
    assert_one_line_error(result, BUSY_EXIT_CODE, "auto", "another extract run is writing here")
    assert "0/1" not in result.output  # the progress bar: extract 0/1


def test_segment_and_search_given_only_missing_paths_refuse_and_leave_the_earlier_outputs(tmp_path, checkpoint):
    """A typo in the only path cleared --out's earlier outputs and exited 1 with 0 images; extract
    already refused (exit 2). One missing path among real ones is still a counted skip."""
    photo = tmp_path / "one.jpg"
    save_image(photo, _photo(10))
    segmented, found = tmp_path / "labelled", tmp_path / "found"
    assert run_cli("segment", photo, "--checkpoint", checkpoint, "--out", segmented, "--device", "cpu").exit_code == 0
    assert run_cli("search", photo, photo, "--out", found, "--device", "cpu", "--untrained",
                   "--no-verify", "--workers", 1).exit_code == 0
    before = {folder: sorted(p.name for p in folder.iterdir()) for folder in (segmented, found)}
    typo = tmp_path / "onee.jpg"
    result = run_cli("segment", typo, "--checkpoint", checkpoint, "--out", segmented, "--device", "cpu")
    assert_one_line_error(result, 2, "onee.jpg: no such file")
    result = run_cli("search", photo, typo, "--out", found, "--device", "cpu", "--untrained", "--no-verify")
    assert_one_line_error(result, 2, "onee.jpg: no such file or folder")
    assert {folder: sorted(p.name for p in folder.iterdir()) for folder in (segmented, found)} == before
    result = run_cli("segment", photo, typo, "--checkpoint", checkpoint, "--out", segmented, "--device", "cpu")
    assert result.exit_code == 1 and "skipped: " in result.output and "segmented 1 image in" in result.output
