"""Image files as users have them, read by every command through augment.imageio: greyscale PNGs
with a transparent grey (tRNS), PNGs with a damaged chunk, files OpenCV fails on without its log."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from augment.config import SourceConfig
from augment.imageio import InputError, read_image
from augment.source_items import SourceObject
from augment.sources import Skip, read_source
from pipelines.search import load_query


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_trns(png: bytes, value: int) -> bytes:
    """``png`` with a tRNS chunk making grey ``value`` transparent (after IHDR: 8 + 25 bytes)."""
    return png[:33] + _chunk(b"tRNS", struct.pack(">H", value)) + png[33:]


def _object_on_grey(dtype=np.uint8) -> np.ndarray:
    """A 40x60 grey picture: an object (grey 200, one white pixel) on a background of 0."""
    grey = np.zeros((40, 60), np.uint8)
    grey[10:30, 20:45] = 200
    grey[12, 22] = 255
    return grey.astype(np.uint16) * 257 if dtype == np.uint16 else grey


def _pil_png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["8-bit", "1-bit", "16-bit"])
def test_grey_png_transparent_grey_is_its_alpha(tmp_path: Path, kind: str) -> None:
    grey = _object_on_grey()
    if kind == "8-bit":
        data = _pil_png(Image.fromarray(grey), transparency=0)
    elif kind == "1-bit":
        data = _pil_png(Image.fromarray(grey > 0), transparency=0)
    else:
        data = _with_trns(cv2.imencode(".png", _object_on_grey(np.uint16))[1].tobytes(), 0)
    path = tmp_path / "cutout.png"
    path.write_bytes(data)
    expected = np.array(Image.open(path).convert("RGBA"))[:, :, 3]  # Pillow honours tRNS
    assert set(np.unique(expected)) == {0, 255}
    rgba = read_image(path, "rgba")
    assert np.array_equal(rgba[:, :, 3], expected)
    assert rgba[20, 30, 0] == (255 if kind == "1-bit" else 200) and rgba[12, 22, 0] == 255
    assert read_image(path, "unchanged").shape[2] == 4


def test_grey_png_cutout_and_query_keep_their_transparency(tmp_path: Path) -> None:
    """An RGBA cutout source read it as 'no alpha channel' (skipped); a search query read it as opaque
    and searched its whole rectangle."""
    source = tmp_path / "cutouts" / "hat"
    source.mkdir(parents=True)
    (source / "a.png").write_bytes(_pil_png(Image.fromarray(_object_on_grey()), transparency=0))
    items = list(read_source(tmp_path / "cutouts", SourceConfig(format="rgba", min_area=1)))
    assert len(items) == 1 and isinstance(items[0], SourceObject), items
    assert items[0].rgba.shape[:2] == (20, 25) and items[0].box == (20, 10, 45, 30)
    rgb, mask = load_query(source / "a.png")
    assert mask is not None and rgb.shape[:2] == (20, 25)


def test_png_with_a_damaged_chunk_is_one_line_and_nothing_on_the_terminal(tmp_path: Path, capfd) -> None:
    data = bytearray(_pil_png(Image.fromarray(np.dstack([_object_on_grey()] * 3))))
    data[data.find(b"IDAT") + 6] ^= 0xFF  # a bit error in the compressed pixels
    path = tmp_path / "photo.png"
    path.write_bytes(bytes(data))
    capfd.readouterr()
    with pytest.raises(InputError, match=r"photo\.png: corrupt PNG \(its IDAT chunk fails its checksum\)"):
        read_image(path)
    assert capfd.readouterr().err == ""  # libpng printed 'libpng error: IDAT: invalid ...'


def test_png_with_a_damaged_ancillary_chunk_is_read(tmp_path: Path) -> None:
    """libpng drops an ancillary chunk whose CRC fails and decodes the pixels: so does synth."""
    png = _pil_png(Image.fromarray(_object_on_grey()))
    text = _chunk(b"tEXt", b"Comment\x00hello")
    damaged = text[:-4] + bytes(4 * [0])
    path = tmp_path / "photo.png"
    path.write_bytes(png[:33] + damaged + png[33:])
    assert np.array_equal(read_image(path, "gray"), _object_on_grey())


def test_a_file_opencv_fails_on_leaves_no_opencv_log_lines(tmp_path: Path, capfd) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([_object_on_grey()] * 3)).save(buffer, "BMP")
    path = tmp_path / "photo.bmp"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    capfd.readouterr()
    with pytest.raises(InputError, match=r"photo\.bmp: not a readable image"):
        read_image(path)
    assert capfd.readouterr().err == ""  # OpenCV logged '[ERROR:0@...] global loadsave.cpp:... imdecode_ ...'


def test_tiff_with_straight_alpha_keeps_its_colour(tmp_path: Path) -> None:
    """libtiff's RGBA reader (OpenCV's for 8 bits) multiplied a straight-alpha TIFF's colour by its
    alpha: a cutout's half-transparent edge (200,100,50 at alpha 150) came back as 118,59,29."""
    rgba = np.dstack([np.full((20, 30, 3), (200, 100, 50), np.uint8), np.full((20, 30), 150, np.uint8)])
    rgba[:, :10, 3] = 255
    path = tmp_path / "cutout.tif"
    Image.fromarray(rgba).save(path, compression="tiff_lzw")  # ExtraSamples 2: straight alpha
    read = read_image(path, "rgba")
    assert np.abs(read.astype(int) - rgba).max() <= 1, read[0, 20]
    cv2.imwrite(str(tmp_path / "opencv.tif"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))  # no ExtraSamples
    assert np.array_equal(read_image(tmp_path / "opencv.tif", "rgba"), rgba)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_pil_image_of_a_phone_photo_is_read_upright_as_its_file(tmp_path: Path, orientation: int) -> None:
    """Searcher/Segmenter took Image.open(photo) as stored (turned) and the photo's path upright: boxes
    and masks of the same photo in two frames."""
    from augment.picture_arrays import load_rgb

    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :10] = 255  # a white corner shows where the picture went
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"
    Image.fromarray(stored).save(path, exif=exif)
    from_file = read_image(path, "rgb")
    assert from_file.shape[:2] == ((60, 40) if orientation in (6, 8) else (40, 60))
    with Image.open(path) as opened:
        assert np.array_equal(load_rgb(opened), from_file)
        assert np.array_equal(load_query(opened)[0], load_query(path)[0])
    from PIL import ImageOps

    with Image.open(path) as opened:  # turned by the caller: its orientation tag is gone, not turned again
        assert np.array_equal(load_rgb(ImageOps.exif_transpose(opened)), from_file)


