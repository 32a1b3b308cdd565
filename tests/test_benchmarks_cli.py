"""The benchmark scripts as a user runs them: a bad argument (a negative count, zero photos, an
unknown sequence or case set, a --json path in a missing folder, a missing config) is one line
naming the option, exit code 2, before any data is read or time spent; a skip names what is
missing. Each case replaces the script's first piece of real work by ``Stop``, so a check that is
missing fails here at once instead of running the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.benchmark_modules import load_benchmark


class Stop:
    """Stands in for a script's first real work: any call or attribute is an error."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark started its work: the bad argument was not refused")

    def __getattr__(self, name: str) -> "Stop":
        self()
        return self


def fake_sequences(root: Path) -> Path:
    """A tracking folder holding one sequence, ``Only``."""
    (root / "Only" / "img").mkdir(parents=True)
    (root / "Only" / "groundtruth.txt").write_text("1,1,8,8\n1,1,8,8\n")
    return root


# (script, arguments, text the one line must hold, module attributes replaced by Stop,
#  where DATA points: "absent" or "fake" (one sequence, Only))
CASES = [
    ("tracking", ["--limit", "-1"], "--limit", [], "absent"),
    ("tracking", ["--limit", "1"], "--limit", [], "absent"),
    ("tracking", ["--threads", "0"], "--threads", [], "absent"),
    ("tracking", ["--json", "{tmp}/missing/rows.json"], "--json", [], "absent"),
    ("tracking", ["--every", "0", "--events", "occlude"], "--every", [], "absent"),
    ("tracking", ["--sequences", "Nope", "--limit", "5"], "Nope not in", ["Searcher"], "fake"),
    ("acquisition", ["--sequences", "Only", "Nope"], "Nope not in", ["Searcher"], "fake"),
    ("acquisition", ["--frames", "0"], "--frames", [], "absent"),
    ("acquisition", ["--starts", "-3"], "--starts", [], "absent"),
    ("scale_drift", ["--sequences", "soccer"], "soccer not in", ["Searcher"], "fake"),
    ("scale_drift", ["--late", "0"], "--late", [], "absent"),
    ("video_cli", ["--limit", "1"], "--limit", [], "absent"),
    ("video_cli", ["--scales", "0"], "--scales", [], "absent"),
    ("video_cli", ["--sequences", "Skating"], "Skating not in", ["Searcher"], "fake"),
    ("tracking", ["--device", "gpu"], "--device: must be auto, cpu or cuda, not 'gpu'", [], "absent"),
    ("search", ["--device", "bogus"], "--device", ["speed", "speed_on_photos", "calibrate"], None),
    ("search_real", ["--device", "gpu"], "--device", ["case_sets"], None),
    ("segment", ["--device", "bogus"], "--device", ["TrainConfig"], None),
    ("train", ["--device", "bogus"], "--device", ["TrainConfig"], None),
    ("search", ["--photos", "-1"], "--photos", ["speed", "speed_on_photos", "calibrate"], None),
    ("search", ["--batch", "0"], "--batch", ["speed", "speed_on_photos", "calibrate"], None),
    ("search", ["--calibrate", "--cases", "0"], "--cases", ["speed", "speed_on_photos", "calibrate"], None),
    ("search", ["--checkpoint", "{tmp}/missing.pt"], "--checkpoint", ["speed", "speed_on_photos", "calibrate"], None),
    ("search_real", ["--checkpoint", "{tmp}/missing.pt"], "--checkpoint", ["case_sets"], None),
    ("search_small", ["--checkpoint", "{tmp}/missing.pt"], "--checkpoint", ["methods"], None),
    ("search_real", ["--sets", "ccp,renditon"], "renditon", ["case_sets"], None),
    ("search_real", ["--limit", "-2"], "--limit", ["case_sets"], None),
    ("search_real", ["--json", "{tmp}/missing/figures.json"], "--json", ["case_sets"], None),
    ("search_small", ["--every", "0"], "--every", ["methods"], None),
    ("search_small", ["--mosaics", "-1"], "--mosaics", ["methods"], None),
    ("search_small", ["--json", "{tmp}/missing/rows.json"], "--json", ["methods"], None),
    ("segment", ["--photos", "0"], "--photos", ["TrainConfig"], None),
    ("segment", ["--config", "{tmp}/missing.yaml"], "--config", ["TrainConfig"], None),
    ("train", ["--steps", "0"], "--steps", ["TrainConfig"], None),
    ("train", ["--shards", "{tmp}/missing"], "--shards", ["TrainConfig"], None),
    ("expand", ["--num", "0"], "--num", ["benchmark_config"], None),
    ("expand", ["--sources", "{tmp}/missing"], "--sources", ["benchmark_config"], None),
    ("expand_ray", ["--repeats", "0"], "--repeats", ["tune_malloc"], None),
    ("detections", ["--repeat", "0"], "--repeat", ["frame_and_query"], None),
    ("fit_fusion", ["--out", "{tmp}/missing/fusion.json"], "--out", ["ccp"], None),
    ("instance_head", ["--eval-every", "0"], "--eval-every", ["ccp"], None),
    ("rank_head", ["--limit", "0"], "--limit", ["ccp"], None),
    ("segment_ccp", ["--config", "{tmp}/missing.yaml", "--data", "{tmp}"], "--config", [], None),
    ("segment_copy_paste", ["--workers", "0", "--data", "{tmp}"], "--workers", [], None),
    ("search_memory", ["--photos", "2"], "--photos", ["measure"], None),
    ("search_memory", ["--threads", "0"], "--threads", ["measure"], None),
]


