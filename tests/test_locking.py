"""The output-folder lock: exclusive across processes, released when the holder dies."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from augment.locking import BusyError, folder_lock

HOLD = """
import sys, time
from augment.locking import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_holder_is_refused_until_the_first_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=str(holder.pid)):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the flock
        holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with folder_lock(tmp_path):
                break
        except BusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
