"""The output-folder lock: exclusive across processes, released when the holder dies."""

from __future__ import annotations

import pytest

from augment.locking import BusyError, folder_lock
from lock_checks import held_elsewhere, take_when_free


def test_second_holder_is_refused_until_the_first_dies(tmp_path):
    with held_elsewhere("folder_lock", tmp_path) as holder:
        with pytest.raises(BusyError, match=str(holder.pid)):
            with folder_lock(tmp_path):
                pass
    take_when_free(lambda: folder_lock(tmp_path))
