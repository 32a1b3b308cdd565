"""`synth expand`'s forked worker pools end when terminated, with the CLI's SIGTERM handler installed.

The CLI turns SIGTERM into Ctrl-C with a Python-level handler that forked workers inherit. Such a
handler runs only between bytecodes, and a signal that reaches a child before its interpreter is
ready is lost: ``Pool.terminate()`` then left a worker waiting on the task queue's lock and
``join()`` hung for good (`synth expand` wrote every shard, then never returned and wrote no
manifest). :func:`augment.system.fork_pool` forks the workers with SIGTERM blocked and their
initializer restores the default action.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from augment.system import fork_pool

REPO = Path(__file__).resolve().parents[1]


def _disposition(_: int) -> tuple[bool, bool]:
    """In a worker: is SIGTERM at its default action, and unblocked?"""
    blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    return signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, not blocked


def test_workers_end_at_sigterm_whatever_handler_the_parent_has():
    import pipelines.environment as cli

    previous = signal.signal(signal.SIGTERM, cli._terminate_as_interrupt)
    try:
        pool = fork_pool(2)
        try:
            assert pool.map(_disposition, range(4)) == [(True, True)] * 4
        finally:
            pool.terminate()
            pool.join()
        # The parent's own mask is as it was.
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_terminating_fresh_pools_never_hangs():
    """Pools terminated as soon as they are made (the widest window for the lost signal): with the
    inherited handler alone this hung within a few dozen pools; here 150 must all end."""
    script = textwrap.dedent("""
        import os, signal
        import pipelines.environment as cli
        from augment.system import fork_pool
        cli._HANDLER_PID = os.getpid()
        signal.signal(signal.SIGTERM, cli._terminate_as_interrupt)
        for _ in range(150):
            pool = fork_pool(2)
            pool.terminate()
            pool.join()
        print("done")
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the hung workers too
        process.communicate()
        raise AssertionError("a terminated pool's join() hung") from None
    assert process.returncode == 0 and "done" in stdout, stderr
