"""`synth expand --engine ray` stopped by SIGTERM (a scheduler, `kill`): ray.init installs its core worker's
C-level handler, which answered with a stack dump and abort() (exit 134): no "interrupted; rerun" line, the
lock left to go stale, shards in flight lost. The CLI's handlers are put back after ray.init."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray", reason='Ray not installed (pip install -e ".[test]" or "synth[ray]")')
REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from augment.engines.ray_engine import RayEngine

    stopped = []
    signal.signal(signal.SIGTERM, lambda number, frame: stopped.append(number))  # as the CLI's: a stop
    with RayEngine(None, 1):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a point where Python runs its handlers
        print("stopped" if stopped else "not seen", flush=True)
""")


def test_sigterm_reaches_the_clis_handler_after_ray_init(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=180,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped" in result.stdout
    assert "SIGTERM received" not in result.stderr
