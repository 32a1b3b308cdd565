"""The library used from a notebook: masks given as arrays or PIL images are read as mask files of
that kind are, and a bad one is one ValueError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from augment.picture_arrays import ArrayInputError
from pipelines.search import load_query


def _query_and_mask() -> tuple[np.ndarray, np.ndarray]:
    query = np.zeros((40, 30, 3), np.uint8)
    query[..., 0] = 200
    mask = np.zeros((40, 30), np.uint8)
    mask[5:35, 5:25] = 255
    return query, mask


def test_an_opaque_rgba_mask_array_is_read_by_its_drawing_as_its_file_is(tmp_path):
    # np.asarray(Image.open("mask.png")) of a black-and-white mask saved as RGBA: its alpha is all 255;
    # taking the alpha searched the whole query, silently, where the same file by path is the drawing.
    query, mask = _query_and_mask()
    Image.fromarray(mask).convert("RGBA").save(tmp_path / "mask.png")
    by_path = load_query(query, tmp_path / "mask.png")
    for given in (np.asarray(Image.open(tmp_path / "mask.png")), Image.open(tmp_path / "mask.png")):
        rgb, kept = load_query(query, given)
        assert rgb.shape == (30, 20, 3) and np.array_equal(rgb, by_path[0]) and np.array_equal(kept, by_path[1])


@pytest.mark.parametrize("mask, shown", [(5, r"\(\)"), ([], r"\(0,\)"), (np.ones(30), r"\(30,\)"),
                                         (np.ones((1, 40, 30, 1)), r"\(1, 40, 30, 1\)")])
def test_a_query_mask_that_is_no_mask_is_one_value_error_naming_it(mask, shown):
    query, _ = _query_and_mask()
    with pytest.raises(ValueError, match=f"^query_mask: an array of shape {shown} is not a mask") as refused:
        load_query(query, mask)  # was IndexError: tuple index out of range, or 'mask is 40x1'
    assert isinstance(refused.value, ArrayInputError)


def test_a_query_mask_of_strings_or_colours_is_one_value_error_naming_it():
    query, mask = _query_and_mask()
    with pytest.raises(ArrayInputError, match="^query_mask: an array of <U1"):  # was numpy's UFuncTypeError
        load_query(query, np.full((40, 30), "a"))
    with pytest.raises(ArrayInputError, match="^query_mask: mask has colour channels that differ"):
        load_query(query, np.dstack([mask, mask // 2, mask]))


# ----------------------------------------------------------------- the Searcher's arguments
@pytest.mark.parametrize("options, message", [
    ({"device": torch.device("cpu")}, None),  # was AttributeError: 'torch.device' object has no attribute 'startswith'
    ({"device": None}, "--device must be auto, cpu or cuda, not None"),
    ({"threshold": "0.5"}, "threshold must be between 0 and 1, not '0.5'"),  # was TypeError: '<' not supported
    ({"checkpoint": 5, "untrained": False}, "checkpoint must be a path to a checkpoint file or a run's folder, not 5"),
])
def test_searcher_arguments_of_another_type_are_taken_or_one_line_naming_them(options, message):
    from augment.imageio import InputError
    from pipelines.search import Searcher

    options = {"untrained": True, "verify": False, **options}
    if message is None:
        assert Searcher(**options).device == torch.device("cpu")
        return
    with pytest.raises(InputError) as refused:
        Searcher(**options)
    assert str(refused.value) == message


# ----------------------------------------------------------------- media under 8 px a side
@pytest.fixture(scope="module")
def searcher():
    from pipelines.search import Searcher

    return Searcher(device="cpu", untrained=True, verify=False)


def test_a_batch_or_a_tracked_frame_under_8_px_is_refused_as_find_refuses_it(searcher):
    from augment.imageio import InputError
    from pipelines.temporal import TemporalSearcher

    query, tiny = np.full((40, 30, 3), 200, np.uint8), np.zeros((4, 4, 3), np.uint8)
    message = "media[0]: image is 4x4 px; at least 8 px per side is needed to search in it"
    for search in (searcher.find_many, searcher.heatmaps):  # each gave a 2x3 'detection' of noise
        with pytest.raises(InputError) as refused:
            search(query, [tiny])
        assert str(refused.value) == message
    with pytest.raises(InputError, match="^frame 0: video frame is 4x4 px; at least 8 px"):
        TemporalSearcher(searcher, query).step(tiny)  # was state 're-detected' at (0, 0, 2, 3)


def test_a_temporal_searcher_without_a_searcher_is_a_type_error_naming_it():
    from pipelines.temporal import TemporalSearcher

    with pytest.raises(TypeError, match="^searcher must be a Searcher .*not NoneType"):  # was AttributeError
        TemporalSearcher(None, np.zeros((40, 30, 3), np.uint8))


def test_find_many_takes_sources_and_frames_as_numpy_arrays_and_writes_them_as_json(searcher):
    import json

    media = np.random.default_rng(0).integers(0, 255, (2, 64, 80, 3), dtype=np.uint8)
    query = np.full((24, 16, 3), 200, np.uint8)
    # both were "The truth value of an array with more than one element is ambiguous"
    results = searcher.find_many(query, media, sources=np.array(["a.jpg", "b.jpg"]), frames=np.arange(2))
    assert [(r.source, r.frame) for r in results] == [("a.jpg", 0), ("b.jpg", 1)]
    line = json.loads(json.dumps(results[1].to_json()))  # an np.int64 frame is no JSON number
    assert (line["source"], line["frame"]) == ("b.jpg", 1)
    with pytest.raises(ValueError, match=r"^frames: 1 given for 2 media \(one per medium\)$"):
        searcher.find_many(query, media, frames=np.arange(1))


# ----------------------------------------------------------------- datasets' arguments
def test_datasets_refuse_a_dict_config_or_a_bad_seed_when_made_not_in_their_loader_workers(tmp_path):
    from shard_factory import make_shards
    from train.data import PairConfig, ShardPairs
    from train.photo_data import PhotoMediaConfig, PhotoPairs
    from train.segment_config import SegmentConfig
    from train.segment_data import SegmentShards

    folder = make_shards(tmp_path / "shards", n_composites=4).folder
    with pytest.raises(TypeError, match=r"^config must be a PairConfig \(PairConfig\(\*\*options\)\), not dict$"):
        ShardPairs(folder, {"medium_size": 64})  # was AttributeError: 'dict' object has no attribute ...
    with pytest.raises(TypeError, match="^config must be a SegmentConfig"):
        SegmentShards(folder, {"short_side": 64})
    with pytest.raises(TypeError, match="^pairs must be a PairConfig"):
        PhotoPairs(PhotoMediaConfig(sources=[str(tmp_path)]), {"query_size": 64})
    for seed in (-1, "a", 2**63, 1.5):  # each failed once iterated, in every loader worker
        with pytest.raises(ValueError, match=r"^seed must be a whole number in \[0, 2\*\*63 - 1\], not "):
            ShardPairs(folder, PairConfig(), seed=seed)
    assert ShardPairs(folder, PairConfig(), seed=np.int64(3)).seed == 3


# ----------------------------------------------------------------- the model builders
@pytest.mark.parametrize("field, value, message", [
    ("conversion_width", 0, r"conversion_width must lie in \[1, 4096\], got 0"),  # RuntimeError in forward
    ("skip_channels", 0, r"skip_channels must lie in \[1, 4096\], got 0"),
    ("residual_hidden", -1, r"residual_hidden must lie in \[0, 4096\], got -1"),
    ("num_label_classes", -1, r"num_label_classes must lie in \[0, 4096\], got -1"),  # ran as 0
    ("scale_pairs", ((0.0, 1.0),), "scale_pairs: expected a list of pairs of numbers above 0"),  # ran with maps left out
    ("scale_pairs", (1.0,), "scale_pairs: expected a list of pairs of numbers above 0"),  # cannot unpack non-iterable float
])
def test_a_search_network_config_out_of_range_is_one_value_error_naming_the_field(field, value, message):
    from augment.imageio import InputError
    from train.config import TrainConfig
    from train.model import SearchNetConfig

    with pytest.raises(ValueError, match=f"^{message}"):
        SearchNetConfig(pretrained=False, **{field: value})
    with pytest.raises(InputError, match=f"^model: {message}"):  # synth train's config: one line, not a traceback
        TrainConfig(model={field: list(value) if isinstance(value, tuple) else value})


# ----------------------------------------------------------------- the shard reader
def test_iter_rows_names_a_column_the_shards_lack_instead_of_giving_empty_rows(tmp_path):
    from augment.imageio import InputError
    from augment.shards import find_shards, iter_rows
    from shard_factory import make_shards

    shards = find_shards(make_shards(tmp_path / "shards", n_composites=4).folder)
    assert [row for _, row in iter_rows(shards, ["id"])][0] == {"id": "composite-00000"}
    assert next(iter_rows(shards, ["objects.list.element.cutout_id"]))[1]["objects"]  # a nested field's path
    with pytest.raises(InputError, match=r"train-00000.parquet: no column 'widht' \(its columns: id, image, mask, "):
        next(iter_rows(shards, ["id", "widht"]))  # every row was {'id': ...} without a word, or {} alone


# ----------------------------------------------------------------- the compositor
def test_compose_scene_names_a_bad_argument(tmp_path):
    import cv2

    from augment.composite import BackgroundStore, compose_scene
    from augment.config import CompositionConfig
    from augment.distortions import DistortionConfig
    from test_composite import make_cutout

    cv2.imwrite(str(tmp_path / "grey.png"), np.full((96, 96, 3), 128, np.uint8))
    backgrounds, config = BackgroundStore([tmp_path / "grey.png"], 192), CompositionConfig(width=64, height=64)
    cutouts, distortions, rng = [make_cutout((220, 20, 20), 20, 20)], DistortionConfig(), np.random.default_rng(0)
    recorded = compose_scene(cutouts, backgrounds, config, distortions, rng=np.random.default_rng(1)).params
    for arguments, error, message in [  # were numpy's 'high <= 0', AttributeError, AttributeError, KeyError
        (([], backgrounds, config, distortions, rng, None), ValueError, "^cutouts: give a non-empty list"),
        ((cutouts, BackgroundStore([], 192), config, distortions, rng, None), ValueError, "^backgrounds: the "),
        ((cutouts, backgrounds, config, distortions, 0, None), TypeError, "^rng must be a numpy Generator"),
        ((cutouts, backgrounds, config, {}, rng, None), TypeError, "^distortions must be a DistortionConfig"),
        (([make_cutout((20, 20, 220), 20, 20)], backgrounds, config, distortions, None, recorded), ValueError,
         "^params: cutout .* of the recorded scene is not among the cutouts given"),
    ]:
        with pytest.raises(error, match=message):
            compose_scene(*arguments[:4], rng=arguments[4], params=arguments[5])


def test_a_prepared_query_searched_by_a_second_searcher_uses_that_searchers_network(searcher):
    from pipelines.search import Searcher

    other = Searcher(device="cpu", untrained=True, verify=False)
    with torch.no_grad():  # another network: as a trained checkpoint's would be
        for parameter in other.network.model.backbone.parameters():
            parameter.mul_(0.7).add_(0.01)
    scene = np.random.default_rng(0).integers(0, 60, (120, 160, 3), dtype=np.uint8)
    thing = np.zeros((40, 30, 3), np.uint8)
    thing[..., 0], thing[10:20, :, 1] = 220, 200
    scene[40:80, 90:120] = thing
    prepared = searcher.prepare(thing)
    first = searcher.find(prepared, scene)
    # the first searcher's query features were read by the second network (heat off by up to 0.87)
    assert np.array_equal(other.find(prepared, scene).heatmap, other.find(thing, scene).heatmap)
    assert np.array_equal(searcher.find(prepared, scene).heatmap, first.heatmap)


def test_a_torch_tensor_that_requires_grad_is_one_value_error_naming_the_argument():
    from pipelines.search import load_query

    query = torch.zeros(40, 30, 3, requires_grad=True)
    with pytest.raises(ArrayInputError, match="^query: not an image array .*detach"):  # was torch's RuntimeError
        load_query(query)
    with pytest.raises(ArrayInputError, match="^query_mask: not a mask array .*detach"):
        load_query(np.zeros((40, 30, 3), np.uint8), torch.ones(40, 30, requires_grad=True))
    assert load_query(query.detach())[0].shape == (40, 30, 3)


def test_maps_and_peaks_take_a_query_as_heatmaps_and_find_do(searcher):
    query = np.zeros((40, 30, 3), np.uint8)
    query[..., 0] = 220
    media = [np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)]
    maps = searcher.maps(query, media)  # an array was TypeError: 'int' object is not subscriptable
    assert np.array_equal(maps.heat, searcher.heatmaps(query, media))
    _, best = searcher.peaks(query, maps.heat[0], maps.object_height[0])  # "cannot unpack non-iterable int"
    assert best == searcher.peaks(searcher.prepare(query), maps.heat[0], maps.object_height[0])[1]


# ----------------------------------------------------------------- the transforms
def test_distortion_settings_given_as_numpy_numbers_are_taken_as_python_numbers():
    import json

    from augment.distortions import Affine, DistortionConfig, PillarBox

    # each was "affine.p: expected a probability in [0, 1], got np.float32(0.5)" or "expected a pair"
    affine = Affine(p=np.float32(0.5), rotate=np.array([-10.0, 10.0]), scale=(np.float64(0.9), np.int64(1)))
    assert (affine.p, affine.rotate, affine.scale) == (0.5, (-10.0, 10.0), (0.9, 1))
    assert type(affine.p) is float and type(affine.scale[1]) is int
    stored = json.dumps(DistortionConfig(affine=affine).to_dict())  # the manifest's config stays JSON
    assert DistortionConfig.from_dict(json.loads(stored)).affine == affine
    with pytest.raises(ValueError, match=r"^affine\.p: expected a probability in \[0, 1\], got True$"):
        Affine(p=np.bool_(True))
    assert PillarBox(color=tuple(np.array([1, 2, 3], np.uint8))).color == (1, 2, 3)


@pytest.mark.parametrize("options, message", [
    ({"blend": "bogus"}, "config: composition.blend must be one of feather, hard, poisson"),  # was a hard paste
    ({"width": "64"}, "config.width: expected a whole number, got '64'"),  # was TypeError: unsupported operand
    ({"min_objects": 0, "max_objects": 0}, "config: need 1 <= composition.min_objects"),  # was an empty scene
    ({"placement_tries": 0}, "config: composition.placement_tries must lie in [1, 1000]"),
])
def test_compose_scene_range_checks_a_composition_config_made_in_python(tmp_path, options, message):
    import cv2

    from augment.composite import BackgroundStore, compose_scene
    from augment.config import CompositionConfig
    from augment.distortions import DistortionConfig
    from augment.imageio import InputError
    from test_composite import make_cutout

    cv2.imwrite(str(tmp_path / "grey.png"), np.full((96, 96, 3), 128, np.uint8))
    with pytest.raises(InputError) as refused:
        compose_scene([make_cutout((220, 20, 20), 20, 20)], BackgroundStore([tmp_path / "grey.png"], 192),
                      CompositionConfig(**options), DistortionConfig(), rng=np.random.default_rng(0))
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("options, message", [
    ({"medium_size": 0}, "config: medium_size must be a whole number, at least 32, got 0"),  # OpenCV, in each worker
    ({"negative_fraction": 2.0}, "config: negative_fraction must lie in [0, 1], got 2.0"),  # taken silently
    ({"shuffle_buffer": 0}, "config: shuffle_buffer must be a whole number, at least 1, got 0"),  # 'high <= 0'
    ({"query_fill": (0.9, 0.5)}, "config: query_fill must be 0 < lo <= hi <= 1"),
])
def test_a_pair_config_made_in_python_is_range_checked_as_a_training_configs_keys(tmp_path, options, message):
    from augment.imageio import InputError
    from shard_factory import make_shards
    from train.config import TrainConfig
    from train.data import PairConfig, ShardPairs

    folder = make_shards(tmp_path / "shards", n_composites=4).folder
    with pytest.raises(ValueError) as refused:
        ShardPairs(folder, PairConfig(**options))
    assert str(refused.value) == message
    with pytest.raises(InputError, match="^" + message.removeprefix("config: ").replace("[", r"\[").replace("(", r"\(")):
        TrainConfig(**{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})


def test_a_shard_named_twice_is_read_once_by_show_and_export(tmp_path, caplog):
    """`synth show shards shards/train-00000.parquet` drew 16 composites of 12 (rows twice on one sheet);
    `synth export` skipped each row a second time as 'id seen before'. The shard is read once, said."""
    from augment.coco_export import export_coco
    from augment.contact_sheet import contact_sheet
    from augment.shards import find_shards
    from shard_factory import make_shards

    folder = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=6, size=32).folder
    named = [folder, folder / "train-00000.parquet", tmp_path / "shards" / ".." / "shards"]
    assert find_shards(named) == [folder / "train-00000.parquet"]
    assert "train-00000.parquet: named more than once among the shards" in caplog.text
    assert contact_sheet(named, tmp_path / "sheet.png", rows=3, columns=3, tile=16) == 6
    counts = export_coco(named, tmp_path / "coco")
    assert (counts["images"], counts["skipped"]) == (6, 0)


def _stamp_run(folder, run_hash: str) -> None:
    """Write ``folder``'s factory shards again with ``run_hash`` in their footers, as `synth expand` does."""
    import pyarrow.parquet as pq

    from augment.schema import RUN_HASH_KEY

    for shard in sorted(folder.glob("train-*.parquet")):
        table = pq.read_table(shard)
        pq.write_table(table.replace_schema_metadata({**table.schema.metadata, RUN_HASH_KEY: run_hash.encode()}),
                       shard, row_group_size=4)