def test_a_coco_photo_of_another_size_than_its_entry_is_a_counted_skip(tmp_path: Path) -> None:
    """A photo resized after it was annotated (or annotated as stored, then read upright by its EXIF
    orientation) had its objects cut with the annotations' coordinates from the wrong pixels, no word."""
    from sources_factory import make_coco

    root = make_coco(tmp_path / "coco")
    photo = root / "images" / "scene.jpg"
    stored = read_image(photo)  # 140x100, as instances.json says
    Image.fromarray(stored).resize((70, 50)).save(photo)
    items = list(read_source(root, SourceConfig(format="coco")))
    assert [type(item) for item in items] == [Skip], items
    assert items[0].path == str(photo) and items[0].reason == \
        "image is 70x50 but its annotations are for 140x100 in instances.json"
    exif = Image.Exif()
    exif[0x0112] = 6  # upright it is 100x140
    Image.fromarray(stored).save(photo, exif=exif)
    (reason,) = [item.reason for item in read_source(root, SourceConfig(format="coco"))]
    assert reason.startswith("image is 100x140 but its annotations are for 140x100 (turned: annotated as stored")
    Image.fromarray(stored).save(photo)  # as annotated: both objects
    assert [type(item) for item in read_source(root, SourceConfig(format="coco"))] == [SourceObject] * 2


