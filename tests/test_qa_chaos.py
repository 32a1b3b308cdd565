"""Commands killed (SIGKILL) at the moments a kill-and-rerun sweep found unsafe, and rerun: the rerun
leaves nothing of the killed run behind and ends as an uninterrupted run. Each kill is a real one, in a
process of its own, at a point reached by patching the call it happens in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_checks import run_cli
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
