"""Commands stopped or killed at the moments a kill-and-rerun sweep found unsafe, and rerun: a stop is
one line (exit code 130), and the rerun leaves nothing of the killed run behind. Each SIGKILL is a real
one, in a process of its own, at a point reached by patching the call it happens in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards

ROOT = Path(__file__).resolve().parents[1]


def killed_in(call: str, when: str, *args: object) -> subprocess.CompletedProcess:
    """``synth ARGS`` in a process of its own that SIGKILLs itself as it calls ``call`` (``module.name``)
    with a first argument whose text holds ``when``."""
    module, name = call.rsplit(".", 1)
    script = f"""
import importlib, os, signal, sys
module = importlib.import_module({module!r})
original = getattr(module, {name!r})
def killed(first, *rest, **named):
    if {when!r} in str(first):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(first, *rest, **named)
setattr(module, {name!r}, killed)
from pipelines.cli import app
sys.argv = ["synth", *sys.argv[1:]]
app()
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == -9, done.stderr
    return done


def test_an_export_killed_while_it_removed_the_export_it_replaced_leaves_nothing_for_good(tmp_path):
    """export into an earlier export's folder moves that one aside (.coco.old-PID) and removes it; a
    kill meanwhile left the earlier export's whole copy beside --out for good, which no export removed."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    out = tmp_path / "exports" / "coco"
    assert run_cli("export", tmp_path / "shards", "--out", out).exit_code == 0
    killed_in("shutil.rmtree", ".old", "export", tmp_path / "shards", "--out", out)
    assert run_cli("export", tmp_path / "shards", "--out", out).exit_code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["coco"]
    assert len(list((out / "images").iterdir())) == 4


class _StoppedImport:
    """A finder whose module's import is stopped as SIGTERM stops it: KeyboardInterrupt itself, or
    Python's RuntimeError for one raised inside a dataclass's ``__set_name__`` (augment.photo_shards')."""

    def __init__(self, name: str, wrapped: bool) -> None:
        self.name, self.wrapped = name, wrapped

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        if not self.wrapped:
            raise KeyboardInterrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as stop:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'params' in 'LabelledPhoto'") from stop


@pytest.mark.parametrize("wrapped", [False, True], ids=["interrupt", "set_name-error"])
def test_a_stop_while_a_command_imports_its_modules_is_one_interrupted_line(tmp_path, monkeypatch, wrapped):
    """expand stopped by SIGTERM ~2.5 s after it started (importing augment.expand, before its
    run_guarded): exit code 130 and no word at all, or a RuntimeError traceback (exit 1) when the
    stop came inside a dataclass's __set_name__."""
    monkeypatch.delitem(sys.modules, "augment.expand", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_StoppedImport("augment.expand", wrapped), *sys.meta_path])
    result = run_cli("expand", "--out", tmp_path / "out", "--num", 4)
    assert_one_line_error(result, 130, "interrupted")
    assert not (tmp_path / "out").exists()


def test_a_stop_another_error_stands_for_inside_a_run_is_the_interrupted_line_with_its_hint(tmp_path, monkeypatch):
    """Inside run_guarded the same stop (a module imported as SIGTERM came) was a traceback."""
    import augment.expand

    def stopped(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as stop:
            raise RuntimeError("Error calling __set_name__") from stop

    monkeypatch.setattr(augment.expand, "run_expand", stopped)
    result = run_cli("expand", "--out", tmp_path / "out", "--num", 4)
    assert_one_line_error(result, 130, "interrupted; rerun the same `synth expand` command")


def test_photo_shards_killed_part_way_keeps_its_finished_shards_and_ends_as_an_uninterrupted_run(tmp_path,
                                                                                                monkeypatch):
    """photo-shards did not resume: a run killed after writing some of its shards made every row again
    (reading, scaling and encoding each photo), the finished shards removed first."""
    import augment.photo_shards as photo_shards
    from augment.config import SourceConfig
    from segment_factory import make_scene_photos

    source = make_scene_photos(tmp_path / "labelled", count=7)
    monkeypatch.setattr(photo_shards, "PHOTO_ROWS_PER_SHARD", 2)
    photo_shards.write_photo_shards([source], tmp_path / "whole", SourceConfig())
    made = []
    real_row = photo_shards.photo_row

    def photo_row(row_id, photo, *args, **kwargs):
        if len(made) == 5 and kill:  # two shards written, the third under way
            raise KeyboardInterrupt
        made.append(row_id)
        return real_row(row_id, photo, *args, **kwargs)

    monkeypatch.setattr(photo_shards, "photo_row", photo_row)
    kill = True
    with pytest.raises(KeyboardInterrupt):
        photo_shards.write_photo_shards([source], tmp_path / "out", SourceConfig())
    kill, made = False, []
    photo_shards.write_photo_shards([source], tmp_path / "out", SourceConfig())
    assert made == ["photo004", "photo005", "photo006"]  # the first four rows were in the kept shards
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == whole
    # Another run's full shards in the folder (other photos) are not kept.
    (tmp_path / "out" / "manifest.json").unlink()
    photo_shards.write_photo_shards([source], tmp_path / "out", SourceConfig(include=["photo00[0-4]"]))
    assert len(made) == 3 + 5


def test_photo_shards_stopped_says_a_rerun_resumes(tmp_path, monkeypatch):
    """It said 'interrupted' alone."""
    import augment.photo_shards as photo_shards
    from segment_factory import make_scene_photos

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(photo_shards, "photo_row", stopped)
    result = run_cli("photo-shards", make_scene_photos(tmp_path / "labelled", count=2), "--out", tmp_path / "out")
    assert_one_line_error(result, 130, "interrupted; rerun the same `synth photo-shards` command to resume")
