"""Photos and masks as a new user's sources hold them: EXIF-rotated photos, palette (Pascal VOC) masks,
masks paired by name in subfolders, and masks saved as JPEG. Tiny generated expansion inputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from augment.imageio import decode_image, image_from_bytes, save_image
from augment.mask_files import read_mask
from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_label_map
from test_hardening_expand import inputs  # noqa: F401  (the same tiny expansion inputs)


# ----------------------------------------------------------------- EXIF-rotated photos
def _exif_jpeg(path: Path, upright: np.ndarray, orientation: int) -> Path:
    """A JPEG holding ``upright`` stored turned, with the EXIF orientation that shows it upright (a phone's)."""
    stored = {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photos_are_read_upright_as_their_exif_orientation_shows_them_in_every_mode(orientation):
    base = np.random.default_rng(orientation).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    image = Image.fromarray(base)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    data = buffer.getvalue()
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert np.array_equal(image_from_bytes(data, "x.png", "rgb"), shown)
    assert np.array_equal(image_from_bytes(data, "x.png", "unchanged"), shown)
    assert image_from_bytes(data, "x.png", "gray").shape == shown.shape[:2]
    assert image_from_bytes(data, "x.png", "rgba").shape == (*shown.shape[:2], 4)


@pytest.mark.parametrize("orientation", [3, 6])
def test_a_mask_drawn_on_an_exif_rotated_photo_cuts_the_object_not_the_background(inputs, tmp_path, orientation):
    """The mask was drawn on the photo as viewers show it: it must line up (orientation 6: it was
    a size mismatch, every object skipped; 3: the cutout held the background's pixels, silently)."""
    upright = np.zeros((160, 120, 3), np.uint8)
    upright[:] = (200, 40, 40)  # red background
    upright[10:70, 10:60] = (20, 20, 230)  # a blue object in the top left corner
    mask = np.zeros((160, 120), np.uint8)
    mask[10:70, 10:60] = 255
    source = tmp_path / "pairs"
    _exif_jpeg(source / "images" / "a.jpg", upright, orientation)
    (source / "masks").mkdir()
    save_image(source / "masks" / "a.png", mask)
    _, backgrounds, config = inputs
    out = tmp_path / "out"
    result = run_cli("expand", source, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    (row,) = pq.read_table(out / "objects.parquet").to_pylist()
    cutout = decode_image(row["image"]["bytes"])
    assert cutout.shape[:2] == (60, 50)
    inside = cutout[cutout[:, :, 3] > 0][:, :3].mean(axis=0)
    assert inside[2] > 200 and inside[0] < 60, inside  # blue: the object, not the red background


# ----------------------------------------------------------------- palette masks
def _palette_png(path: Path, indices: np.ndarray) -> Path:
    """An indexed PNG as Pascal VOC writes its label maps: index k coloured by a palette, not grey k."""
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (252 * 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def test_palette_png_masks_and_label_maps_give_their_indices_not_a_colour_skip(inputs, tmp_path):
    _, backgrounds, config = inputs
    pairs = tmp_path / "pairs"
    save_image(pairs / "images" / "a.png", np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    ids = np.zeros((120, 160), np.uint8)
    ids[10:60, 10:70] = 1
    ids[70:115, 80:150] = 2
    _palette_png(pairs / "masks" / "a.png", ids)
    (pairs / "categories.json").write_text('{"1": "cup", "2": "bag"}')
    assert np.array_equal(read_mask(pairs / "masks" / "a.png"), ids)

    labelled = tmp_path / "labelled"
    (labelled / "photos").mkdir(parents=True)
    (labelled / "label_list.json").write_text('["null", "jacket", "skirt"]')
    save_image(labelled / "photos" / "0001.png", np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
    _palette_png(labelled / "labels" / "0001.png", ids)
    for source, categories in ((pairs, ["bag", "cup"]), (labelled, ["jacket", "skirt"])):
        out = tmp_path / f"out-{source.name}"
        result = run_cli("expand", source, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["skipped"] == []
        assert sorted(pq.read_table(out / "objects.parquet").column("category").to_pylist()) == categories


def test_a_voc_palette_masks_void_border_is_not_an_object(inputs, tmp_path):
    """Pascal VOC's SegmentationObject PNGs draw a 255 ("void") border round every object: it was
    read as one more instance, a ring-shaped 'object' cutout beside the real ones."""
    _, backgrounds, config = inputs
    pairs = tmp_path / "pairs"
    save_image(pairs / "images" / "a.png", np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    ids = np.zeros((120, 160), np.uint8)
    ids[5:65, 5:75] = 255  # the void border, 5 px wide
    ids[10:60, 10:70] = 1
    _palette_png(pairs / "masks" / "a.png", ids)
    assert set(np.unique(read_mask(pairs / "masks" / "a.png"))) == {0, 1}
    from augment.picture_arrays import mask_array  # the API's PIL palette mask, read as its file is

    with Image.open(pairs / "masks" / "a.png") as pil:
        assert set(np.unique(mask_array(pil, "query_mask"))) == {0, 1}
    out = tmp_path / "out"
    result = run_cli("expand", pairs, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    (row,) = pq.read_table(out / "objects.parquet").to_pylist()
    assert decode_image(row["image"]["bytes"]).shape[:2] == (50, 60)  # the object alone, no ring
    binary = np.where(ids == 1, 255, 0).astype(np.uint8)  # 0 and 255 alone: 255 is a binary mask's object
    _palette_png(tmp_path / "binary.png", binary)
    assert np.array_equal(read_mask(tmp_path / "binary.png"), binary)


# ----------------------------------------------------------------- pairing by name in subfolders
def _nested_pair(root: Path, photos: str, masks: str, sub: str, colour: tuple[int, int, int],
                 box: tuple[int, int, int, int], value: int) -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    mask = np.zeros((120, 160), np.uint8)
    mask[y0:y1, x0:x1] = value
    save_image(root / photos / sub / "0001.png", image)
    save_image(root / masks / sub / "0001.png", mask)


@pytest.mark.parametrize("layout", ["mask_pairs", "label_map"])
def test_masks_in_subfolders_pair_with_the_photo_of_their_own_subfolder_not_a_namesake(inputs, tmp_path, layout):
    """images/day1/0001 and images/day2/0001: each mask cut the other day's photo (or both the same)."""
    source = tmp_path / layout
    photos, masks, value = ("images", "masks", 255) if layout == "mask_pairs" else ("photos", "labels", 1)
    if layout == "label_map":
        source.mkdir()
        (source / "label_list.json").write_text('["null", "coat"]')
    _nested_pair(source, photos, masks, "day1", (230, 20, 20), (10, 10, 60, 50), value)
    _nested_pair(source, photos, masks, "day2", (20, 230, 20), (70, 60, 150, 110), value)
    _, backgrounds, config = inputs
    out = tmp_path / "out"
    result = run_cli("expand", source, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    for row in pq.read_table(out / "objects.parquet").to_pylist():
        cutout = decode_image(row["image"]["bytes"])
        colour = cutout[cutout[:, :, 3] > 0][:, :3].mean(axis=0)
        if "day1" in row["source"]:
            assert row["box"] == [10, 10, 60, 50] and colour[0] > 200, (row["source"], row["box"], colour)
        else:
            assert row["box"] == [70, 60, 150, 110] and colour[1] > 200, (row["source"], row["box"], colour)
    assert len(pq.read_table(out / "objects.parquet")) == 2


def test_a_mask_without_its_image_is_a_counted_skip_and_namesakes_are_not_guessed(inputs, tmp_path):
    source = tmp_path / "pairs"
    _nested_pair(source, "images", "masks", "day1", (230, 20, 20), (10, 10, 60, 50), 255)
    save_image(source / "images" / "day2" / "0001.png", np.full((120, 160, 3), 90, np.uint8))  # its mask is missing
    save_image(source / "masks" / "orphan.png", np.full((40, 40), 255, np.uint8))
    _, backgrounds, config = inputs
    out = tmp_path / "out"
    result = run_cli("expand", source, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    skipped = {Path(s["path"]).relative_to(source).as_posix(): s["reason"]
               for s in json.loads((out / "manifest.json").read_text())["skipped"]}
    assert skipped == {"masks/orphan.png": "no image with this name (a mask without its image)",
                       "images/day2/0001.png": "no mask found for this image"}
    (row,) = pq.read_table(out / "objects.parquet").to_pylist()
    assert "day1" in row["source"]
    # Flat masks beside nested photos of one name: the one mask cannot belong to both, so neither takes it.
    flat = tmp_path / "flat"
    for sub in ("day1", "day2"):
        save_image(flat / "images" / sub / "0001.png", np.full((120, 160, 3), 90, np.uint8))
    save_image(flat / "masks" / "0001.png", np.full((120, 160), 255, np.uint8))
    result = run_cli("expand", flat, "-b", backgrounds, "-o", tmp_path / "out-flat", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, "no usable objects found")


# ----------------------------------------------------------------- masks saved as JPEG
def test_a_black_and_white_jpeg_mask_is_one_clean_object_and_a_jpeg_label_map_a_clear_skip(inputs, tmp_path):
    """Compression blurred a JPEG mask's 255 into 250-254 and its edges into specks: read as an instance-id
    mask, one object became a ring, a strip and a handful of below-min_area skips."""
    _, backgrounds, config = inputs
    source = tmp_path / "pairs"
    save_image(source / "images" / "a.png", np.random.default_rng(0).integers(0, 255, (100, 120, 3), np.uint8))
    mask = np.zeros((100, 120), np.uint8)
    mask[20:80, 30:90] = 255
    save_image(source / "masks" / "a.jpg", mask)
    out = tmp_path / "out"
    result = run_cli("expand", source, "-b", backgrounds, "-o", out, "-c", config, "-n", 2, "-w", 1)
    assert result.exit_code == 0, result.output
    (row,) = pq.read_table(out / "objects.parquet").to_pylist()
    assert row["box"] == [30, 20, 90, 80] and row["area"] == 3600
    assert json.loads((out / "manifest.json").read_text())["skipped"] == []

    labelled = make_label_map(tmp_path / "labelled")
    label_map = labelled / "labels" / "0001.png"
    save_image(label_map.with_suffix(".jpg"), read_mask(label_map))
    label_map.unlink()
    result = run_cli("expand", labelled, "-b", backgrounds, "-o", tmp_path / "out2", "-c", config, "-n", 2, "-w", 1)
    assert_one_line_error(result, 2, f"{label_map.with_suffix('.jpg')}: a JPEG mask whose values are not just black "
                          "and white")
