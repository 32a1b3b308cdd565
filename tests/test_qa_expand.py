"""QA of `synth expand` / `synth photo-shards` sources: every command names a whole-photo mask's values
and a COCO annotation's category the same way, and what it cannot name is a counted, logged skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from augment.config import BackgroundConfig, SourceConfig
from augment.imageio import InputError
from augment.label_names import check_label_names
from augment.labelled_backgrounds import collect_labelled_backgrounds
from augment.photo_shards import IGNORE_CATEGORY, read_labelled_photos, write_photo_shards
from augment.sources import Skip, read_source
from sources_factory import _save, make_coco, make_label_map, make_mask_pairs


def _skips(items) -> list[Skip]:
    return [item for item in items if isinstance(item, Skip)]


def test_a_coco_annotation_of_an_unlisted_category_is_a_skip_naming_the_file_and_the_id(tmp_path):
    coco = make_coco(tmp_path / "coco")
    data = json.loads((coco / "instances.json").read_text())
    data["annotations"][1]["category_id"] = 7  # the file's categories are 1 (shirt) and 2 (shoe)
    (coco / "instances.json").write_text(json.dumps(data))
    says = "annotation 2: category_id 7 is not in the file's categories"

    items = list(read_source(coco, SourceConfig()))  # synth expand's cutouts
    assert [item.category for item in items if not isinstance(item, Skip)] == ["shirt"]  # not a category '7'
    assert [(s.path, s.reason) for s in _skips(items)] == [(str(coco / "instances.json"), says)]

    # synth photo-shards: the same skip, and the object's pixels carry no loss (not called background)
    manifest = write_photo_shards([coco], tmp_path / "photos", SourceConfig())
    assert manifest["skipped"] == [{"path": str(coco / "instances.json"), "reason": says}]
    photo = next(item for item in read_labelled_photos(coco, SourceConfig()) if not isinstance(item, Skip))
    assert sorted(photo.names.values()) == [IGNORE_CATEGORY, "shirt"]
    with pytest.raises(InputError, match="'7' not a label of the sources"):
        check_label_names([coco], SourceConfig(keep_labels=("7",)))

    data["categories"][0]["id"] = "1"  # a category entry with a string id: said, not silently dropped
    (coco / "instances.json").write_text(json.dumps(data))
    reasons = [s.reason for s in _skips(read_source(coco, SourceConfig()))]
    assert reasons == ["category entry #0 is not an object with an integer id",
                       "annotation 1: category_id 1 is not in the file's categories", says]


def test_photo_shards_skip_an_unknown_label_value_as_expand_and_labelled_backgrounds_do(tmp_path):
    source = make_label_map(tmp_path / "labelled")
    (source / "label_list.json").write_text(json.dumps(["null", "jacket", "skirt"]))  # value 3 is in the map
    skip = (str(source / "labels" / "0001.png"), "unknown label value 3")

    expand_skips = _skips(read_source(source, SourceConfig()))
    assert [(s.path, s.reason) for s in expand_skips] == [skip]
    manifest = write_photo_shards([source], tmp_path / "photos", SourceConfig())
    assert [(s["path"], s["reason"]) for s in manifest["skipped"]] == [skip]
    photo = next(item for item in read_labelled_photos(source, SourceConfig()) if not isinstance(item, Skip))
    assert photo.names == {1: "jacket", 2: "skirt"}  # value 3's pixels: no object, no loss
    backgrounds, skips = collect_labelled_backgrounds(source, BackgroundConfig(format="label_map"))
    assert [(s.path, s.reason) for s in skips] == [skip]
    assert backgrounds[0].categories == {1: "background", 2: "jacket", 3: "skirt"}


def test_a_mask_value_categories_json_does_not_name_is_an_object_in_photo_shards_as_in_expand(tmp_path):
    source = make_mask_pairs(tmp_path / "pairs")
    instances = np.zeros((120, 160), np.uint8)
    instances[10:60, 10:70] = 1
    instances[70:115, 80:150] = 3  # categories.json names 1 (cup) and 2 (bag)
    _save(source / "masks" / "b.png", instances)

    cutouts = [item for item in read_source(source, SourceConfig(include=("b",))) if not isinstance(item, Skip)]
    assert sorted(item.category for item in cutouts) == ["cup", "object"]
    photo = next(item for item in read_labelled_photos(source, SourceConfig(include=("b",))))
    assert photo.names == {1: "cup", 3: "object"}  # was left without a name (and without loss)
    backgrounds, _ = collect_labelled_backgrounds(source, BackgroundConfig(format="mask_pairs", include=("b",)))
    assert backgrounds[0].categories == {1: "background", 2: "cup", 4: "object"}


def test_an_unreadable_cutout_or_coco_photo_is_a_skip_that_names_its_file_once(tmp_path):
    """The skip's reason said its path again: 'x.png' / 'x.png: truncated PNG (no IEND chunk)'."""
    from augment.expand import collect_backgrounds
    from sources_factory import make_backgrounds, make_rgba_source

    rgba = make_rgba_source(tmp_path / "rgba", 2)
    whole = (rgba / "box" / "object_0.png").read_bytes()
    (rgba / "box" / "object_0.png").write_bytes(whole[: len(whole) // 2])
    coco = make_coco(tmp_path / "coco")
    (coco / "images" / "scene.jpg").write_bytes(b"")
    backgrounds = make_backgrounds(tmp_path / "backgrounds", 2)
    (backgrounds / "background_0.jpg").write_bytes(b"not a picture")

    skips = [*_skips(read_source(rgba, SourceConfig())), *_skips(read_source(coco, SourceConfig())),
             *collect_backgrounds(backgrounds, 1)[1]]
    assert [s.path for s in skips] == [str(rgba / "box" / "object_0.png"), str(coco / "images" / "scene.jpg"),
                                       str(backgrounds / "background_0.jpg")]
    for skip in skips:
        assert skip.path not in skip.reason, skip
    assert skips[0].reason.startswith("truncated PNG") and skips[1].reason.startswith("empty file")


def test_an_export_of_labelled_photos_has_no_background_object_and_marks_no_loss_pixels_as_crowd(tmp_path):
    """Photo rows name every pixel: the export made 'background' an object (read back, expand cut it
    out as one) and '__ignore__' (crowd, untrusted labels) an ordinary category."""
    from augment.coco_export import export_coco

    coco = make_coco(tmp_path / "coco")
    data = json.loads((coco / "instances.json").read_text())
    data["annotations"][1]["iscrowd"] = 1  # the shoe's RLE region: a crowd
    (coco / "instances.json").write_text(json.dumps(data))
    write_photo_shards([coco], tmp_path / "photos", SourceConfig())
    export_coco([tmp_path / "photos"], tmp_path / "exported")

    exported = json.loads((tmp_path / "exported" / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in exported["categories"]}
    assert sorted((names[a["category_id"]], a["iscrowd"]) for a in exported["annotations"]) == [
        (IGNORE_CATEGORY, 1), ("shirt", 0)]
    items = list(read_source(tmp_path / "exported", SourceConfig()))  # read back: the shirt alone, the crowd a skip
    assert [item.category for item in items if not isinstance(item, Skip)] == ["shirt"]
    assert [s.reason for s in _skips(items)] == ["annotation 2 is a crowd region"]
    photo = next(read_labelled_photos(tmp_path / "exported", SourceConfig()))
    assert sorted(photo.names.values()) == [IGNORE_CATEGORY, "shirt"]


def test_photo_shards_into_an_expansions_folder_is_one_line_and_leaves_it_whole(tmp_path):
    """It removed the expansion's manifest.json and wrote its own: the expansion's shards, unlisted,
    could no longer be read by anything."""
    from augment.shards import find_shards
    from shard_factory import make_shards

    made = tmp_path / "expanded"
    make_shards(made, n_composites=8, rows_per_shard=4)
    before = {p.name: p.read_bytes() for p in made.iterdir()}
    source = make_label_map(tmp_path / "labelled")
    with pytest.raises(InputError, match=r"holds the output of `synth expand` \(manifest.json\)"):
        write_photo_shards([source], made, SourceConfig())
    assert {p.name: p.read_bytes() for p in made.iterdir()} == before
    assert len(find_shards([made])) == 2

    write_photo_shards([source], tmp_path / "photos", SourceConfig())  # its own earlier output is replaced, as before
    assert write_photo_shards([source], tmp_path / "photos", SourceConfig(), short_side=64)["short_side"] == 64


@pytest.mark.parametrize("thin", [(2, 9), (9, 1)], ids=["2px-high", "1px-wide"])
def test_poisson_blending_of_a_sliver_blends_it_linearly_instead_of_failing_the_run(thin):
    """cv2.seamlessClone raises on a mask 1-2 px thin (a small or torn object: seen on CCP with
    blend: poisson), which ended `synth expand` with OpenCV's traceback."""
    from augment.composite import _paste
    from augment.config import CompositionConfig

    config = CompositionConfig(width=64, height=64, blend="poisson")
    canvas = np.full((64, 64, 3), 40, np.uint8)
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[:, :, :3] = 220
    mask = np.zeros((12, 12), np.uint8)
    mask[3:3 + thin[0], 2:2 + thin[1]] = 1
    rgba[:, :, 3] = mask * 255
    alpha = rgba[:, :, 3].astype(np.float32) / 255
    before = canvas.copy()
    _paste(canvas, rgba, alpha, mask, [20, 20], config)
    changed = (canvas != before).any(axis=2)
    expected = np.zeros((64, 64), bool)
    expected[20:32, 20:32] = mask > 0
    np.testing.assert_array_equal(changed, expected)  # the sliver's pixels, and only they
    assert (canvas[expected] == 220).all()


@pytest.mark.parametrize("box", [(5, 35, 0, 15), (10, 30, 20, 40), (3, 20, 7, 30), (0, 40, 0, 40)],
                         ids=["left-edge", "right-edge", "off-centre", "whole-crop"])
def test_poisson_blending_pastes_the_objects_pixels_under_its_label(box):
    """seamlessClone centred the mask's bounding box on the crop's centre: an object off its crop's
    centre (torn, rotated, partly removed) was pasted beside its label, its label over background."""
    from augment.composite import _paste
    from augment.config import CompositionConfig

    top, bottom, left, right = box
    canvas = np.full((100, 100, 3), 100, np.uint8)
    rgba = np.full((40, 40, 4), 100, np.uint8)
    marker = ((top + bottom) // 2, (left + right) // 2)
    rgba[marker[0], marker[1], :3] = 250  # one bright pixel inside the object
    mask = np.zeros((40, 40), np.uint8)
    mask[top:bottom, left:right] = 1
    rgba[:, :, 3] = mask * 255
    _paste(canvas, rgba, rgba[:, :, 3] / 255.0, mask, [30, 30], CompositionConfig(width=100, height=100, blend="poisson"))
    found = np.unravel_index(np.argmax(canvas[:, :, 0]), canvas.shape[:2])
    assert tuple(map(int, found)) == (30 + marker[0], 30 + marker[1])
    assert canvas[found][0] > 200


def test_photo_shards_of_two_photos_of_one_name_give_two_row_ids_and_export_keeps_both(tmp_path):
    """Both rows were '0001': `synth export` kept one ('id seen before'), as extract's did before its fix."""
    import pyarrow.parquet as pq

    from augment.coco_export import export_coco

    sources = [make_label_map(tmp_path / "a"), make_label_map(tmp_path / "b")]
    manifest = write_photo_shards(sources, tmp_path / "photos", SourceConfig())
    ids = [i for s in manifest["shards"] for i in pq.read_table(tmp_path / "photos" / s["name"]).column("id").to_pylist()]
    assert ids == ["0001", "0001-2"]
    assert export_coco([tmp_path / "photos"], tmp_path / "coco")["images"] == 2


def test_expand_into_a_photo_shards_folder_names_photo_shards_as_its_writer(tmp_path):
    """It said 'holds the output of another `synth expand` run (other seed or config...)'."""
    from augment.config import ExpandConfig
    from augment.expand import run_expand
    from sources_factory import make_backgrounds, make_rgba_source

    photos = tmp_path / "photos"
    write_photo_shards([make_label_map(tmp_path / "labelled")], photos, SourceConfig())
    with pytest.raises(InputError, match=r"holds the output of `synth photo-shards` \(1 file\(s\) such as photos-00000"):
        run_expand([make_rgba_source(tmp_path / "rgba", 2)], make_backgrounds(tmp_path / "backgrounds", 1), photos,
                   ExpandConfig(num=2))


def test_a_broken_coco_segmentation_is_the_same_skip_in_photo_shards_as_in_expand(tmp_path):
    """photo-shards named the .json file, expand the image, for the same broken annotation."""
    coco = make_coco(tmp_path / "coco")
    data = json.loads((coco / "instances.json").read_text())
    data["annotations"][0]["segmentation"] = [[10, 10, 60]]  # an odd count of coordinates
    (coco / "instances.json").write_text(json.dumps(data))
    expand_skips = [(s.path, s.reason) for s in _skips(read_source(coco, SourceConfig()))]
    manifest = write_photo_shards([coco], tmp_path / "photos", SourceConfig())
    assert [(s["path"], s["reason"]) for s in manifest["skipped"]] == expand_skips
    assert expand_skips[0][0] == str(coco / "images" / "scene.jpg") and "broken segmentation" in expand_skips[0][1]


def test_an_annotation_of_a_repeated_category_id_is_a_skip_saying_it_is_repeated(tmp_path):
    """A category id listed twice under two names: its annotations were skipped as 'category_id 1 is not
    in the file's categories', which it is (twice); the skip says it is repeated, naming the names."""
    coco = make_coco(tmp_path / "coco")
    data = json.loads((coco / "instances.json").read_text())
    data["categories"].append({"id": 1, "name": "blouse"})  # 1 is shirt already
    (coco / "instances.json").write_text(json.dumps(data))
    path = str(coco / "instances.json")

    skips = [(s.path, s.reason) for s in _skips(read_source(coco, SourceConfig()))]
    assert skips == [(path, "category id 1 is listed 2 times ('shirt', 'blouse'): its annotations are skipped"),
                     (path, "annotation 1: category_id 1 is listed 2 times in the file's categories "
                            "('shirt', 'blouse')")]
    manifest = write_photo_shards([coco], tmp_path / "photos", SourceConfig())  # synth photo-shards: the same
    assert [(s["path"], s["reason"]) for s in manifest["skipped"]] == skips
