"""The process's open-file limit, as loader workers need it.

PyTorch's DataLoader workers hand each batch's tensors to the main process as file descriptors
(its default ``file_descriptor`` sharing strategy), several batches in flight per worker. Under a
low ``ulimit -n`` (64, as a shared server's or a container's) training died at its first batch:
the workers' ``OSError: [Errno 24] Too many open files`` tracebacks, then ``Aborted.`` (an
``EOFError`` in the main process), exit code 1. torch's other strategy (``file_system``) needs no
descriptors but leaves the batches in flight as files in /dev/shm when the workers end (~10 MB a run).
"""

from __future__ import annotations

import logging
import resource

from augment.imageio import InputError

log = logging.getLogger(__name__)

WANTED = 1024  # open files the soft limit is raised to where the hard limit allows (the common default)
NEEDED = 256  # open files loader workers need at least (a CPU run's 2 workers went at 128, not at 64)


def ready_for_loader_workers(num_workers: int, wanted: int = WANTED, needed: int = NEEDED) -> int:
    """Raise the soft open-file limit to ``wanted`` (or the hard limit, if lower) before ``num_workers``
    loader workers start; an :class:`InputError` naming ``ulimit -n`` and ``num_workers`` where it stays
    under ``needed``. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        log.debug("open-file limit raised from %d to %d", soft, raised)
        soft = raised
    if num_workers and soft < needed:
        raise InputError(f"open files are limited to {soft} (ulimit -n, hard limit {hard}): the data loader's "
                         f"workers pass batches as open files and need about {needed}; raise the hard limit "
                         f"(/etc/security/limits.conf nofile, a container's --ulimit nofile={wanted}) or set "
                         f"num_workers: 0")
    return soft
