"""Whole-photo masks saved at 16 bits whose object value is the full scale 65535 (a binary mask from a
16-bit tool): its id, value + 1, does not fit the 16-bit PNG the ids are stored in."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from augment.config import BackgroundConfig, SourceConfig
from augment.imageio import InputError, decode_image
from augment.labelled_backgrounds import collect_labelled_backgrounds, read_background
from augment.photo_shards import photo_row, read_labelled_photos
from augment.sources import Skip


def _photo_with_mask(folder: Path, values: tuple[int, ...] = (65535,)) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    photo = np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)
    mask = np.zeros((60, 80), np.uint16)
    for index, value in enumerate(values):
        mask[10 + 20 * index : 25 + 20 * index, 20:60] = value
    cv2.imwrite(str(folder / "images" / "p.png"), photo)
    cv2.imwrite(str(folder / "masks" / "p.png"), mask)
    return folder


def test_a_16_bit_binary_mask_is_its_object_in_a_photo_row(tmp_path: Path) -> None:
    """Its pixels got id 65536, stored as 0 (background's pixels id 1): the object trained as background."""
    photos = list(read_labelled_photos(_photo_with_mask(tmp_path / "src"), SourceConfig(format="mask_pairs")))
    assert len(photos) == 1 and not isinstance(photos[0], Skip), photos
    row = photo_row("p", photos[0], short_side=512)
    ids = decode_image(row["mask"]["bytes"])
    objects = {o["instance_id"]: o["category"] for o in row["objects"]}
    assert objects == {1: "background", 65535: "object"}
    assert 0 not in ids and np.count_nonzero(ids == 65535) == 15 * 40


def test_a_16_bit_binary_mask_labels_a_copy_paste_background(tmp_path: Path) -> None:
    """`synth expand` with such labelled backgrounds ended in 'OverflowError: Python integer 65536 out
    of bounds for uint16' (a traceback, in the middle of rendering)."""
    backgrounds, skips = collect_labelled_backgrounds(_photo_with_mask(tmp_path / "bg"),
                                                       BackgroundConfig(format="mask_pairs"))
    assert not skips and backgrounds[0].categories == {1: "background", 65535: "object"}
    _, ids = read_background(backgrounds[0])
    assert ids.dtype == np.uint16 and np.count_nonzero(ids == 65535) == 15 * 40 and np.count_nonzero(ids == 1) > 0


def test_values_65534_and_65535_together_are_a_counted_skip(tmp_path: Path) -> None:
    folder = _photo_with_mask(tmp_path / "src", (65534, 65535))
    photos = list(read_labelled_photos(folder, SourceConfig(format="mask_pairs")))
    assert [type(p) for p in photos] == [Skip] and "65534 and 65535 both present" in photos[0].reason
    with pytest.raises(InputError, match="65534 and 65535 both present"):  # its only photo: none usable
        collect_labelled_backgrounds(folder, BackgroundConfig(format="mask_pairs"))
