"""Annotations as other tools export them (COCO's RLE as pycocotools and its users write it, masks
saved by image editors, label maps), read by synth's sources: the right pixels, or a counted skip
naming the file and the annotation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.coco_source import annotation_mask_or_skip
from augment.config import SourceConfig
from augment.mask_files import read_mask
from augment.source_items import Skip, SourceObject
from augment.sources import read_source

H, W = 30, 40


def _l_shape() -> np.ndarray:
    """An object no turn, flip or shift leaves as it is."""
    mask = np.zeros((H, W), np.uint8)
    mask[3:25, 4:10] = 1
    mask[3:9, 4:30] = 1
    return mask


def _mask_pairs(tmp_path: Path, mask: Image.Image) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    mask.save(tmp_path / "masks" / "a.png")
    return tmp_path


@pytest.mark.parametrize("colour", [255, 0])
def test_a_mask_painted_in_its_alpha_on_one_colour_is_its_alpha(tmp_path, colour):
    """An editor's layer mask saved as RGBA: the object painted on transparency, every pixel one colour
    (white or black); the whole picture was the object (white) or the mask 'empty' (black)."""
    truth = _l_shape()
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = truth * 255
    source = _mask_pairs(tmp_path, Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(read_mask(source / "masks" / "a.png") > 0, truth > 0)
    grey_alpha = np.dstack([np.full((H, W), colour, np.uint8), truth * 255])
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_mask(tmp_path / "la.png") > 0, truth > 0)
    items = list(read_source(source, SourceConfig(min_area=1)))
    objects = [item for item in items if isinstance(item, SourceObject)]
    assert len(objects) == 1 and not [item for item in items if isinstance(item, Skip)]
    assert objects[0].box == (4, 3, 30, 25)
    assert np.array_equal(objects[0].rgba[:, :, 3] > 0, truth[3:25, 4:30] > 0)


def test_a_mask_drawn_in_its_colour_keeps_its_colour_whatever_its_alpha(tmp_path):
    """An opaque black-and-white RGBA mask (alpha all 255) and one whose alpha varies with a drawing of
    its own are read by their drawing, as before."""
    truth = _l_shape()
    rgba = np.dstack([truth * 255] * 3 + [np.full((H, W), 255, np.uint8)]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_mask(tmp_path / "opaque.png") > 0, truth > 0)
    rgba[..., 3] = 0
    rgba[:5, :5, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "drawn.png")
    assert np.array_equal(read_mask(tmp_path / "drawn.png") > 0, truth > 0)


@pytest.mark.parametrize("counts", ["", b""])
def test_an_empty_compressed_rle_is_a_skip_not_uninitialised_memory(tmp_path, counts):
    """pycocotools decodes a compressed RLE with no runs ('counts': '') to an array it never wrote: the
    cutout was whatever the memory held (values up to 255 on a 0/1 mask, a different one each run)."""
    annotation = {"id": 5, "segmentation": {"counts": counts, "size": [H, W]}}
    skip = annotation_mask_or_skip(annotation, tmp_path / "a.png", H, W)
    assert isinstance(skip, Skip), "an RLE without runs gave a mask"
    assert "annotation 5" in skip.reason and "non-empty" in skip.reason and skip.path == str(tmp_path / "a.png")


@pytest.mark.parametrize("counts", [[-5, H * W + 5], [0, H * W / 2 + 0.5, H * W / 2 - 0.5]])
def test_uncompressed_rle_counts_that_are_no_run_lengths_are_a_skip_naming_them(tmp_path, counts):
    """A negative count was pycocotools' 'Python integer -5 out of bounds for uint32'; a fractional
    one was cut down without a word (the mask shifted by a pixel)."""
    annotation = {"id": 6, "segmentation": {"counts": counts, "size": [H, W]}}
    skip = annotation_mask_or_skip(annotation, tmp_path / "a.png", H, W)
    assert isinstance(skip, Skip) and "whole numbers of 0 or more" in skip.reason


def test_uncompressed_rle_counts_written_as_floats_are_read(tmp_path):
    """Counts a numpy-based writer left as 12.0 are whole numbers: read, column-major as pycocotools'."""
    counts = [float(H * 4), float(H * 2), float(H * W - H * 6)]  # columns 4 and 5 whole
    mask = annotation_mask_or_skip({"id": 7, "segmentation": {"counts": counts, "size": [H, W]}},
                                   tmp_path / "a.png", H, W)
    assert not isinstance(mask, Skip)
    truth = np.zeros((H, W), bool)
    truth[:, 4:6] = True
    assert np.array_equal(mask, truth)


