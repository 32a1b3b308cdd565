"""What users see (augment/draw_labels.py and its users): labels that say the number written beside
them, readable on a 4000 x 3000 photo and a 4K frame, inside a narrow picture or left out, never cut
at its edge; the contact sheet's labels drawn at the size the sheet shows."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment.draw_labels import format_score, put_label
from pipelines.detections import Detection
from pipelines.highlight import GUESS_RGB, highlight


def _colour_pixels(picture: np.ndarray, rgb: tuple[int, int, int], within: int = 60) -> np.ndarray:
    return np.abs(picture.astype(int) - rgb).sum(axis=2) < within


def _guess(h: int, w: int, box: tuple[int, int, int, int], score: float) -> np.ndarray:
    """A best guess drawn on a flat grey picture, its box's pixels and inside set aside (0)."""
    drawn = highlight(np.full((h, w, 3), 128, np.uint8), np.zeros((h, w), np.float32), [],
                      Detection(box=box, score=score, area=1, peak=(0, 0)))
    return drawn


def test_the_best_guess_label_shows_the_score_detections_jsonl_gives():
    """A fused best guess scores ~0.003 on real photos (CCP): every label read 'best guess 0.00',
    whatever the score, where detections.jsonl's best said 0.0028."""
    assert format_score(0.0028) == "0.0028" and format_score(0.051) == "0.051"
    assert format_score(0.4567) == "0.46" and format_score(1.0) == "1.00" and format_score(0.0) == "0.00"
    low, other = _guess(120, 200, (60, 50, 120, 100), 0.0028), _guess(120, 200, (60, 50, 120, 100), 0.0041)
    assert not np.array_equal(low, other)  # two scores, two labels


def test_on_a_4000_by_3000_photo_the_best_guess_is_drawn_to_be_seen_whole():
    """A 0.4 label (11 px) and a 1-px box on a 12-megapixel photo: a speck when the photo is viewed."""
    h, w, box = 3000, 4000, (1000, 800, 2000, 1600)
    drawn = _guess(h, w, box, 0.12)
    assert _colour_pixels(drawn[box[1]:box[1] + 4, box[0] + 10:box[2] - 10], GUESS_RGB).all()  # >= 4 px thick
    above = _colour_pixels(drawn[:box[1] - 1], GUESS_RGB)  # the label, above the box
    rows = np.nonzero(above.any(axis=1))[0]
    assert rows.size and rows.max() - rows.min() >= 40  # 11 px before: 0.4 % of the height
    columns = np.nonzero(above.any(axis=0))[0]
    assert columns.min() >= box[0] - 2 and columns.max() - columns.min() >= 300


@pytest.mark.parametrize("h, w, box", [(400, 20, (0, 100, 20, 200)), (60, 40, (5, 20, 35, 50)),
                                       (90, 64, (0, 40, 30, 80))])
def test_a_best_guess_label_too_wide_for_the_picture_is_not_cut_at_its_edge(h, w, box):
    """A 20-px-wide strip showed 'bes' of 'best guess': the label ran off the picture. Drawn in a
    picture that cannot hold it whole, it is shrunk, shortened or left out: not the whole label's
    first pixels (as drawn in a wide picture) cut at the edge."""
    x0, y0, x1, y1 = box

    def label(picture: np.ndarray) -> np.ndarray:
        found = _colour_pixels(picture, GUESS_RGB)
        found[y0:y1, x0:x1] = False  # the box aside
        return found

    narrow, wide = label(_guess(h, w, box, 0.0031)), label(_guess(h, 1000, box, 0.0031))
    assert wide.any() and wide[:, w:].any()  # the whole label runs past the narrow picture's width
    assert not np.array_equal(narrow, wide[:, :w])
    assert not (narrow[:, 0].any() or narrow[:, -1].any())


