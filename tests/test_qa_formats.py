"""Annotation formats users arrive with, read without converting: LabelMe's .json files, YOLO's
segmentation labels, CVAT's "Segmentation mask 1.1" export. Each reads the masks drawn, pixel for
pixel; a broken file or line is a counted skip naming it, a broken source one line."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.config import SourceConfig
from augment.imageio import InputError
from augment.label_names import source_label_names
from augment.source_items import Skip, SourceObject
from augment.sources import detect_format, read_source
from tests.cli_checks import assert_one_line_error, run_cli

H, W = 40, 60


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _full(item: SourceObject, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A cutout's mask put back at its place in its photo."""
    mask = np.zeros(size, bool)
    x0, y0, x1, y1 = item.box
    mask[y0:y1, x0:x1] = item.rgba[:, :, 3] > 0
    return mask


def _read(source: Path, **config) -> tuple[list[SourceObject], list[Skip]]:
    items = list(read_source(source, SourceConfig(min_area=1, **config)))
    return [i for i in items if isinstance(i, SourceObject)], [i for i in items if isinstance(i, Skip)]


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


# ---------------------------------------------------------------- LabelMe
def _labelme(folder: Path, name: str, shapes: list[dict], image: str | None = "same", **extra) -> Path:
    data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.png" if image == "same" else image,
            "imageData": None, "imageHeight": H, "imageWidth": W, **extra}
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _shape(label: str, points: list, kind: str = "polygon", group: int | None = None, **extra) -> dict:
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}, **extra}


def test_labelme_shapes_are_read_as_drawn_each_kind_and_group(tmp_path):
    """Polygons either way round, a rectangle given by its corners in either order, a polygon partly
    outside the image (clipped), two shapes of one group_id joined into one object, LabelMe 5's mask
    shape at its box, a circle of its radius."""
    _photo(tmp_path / "a.png")
    ell = [[4, 3], [10, 3], [10, 20], [20, 20], [20, 25], [4, 25]]  # an L, clockwise on screen
    small = np.zeros((5, 7), np.uint8)
    small[1:4, 2:6] = 255
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="PNG")
    _labelme(tmp_path, "a", [
        _shape("shirt", ell),
        _shape("hat", [[50, 30], [30, 10]], "rectangle"),
        _shape("bag", [[55, 0], [70, 0], [70, 45], [55, 45]][::-1]),  # counter-clockwise, out on the right and below
        _shape("shoe", [[0, 30], [5, 30], [5, 35], [0, 35]], group=1),
        _shape("shoe", [[10, 30], [14, 30], [14, 38], [10, 38]], group=1),
        _shape("ball", [[30, 30], [30.5, 30.5]], "mask", mask=base64.b64encode(buffer.getvalue()).decode()),
        _shape("coin", [[45, 33], [45, 38]], "circle"),
    ])
    objects, skips = _read(tmp_path)
    assert not skips
    by = {o.category: o for o in objects}
    assert sorted(by) == ["bag", "ball", "coin", "hat", "shirt", "shoe"] and len(objects) == 6
    assert (_full(by["shirt"]) == (_box(3, 25, 4, 10) | _box(20, 25, 10, 20))).all()
    assert (_full(by["hat"]) == _box(10, 30, 30, 50)).all()
    assert (_full(by["bag"]) == _box(0, H, 55, W)).all()
    assert (_full(by["shoe"]) == (_box(30, 35, 0, 5) | _box(30, 38, 10, 14))).all()
    assert (_full(by["ball"]) == _box(31, 34, 32, 36)).all()
    assert abs(_full(by["coin"]).sum() - np.pi * 25) < 6
    assert by["shirt"].source == str(tmp_path / "a.png")


def test_labelme_images_found_from_another_folder_windows_paths_or_embedded(tmp_path):
    """imagePath ``..\\images\\a.png`` as LabelMe on Windows saves it beside annotations/; a file whose
    image is gone but whose imageData holds it is read from that."""
    _photo(tmp_path / "images" / "a.png")
    _labelme(tmp_path / "annotations", "a", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])], image="..\\images\\a.png")
    buffer = io.BytesIO()
    Image.open(_photo(tmp_path / "scratch" / "b.png", seed=1)).save(buffer, format="PNG")
    (tmp_path / "scratch" / "b.png").unlink()
    _labelme(tmp_path / "annotations", "b", [_shape("cap", [[2, 2], [8, 2], [8, 8], [2, 8]])], image="gone/b.png",
             imageData=base64.b64encode(buffer.getvalue()).decode())
    objects, skips = _read(tmp_path)
    assert not skips and [o.category for o in objects] == ["hat", "cap"]
    assert (_full(objects[1]) == _box(2, 8, 2, 8)).all()


