"""Odd but real inputs of the annotation formats of tests/test_qa_formats.py: names the system
refuses, masks saved in colour, class ids written as floats."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.labelme_source import shape_mask
from augment.source_items import Skip
from tests.test_qa_formats import H, W, _box, _labelme, _photo, _read, _shape, _yolo_line


def test_a_labelme_image_path_too_long_for_the_system_is_a_counted_skip_not_a_traceback(tmp_path):
    _photo(tmp_path / "a.png")
    _labelme(tmp_path, "a", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])], image="x" * 5000 + ".png")
    objects, skips = _read(tmp_path)
    assert not objects and len(skips) == 1 and skips[0].path == str(tmp_path / "a.json")
    assert "not found" in skips[0].reason


def test_a_labelme_mask_shape_saved_in_colour_is_read_by_its_colour_not_its_blue_channel(tmp_path):
    drawn = np.zeros((5, 7, 3), np.uint8)
    drawn[1:4, 2:6] = (255, 0, 0)  # red: no blue at all
    buffer = io.BytesIO()
    Image.fromarray(drawn).save(buffer, format="PNG")
    mask = shape_mask({"shape_type": "mask", "points": [[10, 20], [16, 24]],
                       "mask": base64.b64encode(buffer.getvalue()).decode()}, H, W)
    assert (mask == _box(21, 24, 12, 16)).all()


def test_a_yolo_class_written_as_a_float_is_read_and_a_fraction_is_a_skip(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    _photo(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    line = _yolo_line(1, (3, 20, 5, 30))
    (tmp_path / "labels" / "a.txt").write_text(f"1.0{line[1:]}\n1.5{line[1:]}\n")
    objects, skips = _read(tmp_path)
    assert [o.category for o in objects] == ["dog"]
    assert [(Path(s.path).name, s.reason) for s in skips] == [("a.txt", "line 2: class 1.5 is not a whole number")]
    assert isinstance(skips[0], Skip)


def test_a_labelme_image_linked_from_elsewhere_is_read_as_other_sources_read_links(tmp_path):
    """A photo in the source folder that is a link to a shared store is read (a link in any other
    source is); only an imagePath climbing out with '..' is refused."""
    store = _photo(tmp_path / "store" / "a.png")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.png").symlink_to(store)
    _labelme(source, "a", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])])
    objects, skips = _read(source)
    assert not skips and [o.category for o in objects] == ["hat"]


def test_a_mask_pairs_folder_keeping_a_classes_txt_is_still_mask_pairs(tmp_path):
    from augment.sources import detect_format

    _photo(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(_box(2, 9, 2, 9).astype(np.uint8) * 255).save(tmp_path / "masks" / "a.png")
    (tmp_path / "classes.txt").write_text("shoe\n")
    assert detect_format(tmp_path) == "mask_pairs"


def test_yolo_labels_kept_beside_their_images_as_darknet_keeps_them_are_read(tmp_path):
    _photo(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "classes.txt").write_text("cat\ndog\n")  # LabelImg saves it among the labels
    (tmp_path / "images" / "a.txt").write_text(_yolo_line(1, (3, 20, 5, 30)) + "\n")
    objects, skips = _read(tmp_path)
    assert not skips and [o.category for o in objects] == ["dog"]


@pytest.mark.parametrize("layout", ["masks-folder", "x_mask"])
def test_a_mask_pairs_folder_keeping_the_labelme_files_its_masks_came_from_is_still_mask_pairs(tmp_path, layout):
    """Masks drawn from LabelMe files, kept beside them: the folder was read as LabelMe, the polygons
    rasterised in place of the user's masks."""
    from augment.sources import detect_format

    _photo(tmp_path / "a.png")
    mask = Image.fromarray(_box(2, 9, 2, 9).astype(np.uint8) * 255)
    if layout == "masks-folder":
        (tmp_path / "masks").mkdir()
        mask.save(tmp_path / "masks" / "a.png")
    else:
        mask.save(tmp_path / "a_mask.png")
    _labelme(tmp_path, "a", [_shape("shoe", [[2, 2], [9, 2], [9, 9]])])
    assert detect_format(tmp_path) == "mask_pairs"


def test_a_cvat_class_mask_without_its_photo_is_a_skip_also_when_include_is_given(tmp_path):
    """The photo-less mask's (None, mask) pair crashed include/exclude's stem: a TypeError traceback."""
    from tests.test_qa_formats import LABELMAP, _colour_png

    (tmp_path / "labelmap.txt").write_text(LABELMAP)
    _photo(tmp_path / "JPEGImages" / "a.png")
    for name in ("a", "b"):
        _colour_png(tmp_path / "SegmentationClass" / f"{name}.png", [(_box(2, 12, 2, 12), (250, 50, 83))])
    objects, skips = _read(tmp_path, include=["*"])
    assert [Path(o.source).name for o in objects] == ["a.png"]
    assert [(Path(s.path).name, s.reason) for s in skips] == [("b.png", "no photo with this name")]


def test_a_labelme_folder_holding_a_photo_named_like_a_mask_is_still_labelme(tmp_path):
    """face_mask.jpg (a photo of a face mask) beside its LabelMe file made the folder mask pairs: no
    objects, a skip per file. A *_mask file counts as a mask only beside its photo."""
    from augment.sources import detect_format

    for name in ("beach", "face_mask"):
        _photo(tmp_path / f"{name}.png")
        _labelme(tmp_path, name, [_shape("thing", [[2, 2], [20, 2], [20, 20], [2, 20]])])
    assert detect_format(tmp_path) == "labelme"
    objects, skips = _read(tmp_path)
    assert sorted(Path(o.source).name for o in objects) == ["beach.png", "face_mask.png"] and not skips