def _coco_file(path: Path, file_name: str, mask: np.ndarray) -> None:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "images": [{"id": 3, "file_name": file_name, "width": W, "height": H}],
        "categories": [{"id": 11, "name": "shirt"}],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 11, "iscrowd": 0, "bbox": [4, 3, 26, 22],
                         "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}}]}))


@pytest.mark.parametrize("layout", ["val2017/a.png", "images/val2017/a.png", "annotations/images/val2017/a.png"])
def test_coco_files_find_their_images_in_the_subset_folders_coco_and_cvat_lay_out(tmp_path, layout):
    """COCO 2017 as downloaded (annotations/instances_val2017.json beside val2017/) and Datumaro's
    export, as CVAT's COCO 1.0 writes it (images/SUBSET/): every image was 'not found'."""
    truth = _l_shape()
    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    (tmp_path / layout).parent.mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / layout)
    _coco_file(tmp_path / "annotations" / "instances_val2017.json", "a.png", truth)
    items = list(read_source(tmp_path / "annotations" / "instances_val2017.json", SourceConfig(min_area=1)))
    assert [type(item) for item in items] == [SourceObject], items
    assert items[0].box == (4, 3, 30, 25) and items[0].source == str(tmp_path / layout)
    assert np.array_equal(items[0].rgba[:, :, 3] > 0, truth[3:25, 4:30] > 0)
    assert np.array_equal(items[0].rgba[:, :, :3][truth[3:25, 4:30] > 0], image[3:25, 4:30][truth[3:25, 4:30] > 0])


def test_a_coco_image_not_found_names_the_folders_looked_in(tmp_path):
    _coco_file(tmp_path / "annotations" / "instances_train.json", "gone.png", _l_shape())
    items = list(read_source(tmp_path / "annotations" / "instances_train.json", SourceConfig(min_area=1)))
    assert len(items) == 1 and isinstance(items[0], Skip)
    assert "'gone.png' not found (looked in images/, ./, ../images/, images/train/, ../images/train/, ../train/" \
        in items[0].reason


def test_a_coco_file_named_for_a_climbing_subset_looks_in_no_folder_above_its_own(tmp_path):
    """``instances_...json``'s subset '..' is no folder to look in (the images stay in the file's folders)."""
    from augment.coco_source import coco_image_roots

    roots = coco_image_roots(tmp_path / "a" / "instances_...json")
    assert roots == [tmp_path / "a" / "images", tmp_path / "a", tmp_path / "images"]


def test_a_folder_of_several_coco_files_is_one_line_naming_them_not_the_first_read_alone(tmp_path):
    """COCO's annotations/ holds captions_*, instances_* and person_keypoints_* of each split: the
    first by name (captions_train2017.json, no categories) was read alone, or instances_train.json
    without instances_val.json beside it, without a word."""
    from augment.imageio import InputError

    for name in ("instances_train.json", "instances_val.json"):
        _coco_file(tmp_path / name, "a.png", _l_shape())
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"holds 2 COCO \.json files \(instances_train\.json, instances_val\.json\); "
                                         "give the one to read"):
        list(read_source(tmp_path, SourceConfig(min_area=1)))
    assert len(list(read_source(tmp_path / "instances_val.json", SourceConfig(min_area=1)))) == 1


def _white_first_palette_mask(truth: np.ndarray) -> Image.Image:
    """A black-and-white mask as a PNG-8 optimiser saves it (PIL's quantize here): white index 0."""
    mask = Image.fromarray((truth > 0).astype(np.uint8) * 255, "L").convert("RGB").quantize(2)
    assert mask.getpalette()[:6] == [255, 255, 255, 0, 0, 0]
    return mask


def test_a_black_and_white_palette_mask_whose_white_is_index_0_cuts_the_white_object(tmp_path):
    """By its indices the black background (index 1) was the object: the cutout was the photo less the
    object, without a word."""
    from augment.picture_arrays import mask_array

    truth = _l_shape()
    source = _mask_pairs(tmp_path, _white_first_palette_mask(truth))
    assert np.array_equal(read_mask(source / "masks" / "a.png"), truth * 255)
    assert np.array_equal(mask_array(Image.open(source / "masks" / "a.png"), "query_mask"), truth * 255)
    objects = list(read_source(source, SourceConfig(min_area=1)))
    assert [type(o) for o in objects] == [SourceObject] and objects[0].box == (4, 3, 30, 25)


