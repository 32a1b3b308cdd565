"""The search's Python API (`Searcher`, `TemporalSearcher`) given odd arguments, found by QA as a
demanding user: a batch of media of several sizes, an empty batch, sources of another length, a
max_side of 0, a starting box that is no box or lies outside the frame, a query given as a path.
Small generated images; the untrained network on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.imageio import InputError
from pipelines.search import Searcher
from pipelines.temporal import TRACKING, TemporalSearcher
from tests.test_qa_search import OBJECT_BOX, _scene_and_object


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return Searcher(untrained=True, device="cpu")


def test_a_batch_of_media_of_several_sizes_is_one_value_error_not_boxes_outside_the_smaller_one(searcher):
    """find_many searched every medium at the first one's size: a 64x48 crop got a 128x96 heat map
    and a best box outside its own pixels."""
    scene, thing = _scene_and_object()
    with pytest.raises(ValueError, match=r"media\[1\]: 64x48, but media\[0\] is 128x96"):
        searcher.find_many(thing, [scene, scene[:48, :64]])
    with pytest.raises(ValueError, match=r"media\[1\]"):
        searcher.heatmaps(thing, [scene, scene[:48, :64]])


def test_an_empty_batch_finds_nothing_and_sources_must_match_the_media(searcher):
    """find_many([]) and heatmaps(q, []) were IndexErrors deep in the levels; a sources list
    shorter than the media an IndexError after the search."""
    scene, thing = _scene_and_object()
    assert searcher.find_many(thing, []) == []
    with pytest.raises(ValueError, match="empty batch"):
        searcher.heatmaps(thing, [])
    with pytest.raises(ValueError, match="sources: 1 given for 2 media"):
        searcher.find_many(thing, [scene, scene], sources=["a"])
    with pytest.raises(ValueError, match="frames: 3 given for 2 media"):
        searcher.find_many(thing, [scene, scene], frames=[0, 1, 2])


@pytest.mark.parametrize("max_side", [0, -5, 2.5])
def test_a_max_side_under_the_smallest_medium_is_one_line_not_a_zero_division(max_side):
    with pytest.raises(InputError, match="max_side must be a whole number of pixels"):
        Searcher(untrained=True, device="cpu", max_side=max_side)


@pytest.mark.parametrize("box, message", [
    ((1, 2, 3), "initial_box must be four finite numbers"),
    ((float("nan"),) * 4, "initial_box must be four finite numbers"),
    ((50, 50, 10, 10), "x1 > x0 and y1 > y0"),  # X,Y,W,H given where x0, y0, x1, y1 is asked
    ((50, 50, 50, 50), "x1 > x0 and y1 > y0"),
])
def test_a_starting_box_that_is_no_box_is_a_value_error_naming_it(searcher, box, message):
    """It was a bare unpacking error, 'cannot convert float NaN to integer', or an inverted box
    silently tracked as if it were the target."""
    scene, thing = _scene_and_object()
    with pytest.raises(ValueError, match=message):
        TemporalSearcher(searcher, searcher.prepare(thing), initial_box=box)


def test_a_starting_box_outside_the_first_frame_is_a_value_error_as_the_commands_box_is(searcher):
    """The command refused --box outside the frames; the API tracked a box at (1000, 1000) in a
    128x96 frame as 'tracking'."""
    scene, thing = _scene_and_object()
    tracker = TemporalSearcher(searcher, searcher.prepare(thing), initial_box=(1000, 1000, 1050, 1100))
    with pytest.raises(ValueError, match=r"initial_box 1000,1000,50,100 \(X,Y,W,H\) lies outside the 128x96 frames"):
        tracker.step(scene)
    huge = TemporalSearcher(searcher, searcher.prepare(thing), initial_box=(0, 0, 1e6, 1e6))
    with pytest.raises(ValueError, match="more than 4 times the size"):
        huge.step(scene)


def test_a_query_given_as_a_path_or_array_is_prepared_not_an_attribute_error(searcher, tmp_path):
    """TemporalSearcher(searcher, 'query.png') was AttributeError: 'str' object has no attribute 'size'."""
    from augment.imageio import save_image

    scene, thing = _scene_and_object()
    save_image(tmp_path / "thing.png", thing)
    for query in (tmp_path / "thing.png", str(tmp_path / "thing.png"), thing):
        track = TemporalSearcher(searcher, query, initial_box=OBJECT_BOX).step(scene)
        assert track.state == TRACKING and track.best_box is not None


def test_coco_annotations_without_a_mask_are_counted_skips_of_labelled_photos(tmp_path):
    """`synth calibrate --photos` (and every reader of whole labelled photos) dropped a COCO file's
    box-only and crowd annotations without a word: 'no labelled photos with objects (0 inputs skipped)'."""
    import json

    from augment.config import SourceConfig
    from augment.photo_pairs import PhotoIndex
    from augment.photo_objects import LabelledPhoto, read_labelled_photos
    from augment.sources import Skip
    from tests.sources_factory import make_coco

    source = make_coco(tmp_path / "coco")
    coco = json.loads((source / "instances.json").read_text())
    coco["annotations"].append({"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0})
    coco["annotations"].append({"id": 4, "image_id": 1, "category_id": 2, "iscrowd": 1,
                                "segmentation": [[0, 0, 9, 0, 9, 9]]})
    (source / "instances.json").write_text(json.dumps(coco))
    items = list(read_labelled_photos(source, SourceConfig(min_area=50)))
    skips = [item.reason for item in items if isinstance(item, Skip)]
    assert any("annotation 3" in reason and "box-only" in reason for reason in skips)
    assert any("annotation 4 is a crowd region" in reason for reason in skips)
    assert [len(p.objects) for p in items if isinstance(p, LabelledPhoto)] == [2]  # the two with masks kept
    for annotation in coco["annotations"][:2]:  # no mask left (3 box-only, 1 crowd): nothing to index, 4 skips
        annotation.pop("segmentation")
    (source / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(InputError, match=r"no labelled photos with objects \(4 inputs skipped, e\.g\. .*annotation 1: broken "
                                             r"segmentation \(missing: a box-only annotation has no mask"):
        PhotoIndex.from_sources([source], SourceConfig(min_area=50))


def test_a_mask_without_its_image_is_a_counted_skip_of_labelled_photos(tmp_path):
    """calibrate --photos on mask pairs dropped the pairing's own skips (a mask with no image), which
    expand and photo-shards count."""
    import shutil

    from augment.config import SourceConfig
    from augment.photo_objects import read_labelled_photos
    from augment.sources import Skip
    from tests.sources_factory import make_mask_pairs

    source = make_mask_pairs(tmp_path / "pairs")
    mask = next((source / "masks").rglob("*.png"))
    shutil.copy(mask, mask.with_name("orphan.png"))
    skips = [item for item in read_labelled_photos(source, SourceConfig(min_area=50)) if isinstance(item, Skip)]
    assert [Path(skip.path).name for skip in skips] == ["orphan.png"]
    assert "a mask without its image" in skips[0].reason


def _damage_frames(video: Path, frames: tuple[int, ...]) -> None:
    """Zero the start of the JPEG payload of each of ``frames`` of an MJPEG video (a camera's
    damaged frames): OpenCV fails on those and reads on past them."""
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for frame in frames:
        data[starts[frame] + 2:starts[frame] + 602] = bytes(600)
    video.write_bytes(bytes(data))


def test_a_damaged_frame_of_a_video_is_a_counted_skip_and_the_video_goes_on(tmp_path):
    """One undecodable frame ended the video there; a damaged first frame lost a whole video
    ('no frame could be decoded') of which every other frame was fine."""
    from pipelines.video import FrameReader
    from tests.test_search import _write_video

    video = tmp_path / "camera.avi"
    _write_video(video, frames=12)
    _damage_frames(video, (0, 5))
    reader = FrameReader(video, batch_size=4)
    indices = [i for batch, _ in reader for i in batch]
    assert indices == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert reader.skipped == [f"{video} (frame 0): could not be decoded", f"{video} (frame 5): could not be decoded"]
    assert reader.error is None
    truncated = tmp_path / "cut.avi"  # a video cut short still ends where it breaks, with its error
    truncated.write_bytes(video.read_bytes()[:int(video.stat().st_size * 0.6)])
    reader = FrameReader(truncated)
    last = [i for batch, _ in reader for i in batch][-1]
    assert reader.error is not None and f"video breaks after {last + 1} of 12 frames" in reader.error
    assert 5 < last < 11 and len(reader.skipped) == 2  # frames 0 and 5; those past the cut are not 'skipped'


def test_the_search_of_a_video_with_a_damaged_frame_reports_the_skip_in_its_summary(tmp_path):
    from cli_checks import run_cli

    from augment.imageio import save_image
    from tests.test_search import _query, _write_video

    video = tmp_path / "camera.avi"
    _write_video(video, frames=6)
    _damage_frames(video, (0,))
    save_image(tmp_path / "query.png", _query())
    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "out",
                     "--device", "cpu", "--untrained", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "skipped frame:" in result.output and "(frame 0): could not be decoded" in result.output
    summary = json.loads((tmp_path / "out" / "camera.summary.json").read_text())
    assert summary["frames"] == 5 and summary["skipped"] == 1
    frames = [json.loads(line)["frame"] for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert frames == [1, 2, 3, 4, 5]


def test_every_instance_reports_a_videos_skipped_frames_also_when_it_breaks_later(tmp_path):
    """--every-instance dropped the skipped frames of a video that then broke (they were added only
    after a clean end)."""
    from cli_checks import run_cli

    from augment.imageio import save_image
    from tests.test_search import _query, _write_video

    video = tmp_path / "camera.avi"
    _write_video(video, frames=8)
    _damage_frames(video, (0,))
    video.write_bytes(video.read_bytes()[:int(video.stat().st_size * 0.7)])
    save_image(tmp_path / "query.png", _query())
    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "out", "--every-instance",
                     "--device", "cpu", "--untrained", "--no-verify", "--workers", "1")
    assert result.exit_code == 1, result.output
    assert "(frame 0): could not be decoded" in result.output and "video breaks after" in result.output


def test_calibrate_photos_that_its_filters_leave_empty_name_the_filters(tmp_path):
    """`synth calibrate --photos ccp --include zzz` said '(0 inputs skipped)' and no why."""
    from pipelines.calibration import photo_cases
    from tests.sources_factory import make_street_photos

    source = make_street_photos(tmp_path / "street")
    with pytest.raises(InputError, match=r"0 inputs skipped: --include or --min-area left none"):
        photo_cases([source], 4, include=["zzz"], min_area=50)
    with pytest.raises(InputError, match=r"0 inputs skipped: --min-area left none"):
        photo_cases([source], 4, min_area=10**8)


def test_calibrate_on_one_labelled_photo_says_it_needs_two(tmp_path):
    from pipelines.calibration import photo_cases
    from tests.sources_factory import make_street_photos

    source = make_street_photos(tmp_path / "street", count=1)
    with pytest.raises(InputError, match=r"street: 1 labelled photo with objects; calibration needs at least 2"):
        photo_cases([source], 4, min_area=50)


def test_a_mask_given_with_a_prepared_query_is_a_value_error_not_silently_ignored(searcher):
    scene, thing = _scene_and_object()
    prepared = searcher.prepare(thing)
    mask = np.zeros(thing.shape[:2], np.uint8)
    mask[10:40, 5:25] = 255
    with pytest.raises(ValueError, match="query_mask: query is prepared with its mask already"):
        searcher.find(prepared, scene, query_mask=mask)
    assert searcher.prepare(prepared) is prepared


def test_a_result_highlighted_on_another_picture_reads_it_as_a_medium_and_checks_its_size(searcher):
    """Result.highlight(image) drew a 128x96 search's boxes on a 10x10 picture without a word, and a
    float picture was an OpenCV assertion."""
    scene, thing = _scene_and_object()
    result = searcher.find(thing, scene)
    with pytest.raises(ValueError, match="image: 10x10, but the medium searched is 128x96"):
        result.highlight(np.zeros((10, 10, 3), np.uint8))
    drawn = result.highlight(scene.astype(np.float32) / 255)  # floats in [0, 1], as a medium may be given
    assert drawn.shape == scene.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(result.highlight(cv2.cvtColor(scene, cv2.COLOR_RGB2RGBA)), result.highlight())


def test_a_temporal_config_given_as_a_dict_is_a_type_error_naming_the_class(searcher):
    scene, thing = _scene_and_object()
    with pytest.raises(TypeError, match=r"config must be a TemporalConfig \(TemporalConfig\(\*\*options\)\), not dict"):
        TemporalSearcher(searcher, thing, {"acquire_every": 2})


def test_a_pairs_file_saved_with_a_byte_order_mark_reads_its_first_line(tmp_path):
    """A pairs file saved by Notepad or Excel as UTF-8 starts with a BOM: its first line was an error
    ('Unexpected UTF-8 BOM'), its pair never searched."""
    from pipelines.search_jobs import read_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b'\xef\xbb\xbf{"query": "q.png", "medium": "a.jpg"}\r\n{"query": "q.png", "medium": "b.jpg"}\r\n')
    jobs = read_pairs(pairs)
    assert [job.error for job in jobs] == [None, None]
    assert [job.medium for job in jobs] == [tmp_path / "a.jpg", tmp_path / "b.jpg"]
