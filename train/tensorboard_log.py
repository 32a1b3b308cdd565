"""The training run's TensorBoard writer (:func:`tensorboard_writer`): a failed write names its folder,
and its writer thread's OSError is left to the training thread to raise."""

from __future__ import annotations

import threading
from pathlib import Path

from augment.atomic_files import naming_errors


def tensorboard_writer(folder: Path, purge_step: int):
    """TensorBoard's writer into ``folder``. A full disk under it is one line naming ``folder``: its
    write errors name no file, and its writer thread, which fails first, printed a traceback ("Exception
    in thread") before the training thread raised the same error; that thread's is left to the training
    thread now (:func:`_quiet_tensorboard_threads`)."""
    from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in TensorBoard

    if threading.excepthook is not _quiet_tensorboard_threads:
        _quiet_tensorboard_threads.previous = threading.excepthook
        threading.excepthook = _quiet_tensorboard_threads
    with naming_errors(folder):
        return SummaryWriter(str(folder), purge_step=purge_step)


def _quiet_tensorboard_threads(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: an OSError of TensorBoard's writer thread is not printed (the writer raises
    it again in the thread that logs next); anything else as before."""
    if not (args.exc_type is not None and issubclass(args.exc_type, OSError)
            and type(args.thread).__name__ == "_AsyncWriterThread"):
        _quiet_tensorboard_threads.previous(args)