def test_palette_masks_whose_black_is_index_0_keep_their_indices(tmp_path):
    """VOC's palette (index 0 black, colours after it) and a black-and-white one in the usual order: values
    are indices, as label_list.json and categories.json name them."""
    truth = _l_shape()
    for name, palette in (("voc.png", [0, 0, 0, 128, 0, 0]), ("bw.png", [0, 0, 0, 255, 255, 255])):
        mask = Image.fromarray(truth, "P")
        mask.putpalette(palette)
        mask.save(tmp_path / name)
        assert np.array_equal(read_mask(tmp_path / name), truth), name


def _soft_disk(size: int = 120, radius: int = 40) -> np.ndarray:
    """A background remover's or a feathered selection's mask: 255 inside, a slope of greys at its edge."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius, 255, -1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (9, 9), 3)


def test_a_mask_with_soft_edges_is_one_object_not_a_ring_per_grey_level(tmp_path):
    """Each grey of the edge was an instance id: 220 skips and 5 ring-shaped 'objects' beside the core."""
    from augment.photo_shards import read_labelled_photos

    soft = _soft_disk()
    assert len(np.unique(soft)) > 100
    source = _mask_pairs(tmp_path, Image.fromarray(soft))
    (tmp_path / "images" / "a.png").unlink()
    Image.fromarray(np.zeros((120, 120, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    items = list(read_source(source, SourceConfig(min_area=1)))
    assert [type(item) for item in items] == [SourceObject], f"{len(items)} items"
    assert np.array_equal(items[0].rgba[:, :, 3] > 0, (soft > 127)[20:101, 20:101]) and items[0].box == (20, 20, 101, 101)
    (photo,) = read_labelled_photos(source, SourceConfig(min_area=1))
    assert set(np.unique(photo.values)) == {0, 255} and photo.names == {255: "object"}


def test_instance_ids_with_void_borders_stay_ids(tmp_path):
    """Flat regions of ids beside 255 (a grey VOC instance mask's void border) are ids, as before."""
    from augment.source_items import soft_edged

    ids = np.zeros((H, W), np.uint8)
    ids[2:14, 2:20], ids[14:28, 2:20], ids[2:28, 24:38] = 1, 2, 3
    ids[13:15, 2:20] = 255
    assert not soft_edged(ids) and not soft_edged(np.where(ids > 0, 255, 0).astype(np.uint8))
    source = _mask_pairs(tmp_path, Image.fromarray(ids))
    objects = [o for o in read_source(source, SourceConfig(min_area=1)) if isinstance(o, SourceObject)]
    assert sorted(o.box for o in objects) == [(2, 2, 20, 13), (2, 13, 20, 15), (2, 15, 20, 28), (24, 2, 38, 28)]


def test_a_mask_drawn_on_a_phone_photo_as_stored_says_it_may_be_turned(tmp_path):
    """A tool that ignored the photo's EXIF orientation drew the mask as the photo is stored: the skip
    said the sizes alone ('mask is 40x30 but its image is 30x40'), where COCO's says why."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown 90 degrees clockwise
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / "a.jpg", exif=exif)
    Image.fromarray(_l_shape() * 255).save(tmp_path / "masks" / "a.png")  # the stored frame, W x H
    (skip,) = read_source(tmp_path, SourceConfig(min_area=1))
    assert isinstance(skip, Skip) and skip.path == str(tmp_path / "masks" / "a.png")
    assert skip.reason == (f"mask is {W}x{H} but its image is {H}x{W} (turned: annotated as stored, "
                           "not upright as its EXIF orientation shows it?)")


def test_a_tiff_with_premultiplied_alpha_comes_back_straight(tmp_path):
    """A compositing tool's TIFF stores its colour multiplied by alpha (ExtraSamples 1, associated alpha):
    its half-transparent edge was taken as straight colour, darkened (200 at alpha 150 read as 118)."""
    from augment.imageio import read_image

    straight = np.dstack([np.full((20, 30, 3), (200, 100, 50), np.uint8), np.full((20, 30), 150, np.uint8)])
    straight[:, :10, 3] = 255
    stored = straight.copy()
    stored[..., :3] = np.round(straight[..., :3] * (straight[..., 3:] / 255.0)).astype(np.uint8)
    path = tmp_path / "cutout.tif"
    Image.fromarray(stored).save(path)  # uncompressed, ExtraSamples 2 (straight) ...
    data = path.read_bytes()
    entry = b"\x52\x01\x03\x00\x01\x00\x00\x00"  # ... tag 338, SHORT, one value: say 1 (premultiplied)
    assert data.count(entry + b"\x02\x00") == 1
    path.write_bytes(data.replace(entry + b"\x02\x00", entry + b"\x01\x00"))
    with Image.open(path) as pil:
        assert pil.tag_v2[338] == (1,) and np.abs(np.asarray(pil.convert("RGBA")).astype(int) - straight).max() <= 1
    assert np.abs(read_image(path, "rgba").astype(int) - straight).max() <= 1


def test_a_coco_image_or_category_id_listed_twice_is_a_skip_not_the_last_one_used(tmp_path):
    """One image id for two photos (a CVAT project export of several tasks): the annotations drawn on
    a.png were cut from b.png, the last entry, without a word; a category id given two names so too."""
    truth = _l_shape()
    _coco_file(tmp_path / "annotations.json", "a.png", truth)
    data = json.loads((tmp_path / "annotations.json").read_text())
    data["images"].append({**data["images"][0], "file_name": "b.png"})
    data["images"].append({"id": 4, "file_name": "c.png", "width": W, "height": H})
    data["annotations"].append({**data["annotations"][0], "id": 2, "image_id": 4, "category_id": 12})
    data["annotations"].append({**data["annotations"][0], "id": 3, "image_id": 4})
    data["categories"] += [{"id": 12, "name": "coat"}, {"id": 12, "name": "jacket"}]
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / name)
    items = list(read_source(tmp_path, SourceConfig(min_area=1)))
    reasons = sorted(item.reason for item in items if isinstance(item, Skip))
    assert reasons == ["annotation 1 refers to image id 3, listed more than once",
                       "annotation 2: category_id 12 is listed 2 times in the file's categories ('coat', 'jacket')",
                       "category id 12 is listed 2 times ('coat', 'jacket'): its annotations are skipped",
                       "image id 3 is listed 2 times ('a.png', 'b.png'): its annotations are skipped"]
    assert [item.source for item in items if isinstance(item, SourceObject)] == [str(tmp_path / "c.png")]


def test_an_lvis_image_entry_is_found_by_its_coco_url(tmp_path):
    """LVIS's image entries give no file_name, only a coco_url: every image was 'has no file_name'."""
    truth = _l_shape()
    _coco_file(tmp_path / "lvis_v1_val.json", "a.png", truth)
    data = json.loads((tmp_path / "lvis_v1_val.json").read_text())
    del data["images"][0]["file_name"]
    data["images"][0]["coco_url"] = "http://images.cocodataset.org/val2017/000000000003.png"
    (tmp_path / "lvis_v1_val.json").write_text(json.dumps(data))
    (tmp_path / "val2017").mkdir()
    image = np.random.default_rng(4).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "val2017" / "000000000003.png")
    (item,) = read_source(tmp_path / "lvis_v1_val.json", SourceConfig(min_area=1, include=["000000000003"]))
    assert isinstance(item, SourceObject), item
    assert item.source == str(tmp_path / "val2017" / "000000000003.png") and item.box == (4, 3, 30, 25)
    # ...and in COCO's own layout: annotations/lvis_v1_val.json beside val2017/ (not found before review)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "lvis_v1_val.json").write_text(json.dumps(data))
    (item,) = read_source(tmp_path / "annotations" / "lvis_v1_val.json", SourceConfig(min_area=1))
    assert isinstance(item, SourceObject) and item.source == str(tmp_path / "val2017" / "000000000003.png"), item
    data["images"][0]["coco_url"] = "http://example.com/../../secret.png"
    (tmp_path / "lvis_v1_val.json").write_text(json.dumps(data))
    (skip,) = read_source(tmp_path / "lvis_v1_val.json", SourceConfig(min_area=1))
    assert skip.reason == "image id 3 has no file_name (nor a coco_url naming a file)"


