"""Running the CLI in-process and asserting the shape of a user error: its exit code, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from pipelines.cli import app


def run_cli(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Result, code: int = 2, *fragments: str) -> str:
    """The command failed with ``code``, printed exactly one line on stderr holding ``fragments``,
    and raised nothing but its exit (an uncaught exception is a traceback for the user)."""
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_cli_process(args: list[object], cwd: Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, from the installed (or PYTHONPATH) package, not ``cwd``."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"}, **kwargs)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def files_under(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (outside ``skip``) with its size and mtime: what a run must not touch."""
    found = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


_KILLED_WRITE = """
import os, signal, sys
from augment.atomic_files import atomic_path, temporary_folder_beside
if sys.argv[2] == "folder":  # a staging folder made, its process gone before it was used
    print(temporary_folder_beside(sys.argv[1], ".new"))
    sys.exit(0)
with atomic_path(sys.argv[1]) as temporary:
    temporary.write_bytes(b"half written")
    print(temporary, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(path: Path, kind: str = "file") -> Path:
    """What a process of its own leaves beside ``path`` when it is killed (SIGKILL) while writing it
    atomically (``kind`` file), or when it made a temporary folder beside it and ended (``folder``)."""
    root = Path(__file__).resolve().parents[1]  # this checkout's package, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(path), kind], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == (0 if kind == "folder" else -9), done.stderr
    left = Path(done.stdout.strip())
    assert left.exists() and left.parent == path.parent, done.stdout
    return left
