"""The benchmarks' figures re-derived by hand on small cases (benchmarks/metrics.py and the scripts
that report them): the scripts give the numbers the metric functions give."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def metrics():
    return load_benchmark("metrics", "qa_metrics_metrics")


def test_otb_boundaries_centre_error_exactly_20_px_counts_iou_exactly_half_counts_below_half(metrics):
    """OTB's rules at their edges: a centre exactly 20 px off is precise (<=); a box of IoU exactly 0.5
    is a success for t = 0 .. 0.45 (IoU > t), 10 of the 21 thresholds; touching boxes (IoU 0) none."""
    truth = (0.0, 0.0, 40.0, 10.0)
    half = metrics.outcome(True, (0.0, 0.0, 20.0, 10.0), 1.0, truth)  # IoU 200 / 400, centre 10 px off
    assert half.iou == 0.5 and half.correct
    twenty = metrics.outcome(True, (20.0, 0.0, 60.0, 10.0), 1.0, truth)  # centre 20 px off, IoU 1/3
    touching = metrics.outcome(True, (40.0, 0.0, 80.0, 10.0), 1.0, truth)  # shares an edge only
    assert twenty.centre_error == 20.0 and touching.iou == 0.0 and touching.centre_error == 40.0
    assert metrics.otb_figures([half.iou], [half.centre_error]) == (1.0, 10 / 21)
    assert metrics.otb_figures([twenty.iou], [twenty.centre_error]) == (1.0, 7 / 21)  # 1/3 > 0 .. 0.3
    assert metrics.otb_figures([touching.iou], [touching.centre_error]) == (0.0, 0.0)
    figures = metrics.summarise([half, twenty, touching])
    assert figures["precision20"] == pytest.approx(2 / 3)
    assert figures["success_auc"] == pytest.approx((10 + 7 + 0) / 63)
    assert all(np.isnan(v) for v in metrics.otb_figures([], []))


def test_hit_at_fpr_is_no_figure_without_negatives(metrics):
    """With no negatives there is no false-positive rate to hold: hit at FPR <= 0.1 was reported as
    top-1 (search_small's tracking rows, 1.000 where every frame was found), a figure never measured."""
    truth = (0.0, 0.0, 10.0, 10.0)
    figures = metrics.summarise([metrics.outcome(True, truth, 0.2, truth)] * 3, threshold=0.5)
    assert figures["top1"] == 1.0
    assert np.isnan(figures["hit_at_fpr10"]) and np.isnan(figures["auc"]) and np.isnan(figures["fpr_at_threshold"])


def test_threshold_at_fpr_at_ties_and_all_equal_scores(metrics):
    """At most 10% of negatives pass the cut. Ten negatives: one may pass; where the top two tie
    neither can pass alone, so the cut goes above both (no negative passes); all equal: none pass."""
    neg = [metrics.Outcome(False, False, s) for s in (0.9, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1)]
    cut = metrics.threshold_at_fpr(neg, 0.1)
    assert 0.8 < cut <= 0.9 and sum(o.score >= cut for o in neg) == 1
    tied = [metrics.Outcome(False, False, 0.9)] + neg[1:]
    tied[1] = metrics.Outcome(False, False, 0.9)
    cut = metrics.threshold_at_fpr(tied, 0.1)
    assert cut > 0.9 and sum(o.score >= cut for o in tied) == 0
    sixty = [metrics.Outcome(False, False, s) for s in np.linspace(0.0, 0.59, 60)]  # the CCP test's count
    cut = metrics.threshold_at_fpr(sixty, 0.1)  # six may pass: the seventh-highest sets the cut
    assert sum(o.score >= cut for o in sixty) == 6 and sixty[-7].score < cut <= sixty[-6].score
    same = [metrics.Outcome(False, False, 0.5)] * 10
    assert sum(o.score >= metrics.threshold_at_fpr(same, 0.1) for o in same) == 0
    # a positive scoring as the tied negatives does not pass either; one just above does
    right = [metrics.Outcome(True, True, 0.5, 1.0, 0.0), metrics.Outcome(True, True, 0.6, 1.0, 0.0)]
    assert metrics.summarise(right + same)["hit_at_fpr10"] == 0.5
    assert metrics.auc(right + same) == pytest.approx((0.5 + 1.0) / 2)  # a tie takes half a pair


def test_search_real_keeps_each_answers_iou_and_centre_error(metrics):
    """search_real.py's tally judged answers itself and kept no IoU or centre error: every method's
    precision20 and success_auc in its --json were 0.0, whatever the boxes. Its outcomes are now the
    metric function's own."""
    search_real = load_benchmark("search_real", "qa_metrics_search_real")
    truth = (10.0, 10.0, 50.0, 50.0)
    tally = search_real.Tally()
    assert tally.add(True, truth, (12.0, 10.0, 50.0, 50.0), 0.9)
    assert not tally.add(True, truth, None, 0.0)
    assert not tally.add(False, None, (0.0, 0.0, 5.0, 5.0), 0.4)
    expected = [metrics.outcome(True, (12.0, 10.0, 50.0, 50.0), 0.9, truth), metrics.outcome(True, None, 0.0, truth),
                metrics.outcome(False, (0.0, 0.0, 5.0, 5.0), 0.4, None)]
    assert [vars(o) for o in tally.outcomes] == [vars(o) for o in expected]
    figures = search_real.summarise(tally.outcomes, 0.5)
    assert figures["precision20"] == 0.5  # one of the two positives found, 1 px off
    assert figures["success_auc"] == pytest.approx(0.5 * 19 / 21)  # IoU 0.95 > 0 .. 0.9


def test_tracking_figures_are_the_metric_functions(metrics):
    """benchmarks/tracking.py's precision@20 and success AUC per sequence are otb_figures of its
    frames (a frame without a box a miss), not a second copy of the rule."""
    tracking = load_benchmark("tracking", "qa_metrics_tracking")
    truth = np.array([[0, 0, 40, 10], [0, 0, 40, 10], [0, 0, 40, 10]], float)
    predicted = [[0, 0, 20, 10], None, [20, 0, 60, 10]]
    assert tracking.precision_and_auc(predicted, truth) == pytest.approx((2 / 3, (10 + 0 + 7) / 63))


def test_selftune_refuses_a_segment_eval_fraction_that_would_score_part_of_its_held_out_photos():
    """selftune holds its scored photos out by ``held_out:``. A training config's segment.eval_fraction
    (meant for `synth train` without --eval-shards) hash-split them again: at 0.5, round scores came from
    1 of the 2 held-out photos while metrics.jsonl said held_out_photos 2, and 3 of the 6 labelled photos
    were never trained on. Refused at once, one line naming the key; the shipped config resolves."""
    from pathlib import Path

    from augment.imageio import InputError
    from pipelines import selftune_config
    from segment_factory import tiny_selftune_config

    values = tiny_selftune_config()
    values["train"]["segment"] = {**values["train"]["segment"], "eval_fraction": 0.5}
    with pytest.raises(InputError, match=r"^config: train: segment\.eval_fraction must be 0 in selftune, not 0\.5"):
        selftune_config.resolve(values)
    selftune_config.resolve(tiny_selftune_config())  # 0, the default, resolves
    repo = Path(__file__).resolve().parents[1]
    selftune_config.load(repo / "configs" / "ccp_selftune.yaml")


def test_ccp_training_split_leaves_out_the_test_photos_shoot_twins():
    """Photos 0197, 0223 and 0366 (training split) show the people and outfits of test photos 0671,
    0616 and 0649, a moment apart: a head trained on 0001-0500 had seen garments of three test photos.
    The training split (benchmarks/ccp.py, the training recipe's config alike) leaves them out; the
    three splits stay disjoint and the test and calibration splits are unchanged."""
    from pathlib import Path

    import yaml

    from augment.config import SourceConfig
    from augment.source_items import limited

    ccp = load_benchmark("ccp", "qa_metrics_ccp")
    stems = [Path(f"{i:04d}.png") for i in range(1, 701)]
    picked = {name: {p.stem for p in limited(stems, ccp.source_config(name))} for name in ccp.SEARCH_SPLIT}
    assert not picked["train"] & {"0197", "0223", "0366"} and {"0671", "0616", "0649"} <= picked["test"]
    assert [len(picked[name]) for name in ("train", "calibrate", "test")] == [497, 100, 100]
    assert not (picked["train"] & picked["calibrate"] or picked["train"] & picked["test"]
                or picked["calibrate"] & picked["test"])
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "search_real_cpu.yaml").read_text())
    trained = limited(stems, SourceConfig(include=recipe["photo_include"], exclude=recipe["photo_exclude"]))
    assert {p.stem for p in trained} == picked["train"]