@pytest.mark.parametrize("h, w, box", [(200, 4000, (2045, 50, 2092, 111)), (600, 400, (150, 10, 250, 300))])
def test_a_best_guess_with_no_room_above_is_labelled_under_its_box_not_over_the_object(h, w, box):
    """A 4000 x 200 panorama's best guess (a coat 47 x 61 px, 50 px from the top): its label, sized to
    the picture (~40 px tall), had no room above the box and was written inside it, over the coat;
    under the box there was room."""
    x0, y0, x1, y1 = box
    label = _colour_pixels(_guess(h, w, box, 0.0099), GUESS_RGB)
    lw = max(1, round(np.hypot(h, w) / 1000))
    label[y0 - lw:y1 + lw, x0 - lw:x1 + lw] = False  # the box and its lines aside
    rows = np.nonzero(label.any(axis=1))[0]
    assert rows.size and rows.min() >= y1  # the label, under the box
    inside = _colour_pixels(_guess(h, w, box, 0.0099), GUESS_RGB)[y0 + 2 * lw:y1 - 2 * lw, x0 + 2 * lw:x1 - 2 * lw]
    assert not inside.any()  # nothing written over the object


@pytest.mark.parametrize("h, w", [(20, 20), (12, 400), (400, 12), (120, 160), (3000, 4000), (23, 97)])
def test_put_label_draws_only_inside_the_rectangle_it_returns(h, w):
    for anchor in ((0, 0), (w - 1, h - 1), (w // 2, 0), (-50, h + 50)):
        for above in (True, False):
            picture = np.zeros((h, w, 3), np.uint8)
            where = put_label(picture, ("re-detected 0.0031", "re-detected", "0.0031"), anchor, (255, 255, 255),
                              above=above)
            # The drawn pixels' rows and columns, a pixel once per lit channel (what is checked is their
            # extent): np.nonzero of picture.any(axis=2) took 0.19 s a 3000x4000 picture, this 0.06.
            lit = np.flatnonzero(picture) // 3
            drawn = (lit // w, lit % w)
            if where is None:
                assert drawn[0].size == 0
                continue
            x0, y0, x1, y1 = where
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert drawn[0].size and drawn[1].min() >= x0 - 2 and drawn[1].max() <= x1 + 1
            assert drawn[0].min() >= y0 - 2 and drawn[0].max() <= y1 + 1


def test_the_temporal_state_is_readable_on_a_4k_frame_and_inside_a_narrow_one():
    from pipelines.temporal_draw import STATE_RGB, draw_track
    from pipelines.temporal_track import REDETECTED, Track

    big = draw_track(np.zeros((2160, 3840, 3), np.uint8), Track(1, REDETECTED, None, 0.45, None, None))
    rows = np.nonzero(_colour_pixels(big[:300, :1500], STATE_RGB[REDETECTED]).any(axis=1))[0]
    assert rows.size and rows.max() - rows.min() >= 40  # a fixed 0.5: 12 px on a 2160-px frame
    narrow = draw_track(np.zeros((90, 64, 3), np.uint8), Track(1, REDETECTED, None, 0.45, None, None))
    text = _colour_pixels(narrow, STATE_RGB[REDETECTED])
    assert text.any() and not text[:, -1].any()  # written, and not cut at the right edge


def _one_row_shard(folder, mask_size: int = 512, grey: bool = False, mask_channels: int = 1):
    """A shard of one 512 x 512 composite: a flat object (instance 1, 'coat') in box 100, 200, 300, 400,
    its instance mask ``mask_size`` a side (``grey``: the composite a one-channel JPEG)."""
    from augment.imageio import encode_jpeg, encode_png
    from augment.schema import COMPOSITE_SCHEMA, shard_name

    image = np.full((512, 512, 3), 40, np.uint8)
    image[200:400, 100:300] = 90
    ids = np.zeros((mask_size, mask_size), np.uint8)
    ids[200:400, 100:300] = 1
    if mask_channels > 1:
        ids = np.dstack([ids] * mask_channels)
    encoded = cv2.imencode(".jpg", image[..., 0])[1].tobytes() if grey else encode_jpeg(image, 95)
    row = {"id": "composite-00000", "image": {"bytes": encoded, "path": None},
           "mask": {"bytes": encode_png(ids), "path": None}, "width": 512, "height": 512,
           "objects": [{"instance_id": 1, "cutout_id": "c", "category": "coat", "box": [100, 200, 300, 400],
                        "visible_fraction": 1.0}],
           "params": json.dumps({}), "seed": 0, "config_hash": "test"}
    path = folder / shard_name("train", 0)
    pq.write_table(pa.Table.from_pylist([row], schema=COMPOSITE_SCHEMA), path)
    return path


def test_the_contact_sheets_labels_are_drawn_at_the_size_the_sheet_shows(tmp_path):
    """`synth show`: labels drawn on the 512-px composite, then shrunk to a 256-px tile, were a
    blur (white 1-px strokes averaged into their black edge)."""
    from augment.contact_sheet import contact_sheet

    out = tmp_path / "sheet.png"
    assert contact_sheet([_one_row_shard(tmp_path)], out, rows=1, columns=1, tile=256) == 1
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    white = sheet.min(axis=2) >= 200  # the label's white text (the id is yellow)
    rows, columns = np.nonzero(white)
    assert rows.size >= 40 and rows.max() - rows.min() >= 7
    # Within the object's box at the tile's scale (x 50-150, y 100-200), at its top.
    assert columns.min() >= 50 and columns.max() < 150 and rows.min() >= 100 and rows.max() < 125


def test_show_of_a_composite_whose_mask_is_another_size_is_one_line(tmp_path):
    """A row whose instance mask is not its image's size was numpy's IndexError traceback ('boolean
    index did not match'); now one line naming the shard and the row, and no sheet written."""
    from cli_checks import assert_one_line_error, run_cli

    shard = _one_row_shard(tmp_path, mask_size=256)
    result = run_cli("show", shard, "--out", tmp_path / "sheet.png", "--rows", 1, "--columns", 1)
    assert_one_line_error(result, 2, "composite-00000", "mask is 256x256 but its image is 512x512")
    assert not (tmp_path / "sheet.png").exists() and shard.exists()
    # A mask saved as an RGB picture: numpy's IndexError traceback ('too many indices') too.
    shard = _one_row_shard(tmp_path, mask_channels=3)
    result = run_cli("show", shard, "--out", tmp_path / "sheet.png", "--rows", 1, "--columns", 1)
    assert_one_line_error(result, 2, "composite-00000", "mask has 3 channels")
    assert not (tmp_path / "sheet.png").exists()


def test_a_lost_targets_thin_box_shows_on_a_4k_frame():
    """While lost, the best guess's box is drawn thin: 1 px, invisible on a 3840 x 2160 frame seen whole."""
    from pipelines.temporal_draw import STATE_RGB, draw_track
    from pipelines.temporal_track import LOST, Track

    box = (1000, 800, 1400, 1300)
    drawn = draw_track(np.zeros((2160, 3840, 3), np.uint8), Track(1, LOST, box, 0.05, None, None))
    top = _colour_pixels(drawn[box[1] - 3:box[1] + 4, 1100:1300], STATE_RGB[LOST], within=120).all(axis=1)
    assert top.sum() >= 3  # rows of the top edge in the lost colour along its length
    small = draw_track(np.zeros((240, 360, 3), np.uint8), Track(1, LOST, (100, 80, 140, 130), 0.05, None, None))
    assert _colour_pixels(small[78:83, 110:130], STATE_RGB[LOST], within=120).all(axis=1).sum() <= 2  # thin there


def test_a_highlighted_videos_frame_i_is_the_mediums_frame_i_when_a_frame_is_skipped(tmp_path):
    """--sequence with an unreadable frame: the highlighted video lost that frame, so each later frame
    of it showed the frame after its number (detections.jsonl's and the heat maps' numbers) and ran
    early. The skipped frame is now a placeholder: the frame before it, dimmed, saying so."""
    from augment.imageio import save_image
    from cli_checks import run_cli

    frames = tmp_path / "frames"
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8), (0, 0), 1.5)
    for k in range(6):
        save_image(frames / f"{k:04d}.png", np.roll(scene, k, axis=1))
    (frames / "0002.png").write_bytes((frames / "0002.png").read_bytes()[:200])  # cut short
    save_image(tmp_path / "query.png", scene[20:52, 30:62])
    out = tmp_path / "found"
    result = run_cli("search", tmp_path / "query.png", frames, "--sequence", "--box", "30,20,32,32", "--out", out)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 3, 4, 5]
    capture = cv2.VideoCapture(str(out / "frames.highlight.mp4"))
    video = []
    while True:
        ok, picture = capture.read()
        if not ok:
            break
        video.append(picture.astype(float))
    capture.release()
    assert len(video) == 6  # one per file, the skipped one included
    assert abs(video[2].mean() - 0.3 * video[1].mean()) < 6  # the frame before it, dimmed
    assert abs(video[3].mean() - video[4].mean()) < 10 and video[3].mean() > 2 * video[2].mean()


