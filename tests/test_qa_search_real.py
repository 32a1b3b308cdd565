"""`synth search`'s Python API (`Searcher`, `TemporalSearcher`) given the arrays a user really has,
found by QA as a demanding user with real footage: 16-bit and float 0-255 arrays, channels-first
tensors, batches, empty arrays, CMYK and palette PIL images, grey and RGBA video frames, frames
whose size changes; and the warning for a query larger than the medium. Small generated images; the
untrained network on the CPU. The tests on real photos read ../shared/data and skip without it."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.test_qa_search import OBJECT_BOX, _iou, _scene_and_object

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CCP = SHARED / "ccp"


@pytest.fixture(scope="module")
def searcher():
    from pipelines.search import Searcher

    return Searcher(device="cpu", untrained=True, verify=False)


# ----------------------------------------------------------------- values: as files of that kind
def test_uint16_and_float_0_255_arrays_are_read_as_16_bit_and_float_files_are_not_clipped_white():
    """A 16-bit array (cv2.imread(..., IMREAD_UNCHANGED) of a 16-bit PNG) was clipped to 255 (white);
    a float array of 0-255 values (``image.astype(np.float32)``) too: the search found nothing."""
    from pipelines.search import load_query, load_rgb

    scene, thing = _scene_and_object()
    assert np.array_equal(load_rgb(scene.astype(np.uint16) * 257), scene)
    assert np.array_equal(load_rgb(scene.astype(np.float32)), scene)
    assert np.array_equal(load_rgb(scene.astype(np.float64) / 255.0), scene)  # [0, 1] as before
    assert np.array_equal(load_query(thing.astype(np.uint16) * 257)[0], thing)
    assert np.array_equal(load_rgb(np.ones((9, 9), bool))[0, 0], [255, 255, 255])  # white, not 1/255


def test_a_16_bit_medium_array_is_searched_as_its_picture(searcher):
    scene, thing = _scene_and_object()
    as_bytes = searcher.find(thing, scene).best.box
    for medium in (scene.astype(np.uint16) * 257, scene.astype(np.float32)):
        result = searcher.find(thing, medium)
        assert result.best.box == as_bytes
        assert _iou(result.best.box, OBJECT_BOX) > 0.5


def test_a_batch_given_to_find_many_is_read_as_find_reads_a_medium(searcher):
    scene, thing = _scene_and_object()
    expected = searcher.find_many(thing, [scene])[0].best.box
    results = searcher.find_many(thing, [scene.astype(np.uint16) * 257, scene / 255.0])
    assert [r.best.box for r in results] == [expected, expected]
    with pytest.raises(ValueError, match=r"^media\[1\]: an array of shape \(3, 96, 128\) is not an image"):
        searcher.find_many(thing, [scene, np.transpose(scene, (2, 0, 1))])


# ----------------------------------------------------------------- shapes: a picture or one line
@pytest.mark.parametrize("shape_of", [
    lambda a: np.transpose(a, (2, 0, 1)),  # channels first (a torch tensor's layout)
    lambda a: a[None],                     # a batch of one
    lambda a: a.reshape(-1),               # one row of numbers
    lambda a: a[:0],                       # no pixels
    lambda a: np.array(5),                 # a number
], ids=["channels-first", "batch", "flat", "empty", "scalar"])
def test_an_array_that_is_not_a_picture_is_one_value_error_naming_the_argument(searcher, shape_of):
    """Was a torch RuntimeError (permute), a ZeroDivisionError, or a search of a 3-pixel-wide 'image'
    made of the channels."""
    scene, thing = _scene_and_object()
    with pytest.raises(ValueError, match=r"^medium: an array of shape \(.*\) is not an image; expected H x W"):
        searcher.find(thing, shape_of(scene))
    with pytest.raises(ValueError, match=r"^query: an array of shape \(.*\) is not an image"):
        searcher.find(shape_of(thing), scene)


def test_a_one_channel_medium_is_searched_as_grey_not_a_torch_error(searcher):
    scene, thing = _scene_and_object()
    grey = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    assert searcher.find(thing, grey[:, :, None]).best.box == searcher.find(thing, grey).best.box


def test_a_medium_array_too_small_to_search_is_one_line_as_the_command_says():
    """A 5x5 array was searched (boxes of a few pixels) where the command refuses the same image."""
    from augment.imageio import InputError
    from pipelines.search import Searcher

    scene, thing = _scene_and_object()
    with pytest.raises(InputError, match=r"^medium: image is 5x5 px; at least 8 px"):
        Searcher(device="cpu", untrained=True, verify=False).find(thing, scene[:5, :5])


# ----------------------------------------------------------------- PIL images: their colours
def test_a_cmyk_pil_image_is_searched_in_its_colours_and_its_black_is_not_taken_for_alpha():
    """np.asarray of a CMYK image is its four ink channels: read as RGBA, the colours were inverted and,
    as a query, K (0 on most pixels) became an alpha channel: 'the query mask is empty'."""
    from pipelines.search import load_query, load_rgb

    scene, thing = _scene_and_object()
    assert np.array_equal(load_rgb(Image.fromarray(scene).convert("CMYK")), scene)
    rgb, mask = load_query(Image.fromarray(thing).convert("CMYK"))
    assert np.array_equal(rgb, thing) and mask is None


def test_a_palette_pil_image_is_its_colours_not_its_indices():
    from pipelines.search import load_query, load_rgb

    scene, _ = _scene_and_object()
    palette = Image.fromarray(scene).quantize(64)
    assert np.array_equal(load_rgb(palette), np.asarray(palette.convert("RGB")))
    palette.info["transparency"] = 0  # index 0 clear: the query's alpha, as a GIF's
    rgba = np.asarray(palette.convert("RGBA"))
    rgb, mask = load_query(palette)
    ys, xs = np.nonzero(rgba[:, :, 3])
    assert mask is not None and rgb.shape[:2] == (ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())


def test_a_query_mask_of_another_size_names_the_query_once():
    from augment.imageio import InputError
    from pipelines.search import load_query

    _, thing = _scene_and_object()
    with pytest.raises(InputError) as error:
        load_query(thing, np.ones((5, 5), np.uint8))
    assert str(error.value) == "query_mask: mask is 5x5 but the query is 32x48"


# ----------------------------------------------------------------- TemporalSearcher's frames
def _frames(count: int = 4) -> list[np.ndarray]:
    scene, _ = _scene_and_object()
    return [np.roll(scene, 2 * k, axis=1) for k in range(count)]


def _track(searcher, frames) -> list[tuple]:
    from pipelines.temporal import TemporalSearcher

    _, thing = _scene_and_object()
    tracker = TemporalSearcher(searcher, searcher.prepare(thing), initial_box=OBJECT_BOX)
    return [(t.state, t.best_box) for t in (tracker.step(f) for f in frames)]


def test_temporal_frames_of_any_picture_kind_are_tracked_as_their_uint8_rgb(searcher):
    """Grey frames were a torch RuntimeError, RGBA ones an onnxruntime INVALID_ARGUMENT; uint16 and
    float ones were searched as whatever their numbers gave."""
    frames = _frames()
    expected = _track(searcher, frames)
    assert _track(searcher, [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in frames]) == expected
    assert _track(searcher, [f.astype(np.uint16) * 257 for f in frames]) == expected
    assert _track(searcher, [f / 255.0 for f in frames]) == expected
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    assert _track(searcher, grey) == _track(searcher, [np.dstack([g] * 3) for g in grey])


def test_a_temporal_frame_of_another_size_is_one_value_error_not_boxes_in_the_wrong_frame(searcher):
    """A frame half the size was searched with the previous frames' geometry: lost, its box flattened
    on the new frame's edge ((150, 180, 186, 180) on Skating1), without a word."""
    from pipelines.temporal import TemporalSearcher

    frames = _frames(3)
    _, thing = _scene_and_object()
    tracker = TemporalSearcher(searcher, searcher.prepare(thing), initial_box=OBJECT_BOX)
    for frame in frames[:2]:
        tracker.step(frame)
    with pytest.raises(ValueError, match=r"^frame 2: 64x48, but the frames before it are 128x96"):
        tracker.step(cv2.resize(frames[2], (64, 48)))