def _jpeg(progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    picture = np.random.default_rng(4).integers(0, 255, (48, 64, 3), np.uint8)
    Image.fromarray(picture).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


@pytest.mark.parametrize("trailer", [b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8,  # a motion photo's MP4
                                     b"\x00" * 7 + b"SEFHrecords" + b"SEFT"],  # Samsung's trailer
                         ids=["motion-photo", "samsung-trailer"])
def test_a_phone_photo_with_data_past_its_end_is_read(tmp_path: Path, trailer: bytes) -> None:
    """Refused as 'truncated JPEG (no end-of-image marker)': the check wanted the file to end there."""
    path = tmp_path / "PXL_0001.MP.jpg"
    path.write_bytes(_jpeg() + trailer)
    (tmp_path / "plain.jpg").write_bytes(_jpeg())
    assert np.array_equal(read_image(path), read_image(tmp_path / "plain.jpg"))


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_short_is_refused_even_with_a_thumbnail_inside(tmp_path: Path, progressive: bool) -> None:
    """The EOI of an EXIF thumbnail (inside APP1, before the picture's scans) is not the picture's."""
    data = _jpeg(progressive)
    thumbnail = _jpeg()
    app1 = b"Exif\x00\x00" + thumbnail
    with_thumbnail = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    path = tmp_path / "photo.jpg"
    path.write_bytes(with_thumbnail)
    assert read_image(path).shape == (48, 64, 3)
    path.write_bytes(with_thumbnail[: len(with_thumbnail) - len(data) // 2])
    with pytest.raises(InputError, match=r"photo\.jpg: truncated JPEG \(no end-of-image marker\)"):
        read_image(path)


def test_a_png_with_data_past_its_end_is_read_and_one_cut_short_refused(tmp_path: Path) -> None:
    png = _pil_png(Image.fromarray(_object_on_grey()))
    path = tmp_path / "photo.png"
    path.write_bytes(png + b"appended by a messenger app" * 3)
    assert np.array_equal(read_image(path, "gray"), _object_on_grey())
    idat = png.find(b"IDAT")
    path.write_bytes(png[: idat + 20] + png[-12:])  # pixels cut short, IEND kept at the end
    with pytest.raises(InputError, match=r"photo\.png: truncated PNG \(no IEND chunk\)"):
        read_image(path)


def test_a_jpeg_saved_by_a_windows_browser_as_jfif_is_an_image(tmp_path: Path) -> None:
    """'Save image as' in Chrome or Edge on Windows names a JPEG photo.jfif: every command left it out
    as 'not an image' (segment: '1 file(s) that are not images left out (a.jfif)')."""
    from augment.imageio import list_images

    for name in ("a.jfif", "b.JPE", "c.JPG"):
        (tmp_path / name).write_bytes(_jpeg())
    images, others = list_images(tmp_path)
    assert [p.name for p in images] == ["a.jfif", "b.JPE", "c.JPG"] and others == []


def test_a_grey_and_alpha_tiff_keeps_its_alpha(tmp_path: Path) -> None:
    """OpenCV read a grey + alpha TIFF as grey alone: a cutout so saved was skipped as 'no alpha
    channel', a query searched its whole rectangle."""
    grey = _object_on_grey()
    alpha = np.where(grey > 0, 255, 0).astype(np.uint8)
    path = tmp_path / "cutout.tif"
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]).save(path)
    rgba = read_image(path, "rgba")
    assert np.array_equal(rgba[:, :, 3], alpha) and np.array_equal(rgba[:, :, 0], grey)
    rgb, mask = load_query(path)
    assert mask is not None and rgb.shape[:2] == (20, 25)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["TIFF", "WebP", "PNG", "JPEG"])
def test_every_format_is_read_upright_by_its_orientation(tmp_path: Path, kind: str, orientation: int) -> None:
    """A TIFF was turned twice (OpenCV turns TIFFs itself, then synth did): orientation 6 came out 180°
    off and the wrong way round; a WebP's orientation (its EXIF chunk has no 'Exif' mark) was ignored."""
    from PIL import ImageOps

    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :20] = 255
    stored[30:, 50:] = 128
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{kind.lower()}"
    options = {"TIFF": {}, "WebP": {"lossless": True}, "PNG": {}, "JPEG": {"quality": 95}}[kind]
    Image.fromarray(stored).save(path, kind.upper(), exif=exif, **options)
    with Image.open(path) as opened:
        expected = np.array(ImageOps.exif_transpose(opened).convert("RGB")).astype(int)
    for mode in ("rgb", "gray", "unchanged"):
        read = read_image(path, mode).astype(int)
        if mode == "gray":
            read = np.dstack([read] * 3)
        assert read.shape == expected.shape and np.abs(read[..., :3] - expected).max() < 40, (mode, read.shape)