def test_the_frame_writer_fills_each_gap_with_the_frame_before_dimmed():
    from pipelines.frames import FrameWriter
    from pipelines.highlight import dim

    written: list[np.ndarray] = []

    class Sink:
        def write(self, picture: np.ndarray) -> None:
            written.append(picture)

    writer = FrameWriter(Sink())
    pictures = [np.full((40, 300, 3), 100 + 10 * k, np.uint8) for k in range(6)]
    for index in (1, 2, 5):  # frame 0 skipped (no frame before it: black), 3 and 4 skipped
        writer.write(pictures[index], index)
    assert len(written) == 6
    assert written[1] is pictures[1] and written[2] is pictures[2] and written[5] is pictures[5]
    for k, before in ((0, np.zeros_like(pictures[0])), (3, pictures[2]), (4, pictures[2])):
        text = np.any(written[k] != dim(before), axis=2)
        assert text.any() and text[:, 150:].sum() < text.sum()  # the label, written at the top left
        assert np.array_equal(written[k][35:], dim(before)[35:])  # elsewhere the frame before, dimmed


def test_the_temporal_state_label_does_not_hide_a_box_in_the_top_left_corner():
    """Crossing turned on its side: the lost target's best guess at (12, 9, 39, 90) lay under the
    'lost 0.40' written in the top-left corner, its top edge hidden."""
    from pipelines.temporal_draw import STATE_RGB, draw_track
    from pipelines.temporal_track import LOST, Track

    box = (12, 9, 39, 90)
    drawn = draw_track(np.zeros((360, 240, 3), np.uint8), Track(1, LOST, box, 0.4026, None, None))
    text = _colour_pixels(drawn, STATE_RGB[LOST], within=150)
    x0, y0, x1, y1 = box
    text[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = False  # the box and its inside aside
    rows = np.nonzero(text.any(axis=1))[0]
    assert rows.size and rows.min() > 300  # the label, in the bottom-left corner
    assert _colour_pixels(drawn[y0:y0 + 1, x0:x1], STATE_RGB[LOST], within=150).all()  # the box's top edge whole


def test_show_draws_a_grey_composite(tmp_path):
    """A shard whose composite is a one-channel JPEG (written by another tool) stopped `synth show` with
    numpy's ValueError traceback ('operands could not be broadcast together') where it tinted objects."""
    from cli_checks import run_cli

    shard = _one_row_shard(tmp_path, grey=True)
    result = run_cli("show", shard, "--out", tmp_path / "sheet.png", "--rows", 1, "--columns", 1)
    assert result.exit_code == 0, (result.output, result.exception)
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (256, 256, 3)
    inside = sheet[120:190, 60:140].astype(int)  # the object at the tile's scale, tinted in its colour
    assert np.abs(inside[..., 0] - inside[..., 2]).mean() > 10


def test_show_of_labelled_photos_draws_their_objects_not_their_background(tmp_path, monkeypatch):
    """A photo-shards row names its source's value 0 'background' (what is not an object): `synth export`
    leaves it out, but `synth show` tinted the whole photo with it, boxed the frame and wrote 'background
    1.00' over the other labels. Drawn now: the photo's objects alone."""
    from augment import contact_sheet as sheet_module
    from augment.config import SourceConfig
    from augment.photo_shards import write_photo_shards
    from sources_factory import make_label_map

    write_photo_shards([make_label_map(tmp_path / "labelled")], tmp_path / "photos", SourceConfig())
    drawn = []
    draw = sheet_module.draw_annotations
    monkeypatch.setattr(sheet_module, "draw_annotations",
                        lambda image, instances, objects, **kw: drawn.append(objects) or draw(image, instances, objects, **kw))
    assert sheet_module.contact_sheet([tmp_path / "photos"], tmp_path / "sheet.png", rows=1, columns=1, tile=64) == 1
    assert sorted(obj["category"] for obj in drawn[0]) == ["hat", "jacket", "skirt"]


def test_show_of_pseudo_labelled_photos_draws_their_regions_not_their_ignore_pixels(tmp_path):
    """`synth extract`'s pseudo-labelled photos name their untrusted pixels '__ignore__' (most of each
    photo on CCP): `synth show` tinted them, boxed the whole photo and wrote '__ignore__ 1.00' over it."""
    from augment.contact_sheet import contact_sheet
    from augment.photo_shards import IGNORE_CATEGORY, LabelledPhoto, photo_row, write_row_shards

    image = np.full((64, 64, 3), 128, np.uint8)
    values = np.full((64, 64), 2, np.uint8)  # untrusted everywhere
    values[20:40, 20:40] = 1  # but a trusted coat
    photo = LabelledPhoto(tmp_path / "p.jpg", image, values, {1: "coat", 2: IGNORE_CATEGORY})
    write_row_shards([photo_row("p", photo, 64)], tmp_path / "auto", "pseudo", "run")
    contact_sheet([tmp_path / "auto" / "pseudo-00000.parquet"], tmp_path / "sheet.png", rows=1, columns=1, tile=64)
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    changed = np.abs(sheet.astype(int) - 128).sum(axis=2) > 30
    changed[54:] = False  # the row id written at the bottom
    assert changed[20:40, 20:40].any()  # the coat, tinted and outlined (its label may run wider than it)
    assert not changed[:18].any() and not changed[:, :5].any()  # no box round the photo, no tint outside


@pytest.mark.parametrize("field, value, says", [("box", None, "box is not 4 integers"),
                                                ("instance_id", None, "instance_id is not an integer of 0 or more"),
                                                ("visible_fraction", None, "visible_fraction is not a number"),
                                                ("category", None, "category is not a name")])
def test_a_malformed_object_entry_is_one_line_for_show_and_a_skipped_row_for_export(tmp_path, field, value, says):
    """A shard of another tool (or edited by hand) whose object has a null box: `synth show` was a TypeError
    traceback; a null category was exported as a COCO category named null. One check of an entry for both."""
    from augment.coco_export import export_coco
    from augment.contact_sheet import contact_sheet
    from augment.imageio import InputError
    from shard_factory import make_shards, rewrite_rows

    shard = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=3, size=32).folder / "train-00000.parquet"
    objects = pq.read_table(shard).to_pylist()[0]["objects"]
    rewrite_rows(shard, {0: {"objects": [{**objects[0], field: value}]}})
    with pytest.raises(InputError, match=f"train-00000.parquet:composite-00000: malformed object entry \\({says}\\)"):
        contact_sheet([shard], tmp_path / "sheet.png", rows=2, columns=2, tile=16)
    assert not (tmp_path / "sheet.png").exists()
    counts = export_coco([shard], tmp_path / "coco")
    assert (counts["images"], counts["skip_reasons"]) == (2, {"malformed object entry": 1})
    categories = json.loads((tmp_path / "coco" / "annotations.json").read_text())["categories"]
    assert all(isinstance(category["name"], str) for category in categories)


