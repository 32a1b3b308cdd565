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
