"""The machinery of scripts/hardening_cases.py: a case's outcome (exit code, first error line or
traceback's exception), the runner that starts the CLI of one checkout in a process of its own, and the
tiny inputs the cases are made from (this checkout's test factories). Run hardening_cases.py, not this.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402

from augment.imageio import save_image  # noqa: E402
from shard_factory import make_shards  # noqa: E402
from sources_factory import make_backgrounds, make_rgba_source  # noqa: E402

TINY = "sources: {min_area: 50}\ncomposition: {width: 64, height: 64}\noutput: {shard_rows: 10, row_group_rows: 5}\n"


@dataclass
class Outcome:
    code: int | None
    stderr: str
    note: str = ""

    def summary(self) -> str:
        text = f"exit {self.code}"
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        if "Traceback" in self.stderr:
            exceptions = [line for line in lines if not line.startswith(("File ", "^", "~", "|")) and ":" in line
                          and line.split(":")[0].replace(".", "").isidentifier()]
            text += f"; {self.stderr.count('Traceback')} traceback(s): {exceptions[-1][:70] if exceptions else '?'}"
        else:
            errors = [line for line in lines if line.startswith("error:")]
            if errors:
                text += f"; {len(errors)} error line(s): {errors[0][7:][:100]}"
        return text + (f"; {self.note}" if self.note else "")


class Runner:
    def __init__(self, repo: Path, work: Path) -> None:
        self.repo, self.work = repo, work
        self.env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "200"}

    def command(self, *args: object) -> list[str]:
        return [sys.executable, "-m", "pipelines.cli", *map(str, args)]

    def run(self, *args: object, prefix: list[str] | None = None, python: list[str] | None = None) -> Outcome:
        command = (prefix or []) + (python or self.command(*args))
        result = subprocess.run(command, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=600)
        return Outcome(result.returncode, self.short(result.stderr))

    def short(self, text: str) -> str:
        """Paths in messages relative to the case's folder (shown as W), so the table stays readable."""
        return text.replace(str(self.work), "W")

    def start(self, *args: object) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), cwd=self.work, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


# ----------------------------------------------------------------- inputs
def inputs(work: Path) -> tuple[Path, Path, Path]:
    config = work / "tiny.yaml"
    config.write_text(TINY)
    return make_rgba_source(work / "objects"), make_backgrounds(work / "backgrounds"), config


def shards(work: Path) -> Path:
    return make_shards(work / "shards", n_cutouts=6, n_composites=12, rows_per_shard=6, rows_per_group=3).folder


def config_file(work: Path, text: str) -> Path:
    path = work / "case.yaml"
    path.write_text(text + "\n")
    return path


def image_file(path: Path, side: int) -> Path:
    save_image(path, np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8))
    return path


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}