def three_frame_sequence(root: Path) -> Path:
    """fake_sequences' one sequence with three 16 x 16 black frames and their boxes."""
    import cv2
    import numpy as np

    data = fake_sequences(root)
    for index in (1, 2, 3):
        cv2.imwrite(str(data / "Only" / "img" / f"{index:04d}.jpg"), np.zeros((16, 16, 3), np.uint8))
    (data / "Only" / "groundtruth.txt").write_text("1,1,8,8\n" * 3)
    return data


@pytest.mark.parametrize("script, arguments, said, stopped, data", CASES,
                         ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_a_bad_argument_is_one_line_and_exit_2_before_any_work(
        script: str, arguments: list[str], said: str, stopped: list[str], data: str | None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark(script, f"{script}_cli_bench")
    for name in stopped:
        if name == "Searcher":  # imported inside main()
            monkeypatch.setattr("pipelines.search.Searcher", Stop())
        else:
            monkeypatch.setattr(bench, name, Stop())
    if data is not None:
        monkeypatch.setattr(bench, "DATA", tmp_path / "absent" if data == "absent" else fake_sequences(tmp_path / "t"))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *(a.replace("{tmp}", str(tmp_path)) for a in arguments)])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert said in err and "\n" not in err and "Traceback" not in err, err
    if data == "fake":  # the unknown name and those there are
        assert "(there: Only)" in err


