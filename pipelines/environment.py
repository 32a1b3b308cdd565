"""What a command line gets from the environment a scheduler gives it (systemd, cron, a container, CI)
rather than from a shell: arguments that no shell expanded.

A ``~`` reaches synth as typed where no shell ran (systemd's ``ExecStart=``, a container's exec form,
Kubernetes' ``args``, ``subprocess`` with a list). Python's paths keep it literally, but pyarrow's
readers and writers expand it to the home folder: ``--out ~/found`` made a folder named ``~`` in the
working directory for synth's own files while its Parquet tables went to ``$HOME/found`` (an expand
failed once its objects table was written, leaving a part-made ``./~/found``; ``train --shards ~/x``
listed ``./~/x`` and read ``$HOME/x``). A leading ``~`` is expanded here, as a shell would, before any
command sees it, so every layer names the same file.
"""

from __future__ import annotations

import os

from augment.imageio import InputError


def expand_home(arguments: list[str]) -> list[str]:
    """``arguments`` with a leading ``~`` or ``~user`` expanded as a shell expands it, in an argument of
    its own or in an option's ``--name=~/...`` value; :class:`InputError` (one line) where it names no
    home folder (HOME unset and the user not in the password database, or no such user). A folder
    named ``~`` is given by its full path (pathlib reads ``./~/x`` as ``~/x``, which pyarrow expands)."""
    return [_expanded(argument) for argument in arguments]


def _expanded(argument: str) -> str:
    head, equals, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
    if not value.startswith("~"):
        return argument
    expanded = os.path.expanduser(value)
    if expanded.startswith("~"):
        user = value[1:].split("/", 1)[0]
        why = f"no user named {user!r}" if user else "HOME is not set and this user has no home in the password database"
        raise InputError(f"{value}: '~' names no home folder here ({why}); give the full path")
    return f"{head}{equals}{expanded}"
