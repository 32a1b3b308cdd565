"""A newcomer follows README.md to the letter: what its commands print and what it says of each option."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_option_a_commands_help_lists_is_named_in_the_readme() -> None:
    """README named no `show --rows/--columns/--tile`, `eval --batches`, `export-onnx --no-check`,
    `calibrate --min-area` nor `photo-shards --short-side`: a reader of README alone never learned of them."""
    import typer

    from pipelines.cli import app

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", readme))
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    options = [(name, [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--") and o != "--help"])
               for name, command in commands.items() for param in command.params]
    missing = [f"synth {name} {'/'.join(flags)}" for name, flags in options if flags and not set(flags) & named]
    assert len(commands) >= 13 and not missing, missing
