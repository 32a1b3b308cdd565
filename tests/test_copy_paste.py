"""Copy-paste onto labelled photos: composites whose background carries its own labels.

The background's label ids follow the crop, resize and scene distortions of its pixels; replay gives
the same pixels and labels; bad label files are counted skips; the segmentation loader's target is
the background's classes overwritten by the visible objects'.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from augment.composite import BackgroundStore, _scene_chain, compose_scene
from augment.config import BackgroundConfig, CompositionConfig, ExpandConfig, SourceConfig
from augment.cutouts import Cutout, cutout_id
from augment.distortions import REGISTRY, DistortionConfig, apply_chain, sample_chain
from augment.expand import run_expand
from augment.imageio import InputError, decode_image
from augment.labelled_backgrounds import collect_labelled_backgrounds, label_ids
from augment.superpixels import compute_superpixels
from sources_factory import make_street_photos
from train.segment_config import IGNORE_INDEX, SegmentConfig, parse_classes
from train.segment_data import SegmentShards

W, H = 64, 96
NAMES = ["null", "coat", "skirt", "hat"]


def _labelled_folder(root: Path, count: int = 3) -> Path:
    """label_map photos 120x80: rows of labels 0 (null), 1 (coat), 2 (skirt); value 3 (hat) is never used."""
    (root / "labels").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "label_list.json").write_text(json.dumps(NAMES))
    for i in range(count):
        labels = np.zeros((120, 80), np.uint8)
        labels[30 + i:70, :] = 1
        labels[70:, 10:70] = 2
        cv2.imwrite(str(root / "labels" / f"{i:04d}.png"), labels)
        rng = np.random.default_rng(i)
        cv2.imwrite(str(root / "photos" / f"{i:04d}.jpg"), rng.integers(0, 255, (120, 80, 3), dtype=np.uint8))
    return root


def _cutout(colour: tuple[int, int, int], category: str) -> Cutout:
    rgba = np.zeros((30, 24, 4), np.uint8)
    rgba[:, :, :3] = colour
    rgba[::3, :, :3] = np.array(colour, np.uint8) // 2
    alpha = np.zeros((30, 24), np.uint8)
    cv2.ellipse(alpha, (12, 15), (11, 14), 0, 0, 360, 255, -1)
    rgba[:, :, 3] = alpha
    return Cutout(cutout_id(rgba, category), category, rgba, compute_superpixels(rgba), int(np.count_nonzero(rgba[:, :, 3])))


def _distortions(p: float) -> DistortionConfig:
    return DistortionConfig.from_dict({name: {"p": p} for name in REGISTRY})


def _composition(**overrides) -> CompositionConfig:
    return CompositionConfig(**{"width": W, "height": H, "blend": "hard", "min_visible": 0.0, "min_objects": 1,
                                "max_objects": 3, "object_scale": (0.3, 0.6), **overrides})


@pytest.fixture()
def store(tmp_path) -> BackgroundStore:
    folder = _labelled_folder(tmp_path / "bg")
    backgrounds, skips = collect_labelled_backgrounds(folder, BackgroundConfig(format="label_map"))
    assert len(backgrounds) == 3 and not skips
    return BackgroundStore(backgrounds, max_shorter_side=1000)


CUTOUTS = [_cutout((250, 20, 20), "hat"), _cutout((20, 20, 250), "skirt")]


def test_labels_everywhere_follow_the_crop_and_objects_cover_them(store):
    for seed in range(8):
        scene = compose_scene(CUTOUTS, store, _composition(), _distortions(0.0), rng=np.random.default_rng(seed))
        index = scene.params["background"]["index"]
        x0, y0, x1, y1 = scene.params["background"]["crop"]
        expected = cv2.resize(np.ascontiguousarray(store.labels(index)[y0:y1, x0:x1]), (W, H),
                              interpolation=cv2.INTER_NEAREST_EXACT)  # each pixel's centre, independently
        np.testing.assert_array_equal(scene.background_labels, expected, err_msg=f"seed {seed}")
        assert (scene.background_labels > 0).all()  # every value of the photo is named: labelled everywhere
        # ids are value + 1 with the source's names; value 0 is "background"
        assert scene.background_categories == {k: {1: "background", 2: "coat", 3: "skirt"}[k]
                                               for k in np.unique(expected).tolist()}
        assert scene.objects and all((scene.instances == o.instance_id).any() for o in scene.objects)


def test_crop_and_resize_of_labels_by_hand(store):
    # A crop of rows 40..100 of the 120x80 photo, stretched to 64x96: rows 40..69 are coat (id 2),
    # rows 70..99 skirt (id 3) in columns 10..69, background (id 1) elsewhere.
    params = {"background": {"index": 0, "crop": [0, 40, 80, 100]}, "objects": [], "scene": [], "dropped": []}
    scene = compose_scene(CUTOUTS, store, _composition(), _distortions(0.0), params=params)
    labels = scene.background_labels
    assert (labels[:H // 2 - 1] == 2).all()
    assert (labels[H // 2 + 1:, 10 * W // 80 + 1:70 * W // 80 - 1] == 3).all()
    assert (labels[H // 2 + 1:, :10 * W // 80 - 1] == 1).all()


def test_dropped_objects_leave_no_label_where_they_show(store):
    square = _cutout((250, 20, 20), "hat")
    scale = 30 / min(W, H)
    params = {"background": {"index": 0, "crop": [0, 0, 80, 120]}, "scene": [], "dropped": [],
              "objects": [{"cutout_id": square.cutout_id, "scale": scale, "steps": [], "position": [10, 10]},
                          {"cutout_id": square.cutout_id, "scale": scale, "steps": [], "position": [14, 14]}]}
    scene = compose_scene([square], store, _composition(min_visible=0.6), _distortions(0.0), params=params)
    assert scene.params["dropped"] == [1] and len(scene.objects) == 1
    empty = compose_scene([square], store, _composition(), _distortions(0.0), params={**params, "objects": []})
    shows_dropped = (scene.image != empty.image).any(axis=2) & (scene.instances == 0)
    assert shows_dropped.any() and (scene.background_labels[shows_dropped] == 0).all()
    assert (scene.background_labels[~shows_dropped] > 0).all()


def test_replay_gives_the_same_pixels_and_labels(store):
    for seed in range(5):
        scene = compose_scene(CUTOUTS, store, _composition(), _distortions(1.0), rng=np.random.default_rng(seed))
        params = json.loads(json.dumps(scene.params))
        again = compose_scene(CUTOUTS, store, _composition(), _distortions(1.0), params=params)
        np.testing.assert_array_equal(again.image, scene.image)
        np.testing.assert_array_equal(again.instances, scene.instances)
        np.testing.assert_array_equal(again.background_labels, scene.background_labels)
        assert again.background_categories == scene.background_categories


def test_scene_distortions_move_labels_as_they_would_alone():
    # The packed one-pass chain (uint8 labels) equals the chain applied to the labels by themselves.
    rng = np.random.default_rng(3)
    canvas = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    instances = np.zeros((H, W), np.uint8)
    instances[10:40, 5:30] = 1
    labels = rng.integers(0, 60, (H, W)).astype(np.uint8)
    chain = _distortions(1.0).scene_distortions()
    for seed in range(5):
        steps = sample_chain(chain, np.random.default_rng(seed), H, W)
        assert any(s["name"] == "pillar_box" for s in steps)  # the geometric one is in the chain
        out, ids, moved = _scene_chain(steps, canvas, instances, labels)
        expected_image, expected_ids = apply_chain(steps, canvas, instances)
        np.testing.assert_array_equal(out, expected_image)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(moved, apply_chain(steps, canvas, labels)[1])
        wide = labels.astype(np.uint16) * 300  # past 8 bits: the two-pass path
        np.testing.assert_array_equal(_scene_chain(steps, canvas, instances, wide)[2], apply_chain(steps, canvas, wide)[1])


def test_label_ids_name_only_known_values():
    values = np.array([[0, 1, 5], [2, 2, 0]], np.uint8)
    np.testing.assert_array_equal(label_ids(values, {1: "background", 2: "coat", 3: "skirt"}), [[1, 2, 0], [3, 3, 1]])
    assert label_ids(np.full((2, 2), 300, np.uint16), {301: "x"}).dtype == np.uint16


def test_bad_background_labels_are_counted_skips(tmp_path):
    folder = _labelled_folder(tmp_path / "bg", count=4)
    cv2.imwrite(str(folder / "labels" / "0001.png"), np.ones((50, 50), np.uint8))  # another size than its photo
    (folder / "labels" / "0002.png").write_bytes(b"\x89PNG not really")  # unreadable
    cv2.imwrite(str(folder / "labels" / "0009.png"), np.ones((120, 80), np.uint8))  # no photo with this name
    good, skips = collect_labelled_backgrounds(folder, BackgroundConfig(format="label_map"))
    assert [g.image.stem for g in good] == ["0000", "0003"]
    reasons = {Path(s.path).name: s.reason for s in skips}
    assert "50x50" in reasons["0001.png"] and "0002" in " ".join(reasons) and "no photo" in reasons["0009.png"]
    with pytest.raises(InputError, match="no usable labelled background"):
        collect_labelled_backgrounds(folder, BackgroundConfig(format="label_map", include=["0001", "0002"]))
    with pytest.raises(InputError, match="label_list.json"):
        collect_labelled_backgrounds(tmp_path, BackgroundConfig(format="label_map"))


def test_a_label_file_broken_after_the_check_is_a_one_line_error(tmp_path):
    folder = _labelled_folder(tmp_path / "bg", count=1)
    good, _ = collect_labelled_backgrounds(folder, BackgroundConfig(format="label_map"))
    (folder / "labels" / "0000.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="0000"):
        BackgroundStore(good, 1000).get(0)


def test_config_section_and_the_hash_of_configs_without_it():
    assert ExpandConfig().content_hash() == "7f06db4e4873c828"  # as before the section existed (main 14384c6)
    labelled = ExpandConfig.from_dict({"backgrounds": {"format": "label_map", "include": ["00*"]}})
    assert labelled.backgrounds.labelled and labelled.content_hash() != ExpandConfig().content_hash()
    with pytest.raises(InputError, match="backgrounds.format"):
        ExpandConfig.from_dict({"backgrounds": {"format": "coco"}})
    with pytest.raises(InputError, match="unknown key 'labels'"):
        ExpandConfig.from_dict({"backgrounds": {"labels": True}})


def _segment_config() -> SegmentConfig:
    classes = parse_classes([{"name": "background", "source_labels": ["null"]}, "coat", "skirt", "hat"])
    return SegmentConfig(classes=classes, eval_size=(H, W), short_side=W, crop_size=W, eval_fraction=0.0)


def test_expand_rows_and_the_loaders_target(tmp_path):
    source = make_street_photos(tmp_path / "street")  # coats and skirts, cut out and pasted back on the same photos
    config = ExpandConfig.from_dict({
        "num": 6, "backgrounds": {"format": "label_map", "exclude": ["0005"]},
        "sources": {"min_area": 50, "superpixel_max_side": 32},
        "composition": {"width": W, "height": H, "max_objects": 2, "object_scale": [0.3, 0.7]},
        "output": {"row_group_rows": 3}})
    result = run_expand([source], source, tmp_path / "out", config)
    assert result.manifest["backgrounds"] == {"folder": str(source), "count": 5, "format": "label_map"}
    rows = pq.read_table(tmp_path / "out" / "train-00000.parquet").to_pylist()
    assert all(json.loads(r["params"])["background"]["name"] != "0005.jpg" for r in rows)

    dataset = SegmentShards([tmp_path / "out"], _segment_config(), split="eval")
    index = {"background": 0, "coat": 1, "skirt": 2, "hat": 3}
    samples = list(dataset)
    assert len(samples) == len(rows) == 6
    for sample in samples:  # the stream's order is shuffled: a sample names its row group and row
        row = rows[int(dataset.units[int(sample["unit"])][1]) * 3 + int(sample["row"])]
        target = sample["target"].numpy()
        ids = decode_image(row["mask"]["bytes"], cv2.IMREAD_UNCHANGED)
        labels = decode_image(row["background_labels"]["bytes"], cv2.IMREAD_UNCHANGED)
        names = {c["id"]: c["category"] for c in row["background_categories"]}
        categories = {o["instance_id"]: o["category"] for o in row["objects"]}
        expected = np.full((H, W), IGNORE_INDEX, np.uint8)
        for y in range(H):
            for x in range(W):
                if ids[y, x]:
                    expected[y, x] = index[categories[int(ids[y, x])]]
                elif labels[y, x]:
                    expected[y, x] = index["background" if names[int(labels[y, x])] == "background"
                                           else names[int(labels[y, x])]]
        np.testing.assert_array_equal(target, expected, err_msg=row["id"])
        assert (ids > 0).any() and (target != IGNORE_INDEX).mean() > 0.6  # labelled nearly everywhere (pillar-box aside)

    plain = ExpandConfig.from_dict({**{k: v for k, v in config.to_dict().items() if k not in ("backgrounds", "distortions")},
                                    "backgrounds": {}})
    run_expand([source], source / "photos", tmp_path / "plain", plain)
    rows = pq.read_table(tmp_path / "plain" / "train-00000.parquet").to_pylist()
    assert all(r["background_labels"] is None and r["background_categories"] is None for r in rows)
    dataset = SegmentShards([tmp_path / "plain"], _segment_config(), split="eval")
    for sample in dataset:  # today's rule for composites without labels: composite_background ignore
        row = rows[int(dataset.units[int(sample["unit"])][1]) * 3 + int(sample["row"])]
        ids = decode_image(row["mask"]["bytes"], cv2.IMREAD_UNCHANGED)
        assert (sample["target"].numpy()[ids == 0] == IGNORE_INDEX).all() and (sample["target"].numpy()[ids > 0] < 4).all()


def test_shipped_copy_paste_config_pastes_only_the_labelled_split():
    from augment.sources import limited
    from benchmarks.segment_copy_paste import load

    config, arms = load(Path(__file__).resolve().parents[1] / "configs" / "ccp_copy_paste.yaml")
    stems = [Path(f"{i:04d}.png") for i in range(1, 701)]
    held = {p.stem for p in limited(stems, SourceConfig(include=config["held_out"]["include"], exclude=config["held_out"]["exclude"]))}
    assert len(held) == 200
    for arm in (arm for arm in arms.values() if arm.expand is not None):  # arms with composites
        b, s = arm.expand.backgrounds, arm.expand.sources
        assert b.format == "label_map" and s.format == "label_map"
        for picked in (limited(stems, SourceConfig(include=b.include, exclude=b.exclude)), limited(stems, s)):
            assert [p.stem for p in picked] == [f"{i:04d}" for i in range(1, 101)] and not held & {p.stem for p in picked}
    assert arms["e"].mix == {"photos": 0.5, "composites": 0.5} and arms["e"].composites == "composites"


def test_labeled_globs_replace_the_split_for_photos_cutouts_and_backgrounds(tmp_path):
    """benchmarks/segment_copy_paste.py --labeled: the 25-photo regime pastes only photos 0001-0025,
    onto them alone; a work folder of another labelled set is refused with one line."""
    import subprocess
    import sys

    from augment.sources import limited
    from benchmarks.segment_copy_paste import _check_split, load

    root = Path(__file__).resolve().parents[1]
    config, arms = load(root / "configs" / "ccp_copy_paste.yaml", ["000?", "001?", "002[0-5]"])
    stems = [Path(f"{i:04d}.png") for i in range(1, 701)]
    assert [p.stem for p in limited(stems, SourceConfig(**config["labeled"]))] == [f"{i:04d}" for i in range(1, 26)]
    for arm in (arm for arm in arms.values() if arm.expand is not None):  # arms with composites
        b, s = arm.expand.backgrounds, arm.expand.sources
        for picked in (limited(stems, SourceConfig(include=b.include, exclude=b.exclude)), limited(stems, s)):
            assert [p.stem for p in picked] == [f"{i:04d}" for i in range(1, 26)]
    data = tmp_path / "ccp"
    (data / "labels").mkdir(parents=True)
    for i in (1, 2, 101):
        (data / "labels" / f"{i:04d}.png").write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    (work / "labeled.json").write_text('{"include": ["0002"], "photos": 1}')
    # The script's command line once (a process of its own: its exit code and stderr)...
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "segment_copy_paste.py"), "--data", str(data),
                           "--work", str(work), "--labeled", "0001", "--arms", "a"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "holds runs of another labelled set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # ...and the split's other checks where it makes them (the same one-line exit; each process cost two
    # interpreter starts, the script re-executing itself).
    for labeled, message in ((["0101"], "takes held-out photos"), (["09??"], "matches no photo")):
        with pytest.raises(SystemExit, match=message) as exited:
            _check_split(data, load(root / "configs" / "ccp_copy_paste.yaml", labeled)[0], work)
        assert str(exited.value.code).startswith("error: ") and "\n" not in str(exited.value.code)


def test_pseudo_label_arm_trains_on_photos_and_pseudo_labels_only(tmp_path):
    """configs/ccp_copy_paste.yaml's self-training arm has no composites, 600 pseudo-labelled photos at
    half of each epoch; the fine-tuning arms start from another arm's run; an arm whose pseudo count
    and mix disagree, or whose init names no arm, is refused with one line."""
    from augment.imageio import InputError
    from benchmarks.segment_copy_paste import load

    root = Path(__file__).resolve().parents[1]
    config, arms = load(root / "configs" / "ccp_copy_paste.yaml", ["000?", "001?", "002[0-5]"])
    p = arms["p"]
    assert (p.expand, p.composites, p.pseudo, p.pseudo_folder) == (None, None, 600, "pseudo-600")
    assert p.mix == {"photos": 0.5, "pseudo": 0.5} and config["extract"]["pseudo_labels"] is True
    assert (arms["e_then_photos"].init, arms["p_then_photos"].init, arms["a_800"].steps) == ("e", "p", 800)
    assert arms["e_then_photos"].mix == {"photos": 1.0} and arms["e_then_photos"].composites is None
    for arm, message in (("{mix: {photos: 0.5, pseudo: 0.5}}", "arms.bad.pseudo must be a photo count"),
                         ("{mix: {photos: 1.0}, pseudo: 10}", "arms.bad.pseudo must be a photo count"),
                         ("{mix: {photos: 1.0}, expand: {num: 3}}", "expand changes but no composites"),
                         ("{mix: {photos: 1.0}, init: e}", "arms.bad.init must name another arm"),
                         ("{mix: {photos: 1.0}, steps: 0}", "arms.bad.steps must be a whole number")):
        path = tmp_path / "arms.yaml"
        path.write_text(f"selftune_config: {root / 'configs' / 'ccp_selftune.yaml'}\narms:\n  bad: {arm}\n")
        with pytest.raises(InputError, match=message):
            load(path)
