"""`synth search` on videos and frame folders as footage from phones, cameras and screen recorders comes
(the QA round on real-world video files): interrupted runs' heat maps, malformed --box values."""

from __future__ import annotations

import pytest

from tests.test_hardening_search import _interrupt_after, _search


@pytest.mark.parametrize("every_instance", [False, True])
def test_ctrl_c_mid_video_leaves_no_half_written_heat_map_folder(tmp_path, monkeypatch, every_instance):
    """The interrupted video's highlight was removed (it would pass for a complete one) but its
    NAME.heat/ kept the frames searched before Ctrl-C (3 of 400 on a real run): half a video's heat maps
    beside no highlight and no detections.jsonl, which a rerun searches again from the start anyway."""
    if every_instance:
        from pipelines.search_workers import SearchWorkers

        _interrupt_after(monkeypatch, SearchWorkers, "find_each")
    else:
        from pipelines.temporal import TemporalSearcher

        _interrupt_after(monkeypatch, TemporalSearcher, "step")
    result = _search(tmp_path, "--save-heatmaps", *(["--every-instance"] if every_instance else []))
    assert result.exit_code == 130, result.output
    left = sorted(str(p.relative_to(tmp_path / "found")) for p in (tmp_path / "found").rglob("*"))
    assert not [name for name in left if "heat" in name or "highlight" in name], left


@pytest.mark.parametrize("box", ["1e30,10,20,20", "10,1.7e308,20,1.7e308"])
def test_a_box_whose_width_vanishes_in_its_position_is_the_box_options_line_exit_2(tmp_path, box):
    """X = 1e30 swallows W = 20 (X + W == X): --box passed its own check, then each video failed on
    'initial_box must be four finite numbers x0, y0, x1, y1 ...' (the API's name, exit 1)."""
    from cli_checks import assert_one_line_error

    result = _search(tmp_path, "--box", box)
    assert_one_line_error(result, 2, "--box must be X,Y,W,H", box)
    assert "initial_box" not in result.output
