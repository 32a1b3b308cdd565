"""Every source format, and every kind of bad input, read by augment.sources."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.config import SourceConfig
from augment.imageio import InputError
from augment.sources import Skip, SourceObject, detect_format, read_source
from sources_factory import make_coco, make_label_map, make_mask_pairs, make_rgba_source


def read_all(path, **config):
    items = list(read_source(path, SourceConfig(**{"min_area": 50, **config})))
    return [i for i in items if isinstance(i, SourceObject)], [i for i in items if isinstance(i, Skip)]


def test_detects_each_format(tmp_path):
    assert detect_format(make_rgba_source(tmp_path / "rgba")) == "rgba"
    assert detect_format(make_mask_pairs(tmp_path / "pairs")) == "mask_pairs"
    assert detect_format(make_coco(tmp_path / "coco")) == "coco"
    assert detect_format(make_coco(tmp_path / "coco2") / "instances.json") == "coco"
    assert detect_format(make_label_map(tmp_path / "labels")) == "label_map"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot tell the source format"):
        detect_format(tmp_path / "empty")


def test_rgba_cutouts_keep_alpha_as_mask_and_folder_as_category(tmp_path):
    objects, skips = read_all(make_rgba_source(tmp_path))
    assert len(objects) == 4 and not skips
    assert sorted({o.category for o in objects}) == ["box", "disc"]
    box = next(o for o in objects if o.category == "box")
    # The rectangle's alpha was rows 5..-5 and columns 10..-10: the crop is exactly that.
    assert box.rgba.shape[:2] == (50, 40)
    assert (box.rgba[:, :, 3] == 255).all()


def test_mask_pairs_binary_and_instance_masks(tmp_path):
    objects, skips = read_all(make_mask_pairs(tmp_path))
    assert not skips
    by_category = {o.category: o for o in objects}
    assert set(by_category) == {"object", "cup", "bag"}
    assert by_category["object"].box == (30, 20, 110, 90)
    assert by_category["cup"].box == (10, 10, 70, 60)
    assert by_category["bag"].rgba.shape[:2] == (45, 70)


def test_coco_polygons_and_rle(tmp_path):
    objects, skips = read_all(make_coco(tmp_path))
    assert not skips
    by_category = {o.category: o for o in objects}
    assert set(by_category) == {"shirt", "shoe"}
    assert by_category["shoe"].box == (70, 50, 130, 95)
    x0, y0, x1, y1 = by_category["shirt"].box
    assert abs(x0 - 10) <= 1 and abs(y0 - 10) <= 1 and abs(x1 - 61) <= 1 and abs(y1 - 61) <= 1


def test_label_map_one_cutout_per_region_with_min_area_and_label_filters(tmp_path):
    source = make_label_map(tmp_path)
    objects, _ = read_all(source)
    assert sorted(o.category for o in objects) == ["jacket", "jacket", "skirt"]  # the 9-px hat speck is below min_area
    objects, _ = read_all(source, drop_labels=["jacket"])
    assert [o.category for o in objects] == ["skirt"]
    objects, _ = read_all(source, keep_labels=["jacket"])
    assert [o.category for o in objects] == ["jacket", "jacket"]
    objects, _ = read_all(source, min_area=1800)
    assert [o.category for o in objects] == ["jacket"]  # only the 50x40 jacket region (2000 px) is that large; the skirt has 1750


def test_large_cutouts_are_downscaled(tmp_path):
    source = make_mask_pairs(tmp_path)
    objects, _ = read_all(source, max_cutout_side=40)
    assert max(max(o.rgba.shape[:2]) for o in objects) == 40


# ---------------------------------------------------------------- bad input
def test_corrupt_and_truncated_images_are_counted_skips(tmp_path):
    source = make_rgba_source(tmp_path / "rgba")
    (source / "box" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (source / "disc" / "object_1.png").read_bytes()
    (source / "disc" / "truncated.png").write_bytes(good[: len(good) // 2])
    (source / "notes.txt").write_text("not an image")
    objects, skips = read_all(source)
    assert len(objects) == 4
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in skips}
    assert set(reasons) == {"broken.png", "truncated.png", "notes.txt"}
    assert "truncated" in reasons["truncated.png"] and "not an image" in reasons["notes.txt"]


def test_rgb_image_in_rgba_source_is_skipped(tmp_path):
    source = make_rgba_source(tmp_path)
    cv2.imwrite(str(source / "box" / "rgb.png"), np.zeros((20, 20, 3), np.uint8))
    _, skips = read_all(source)
    assert [s.reason for s in skips] == ["no alpha channel (RGBA cutouts need one)"]


def test_mask_of_other_size_and_empty_mask_are_skipped(tmp_path):
    source = make_mask_pairs(tmp_path)
    cv2.imwrite(str(source / "masks" / "a.png"), np.full((50, 50), 255, np.uint8))
    cv2.imwrite(str(source / "images" / "c.jpg"), np.zeros((30, 30, 3), np.uint8))
    cv2.imwrite(str(source / "masks" / "c.png"), np.zeros((30, 30), np.uint8))
    _, skips = read_all(source)
    reasons = sorted(s.reason for s in skips)
    assert reasons == ["empty mask", "mask is 50x50 but its image is 160x120"]


def test_coco_broken_annotation_is_skipped_and_broken_file_is_an_error(tmp_path):
    source = make_coco(tmp_path)
    coco = json.loads((source / "instances.json").read_text())
    coco["annotations"].append({"id": 3, "image_id": 1, "category_id": 1, "segmentation": {"counts": "!!", "size": [5, 5]}})
    (source / "instances.json").write_text(json.dumps(coco))
    objects, skips = read_all(source)
    assert len(objects) == 2
    assert len(skips) == 1 and "annotation 3" in skips[0].reason
    (source / "instances.json").write_text('{"images": [], "annotations": ')
    with pytest.raises(InputError, match="instances.json: not a COCO instances file"):
        read_all(source, format="coco")


def test_label_map_unknown_label_is_skipped(tmp_path):
    source = make_label_map(tmp_path)
    labels = cv2.imread(str(source / "labels" / "0001.png"), cv2.IMREAD_UNCHANGED)
    labels[100:119, 50:98] = 9  # no name for 9
    cv2.imwrite(str(source / "labels" / "0001.png"), labels)
    objects, skips = read_all(source)
    assert [s.reason for s in skips] == ["unknown label value 9"]
    assert len(objects) == 3


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        read_all(tmp_path / "nope")


def test_include_and_exclude_select_files_by_stem(tmp_path):
    source = make_rgba_source(tmp_path, count=4)
    objects, _ = read_all(source, include=["object_[01]"])
    assert sorted(o.source.rsplit("/", 1)[-1] for o in objects) == ["object_0.png", "object_1.png"]
    objects, _ = read_all(source, exclude=["object_0", "object_3"])
    assert sorted(o.source.rsplit("/", 1)[-1] for o in objects) == ["object_1.png", "object_2.png"]
    coco = make_coco(tmp_path / "coco")
    assert len(read_all(coco, exclude=["scene"])[0]) == 0 and len(read_all(coco, include=["sc*"])[0]) == 2


def test_a_large_cutout_shrunk_keeps_no_rim_of_the_photos_background():
    """A cutout over max_cutout_side is shrunk with its colour weighted by alpha: averaged as it was, the
    red wall around a white object bled into the object's edge pixels, a pink rim in every composite."""
    from augment.config import SourceConfig
    from augment.source_items import crop_object

    image = np.zeros((900, 900, 3), np.uint8)
    image[:] = (255, 0, 0)
    mask = np.zeros((900, 900), np.uint8)
    cv2.circle(mask, (450, 450), 380, 1, -1)
    image[mask > 0] = (255, 255, 255)
    config = SourceConfig()
    cutout = crop_object(image, mask, "disc", Path("photo.png"), config)
    assert max(cutout.rgba.shape[:2]) == config.max_cutout_side
    opaque = cutout.rgba[:, :, 3] == 255
    assert opaque.sum() > 0 and set(np.unique(cutout.rgba[:, :, 3])) <= {0, 255}
    rim = cutout.rgba[opaque][:, 1]  # green: 255 on the white object, lower where red bled in
    assert rim.min() >= 250, f"object pixels tinted by the background: green down to {rim.min()}"