def test_broken_labelme_files_and_shapes_are_counted_skips_naming_the_file(tmp_path):
    _photo(tmp_path / "good.png")
    _photo(tmp_path / "big.png", size=(H + 10, W))
    _labelme(tmp_path, "good", [
        _shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]]),
        _shape("two", [[1, 1], [9, 9]]),                       # 2 points
        _shape("flat", [[1, 1], [5, 5], [9, 9]]),              # collinear: zero area
        _shape("nan", [[1, "x"], [5, 5], [9, 1]]),
        _shape("edge", [[1, 1], [9, 9]], "line"),
    ])
    _labelme(tmp_path, "big", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])])
    _labelme(tmp_path, "nopath", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])], image=None)
    _labelme(tmp_path, "missing", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])])
    (tmp_path / "zz.json").write_text('{"shapes": [], "imagePath": ')
    objects, skips = _read(tmp_path)
    assert [o.category for o in objects] == ["hat"]
    reasons = {(Path(s.path).name, s.reason.split(":")[0]) for s in skips}
    assert {("good.json", "shape 1 ('two')"), ("good.json", "shape 2 ('flat')"), ("good.json", "shape 3 ('nan')"),
            ("good.json", "shape 4 ('edge')")} <= reasons
    said = {Path(s.path).name: s.reason for s in skips}
    assert "image is 60x50 but its shapes are for 60x40" in said["big.json"]
    assert "no imagePath" in said["nopath.json"] and "'missing.png'" in said["missing.json"]
    assert said["zz.json"].startswith("not a LabelMe file")
    assert len(skips) == 8


# ---------------------------------------------------------------- YOLO
def _yolo_line(klass: int, mask_box: tuple[int, int, int, int]) -> str:
    y0, y1, x0, x1 = mask_box
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return f"{klass} " + " ".join(f"{x / W:.8f} {y / H:.8f}" for x, y in corners)


@pytest.mark.parametrize("layout", ["data.yaml", "classes.txt", "split_first", "labelimg"])
def test_yolo_polygons_are_read_as_drawn_with_their_class_names(tmp_path, layout):
    images, labels = ("train/images", "train/labels") if layout == "split_first" else ("images/train", "labels/train")
    _photo(tmp_path / images / "a.png")
    (tmp_path / labels).mkdir(parents=True)
    (tmp_path / labels / "a.txt").write_text(f"{_yolo_line(1, (3, 20, 5, 30))}\n\n{_yolo_line(0, (22, 40, 40, 60))}\n")
    if layout in ("classes.txt", "labelimg"):  # LabelImg saves it among the labels
        (tmp_path / ("labels/train/classes.txt" if layout == "labelimg" else "classes.txt")).write_text("cat\ndog\n")
    else:
        (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: cat\n  1: dog\n"
                                            if layout == "data.yaml" else "names: [cat, dog]\n")
    assert detect_format(tmp_path) == "yolo"
    assert source_label_names(tmp_path, SourceConfig()) == {"cat", "dog"}
    objects, skips = _read(tmp_path)
    assert not skips and [o.category for o in objects] == ["dog", "cat"]
    assert (_full(objects[0]) == _box(3, 20, 5, 30)).all() and (_full(objects[1]) == _box(22, 40, 40, 60)).all()