@pytest.mark.parametrize("suffix", [".tif", ".bmp", ".png"])
def test_a_mask_beside_its_image_pairs_whatever_image_format_it_is_saved_in(tmp_path, suffix):
    """a.jpg beside a_mask.tif was 'no mask found for this image' and a_mask.tif 'a mask without its
    image' (only x_mask.png was looked for), and such a folder's format was not recognised."""
    truth = _l_shape()
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(truth * 255).save(tmp_path / f"a_mask{suffix}")
    items = list(read_source(tmp_path, SourceConfig(min_area=1)))
    assert [type(item) for item in items] == [SourceObject], items
    assert items[0].box == (4, 3, 30, 25) and np.array_equal(items[0].rgba[:, :, 3] > 0, truth[3:25, 4:30] > 0)


def test_photo_shards_give_a_box_only_coco_objects_box_no_loss_not_backgrounds(tmp_path):
    """A detection dataset's box-only annotation (or a broken mask) beside masked ones: photo-shards
    labelled the unmasked object's pixels background, teaching the segmentation its object as such."""
    from augment.photo_shards import IGNORE_CATEGORY, read_labelled_photos

    truth = _l_shape()
    _coco_file(tmp_path / "annotations.json", "a.png", truth)
    data = json.loads((tmp_path / "annotations.json").read_text())
    data["annotations"].append({"id": 2, "image_id": 3, "category_id": 11, "iscrowd": 0, "bbox": [25.5, 12, 10, 30]})
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    skip, photo = read_labelled_photos(tmp_path, SourceConfig(min_area=1))
    assert isinstance(skip, Skip) and "annotation 2: broken segmentation (missing" in skip.reason
    assert photo.names == {1: "shirt", 2: IGNORE_CATEGORY}
    expected = np.zeros((H, W), np.uint16)
    expected[12:30, 25:36] = 2  # every pixel the box touches (x 25.5..35.5, y 12..42 cut at the image's edge)
    expected[truth > 0] = 1  # the masked object where they meet (it came first)
    assert np.array_equal(photo.values, expected)