def test_segment_ccp_skip_names_the_labels_folder_it_did_not_find(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--data at a folder that is there but holds no labels/: the skip said the folder 'is absent'."""
    for script in ("segment_ccp", "segment_copy_paste"):
        bench = load_benchmark(script, f"{script}_skip_bench")
        monkeypatch.setattr(sys, "argv", [f"{script}.py", "--data", str(tmp_path)])
        bench.main()
        out = capsys.readouterr().out.strip()
        assert out == f"skipped: {tmp_path / 'labels'} is absent (shared data not present)"


def test_search_small_skip_names_the_tracking_folder_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The skip named '../shared/data/tracking', relative to the repository (not to where one runs it)."""
    bench = load_benchmark("search_small", "search_small_skip_bench")
    monkeypatch.setattr(bench, "TRACKING", tmp_path / "tracking")
    monkeypatch.setattr(bench, "tracking_sequences", lambda: [])
    monkeypatch.setattr(bench, "methods", lambda args: {})
    monkeypatch.setattr(sys, "argv", ["search_small.py", "--only", "tracking"])
    bench.main()
    out = capsys.readouterr().out.strip()
    assert out == f"skipped: {tmp_path / 'tracking'} is absent (no tracking sequences on this machine)"


def test_tracking_skips_a_sequence_that_leaves_under_two_frames_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--frame-step 30 on 20 frames kept one frame: a row of 0 frames, nan figures and numpy's
    'Mean of empty slice' warning, in --json too."""
    bench = load_benchmark("tracking", "tracking_short_bench")
    monkeypatch.setattr(bench, "DATA", three_frame_sequence(tmp_path / "t"))
    searcher = SimpleNamespace(network=SimpleNamespace(use_onnx=lambda: None))  # never searched
    monkeypatch.setattr("pipelines.search.Searcher", lambda **kwargs: searcher)
    monkeypatch.setattr("torch.set_num_threads", lambda threads: None)  # this process's threads kept
    monkeypatch.setattr(bench, "run_whole", Stop())
    monkeypatch.setattr(sys, "argv", ["tracking.py", "--methods", "whole", "--frame-step", "3",
                                      "--json", str(tmp_path / "rows.json")])
    bench.main()
    out = capsys.readouterr().out
    assert "Only       skipped: 1 frame(s) with a box at --frame-step 3; at least 2 are needed" in out
    assert (tmp_path / "rows.json").read_text() == "[]\n"


def test_search_small_json_is_strict_json_with_null_for_figures_of_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A set without negatives has no false-alarm rate or AUC (NaN): --json wrote ``NaN``, which
    jq, JavaScript and every strict reader refuse."""
    import json

    import numpy as np

    bench = load_benchmark("search_small", "search_small_json_bench")
    case = bench.SmallCase(np.zeros((8, 8, 3), np.uint8), np.zeros((32, 32, 3), np.uint8), (0, 0, 8, 8), "Only/0002")
    monkeypatch.setattr(bench, "tracking_sequences", lambda: [tmp_path / "Only"])
    monkeypatch.setattr(bench, "tracking_cases", lambda sequence, every: iter([case]))
    monkeypatch.setattr(bench, "methods", lambda args: [("stub", lambda c: ((0, 0, 8, 8), 1.0), 0.5)])
    out = tmp_path / "figures.json"
    monkeypatch.setattr(sys, "argv", ["search_small.py", "--only", "tracking", "--json", str(out)])
    bench.main()

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    figures = json.loads(out.read_text(), parse_constant=refuse)["tracking Only (every 1 frame(s), whole-frame search)"]["stub"]
    assert figures["top1"] == 1.0 and figures["auc"] is None and figures["fpr_at_threshold"] is None


def test_acquisition_says_which_runs_it_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A --starts past a sequence's end, or absent runs with one sequence and no CCP query, printed a
    header and nothing: a run that did nothing looked like a finished one."""
    bench = load_benchmark("acquisition", "acquisition_skips_bench")
    monkeypatch.setattr(bench, "DATA", three_frame_sequence(tmp_path / "t"))
    searcher = SimpleNamespace(network=SimpleNamespace(use_onnx=lambda: None), prepare=lambda query: query)
    monkeypatch.setattr("pipelines.search.Searcher", lambda **kwargs: searcher)
    monkeypatch.setattr("torch.set_num_threads", lambda threads: None)  # this process's threads kept
    monkeypatch.setattr(bench, "run", Stop())
    monkeypatch.setattr(sys, "argv", ["acquisition.py", "--starts", "5", "--ccp", "0"])
    bench.main()
    out = capsys.readouterr().out
    assert "Only       -                  5 skipped: past the sequence's 3 frames" in out
    assert "absent runs skipped: no query but the sequence's own" in out