def test_broken_yolo_lines_and_unpaired_files_are_counted_skips_naming_file_and_line(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    _photo(tmp_path / "images" / "a.png")
    _photo(tmp_path / "images" / "nolabel.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "orphan.txt").write_text(_yolo_line(0, (1, 9, 1, 9)))
    good = _yolo_line(0, (1, 9, 1, 9))
    (tmp_path / "labels" / "a.txt").write_text("\n".join([
        good, good + " 0.5",                                   # odd count
        "1 0.1 0.1 0.5 0.1 1.2 0.5",                           # outside [0, 1]
        "0 0.5 0.5 0.2 0.2",                                   # a detection box
        "7 0.1 0.1 0.5 0.1 0.5 0.5",                           # unknown class
        "x 0.1 0.1 0.5 0.1 0.5 0.5",                           # not a number
        "1 0.1 0.1 0.3 0.3 0.5 0.5",                           # collinear
    ]))
    objects, skips = _read(tmp_path)
    assert [o.category for o in objects] == ["cat"]
    said = sorted((Path(s.path).name, s.reason.split(":")[0]) for s in skips)
    assert said == [("a.txt", f"line {n}") for n in range(2, 8)] + [("nolabel.png", "no label file (labels/nolabel.txt)"),
                                                                  ("orphan.txt", "no image with this name (a label file without its image)")]
    assert "odd count" in next(s.reason for s in skips if s.reason.startswith("line 2"))
    assert "outside [0, 1]" in next(s.reason for s in skips if s.reason.startswith("line 3"))


def test_a_yolo_source_without_class_names_is_one_line(tmp_path):
    _photo(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(_yolo_line(0, (1, 9, 1, 9)))
    with pytest.raises(InputError, match="data.yaml"):
        _read(tmp_path, format="yolo")


# ---------------------------------------------------------------- CVAT segmentation masks
LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nperson:250,50,83::\ncar:51,221,255::\n"


def _colour_png(path: Path, planes: list[tuple[np.ndarray, tuple[int, int, int]]], palette: bool = False) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    for mask, colour in planes:
        image[mask] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    (picture.quantize(colors=16, method=Image.Quantize.MAXCOVERAGE) if palette else picture).save(path)


@pytest.mark.parametrize("palette", [False, True])
def test_cvat_masks_are_read_as_drawn_an_object_per_instance_colour(tmp_path, palette):
    """Two touching people (one class region, two instances) and a car; a palette PNG as Datumaro
    writes it reads the same."""
    (tmp_path / "labelmap.txt").write_text(LABELMAP)
    _photo(tmp_path / "JPEGImages" / "a.png")
    left, right, car = _box(5, 30, 5, 20), _box(5, 30, 20, 32), _box(20, 35, 40, 58)
    _colour_png(tmp_path / "SegmentationClass" / "a.png", [(left | right, (250, 50, 83)), (car, (51, 221, 255))], palette)
    _colour_png(tmp_path / "SegmentationObject" / "a.png", [(left, (128, 0, 0)), (right, (0, 128, 0)), (car, (128, 128, 0))],
                palette)
    assert detect_format(tmp_path) == "cvat_mask"
    assert source_label_names(tmp_path, SourceConfig()) == {"person", "car"}
    objects, skips = _read(tmp_path)
    assert not skips
    got = sorted((o.category, o.box) for o in objects)
    assert got == [("car", (40, 20, 58, 35)), ("person", (5, 5, 20, 30)), ("person", (20, 5, 32, 30))]
    by_box = {o.box: _full(o) for o in objects}
    assert (by_box[(5, 5, 20, 30)] == left).all() and (by_box[(40, 20, 58, 35)] == car).all()


def test_cvat_class_masks_alone_give_an_object_per_region_and_bad_colours_are_skips(tmp_path):
    (tmp_path / "labelmap.txt").write_text(LABELMAP)
    _photo(tmp_path / "JPEGImages" / "a.png")
    _photo(tmp_path / "JPEGImages" / "b.png", seed=2)
    _photo(tmp_path / "JPEGImages" / "c.png", seed=3, size=(H, W + 4))
    one, two = _box(2, 12, 2, 12), _box(20, 30, 30, 50)
    _colour_png(tmp_path / "SegmentationClass" / "a.png", [(one | two, (250, 50, 83))])
    _colour_png(tmp_path / "SegmentationClass" / "b.png", [(one, (9, 9, 9)), (two, (51, 221, 255))])
    _colour_png(tmp_path / "SegmentationClass" / "c.png", [(one, (51, 221, 255))])
    objects, skips = _read(tmp_path)
    assert [(o.category, Path(o.source).name) for o in objects] == [("person", "a.png"), ("person", "a.png"), ("car", "b.png")]
    assert (_full(objects[0]) | _full(objects[1]) == one | two).all()
    said = {Path(s.path).name: s.reason for s in skips}
    assert said["b.png"].startswith("colour(s) (9, 9, 9) not in labelmap.txt")
    assert said["c.png"].startswith("mask is 60x40 but its photo is 64x40")


def test_a_broken_labelmap_is_one_line_naming_the_file_and_line(tmp_path):
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nperson:250,50::\n")
    _photo(tmp_path / "JPEGImages" / "a.png")
    _colour_png(tmp_path / "SegmentationClass" / "a.png", [(_box(2, 12, 2, 12), (250, 50, 83))])
    result = run_cli("expand", tmp_path, "--backgrounds", _photo(tmp_path / "bg" / "b.png").parent,
                     "--out", tmp_path / "out", "--num", "1")
    assert_one_line_error(result, 2, "labelmap.txt: line 2")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_labelme_folder_is_detected_and_expands_by_the_cli(tmp_path):
    source = tmp_path / "src"
    _photo(source / "a.png")
    _labelme(source, "a", [_shape("hat", [[1, 1], [40, 1], [40, 39], [1, 39]])])
    _labelme(source, "b", [_shape("hat", [[1, 1], [40, 1], [40, 39], [1, 39]])])  # its image is missing
    assert detect_format(source) == "labelme" and detect_format(source / "a.json") == "labelme"
    result = run_cli("expand", source, "--backgrounds", _photo(tmp_path / "bg" / "b.png").parent,
                     "--out", tmp_path / "out", "--num", "2", "--workers", "1")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("b.json" in json.dumps(s) for s in manifest["skipped"]), manifest["skipped"]


def test_a_labelme_file_named_alone_reads_its_image_and_a_changed_image_is_cut_again(tmp_path):
    """``annotations/a.json`` naming ``../photos/a.png``: the image is read, and the run's fingerprint
    covers it (COCO's image folders did not: an edited photo kept its old cutouts)."""
    from augment.cutouts import sources_fingerprint

    photo = _photo(tmp_path / "photos" / "a.png")
    json_path = _labelme(tmp_path / "annotations", "a", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])],
                         image="../photos/a.png")
    objects, skips = _read(json_path)
    assert not skips and objects[0].source == str(photo)
    before = sources_fingerprint([json_path], SourceConfig())
    _photo(photo, seed=5)
    assert sources_fingerprint([json_path], SourceConfig()) != before