def test_show_of_shards_without_rows_is_one_line_not_a_blank_sheet(tmp_path):
    """A shard file named alone that holds no rows: `synth show` wrote a blank 1024 x 1024 sheet and said
    'wrote sheet.png (0 composites)', exit 0."""
    from cli_checks import assert_one_line_error, run_cli
    from shard_factory import make_shards

    shard = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=3, size=32).folder / "train-00000.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 0), shard)
    result = run_cli("show", shard, "--out", tmp_path / "sheet.png")
    assert_one_line_error(result, 2, "train-00000.parquet", "no rows to show")
    assert not (tmp_path / "sheet.png").exists()


def test_an_exported_objects_box_past_its_image_is_a_skipped_row_not_a_coco_bbox(tmp_path):
    """`synth expand` boxes each object's visible pixels (cv2.boundingRect of its mask; photo-shards its
    mask's extent), so a box past the image or turned inside out is a hand-edited row: its [0, 0, 1e9, 1e9]
    went into annotations.json's bbox as it was. Skipped with the other malformed object entries."""
    import json

    from augment.coco_export import export_coco
    from shard_factory import make_shards, rewrite_rows

    shard = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, size=32).folder / "train-00000.parquet"
    rows = pq.read_table(shard).to_pylist()
    edge = {**rows[2]["objects"][0], "box": [0, 0, 32, 32]}  # the whole image: kept
    rewrite_rows(shard, {0: {"objects": [{**rows[0]["objects"][0], "box": [0, 0, 10**9, 10**9]}]},
                         1: {"objects": [{**rows[1]["objects"][0], "box": [-1, 2, 10, 8]}]},
                         2: {"objects": [edge]}, 3: {"objects": [{**rows[3]["objects"][0], "box": [9, 2, 4, 8]}]}})
    counts = export_coco([shard], tmp_path / "coco")
    assert (counts["images"], counts["skip_reasons"]) == (1, {"malformed object entry": 3})
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [a["bbox"] for a in coco["annotations"]] == [[0, 0, 32, 32]]