def test_a_pil_query_mask_of_a_phone_photo_turns_with_its_query(tmp_path: Path) -> None:
    """The query (a PIL image) was turned upright, its mask (another, of the same orientation) not:
    'mask is 40x60 but the query is 60x40'."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[5:20, 10:30] = 200
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "q.png", exif=exif)
    Image.fromarray(stored[:, :, 0]).save(tmp_path / "m.png", exif=exif)
    with Image.open(tmp_path / "q.png") as query, Image.open(tmp_path / "m.png") as mask:
        rgb, weights = load_query(query, mask)
    expected_rgb, expected_weights = load_query(tmp_path / "q.png", tmp_path / "m.png")
    assert np.array_equal(rgb, expected_rgb) and np.array_equal(weights, expected_weights)


def test_an_animated_webp_searched_as_a_still_says_only_its_first_frame_is(tmp_path: Path, caplog) -> None:
    """An animated WebP (or PNG, or a multi-page TIFF) was searched as its first frame without a word."""
    from pipelines.search_outputs import _read_still

    frames = [Image.fromarray(np.full((32, 32, 3), value, np.uint8)) for value in (40, 120, 200)]
    frames[0].save(tmp_path / "clip.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    frames[0].save(tmp_path / "still.webp", lossless=True)
    with caplog.at_level("WARNING"):
        assert _read_still(tmp_path / "clip.webp")[0, 0, 0] == 40
        _read_still(tmp_path / "still.webp")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{tmp_path / 'clip.webp'}: 3 frames or pages; only the first is searched (an animated "
                      "GIF or a video is searched frame by frame: convert it to one)"]


def test_a_float_rgba_tiff_cutout_is_read_as_its_values_say(tmp_path: Path) -> None:
    """Its values were divided by 257 as if 16-bit: alpha 1.0 became 0 and the cutout 'empty mask'."""
    rgba = np.zeros((40, 40, 4), np.float32)
    rgba[..., :3] = (0.2, 0.6, 0.9)
    rgba[10:30, 10:30, 3] = 1.0
    (tmp_path / "hat").mkdir()
    cv2.imwrite(str(tmp_path / "hat" / "f.tif"), rgba)  # OpenCV writes BGRA: the colour as (0.9, 0.6, 0.2)
    (item,) = read_source(tmp_path, SourceConfig(format="rgba", min_area=1))
    assert isinstance(item, SourceObject), item
    assert item.rgba.shape == (20, 20, 4) and item.rgba[0, 0].tolist() == [230, 153, 51, 255]


def test_label_png_reads_back_the_same_ids_and_is_smaller_than_an_adaptively_filtered_png():
    """Masks and label maps are written with no row filter and run-length deflate (3x faster than
    libpng's adaptive filters on expand's masks): lossless, and smaller on an id map of a few shapes."""
    from augment.imageio import decode_image, encode_label_png, encode_png

    ids = np.zeros((256, 320), np.uint8)
    for value, (x, y) in enumerate([(60, 50), (200, 120), (120, 200), (280, 40)], 1):
        cv2.ellipse(ids, (x, y), (40, 25), 15 * value, 0, 360, value, -1)
    data = encode_label_png(ids)
    back = decode_image(data)
    assert back.dtype == np.uint8 and np.array_equal(back, ids)
    assert len(data) < len(encode_png(ids, 1))
    wide = ids.astype(np.uint16) * 300  # label values past 255: 16 bit, read back as such
    assert np.array_equal(decode_image(encode_label_png(wide)), wide)
    for wrong in (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32)):
        with pytest.raises(ValueError, match="2-D uint8 or uint16 map"):
            encode_label_png(wrong)