def test_labelled_photo_commands_read_the_new_formats_as_whole_photos(tmp_path):
    """calibrate, search's --pairs and photo-shards read labelled photos: a YOLO source gives its
    photo with each line's mask at the photo's size (it was 'unknown source format')."""
    from augment import photo_objects, photo_shards

    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    _photo(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(f"{_yolo_line(1, (3, 20, 5, 30))}\n{_yolo_line(0, (22, 40, 40, 60))}\n")
    photo = next(iter(photo_objects.read_labelled_photos(tmp_path, SourceConfig(min_area=1))))
    assert [c for c, _ in photo.objects] == ["dog", "cat"] and (photo.objects[0][1] == _box(3, 20, 5, 30)).all()
    shard_photo = next(iter(photo_shards.read_labelled_photos(tmp_path, SourceConfig(min_area=1))))
    assert shard_photo.names == {1: "dog", 2: "cat"}
    assert ((shard_photo.values == 1) == _box(3, 20, 5, 30)).all() and ((shard_photo.values == 2) == _box(22, 40, 40, 60)).all()


def test_a_labelme_image_path_of_another_machine_is_found_beside_the_file_and_none_outside_the_source(tmp_path):
    source = tmp_path / "src"
    _photo(source / "a.png")
    _photo(tmp_path / "secret.png")
    _labelme(source, "a", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])], image="C:\\Users\\me\\Desktop\\a.png")
    _labelme(source, "b", [_shape("hat", [[1, 1], [9, 1], [9, 9], [1, 9]])], image="../secret.png")
    objects, skips = _read(source)
    assert [Path(o.source).name for o in objects] == ["a.png"]
    assert [(Path(s.path).name, s.reason) for s in skips] == [
        ("b.json", f"imagePath '../secret.png' lies outside the source folder {source}")]


