"""benchmarks/tracking.py's ``--set NAME=VALUE``: numbers, comma-separated numbers and 0 / 1
switches of TemporalConfig; a bad one is one line (SystemExit with a message), never a traceback."""

from __future__ import annotations

import pytest

from tests.benchmark_modules import load_benchmark


def _tracking():
    return load_benchmark("tracking", "tracking_benchmark")


def test_numbers_and_switches_are_set() -> None:
    config = _tracking().temporal_config(["filter_candidates=8", "far_growth=0.05", "cut_redetect=0"])
    assert (config.filter_candidates, config.far_growth, config.cut_redetect) == (8, 0.05, False)
    assert _tracking().temporal_config([]).cut_redetect is True


def test_several_numbers_are_comma_separated() -> None:
    """Tuple settings (rescue_sizes, rescue_turns, cut_sizes, ...): comma-separated; empty is ()."""
    config = _tracking().temporal_config(["rescue_turns=20,-20", "rescue_sizes=", "cut_sizes=1,0.5"])
    assert (config.rescue_turns, config.rescue_sizes, config.cut_sizes) == ((20.0, -20.0), (), (1.0, 0.5))


def test_nested_settings_are_set_by_dotted_name() -> None:
    """The online filter's and the first frame's views' settings: ``online_filter.NAME=VALUE``,
    ``first_views.NAME=VALUE``, the rest of each left at its defaults."""
    config = _tracking().temporal_config(["online_filter.learning_rate=0.04", "first_views.count=3",
                                          "filter_weight=0.4"])
    assert config.online_filter.learning_rate == 0.04
    assert config.online_filter.sigma_factor == _tracking().temporal_config([]).online_filter.sigma_factor
    assert (config.first_views.count, config.filter_weight) == (3, 0.4)


@pytest.mark.parametrize("setting, message", [
    ("cut_redetect=yes", "is not 0 or 1"),
    ("filter_candidates=many", "is not a number"),
    ("nonsense=1", "not a numeric TemporalConfig field"),
    ("redetect_every=0", "redetect_every"),
    ("online_filter.learning_rate=0", "learning_rate"),
    ("online_filter.nonsense=1", "not a numeric TemporalConfig field"),
    ("rescue_turns=15,x", "is not comma-separated numbers"),
    ("rescue_turns=0", "rescue_turns"),
])
def test_a_bad_setting_is_one_line(setting: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        _tracking().temporal_config([setting])


def test_placements_need_one_seed_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--first A B --seed S`` is one line, checked before any sequence is read."""
    monkeypatch.setattr("sys.argv", ["tracking.py", "--events", "cut", "--first", "40", "60", "--seed", "0"])
    with pytest.raises(SystemExit, match="one seed per placement, not 2 and 1"):
        _tracking().main()