def _search_checkpoint(path, eval_fraction: float):
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu", eval_fraction=eval_fraction)
    save_checkpoint(path, model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    return path


def test_calibrate_shards_takes_only_pairs_the_checkpoints_training_held_out(tmp_path):
    """calibrate --shards drew its "held-out" pairs by the default eval_fraction 0.1, whatever the
    checkpoint's training held out: one trained at 0 (every cutout trained on) was calibrated on its
    own training pairs ('F1 1.000 over 2 cases', exit 0), one at 0.05 on half of them. The split is the
    checkpoint's own, as synth eval's; where it held out nothing, one line, exit 2, no report."""
    from cli_checks import assert_one_line_error, run_cli
    from pipelines.calibration import held_out_fraction
    from shard_factory import make_shards

    make_shards(tmp_path / "shards")
    assert held_out_fraction(tmp_path / "shards", _search_checkpoint(tmp_path / "half.pt", 0.05)) == 0.05
    assert held_out_fraction(tmp_path / "shards", None) == 0.1  # the untrained network: the default's
    checkpoint = _search_checkpoint(tmp_path / "all.pt", 0.0)
    result = run_cli("calibrate", "--shards", tmp_path / "shards", "--checkpoint", checkpoint, "--cases", 2,
                     "--out", tmp_path / "report.json", "--device", "cpu")
    assert_one_line_error(result, 2, "no held-out pairs", "eval_fraction 0")
    assert not (tmp_path / "report.json").exists()


def test_crowd_mosaic_never_pastes_a_photo_over_another_placed_photo(tmp_path, monkeypatch):
    """A crowd mosaic put the photos its random slots had not placed (60 of the first 100 positives)
    over the frame's first row whatever lay there: in 3 of those 100 over the query's own photo, its
    garment hidden under another photo while the truth box still named it. Every photo placed is
    seen whole (up to the frame's edge); fillers alone are covered."""
    import sys
    from pathlib import Path

    from augment.imageio import save_image

    # after the repo, as the scripts put it (benchmarks/train.py must not shadow train/)
    monkeypatch.setattr(sys, "path", sys.path + [str(Path(__file__).resolve().parents[1] / "benchmarks")])
    crowd = load_benchmark("crowd", "qa_metrics_crowd")
    photos = [np.full((166, 110, 3), (10 * (k + 1), 255 - 10 * k, 7 * k), np.uint8) for k in range(12)]

    class Photos:
        def image(self, p: int) -> np.ndarray:
            return photos[p]

    filler = tmp_path / "filler.png"
    save_image(filler, np.zeros((166, 110, 3), np.uint8))
    mosaics = object.__new__(crowd.CrowdMosaics)
    mosaics.index, mosaics.backgrounds = Photos(), [filler]
    fallbacks = 0
    for seed in range(40):
        chosen = list(range(12 - seed % 6))
        frame, placements = mosaics._mosaic(chosen, np.random.default_rng(seed))
        fallbacks += any(y == 0 and s == crowd.ROW_PX[0] / 166 for _, y, s in placements)
        for p, (x, y, s) in zip(chosen, placements):
            h, w = round(166 * s), max(1, round(110 * s))
            seen = frame[y:y + h, x:x + w].reshape(-1, 3)
            assert (seen == photos[p][0, 0]).all(), f"seed {seed}: photo {p} at {(x, y)} partly covered"
    assert fallbacks  # the path under test ran


def test_segmentation_ceiling_trains_on_no_held_out_photos_shoot_twin(tmp_path):
    """benchmarks/segment_ccp.py's ceiling trained on every labelled photo not held out, 0616 and 0671
    among them: the people and outfits of held-out 0223 and 0197, a moment apart. It leaves them out;
    the labelled and confirmation photos are unchanged."""
    from pathlib import Path

    import cv2

    from pipelines import selftune_config

    segment_ccp = load_benchmark("segment_ccp", "qa_metrics_segment_ccp")
    (tmp_path / "labels").mkdir()
    for index in range(1, 701):
        cv2.imwrite(str(tmp_path / "labels" / f"{index:04d}.png"), np.zeros((2, 2), np.uint8))
    config = selftune_config.load(Path(__file__).resolve().parents[1] / "configs" / "ccp_selftune.yaml")
    ceiling = segment_ccp.ceiling_stems(tmp_path, config)
    assert not {"0616", "0671"} & set(ceiling) and {"0366", "0649", "0001", "0700"} <= set(ceiling)
    assert len(ceiling) == 500 - 2
    confirmation = segment_ccp.confirmation_stems(tmp_path, config)
    assert len(confirmation) == 400 and {"0616", "0671"} <= set(confirmation)