# ----------------------------------------------------------------- the query larger than the medium
def test_a_query_that_fits_within_the_searched_tolerance_is_not_said_to_be_shrunk(searcher, caplog):
    """The warning fired for a query 0.4% larger than the medium at its smallest size, which is
    searched as it is (plan_levels' 1% tolerance), saying 'shrinking it by 1.00 to fit'."""
    scene, _ = _scene_and_object()
    query = cv2.resize(scene, (257, 193))  # 0.5x: 128.5 x 96.5 in a 128 x 96 medium
    with caplog.at_level(logging.WARNING, logger="pipelines.search_maps"):
        searcher.find(query, scene)
    assert not [r for r in caplog.records if "larger than the medium" in r.getMessage()]


def test_a_query_larger_than_the_medium_is_warned_about_with_both_sizes_and_the_size_searched(searcher, caplog):
    scene, _ = _scene_and_object()
    query = cv2.resize(scene, (512, 384))  # 0.5x: 256 x 192, twice the medium
    with caplog.at_level(logging.WARNING, logger="pipelines.search_maps"):
        searcher.find(query, scene)
    messages = [r.getMessage() for r in caplog.records if "larger than the medium" in r.getMessage()]
    assert messages == ["query: the query (512x384 px) at its smallest searched size (0.5x) is larger than "
                        "the medium (128x96 px); searched at 0.25x its size instead, the largest that fits"]