def test_two_classes_of_one_colour_in_a_labelmap_is_one_line_naming_both(tmp_path):
    from augment.cvat_masks import read_labelmap

    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nperson:250,50,83::\nrider:250,50,83::\n")
    with pytest.raises(InputError, match=r"labelmap.txt: line 3: 'rider' has the colour 250,50,83 of 'person'"):
        read_labelmap(tmp_path / "labelmap.txt")


def test_a_labelme_file_of_many_shapes_named_alone_is_read_as_labelme_not_coco(tmp_path):
    """LabelMe writes imagePath after the shapes: in a file of many, past what detection reads."""
    _photo(tmp_path / "a.png")
    shapes = [_shape("dot", [[i % 50, 1], [i % 50 + 3, 1], [i % 50 + 3, 4]]) for i in range(1000)]
    path = _labelme(tmp_path, "a", shapes)
    assert path.stat().st_size > 1 << 16 and detect_format(path) == "labelme"


def test_a_pascal_voc_folder_without_labelmap_reads_vocs_classes_and_leaves_its_border_out(tmp_path):
    from augment.cvat_masks import voc_colour

    palette = [v for index in range(256) for v in voc_colour(index)]
    left, right = _box(5, 30, 5, 20), _box(5, 30, 22, 40)
    border = _box(4, 31, 4, 41) & ~left & ~right
    for folder, values in (("SegmentationClass", (15, 15)), ("SegmentationObject", (1, 2))):
        indices = np.zeros((H, W), np.uint8)
        indices[left], indices[right], indices[border] = values[0], values[1], 255
        picture = Image.fromarray(indices, "P")
        picture.putpalette(palette)
        (tmp_path / folder).mkdir()
        picture.save(tmp_path / folder / "2007_000032.png")
    _photo(tmp_path / "JPEGImages" / "2007_000032.png")
    assert detect_format(tmp_path) == "cvat_mask" and "person" in source_label_names(tmp_path, SourceConfig())
    objects, skips = _read(tmp_path)
    assert not skips and [o.category for o in objects] == ["person", "person"]
    masks = sorted((_full(o) for o in objects), key=lambda m: np.argwhere(m)[0][1])
    assert (masks[0] == left).all() and (masks[1] == right).all()


def _objects_read_and_peak_memory(source):
    """How many objects a source's reader yields, and the peak memory traced while it reads them."""
    import tracemalloc

    tracemalloc.start()
    try:
        count = sum(isinstance(item, SourceObject) for item in read_source(source, SourceConfig(min_area=1)))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_labelme_file_of_hundreds_of_shapes_draws_one_mask_at_a_time(tmp_path):
    """Each shape's photo-sized mask was drawn up front and held for the whole file: 300 shapes on a
    3-megapixel photo took ~970 MB; now what one object takes."""
    height, width = 300, 400
    _photo(tmp_path / "a.png", size=(height, width))
    shapes = [_shape("dot", [[x, y], [x + 8, y], [x + 8, y + 8], [x, y + 8]]) for x in range(0, 390, 20) for y in range(0, 290, 20)]
    _labelme(tmp_path, "a", shapes, imageHeight=height, imageWidth=width)
    count, peak = _objects_read_and_peak_memory(tmp_path)
    assert count == len(shapes) == 300
    assert peak < 20 * height * width, peak  # 300 masks held: 36 MB; one at a time: a few masks and the photo


def test_a_coco_image_of_hundreds_of_annotations_draws_one_mask_at_a_time(tmp_path):
    """As LabelMe's: an LVIS image has hundreds of annotations, each mask drawn up front and held."""
    height, width = 300, 400
    _photo(tmp_path / "images" / "a.png", size=(height, width))
    annotations = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [x, y, 8, 8],
                    "segmentation": [[x, y, x + 8, y, x + 8, y + 8, x, y + 8]]}
                   for i, (x, y) in enumerate((x, y) for x in range(0, 390, 20) for y in range(0, 290, 20))]
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
        "categories": [{"id": 1, "name": "dot"}], "annotations": annotations}))
    count, peak = _objects_read_and_peak_memory(tmp_path)
    assert count == len(annotations) == 300
    assert peak < 20 * height * width, peak