def test_a_named_label_maps_palette_indices_are_its_values_whatever_colours_show_them(tmp_path):
    """A label map whose label_list.json names 0 background and 1 person, its palette drawing the
    background white (index 0) and the person black (index 1): the black-and-white drawing rule read the
    person as background and cut the background out; named values are the indices."""
    from PIL import Image

    from augment.config import SourceConfig
    from augment.sources import SourceObject, read_source

    root = tmp_path / "lm"
    (root / "labels").mkdir(parents=True)
    (root / "photos").mkdir()
    indices = np.zeros((64, 64), np.uint8)
    indices[16:48, 16:48] = 1
    labels = Image.fromarray(indices, "P")
    labels.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    labels.save(root / "labels" / "a.png")
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(root / "photos" / "a.png")
    (root / "label_list.json").write_text(json.dumps(["background", "person"]))
    objects = [item for item in read_source(root, SourceConfig(format="label_map", min_area=10))
               if isinstance(item, SourceObject)]
    assert [(o.category, o.box) for o in objects] == [("person", (16, 16, 48, 48))]


def test_an_lvis_image_entry_listed_twice_alike_is_kept_as_a_coco_one_is(tmp_path):
    """Two identical LVIS entries (no file_name) were 'image id 3 is listed 2 times (None, None)' and
    dropped, where two identical entries with a file_name are kept: one rule, by the file each names."""
    truth = _l_shape()
    _coco_file(tmp_path / "lvis.json", "a.png", truth)
    data = json.loads((tmp_path / "lvis.json").read_text())
    del data["images"][0]["file_name"]
    data["images"][0]["coco_url"] = "http://images.cocodataset.org/val2017/000000000003.png"
    data["images"].append(dict(data["images"][0]))
    (tmp_path / "lvis.json").write_text(json.dumps(data))
    (tmp_path / "val2017").mkdir()
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
        tmp_path / "val2017" / "000000000003.png")
    (item,) = read_source(tmp_path / "lvis.json", SourceConfig(min_area=1))
    assert isinstance(item, SourceObject), item
    data["images"][1]["coco_url"] = "http://images.cocodataset.org/val2017/000000000004.png"
    (tmp_path / "lvis.json").write_text(json.dumps(data))
    reasons = [item.reason for item in read_source(tmp_path / "lvis.json", SourceConfig(min_area=1))]
    assert any("listed 2 times ('val2017/000000000003.png', 'val2017/000000000004.png')" in r for r in reasons), reasons


def test_an_annotation_whose_category_id_is_a_list_or_object_is_a_skip_not_a_traceback(tmp_path):
    """The repeated-category check looked the id up before checking its type: TypeError unhashable."""
    truth = _l_shape()
    _coco_file(tmp_path / "annotations.json", "a.png", truth)
    data = json.loads((tmp_path / "annotations.json").read_text())
    data["annotations"] += [{**data["annotations"][0], "id": 2, "category_id": [1]},
                            {**data["annotations"][0], "id": 3, "category_id": {"x": 1}}]
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    items = list(read_source(tmp_path, SourceConfig(min_area=1)))
    assert sorted(item.reason for item in items if isinstance(item, Skip)) == [
        "annotation 2: category_id [1] is not in the file's categories",
        "annotation 3: category_id {'x': 1} is not in the file's categories"]
    assert sum(isinstance(item, SourceObject) for item in items) == 1
