"""The training maths checked against independent reference computations on tiny tensors: an exact resume
with dropout, the losses' parameters and formula, label maps resized onto their pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from augment.config import SourceConfig
from augment.photo_shards import write_photo_shards
from segment_factory import make_scene_photos, tiny_train_values
from train.config import TrainConfig
from train.data import make_loader
from train.loop import train


class _Numbers(IterableDataset):
    seed = 3

    def __iter__(self):
        return iter(range(4))


def test_a_loaders_new_iterator_leaves_torchs_global_generator_alone():
    """Each new loader iterator (an epoch, a resumed run's first batch) drew its workers' base seed from
    torch's global generator, the one dropout draws from."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for workers in (0, 1):
        iter(make_loader(_Numbers(), 2, workers))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainmath")
    folder = root / "photos"
    write_photo_shards([make_scene_photos(root / "labeled", count=6)], folder, SourceConfig(), short_side=64)
    return folder


def test_a_segment_run_with_dropout_resumes_exactly(photos, tmp_path):
    """The segmenter's default dropout (0.1): a resumed run's masks were drawn from a global generator one
    number on from the uninterrupted run's (its loader's first iterator took one), so its losses differed."""
    values = {"model": {"pretrained": False, "decoder_channels": 8, "dropout": 0.1}, "decay_steps": 4}
    full = train(TrainConfig(**tiny_train_values(steps=4, **values)), [photos], tmp_path / "full", show_progress=False)
    train(TrainConfig(**tiny_train_values(steps=2, **values)), [photos], tmp_path / "split", show_progress=False)
    second = train(TrainConfig(**tiny_train_values(steps=4, **values)), [photos], tmp_path / "split", resume=True,
                   show_progress=False)
    assert np.isfinite(full.losses).all()
    np.testing.assert_array_equal(second.losses, full.losses[2:])


@pytest.mark.parametrize("name, params, key", [
    ("double_margin", {"border_px": 1.5}, "border_px"),  # max_pool2d's TypeError at the first step
    ("double_margin", {"border_px": -1}, "border_px"),
    ("double_margin", {"high": 0.1, "low": 0.9}, "low"),  # no gradient between the margins, without a word
    ("double_margin", {"high": 1.5}, "high"),
    ("double_margin", {"border_px": 2, "border_high": 0.3, "border_low": 0.5}, "border_low"),
    ("dice", {"smooth": -1.0}, "smooth"),
])
def test_loss_parameters_out_of_their_range_are_one_line_naming_the_key(name, params, key):
    from augment.imageio import InputError

    with pytest.raises(InputError, match=f"loss: .*{key}"):
        TrainConfig(loss=name, loss_params=params)


def test_double_margin_with_relaxed_borders_matches_its_formula():
    """Reference: a pixel is in the border band when its (2 border_px + 1) square, clipped to the image,
    holds both object and background; there the margins are border_high / border_low."""
    from train.losses import build_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 7, 9, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(2, 1, 7, 9, dtype=torch.float64)
    target[0, 0, 2:5, 3:7] = 1.0
    target[1, 0, :, :2] = 1.0
    weight = (torch.rand(2, 1, 7, 9) > 0.3).double()
    r = 1
    band = torch.zeros_like(target, dtype=torch.bool)
    for n in range(2):
        for y in range(7):
            for x in range(9):
                window = target[n, 0, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
                band[n, 0, y, x] = bool(window.max() > 0.5) and bool(window.min() < 0.5)
    high = torch.where(band, 0.7, 0.95).double()
    low = torch.where(band, 0.3, 0.05).double()
    d = torch.sigmoid(logits)
    per_pixel = target * (high - d).clamp_min(0) ** 2 + (1 - target) * (d - low).clamp_min(0) ** 2
    expected = (per_pixel * weight).sum() / weight.sum()
    loss = build_loss("double_margin", high=0.95, low=0.05, border_px=r, border_high=0.7, border_low=0.3)
    torch.testing.assert_close(loss(logits, target, weight), expected)
    assert torch.autograd.gradcheck(lambda x: loss(x, target, weight), (logits,))


def _edge_photo(height: int = 83, width: int = 101, edge: int = 44) -> tuple[np.ndarray, np.ndarray]:
    """A white object right of column ``edge`` (label 1) on black (label 0)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, edge:] = 255
    values = np.zeros((height, width), np.uint8)
    values[:, edge:] = 1
    return image, values


def _labels_agree_with_their_picture(image: np.ndarray, labels: np.ndarray) -> None:
    """Every label the object where more than half of its pixel's picture is (no pixel here is half
    covered)."""
    grey = image[..., 0]
    assert not ((grey > 120) & (grey < 135)).any()  # the centre decides: a pixel half covered would not
    np.testing.assert_array_equal(labels.astype(bool), grey > 127)


@pytest.mark.parametrize("height, width, edge, new_w, new_h", [(33, 41, 19, 13, 11), (33, 41, 19, 29, 23),
                                                              (83, 101, 45, 77, 62)])
def test_resized_labels_stay_on_their_picture(height, width, edge, new_w, new_h):
    """Shrunk and enlarged: cv2.INTER_NEAREST took the source pixel under each target pixel's top-left
    corner, moving the labels right of the picture's edge."""
    from augment.imageio import resize_image
    from augment.resizing import resize_labels

    image, values = _edge_photo(height, width, edge)
    _labels_agree_with_their_picture(resize_image(image, new_w, new_h), resize_labels(values, new_h, new_w))


def test_a_photo_shards_labels_and_a_segment_samples_target_stay_on_their_picture(tmp_path):
    """photo-shards' smaller photo, the segment task's augmented training sample and its held-out one."""
    import cv2

    from augment.photo_shards import LabelledPhoto, photo_row
    from train.segment_config import SegmentConfig, parse_classes
    from train.segment_data import SegmentAugment, SegmentShards

    image, values = _edge_photo()
    row = photo_row("p", LabelledPhoto(Path("p.png"), image, values, {1: "disc"}), short_side=32, jpeg_quality=100)
    stored = cv2.imdecode(np.frombuffer(row["image"]["bytes"], np.uint8), cv2.IMREAD_COLOR)
    ids = cv2.imdecode(np.frombuffer(row["mask"]["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (32, 39)
    _labels_agree_with_their_picture(stored, ids == ids.max())

    config = SegmentConfig(classes=parse_classes(["background", "disc"]), short_side=48, crop_size=48,
                           scale_range=(1.0, 1.0), blur_p=0.0, colour_jitter=0.0, hue_jitter=0.0, grayscale_p=0.0,
                           eval_size=(32, 40), eval_fraction=0.0)
    params = {"scale": 1.0, "crop": (0.0, 0.0), "flip": False, "colour": [1.0, 1.0, 1.0], "hue": 0.0, "grey": False,
              "blur": 0.0}
    picture, target = SegmentAugment(config).apply(image, values, params)
    assert target.shape == (48, 48)
    _labels_agree_with_their_picture(picture, target)

    source = tmp_path / "source"
    for folder, array in (("images", image), ("masks", values)):
        (source / folder).mkdir(parents=True)
        assert cv2.imwrite(str(source / folder / "p.png"), array)
    (source / "categories.json").write_text('{"1": "disc"}')
    write_photo_shards([source], tmp_path / "shards", SourceConfig(), short_side=4096)  # stored as it is
    sample = next(iter(SegmentShards([tmp_path / "shards"], config, split="all")))
    assert tuple(sample["target"].shape) == (32, 40)
    _labels_agree_with_their_picture(sample["image"].permute(1, 2, 0).numpy(), sample["target"].numpy() == 1)


@pytest.mark.parametrize("max_shorter_side", [1000, 40])  # the store's own shrink (40 of 80 columns) too
def test_a_composites_background_labels_stay_on_its_pixels(tmp_path, max_shorter_side):
    """Copy-paste's labelled background resized to the composite (80 x 120 -> 64 x 96): its label ids
    took the source pixel under each pixel's top-left corner."""
    import cv2
    import json

    from augment.composite import BackgroundStore, compose_scene
    from augment.config import BackgroundConfig, CompositionConfig, DistortionConfig
    from augment.distortions import REGISTRY
    from augment.cutouts import Cutout, cutout_id
    from augment.labelled_backgrounds import collect_labelled_backgrounds
    from augment.superpixels import compute_superpixels

    root = tmp_path / "bg"
    (root / "labels").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "label_list.json").write_text(json.dumps(["null", "coat"]))
    image, values = _edge_photo(120, 80, 43)
    assert cv2.imwrite(str(root / "labels" / "0000.png"), values)
    assert cv2.imwrite(str(root / "photos" / "0000.png"), image)
    backgrounds, skips = collect_labelled_backgrounds(root, BackgroundConfig(format="label_map"))
    assert len(backgrounds) == 1 and not skips
    store = BackgroundStore(backgrounds, max_shorter_side=max_shorter_side)
    composition = CompositionConfig(width=64, height=96, blend="hard", min_visible=0.0, min_objects=1, max_objects=1)
    params = {"background": {"index": 0, "crop": [0, 0, store.get(0).shape[1], store.get(0).shape[0]]},
              "objects": [], "scene": [], "dropped": []}
    rgba = np.full((8, 8, 4), 255, np.uint8)  # never pasted: the params place no object
    cutout = Cutout(cutout_id(rgba, "coat"), "coat", rgba, compute_superpixels(rgba), 64)
    scene = compose_scene([cutout], store, composition, DistortionConfig.from_dict({n: {"p": 0.0} for n in REGISTRY}),
                          params=params)
    _labels_agree_with_their_picture(scene.image, scene.background_labels == scene.background_labels.max())


def _white_ellipse(height: int = 90, width: int = 70) -> np.ndarray:
    """A white object whose transparent pixels are black, as synth stores cutouts."""
    import cv2

    rgba = np.zeros((height, width, 4), np.uint8)
    cv2.ellipse(rgba, (width // 2, height // 2), (width // 2 - 2, height // 2 - 2), 0, 0, 360, (255, 255, 255, 255), -1)
    return rgba


def test_a_training_query_shows_no_outline_of_its_cutouts_transparent_colour():
    """A white object on a white catalogue background is white throughout: its straight colour resized
    as it was averaged the transparent black into its edge (a grey outline, 191 at half alpha), which no
    catalogue shot a search is given has."""
    from train.queries import render_query

    checked = 0
    for seed in range(8):
        query, mask = render_query(_white_ellipse(200, 160), 64, np.random.default_rng(seed), colour_jitter=0.0)
        if (query[0, 0] == 255).all():  # the white background
            checked += 1
            assert (query == 255).all(), (seed, int(query.min()))
            assert ((mask > 0) & (mask < 255)).any()  # the edge is soft: it was resized
    assert checked  # (some seed drew the white background)


def test_a_composites_pasted_object_shows_no_outline_of_its_transparent_colour(tmp_path):
    import cv2

    from augment.composite import BackgroundStore, compose_scene
    from augment.config import CompositionConfig, DistortionConfig
    from augment.cutouts import Cutout, cutout_id
    from augment.distortions import REGISTRY
    from augment.superpixels import compute_superpixels

    assert cv2.imwrite(str(tmp_path / "white.png"), np.full((96, 64, 3), 255, np.uint8))
    rgba = _white_ellipse()
    cutout = Cutout(cutout_id(rgba, "coat"), "coat", rgba, compute_superpixels(rgba), int((rgba[..., 3] > 0).sum()))
    composition = CompositionConfig(width=64, height=96, blend="hard", min_visible=0.0, min_objects=1, max_objects=1,
                                    object_scale=(0.4, 0.6))
    for seed in range(3):
        scene = compose_scene([cutout], BackgroundStore([tmp_path / "white.png"], max_shorter_side=1000), composition,
                              DistortionConfig.from_dict({n: {"p": 0.0} for n in REGISTRY}),
                              rng=np.random.default_rng(seed))
        assert scene.objects and (scene.image == 255).all(), (seed, int(scene.image.min()))


def test_a_cutout_librarys_cache_is_bounded_by_the_bytes_it_holds_not_a_count(tmp_path):
    """CutoutLibrary kept 512 decoded cutouts whatever their size (300 MB of 384-px cutouts a loader
    worker, more for larger ones); it keeps them within ``cache_bytes`` (augment.byte_cache.ByteLRU),
    the most recently used first, a cached cutout handed back as it was decoded."""
    import pickle

    from shard_factory import make_shards
    from train.queries import CutoutLibrary

    path = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=1, size=48).folder / "objects.parquet"
    ids = CutoutLibrary(path).ids()
    sizes = {cutout_id: CutoutLibrary(path).rgba(cutout_id).nbytes for cutout_id in ids}
    library = CutoutLibrary(path, cache_bytes=sizes[ids[1]] + sizes[ids[2]])
    image = library.rgba(ids[0])
    assert library.rgba(ids[0]) is image  # cached
    for cutout_id in ids[1:3]:
        library.rgba(cutout_id)
    assert library._cache.bytes == sizes[ids[1]] + sizes[ids[2]] and ids[0] not in library._cache  # the oldest dropped
    assert np.array_equal(library.rgba(ids[0]), image) and ids[1] not in library._cache
    assert pickle.loads(pickle.dumps(library)).rgba(ids[0]).shape == image.shape


def test_a_cutout_whose_image_is_null_is_one_input_error_naming_it_not_a_type_error(tmp_path):
    """objects.parquet written by another tool may hold a null image: CutoutLibrary.rgba raised TypeError
    ('NoneType' object is not subscriptable: a traceback out of `synth train`); it is the InputError an
    undecodable cutout is, so its composite row is the counted skip."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from augment.imageio import InputError
    from shard_factory import make_shards
    from train.queries import CutoutLibrary

    path = make_shards(tmp_path / "shards", n_cutouts=2, n_composites=1, size=48).folder / "objects.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["image"] = None
    rows[1]["image"]["bytes"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    library = CutoutLibrary(path)
    for row in rows:
        with pytest.raises(InputError, match=f"cutout {row['cutout_id']}: empty file"):
            library.rgba(row["cutout_id"])