def test_rows_of_two_runs_numbered_alike_are_all_read_by_export_show_and_segmentation(tmp_path, caplog):
    """Two runs number their rows alike (train-00000000 ...): `synth export runA runB` skipped every row of
    runB as 'id seen before'. Rows are told apart by run and id: all are kept (a second file of a name
    gets -2), while a copy of a run (the same run hash) is read once, as a shard named twice is."""
    import shutil

    from augment.coco_export import export_coco
    from augment.contact_sheet import contact_sheet
    from augment.shards import find_shards
    from shard_factory import make_shards
    from train.segment_config import SegmentConfig, parse_classes
    from train.segment_data import SegmentShards

    run_a = make_shards(tmp_path / "a", n_cutouts=4, n_composites=6, size=32, seed=1).folder
    run_b = make_shards(tmp_path / "b", n_cutouts=4, n_composites=4, size=32, seed=2).folder  # ids as run a's
    counts = export_coco([run_a, run_b], tmp_path / "coco")  # shards of no stored run: one run a folder
    assert (counts["images"], counts["skipped"]) == (10, 0)
    assert sorted(p.name for p in (tmp_path / "coco" / "images").iterdir())[:2] == ["composite-00000-2.jpg",
                                                                                 "composite-00000.jpg"]
    _stamp_run(run_a, "aaaa")
    _stamp_run(run_b, "bbbb")
    shutil.copytree(run_a, tmp_path / "copy")  # the same run elsewhere: one run, read once
    named = [run_a, run_b, tmp_path / "copy", run_a / "train-00000.parquet"]
    assert find_shards(named) == [run_a / "train-00000.parquet", run_b / "train-00000.parquet"]
    assert "copy/train-00000.parquet: the same shard of the same run aaaa as " in caplog.text
    counts = export_coco(named, tmp_path / "coco")
    assert (counts["images"], counts["skipped"]) == (10, 0)
    assert contact_sheet(named, tmp_path / "sheet.png", rows=4, columns=4, tile=16) == 10
    classes = parse_classes([{"name": "background", "source_labels": ["null"]}, "shape"])
    config = SegmentConfig(classes=classes, eval_size=(32, 32), short_side=32, crop_size=32, eval_fraction=0.0)
    assert len(list(SegmentShards(named, config, split="train", shuffle_buffer=1))) == 10
    # The same run made longer (its --num is no part of the run hash): its first rows are run a's, so its
    # shard is read in the shorter one's place, by every reader alike (show and segmentation read 14 rows
    # where export kept 8).
    longer = make_shards(tmp_path / "longer", n_cutouts=4, n_composites=8, size=32, seed=1).folder
    _stamp_run(longer, "aaaa")
    for runs in ([run_a, longer], [longer, run_a]):
        assert find_shards(runs) == [longer / "train-00000.parquet"]
        counts = export_coco(runs, tmp_path / "coco")
        assert (counts["images"], counts["skipped"]) == (8, 0)
        assert contact_sheet(runs, tmp_path / "sheet.png", rows=4, columns=4, tile=16) == 8
        assert len(list(SegmentShards(runs, config, split="train", shuffle_buffer=1))) == 8
