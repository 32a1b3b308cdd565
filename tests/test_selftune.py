"""`synth selftune`: two tiny rounds, killed at every step in turn, the lock, config changes and bad inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

from augment.imageio import InputError
from augment.locking import BUSY_EXIT_CODE
from augment.shards import find_shards
from pipelines import selftune_config
from pipelines.cli import app
from pipelines.selftune import NEXT_CONFIG_FILE, STATE_FILE, Inputs, SelfTune
from pipelines.selftune_metrics import METRICS_FILE
from segment_factory import make_noise_backgrounds, make_scene_photos, make_unlabeled, tiny_selftune_config


class Killed(Exception):
    """Plays a job killed at that point."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("selftune-inputs")
    return Inputs(make_scene_photos(root / "labeled"), make_unlabeled(root / "unlabeled"),
                  make_noise_backgrounds(root / "backgrounds"))


@pytest.fixture(scope="module")
def config() -> dict:
    return selftune_config.resolve(tiny_selftune_config())


def _outcome(state_dir: Path) -> dict:
    """What a run must reproduce: metrics and state (times apart), weights, composites, extraction."""
    lines = [json.loads(x) for x in (state_dir / METRICS_FILE).read_text().splitlines()]
    state = json.loads((state_dir / STATE_FILE).read_text())
    weights = {}
    for checkpoint in sorted(state_dir.glob("round-*/*/checkpoint.pt")):
        model = torch.load(checkpoint, weights_only=True)["model"]
        weights[checkpoint.parent.relative_to(state_dir).as_posix()] = hashlib.sha256(b"".join(
            v.numpy().tobytes() for v in model.values())).hexdigest()
    # Content, not bytes: an objects table's metadata holds its sources' paths and modification times.
    shards = {str(p.relative_to(state_dir)): pq.read_table(p).to_pylist()
              for p in sorted(state_dir.glob("*/*/*.parquet"))}
    extracted = {str(p.relative_to(state_dir)): {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
                 for p in sorted(state_dir.glob("round-*/extract/extract.json"))}
    return {"metrics": [{k: v for k, v in x.items() if k != "seconds"} for x in lines],
            "state": {k: v for k, v in state.items() if k != "times"}, "weights": weights, "shards": shards,
            "extracted": extracted, "leftovers": sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*.partial"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, inputs, config) -> dict:
    state_dir = tmp_path_factory.mktemp("uninterrupted") / "state"
    result = SelfTune(state_dir, inputs, config).run()
    assert result["finished"] and result["round"] == 2 and result["stop_reason"] == "max_rounds 2 reached"
    return _outcome(state_dir)


@pytest.fixture(scope="module")
def one_round(selftune_one_round) -> tuple[Path, dict]:
    """A state after `synth selftune --rounds 1` under the module's config (conftest's, which test_qa_terminal
    reads too), and the state it saved (tests only read it)."""
    state_dir, _, result = selftune_one_round
    assert result.exit_code == 0, result.output
    return state_dir, json.loads((state_dir / STATE_FILE).read_text())


def test_two_rounds_produce_metrics_report_and_counts(uninterrupted, inputs, config, tmp_path):
    first, second = uninterrupted["metrics"]
    assert [first["round"], second["round"]] == [1, 2]
    assert first["training_rows"] == {"photos": 6, "composites": 6}
    assert second["training_rows"] == {"photos": 6, "composites": 6, "pseudo": 6}  # round 1's pseudo-labels
    assert first["held_out_photos"] == 2 and set(first["per_class_iou"]) == {"background", "disc", "box"}
    extract = first["extract"]
    assert extract["images"] == 6 and extract["masks"] == extract["accepted"] + sum(extract["rejected"].values())
    assert "extract" not in second  # the last round stops before extracting
    assert uninterrupted["leftovers"] == []
    # Each round's segmenter is its training run fine-tuned on the labelled photos alone, and that is what is scored.
    assert [x["segmenter"] for x in (first, second)] == [f"round-00{k}/finetune/checkpoint.pt" for k in (1, 2)]
    assert set(uninterrupted["weights"]) == {f"round-00{k}/{step}" for k in (1, 2) for step in ("train", "finetune")}
    assert uninterrupted["weights"]["round-001/train"] != uninterrupted["weights"]["round-001/finetune"]


def test_finetune_starts_from_the_rounds_weights_on_photos_alone_and_is_optional(one_round, inputs, config, tmp_path):
    state_dir = one_round[0]
    saved = torch.load(state_dir / "round-001" / "finetune" / "checkpoint.pt", weights_only=True)
    values = saved["config"]["values"]
    assert values["init_checkpoint"] == str((state_dir / "round-001" / "train" / "checkpoint.pt").resolve())
    assert values["segment"]["mix"] == {"photos": 1.0} and values["steps"] == saved["step"] == 4
    assert values["seed"] == config["train"]["seed"] + 1  # the round's own seed, as its training run
    # A state made before finetune_steps existed (its config.json lacks the key) goes on without --force-config,
    # and without the step; asking for fine-tuning is a config change, named.
    off = selftune_config.resolve(tiny_selftune_config(finetune_steps=0, max_rounds=1))
    old = tmp_path / "old"
    SelfTune(old, inputs, off).run(rounds=0)
    stored = json.loads((old / "config.json").read_text())
    del stored["finetune_steps"]
    (old / "config.json").write_text(json.dumps(stored))
    assert SelfTune(old, inputs, off).run()["finished"]
    assert not (old / "round-001" / "finetune").exists()
    assert json.loads((old / METRICS_FILE).read_text())["segmenter"] == "round-001/train/checkpoint.pt"
    with pytest.raises(InputError, match="finetune_steps 0 -> 4"):
        SelfTune(old, inputs, selftune_config.resolve(tiny_selftune_config(max_rounds=1)))


def test_finetune_can_continue_the_trainings_schedule_and_optimizer(inputs, tmp_path):
    """finetune_schedule continue: one learning-rate schedule over both stages, the optimizer's moments carried."""
    config = selftune_config.resolve(tiny_selftune_config(max_rounds=1, finetune_schedule="continue"))
    SelfTune(tmp_path / "state", inputs, config).run()
    trained, tuned = (torch.load(tmp_path / "state" / "round-001" / step / "checkpoint.pt", weights_only=False)
                      for step in ("train", "finetune"))
    steps = config["train"]["steps"]
    assert trained["config"]["values"]["decay_steps"] == tuned["config"]["values"]["decay_steps"] == steps + 4
    assert tuned["config"]["values"]["schedule_offset"] == steps and tuned["config"]["values"]["init_optimizer"]
    # Adam's per-parameter step count goes on from the training's (restart: it would start at 0 again).
    counts = {int(v["step"]) for v in tuned["optimizer"]["state"].values()}
    assert counts == {steps + 4}
    with pytest.raises(InputError, match="finetune_schedule must be one of restart, continue"):
        selftune_config.resolve(tiny_selftune_config(finetune_schedule="resume"))


def test_killed_at_every_step_resumes_to_the_same_result(uninterrupted, inputs, config, tmp_path, monkeypatch):
    """Each step is killed once, at its most awkward point, and the job rerun: same result."""
    import train.loop

    state_dir = tmp_path / "state"
    kills: list[tuple[int, str]] = []
    real_save = train.loop.save_checkpoint

    def save_then_die(path, **kwargs):  # a kill right after a mid-training checkpoint
        real_save(path, **kwargs)
        folder = Path(path).parent  # round-NNN/{train,finetune}.partial
        key = (int(folder.parent.name.split("-")[1]), folder.name.split(".")[0])
        if kwargs["step"] == 2 and key not in kills:
            kills.append(key)
            raise Killed(key)

    def hook(round_index: int, step: str, moment: str) -> None:
        if (round_index, step) in kills or step in ("train", "finetune") or moment != "written":
            return
        kills.append((round_index, step))
        partial = state_dir / ("base" if round_index == 0 else f"round-{round_index:03d}")
        written = sorted(p for p in partial.glob(f"*{'composites' if step == 'expand' else step}.partial/**/*")
                         if p.is_file())
        if written:  # leave a half-written file behind, as a kill mid-write would
            written[-1].write_bytes(written[-1].read_bytes()[: written[-1].stat().st_size // 2])
        raise Killed((round_index, step))

    monkeypatch.setattr(train.loop, "save_checkpoint", save_then_die)
    attempts = 0
    while True:
        attempts += 1
        try:
            result = SelfTune(state_dir, inputs, config, hook=hook).run()
            break
        except Killed:
            assert attempts < 30
    assert result["finished"]
    assert kills == [(0, "labeled"), (0, "held_out"), (0, "composites"), (1, "train"), (1, "finetune"), (1, "score"),
                     (1, "extract"), (1, "expand"), (1, "report"), (2, "train"), (2, "finetune"), (2, "score"),
                     (2, "report")]
    assert _outcome(state_dir) == uninterrupted


def test_rounds_option_runs_one_round_and_exits(one_round):
    state_dir, state = one_round
    assert (state["round"], state["step"], state["finished"]) == (2, "train", False)
    assert len((state_dir / METRICS_FILE).read_text().splitlines()) == 1
    assert (state_dir / "report.md").read_text().count("\n| 1 |") == 1
    assert (state_dir / "report.png").stat().st_size > 0


def _cli(inputs: Inputs, state: Path, config_path: Path | None, *extra: str):
    args = ["selftune", "--state", str(state), "--labeled", str(inputs.labeled), "--unlabeled", str(inputs.unlabeled),
            "--backgrounds", str(inputs.backgrounds), *extra]
    if config_path is not None:
        args += ["--config", str(config_path)]
    return CliRunner().invoke(app, args)


HOLD = """
import sys, time
from augment.locking import folder_lock
with folder_lock(sys.argv[1], "selftune run"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_a_locked_state_exits_busy(inputs, tmp_path):
    config_path = tmp_path / "selftune.yaml"
    config_path.write_text(yaml.safe_dump(tiny_selftune_config()))
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _cli(inputs, state, config_path, "--rounds", "1")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == BUSY_EXIT_CODE == 3
    assert f"pid {holder.pid}" in result.output and len(result.output.strip().splitlines()) <= 2
    assert not (state / STATE_FILE).exists()  # it touched nothing


def test_a_mistyped_input_path_is_not_pinned_in_a_new_state(inputs, tmp_path):
    """The first run's --labeled typo (or an unlabeled folder with no images) made the state anyway, recording
    the path: the corrected command was then refused ('this state was started with --labeled .../typo')."""
    config_path = tmp_path / "selftune.yaml"
    config_path.write_text(yaml.safe_dump(tiny_selftune_config(max_rounds=1)))
    state = tmp_path / "state"
    empty = tmp_path / "empty"
    empty.mkdir()
    for wrong, said in ((Inputs(tmp_path / "typo", inputs.unlabeled, inputs.backgrounds), "typo: no such file"),
                        (Inputs(inputs.labeled, empty, inputs.backgrounds), "empty: no images")):
        result = _cli(wrong, state, config_path, "--rounds", "1")
        assert result.exit_code == 2 and said in result.output, result.output
        assert not state.exists()
    SelfTune(state, inputs, selftune_config.resolve(tiny_selftune_config(max_rounds=1)))  # the corrected command
    assert json.loads((state / STATE_FILE).read_text())["inputs"]["labeled"] == str(Path(inputs.labeled).resolve())


def test_another_config_is_named_and_adopted_from_the_next_round_when_forced(inputs, tmp_path):
    config_path = tmp_path / "selftune.yaml"
    config_path.write_text(yaml.safe_dump(tiny_selftune_config(max_rounds=1)))
    state = tmp_path / "state"
    assert _cli(inputs, state, config_path).exit_code == 0
    assert json.loads((state / STATE_FILE).read_text())["finished"]  # max_rounds 1: round 1 ends after scoring
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(tiny_selftune_config(max_rounds=2, min_gain=-0.25)))
    result = _cli(inputs, state, changed)
    assert result.exit_code == 2 and "max_rounds 1 -> 2" in result.output and "--force-config" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    # Forced: the finished run goes on. Round 1 extracts and expands under its own config; round 2 gets the new one.
    result = _cli(inputs, state, changed, "--force-config", "--rounds", "1")
    assert result.exit_code == 0, result.output
    first = json.loads((state / METRICS_FILE).read_text().splitlines()[0])
    assert first["round"] == 1 and "extract" in first and first["stopped"] is None
    saved = json.loads((state / STATE_FILE).read_text())
    assert (saved["round"], saved["step"], saved["finished"]) == (2, "train", False)
    assert json.loads((state / "config.json").read_text())["min_gain"] == -0.25 and not (state / NEXT_CONFIG_FILE).exists()
    other = _cli(Inputs(inputs.labeled, inputs.backgrounds, inputs.backgrounds), state, None)
    assert other.exit_code == 2 and "--unlabeled" in other.output


def test_bad_inputs_are_one_line_errors_or_counted_skips(inputs, config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images in the unlabeled folder"):
        SelfTune(tmp_path / "a", Inputs(inputs.labeled, empty, inputs.backgrounds), config).run()
    no_masks = tmp_path / "no-masks"
    make_unlabeled(no_masks / "images", count=2)
    (no_masks / "masks").mkdir()
    config_path = tmp_path / "selftune.yaml"
    config_path.write_text(yaml.safe_dump(tiny_selftune_config()))
    result = _cli(Inputs(no_masks, inputs.unlabeled, inputs.backgrounds), tmp_path / "b", config_path)
    assert result.exit_code == 2 and "no labelled photos found" in result.output and "Traceback" not in result.output
    # A corrupt and a truncated unlabeled photo: skipped, counted and listed; the round goes on.
    unlabeled = tmp_path / "unlabeled"
    make_unlabeled(unlabeled, count=3)
    (unlabeled / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg \xff\xd9")
    (unlabeled / "cut.png").write_bytes((unlabeled / "unlabeled000.png").read_bytes()[:100])
    SelfTune(tmp_path / "c", Inputs(inputs.labeled, unlabeled, inputs.backgrounds), config).run(rounds=1)
    line = json.loads((tmp_path / "c" / METRICS_FILE).read_text().splitlines()[0])
    assert line["extract"]["images"] == 3 and line["extract"]["skipped"] == 2
    assert sorted(Path(p).name for p in line["extract"]["skipped_files"]) == ["broken.jpg", "cut.png"]
    assert "broken.jpg" in (tmp_path / "c" / "report.md").read_text()
    # A held-out set that overlaps the labelled one is refused, naming photos.
    overlapping = selftune_config.resolve(tiny_selftune_config(held_out={"include": ["photo00[5-7]"]}))
    with pytest.raises(InputError, match="photo005"):
        SelfTune(tmp_path / "d", inputs, overlapping).run()
    assert find_shards(tmp_path / "c" / "base" / "labeled")


def test_search_option_retrains_the_search_network_each_round(inputs, tmp_path):
    search_train = {"model": {"pretrained": False, "feature_strides": [8], "scale_pairs": [[1.0, 1.0]], "edge_path": False,
                              "conversion_width": 8, "conversion_layers": 1, "skip_channels": 8},
                    "query_size": 32, "medium_size": 64, "batch_size": 2, "steps": 2, "num_workers": 0,
                    "warmup_steps": 1, "eval_every": 0, "eval_fraction": 0.5, "shuffle_buffer": 4, "device": "cpu"}
    config = selftune_config.resolve(tiny_selftune_config(search=True, search_train=search_train))
    SelfTune(tmp_path / "state", inputs, config).run(rounds=1)
    line = json.loads((tmp_path / "state" / METRICS_FILE).read_text().splitlines()[0])
    assert set(line["search"]) >= {"loss", "iou", "hit_rate"}  # scored on the held-out cutouts of round 1's composites
    assert (tmp_path / "state" / "round-001" / "search" / "checkpoint.pt").is_file()


def test_config_resolves_train_overrides_key_by_key_and_names_bad_keys(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    resolved = selftune_config.resolve({"train_config": str(repo / "configs" / "ccp_segment.yaml"),
                                        "train": {"steps": 3, "segment": {"mix": {"photos": 1.0}}},
                                        "held_out": {"include": ["02??"]}})
    assert resolved["train"]["steps"] == 3 and resolved["train"]["segment"]["mix"] == {"photos": 1.0}
    assert len(resolved["train"]["segment"]["classes"]) == 12  # the rest of segment: kept from the base file
    for bad, message in (({"rounds": 3}, "unknown key.*rounds"), ({"extract": {"min_confidence": 2}}, "min_confidence"),
                         ({"extract": {"bogus": 1}}, r"extract: unknown key\(s\) bogus"),
                         ({"stability_view": "rotate"}, "stability_view"), ({"held_out": {}}, "held_out needs include")):
        values = {"train": tiny_selftune_config()["train"], "held_out": {"include": ["x"]}, **bad}
        with pytest.raises(InputError, match=message):
            selftune_config.resolve(values)
    # A training key of the wrong type names the file and the section, not the key alone.
    config_file = tmp_path / "selftune.yaml"
    config_file.write_text(yaml.safe_dump({"train": {**tiny_selftune_config()["train"], "steps": "x"},
                                           "held_out": {"include": ["x"]}}))
    with pytest.raises(InputError, match=r"selftune\.yaml: train: steps: expected a whole number"):
        selftune_config.load(config_file)


def test_ccp_confirmation_photos_are_neither_trained_on_nor_held_out(tmp_path):
    """benchmarks/segment_ccp.py re-scores on the photos only the ceiling trains on."""
    from benchmark_modules import load_benchmark

    segment_ccp = load_benchmark("segment_ccp", "segment_ccp_under_test")
    (tmp_path / "labels").mkdir()
    for index in range(1, 13):
        cv2.imwrite(str(tmp_path / "labels" / f"{index:04d}.png"), np.zeros((4, 4), np.uint8))
    config = {"labeled": {"include": ["000[1-3]"], "exclude": []},
              "held_out": {"include": ["000[4-6]"], "exclude": []}}
    assert segment_ccp.ceiling_stems(tmp_path, config) == ["0001", "0002", "0003"] + [f"{i:04d}" for i in range(7, 13)]
    assert segment_ccp.confirmation_stems(tmp_path, config) == [f"{i:04d}" for i in range(7, 13)]


def test_the_training_rows_reported_are_those_the_segmentation_run_reads(tmp_path):
    """A shard two folders hold (a copy of one run beside it) is read once by the segmentation run
    (find_shards of all its folders together); the report counted it once per folder."""
    import shutil

    from pipelines.selftune_metrics import _training_rows
    from shard_factory import make_shards

    folder = make_shards(tmp_path / "a", n_cutouts=4, n_composites=6, size=32).folder
    table = pq.read_table(folder / "train-00000.parquet")
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"synth_run_hash": b"aaaa"}),
                   folder / "train-00000.parquet", row_group_size=4)
    shutil.copytree(folder, tmp_path / "copy")
    assert sum(_training_rows([folder, tmp_path / "copy"]).values()) == 6
