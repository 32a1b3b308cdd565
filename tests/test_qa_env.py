"""The run-time environment a scheduler gives (systemd, cron, a container, CI): no shell to expand `~`,
no HOME, signals a session's end sends, a container's CPU quota."""

from __future__ import annotations

import pwd

from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_backgrounds, make_rgba_source


def test_out_with_a_tilde_no_shell_expanded_is_the_home_folder_for_every_file(tmp_path, monkeypatch):
    # systemd's ExecStart passes '~' as typed: Python made ./~/ex for the lock and objects table while
    # pyarrow read and wrote $HOME/ex, so the run failed ('not a readable objects table') leaving ./~/ex
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    sources, backgrounds = make_rgba_source(tmp_path / "rgba", 2), make_backgrounds(tmp_path / "bg", 1)
    result = run_cli("expand", sources, "-b", backgrounds, "--out=~/ex", "--num", 2, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert (home / "ex" / "manifest.json").is_file() and list((home / "ex").glob("train-*.parquet"))
    assert list(work.iterdir()) == []


def test_a_tilde_with_no_home_to_expand_to_is_one_line(tmp_path, monkeypatch):
    # a container's arbitrary uid: no HOME, no password entry
    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(tmp_path)
    result = run_cli("search", tmp_path / "q.png", tmp_path, "--out", "~/found")
    assert_one_line_error(result, 2, "~/found", "HOME is not set", "full path")
    assert list(tmp_path.iterdir()) == []