# ----------------------------------------------------------------- real photos (../shared/data)
def _ccp_garment(photo: str, label: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """A CCP photo, the garment ``label`` cut from it with its label map as RGBA, and its box."""
    import json

    if not (CCP / "photos" / f"{photo}.jpg").is_file():
        pytest.skip(f"the CCP photos are not at {CCP} (see ../shared/data/ccp/README.md)")
    labels = json.loads((CCP / "label_list.json").read_text())
    scene = np.asarray(Image.open(CCP / "photos" / f"{photo}.jpg").convert("RGB"))
    mask = np.asarray(Image.open(CCP / "labels" / f"{photo}.png")) == labels.index(label)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    crop = scene[box[1]:box[3], box[0]:box[2]]
    alpha = (mask[box[1]:box[3], box[0]:box[2]] * 255).astype(np.uint8)
    return scene, np.dstack([crop, alpha]), box


def test_a_ccp_street_photo_as_a_16_bit_or_float_array_finds_its_jacket(searcher):
    """Real data: photo 0601's jacket, cut by its label map, in the photo given as uint16 and as float
    0-255 arrays (clipped white before: best heat ~0, the box anywhere)."""
    scene, garment, box = _ccp_garment("0601", "jacket")
    scene = np.ascontiguousarray(scene[::2, ::2])  # half size: a fast test
    garment = np.ascontiguousarray(garment[::2, ::2])
    box = tuple(v // 2 for v in box)
    for medium in (scene, scene.astype(np.uint16) * 257, scene.astype(np.float32)):
        assert _iou(searcher.find(garment, medium).best.box, box) > 0.5


# ----------------------------------------------------------------- the command's own words
def test_the_summary_counts_in_the_singular_and_a_photo_search_reports_images_per_second(tmp_path, monkeypatch):
    """It said "searched 1 images ... 1 detections" and "frames/s" over a search of still photos."""
    from augment.imageio import save_image
    from cli_checks import run_cli

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # the progress bar, with its rate, is drawn on a terminal only

    scene, thing = _scene_and_object()
    save_image(tmp_path / "query.png", thing)
    save_image(tmp_path / "scene.png", scene)
    result = run_cli("search", tmp_path / "query.png", tmp_path / "scene.png", "--out", tmp_path / "found",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", 1)
    assert result.exit_code == 0, result.output
    joined = " ".join(result.output.split())
    assert "searched 1 image and 0 video frames in" in joined, result.output
    assert "images/s" in joined and "frames/s" not in joined