def test_a_sequence_frame_of_another_size_is_a_placeholder_saying_so_not_unreadable(tmp_path):
    """A --sequence folder's frame of another size (a thumbnail among the frames) opens in any viewer,
    but its placeholder in the highlighted video said 'frame 1 skipped (unreadable)'; an unreadable
    file's still says that."""
    from augment.imageio import save_image
    from pipelines.frames import FolderFrames, FrameWriter
    from pipelines.highlight import dim

    frames = tmp_path / "frames"
    pictures = [np.full((60, 320, 3), 60 + 30 * k, np.uint8) for k in range(4)]
    for k, picture in enumerate(pictures):
        save_image(frames / f"{k}.png", picture if k != 1 else picture[:40, :200])
    (frames / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    written: list[np.ndarray] = []

    class Sink:
        def write(self, picture: np.ndarray) -> None:
            written.append(picture)

    reader = FolderFrames(frames, batch_size=1)
    writer = FrameWriter(Sink(), reasons=reader.skip_reasons)
    for indices, batch in reader:
        for index, picture in zip(indices, batch):
            writer.write(picture, index)
    assert len(written) == 4
    for index, says in ((1, "another size"), (2, "unreadable")):
        expected = dim(pictures[0])
        put_label(expected, (f"frame {index} skipped ({says})", f"{index} skipped"), (6, 2), (255, 255, 255),
                  base_scale=0.5, above=False)
        assert np.array_equal(written[index], expected), index
