"""Expand's cutout bank: cutouts kept encoded, decoded on use within a byte bound, pickled encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from augment.expand import run_expand
from augment.imageio import decode_image
from sources_factory import make_backgrounds, make_rgba_source
from test_expand import small_config


# ----------------------------------------------------------------- cutouts decoded on use, within a bound
def objects_table(path: Path, count: int, side: int = 96) -> Path:
    from augment.cutouts import cutout_id, write_objects_table
    from augment.imageio import encode_png

    rows = []
    for index in range(count):
        rgba = np.zeros((side, side, 4), np.uint8)
        rgba[:, :, 0], rgba[:, :, 1] = index, np.arange(side, dtype=np.uint8)[None, :]
        rgba[8:-8, 8:-8, 3] = 255
        identity = cutout_id(rgba, "thing")
        rows.append({"cutout_id": identity, "category": "thing", "source": f"s{index}.png", "box": [0, 0, side, side],
                     "image": {"bytes": encode_png(rgba), "path": f"{identity}.png"},
                     "superpixels": {"bytes": encode_png(np.full((16, 16), index % 7, np.uint16)), "path": "s.png"},
                     "width": side, "height": side, "area": (side - 16) ** 2, "provenance": None,
                     "source_size": [side, side]})
    write_objects_table(rows, path)
    return path


def test_load_cutouts_decodes_each_on_use_and_keeps_at_most_its_cache_bytes(tmp_path, monkeypatch):
    """5,000 generated 400x400 sources held 3.3 GB of decoded cutouts for the whole run (every cutout was
    decoded by load_cutouts); now none is decoded until used, and at most cache_bytes stay decoded."""
    import augment.cutouts as cutouts_module

    path = objects_table(tmp_path / "objects.parquet", 40)
    decodes = []
    real_decode = cutouts_module.decode_image
    monkeypatch.setattr(cutouts_module, "decode_image", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    one = 96 * 96 * 4 + 16 * 16 * 4  # a decoded cutout and its superpixels
    cutouts = cutouts_module.load_cutouts(path, cache_bytes=5 * one)
    assert len(cutouts) == 40 and not decodes
    table = pq.read_table(path).to_pylist()
    for cutout, row in zip(cutouts, table):  # every cutout as it was stored, however many were dropped since
        assert np.array_equal(cutout.rgba, decode_image(row["image"]["bytes"]))
        assert cutout.superpixels.dtype == np.int32 and int(cutout.superpixels[0, 0]) == table.index(row) % 7
    assert len(decodes) == 2 * 40  # an image and its superpixels, once each: a cutout's two reads hit the cache
    cache = cutouts[0].cache
    assert len(cache) == 5 and cache.bytes <= 5 * one


def test_a_run_whose_cutouts_pass_the_cache_renders_the_same_bytes(tmp_path, monkeypatch):
    """Cutouts dropped and decoded again (a cache of about one cutout) give the rows of a cache holding all."""
    import augment.cutouts as cutouts_module

    objects, backgrounds = make_rgba_source(tmp_path / "objects", 6), make_backgrounds(tmp_path / "backgrounds")
    config = small_config(12)
    run_expand([objects], backgrounds, tmp_path / "all", config, workers=1)
    monkeypatch.setattr(cutouts_module, "CUTOUT_CACHE_BYTES", 1)
    run_expand([objects], backgrounds, tmp_path / "one", config, workers=2)
    shards = sorted(p.name for p in (tmp_path / "all").glob("train-*.parquet"))
    assert shards and all((tmp_path / "all" / n).read_bytes() == (tmp_path / "one" / n).read_bytes() for n in shards)


def test_a_pickled_cutout_bank_carries_its_encoded_bytes_not_what_it_decoded(tmp_path):
    """A Ray job ships the bank once: encoded (a 384-px cutout ~0.65 MB decoded), its cache empty."""
    import pickle

    from augment.cutouts import load_cutouts

    cutouts = load_cutouts(objects_table(tmp_path / "objects.parquet", 10))
    encoded = sum(len(c.image_png) + len(c.superpixels_png) for c in cutouts)
    [c.rgba for c in cutouts]
    shipped = pickle.loads(pickle.dumps(cutouts))
    assert len(pickle.dumps(cutouts)) < encoded + 4000 and len(shipped[0].cache) == 0
    assert np.array_equal(shipped[3].rgba, cutouts[3].rgba) and len(shipped[0].cache) == 1
