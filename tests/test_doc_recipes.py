"""The shell recipes of README.md and of the configs' header comments hang together as a newcomer runs
them, top to bottom: a folder a command reads (``--shards``, ``--eval-shards``, ``--checkpoint``,
``--calibration``, a ``--threshold`` file) is one an earlier line of the same recipe writes (its
``--out``; ``synth expand``'s default), a placeholder (``DIR``, ``CKPT``, ``...``), and a
``--config configs/X.yaml`` is a file of this repository. ``configs/train_cpu.yaml`` said ``synth train
--shards expanded/``, a folder no command writes (``no manifest.json``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READS = ("--shards", "--eval-shards", "--checkpoint", "--calibration", "--threshold")
WRITES = ("--out", "-o", "--state")


def _commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(command, arguments) of each ``synth CMD ...`` or ``... -m pipelines.cli CMD ...`` line,
    continuation lines joined, comments and the ``[optional]`` brackets dropped."""
    found, text = [], "\n".join(lines).replace("\\\n", " ")
    for line in text.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        tokens = [token.strip("[]") for token in tokens]
        starts = [i for i, token in enumerate(tokens) if token in ("synth", "pipelines.cli")]
        if starts and starts[0] + 1 < len(tokens) and re.fullmatch(r"[a-z][a-z-]*", tokens[starts[0] + 1]):
            found.append((tokens[starts[0] + 1], tokens[starts[0] + 2:]))
    return found


def _recipes() -> dict[str, list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M)
    recipes = {"README.md": [line for block in blocks for line in block.splitlines()]}
    for config in sorted((REPO / "configs").glob("*.yaml")):
        header = [line[1:] for line in config.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
        recipes[f"configs/{config.name}"] = header
    return recipes


def _expand_default_out() -> str:
    import typer

    from pipelines.cli import app

    expand = typer.main.get_command(app).commands["expand"]  # type: ignore[attr-defined]
    return next(p.default for p in expand.params if "--out" in p.opts)


def _placeholder(value: str) -> bool:
    return not re.search(r"[a-z]", value) or value.startswith("<")


def _problems(recipe: str, lines: list[str], default_out: str) -> list[str]:
    written: set[str] = set()
    problems = []
    for command, args in _commands(lines):
        for option, value in zip(args, args[1:]):
            if option in READS and not _placeholder(value) and not re.fullmatch(r"[\d.]+", value):
                path = value.rstrip("/")
                if path not in written and str(Path(path).parent) not in written:
                    problems.append(f"{recipe}: synth {command} {option} {value}: no earlier line writes it")
            if option == "--config" and value.startswith("configs/") and not (REPO / value).is_file():
                problems.append(f"{recipe}: synth {command} --config {value}: no such file")
        outs = [value.rstrip("/") for option, value in zip(args, args[1:]) if option in WRITES]
        written.update(outs or ([default_out] if command == "expand" else []))
    return problems


def test_every_folder_a_documented_command_reads_is_written_before_it() -> None:
    default_out = _expand_default_out()
    recipes = _recipes()
    checked = sum(len(_commands(lines)) for lines in recipes.values())
    problems = [problem for name, lines in recipes.items() for problem in _problems(name, lines, default_out)]
    assert checked >= 30 and not problems, "\n".join(problems) or f"only {checked} command lines found"


def test_every_documented_command_line_names_real_commands_and_options() -> None:
    """Each ``synth CMD --option`` of README's shell examples and of the configs' headers is a command
    and an option it takes (a renamed option left in a document fails here, not in a newcomer's terminal)."""
    import typer

    from pipelines.cli import app

    group = typer.main.get_command(app)
    problems = []
    for recipe, lines in _recipes().items():
        for name, args in _commands(lines):
            command = group.commands.get(name)  # type: ignore[attr-defined]
            if command is None:
                problems.append(f"{recipe}: no command synth {name}")
                continue
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            problems += [f"{recipe}: synth {name} has no {option}" for option in args
                         if re.fullmatch(r"--?[a-zA-Z][\w-]*", option) and option not in options]
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_folder_no_line_writes() -> None:
    lines = ["synth expand sample_data/objects -o expanded/sample",
             "synth train --shards expanded/ --out runs/cpu --config configs/train_cpu.yaml",
             "synth eval --shards expanded/sample --checkpoint runs/cpu/checkpoint.pt --config configs/nope.yaml"]
    assert _problems("example", lines, "expanded/sample") == [
        "example: synth train --shards expanded/: no earlier line writes it",
        "example: synth eval --config configs/nope.yaml: no such file"]


def test_every_checkpoint_option_says_it_takes_a_run_folder() -> None:
    """README: --checkpoint (extract, segment, search, eval, calibrate, export-onnx, export-head) also takes
    the run's folder; eval, segment, extract, export-onnx and export-head's --help said checkpoint.pt only."""
    import typer

    from pipelines.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    helps = {name: param.help for name, command in commands.items() for param in command.params
             if "--checkpoint" in param.opts}
    assert len(helps) >= 7 and not [name for name, text in helps.items() if "run folder" not in text], helps


def test_segment_cpu_yaml_sets_every_key_of_task_segment() -> None:
    """configs/segment_cpu.yaml says it holds every key of task segment (its header and README point
    there for them); init_checkpoint, init_optimizer and schedule_offset, which selftune's fine-tuning
    uses, were missing. The keys left out are those only the query search reads."""
    import dataclasses

    import yaml

    from train.config import TrainConfig
    from train.segment_config import SegmentConfig
    from train.segment_model import SegmentNetConfig

    query_search_only = {"loss", "loss_params", "box_loss_weight", "label_categories", "label_loss_weight",
                         "query_size", "medium_size", "negative_fraction", "eval_fraction", "query_fill",
                         "colour_jitter", "hard_negative_fraction", "real_fraction"}
    config = yaml.safe_load((REPO / "configs" / "segment_cpu.yaml").read_text(encoding="utf-8"))
    wanted = {f.name for f in dataclasses.fields(TrainConfig)} - query_search_only
    missing = sorted(name for name in wanted if name not in config and not name.startswith("photo_"))
    missing += [f"model.{f.name}" for f in dataclasses.fields(SegmentNetConfig) if f.name not in config["model"]]
    missing += [f"segment.{f.name}" for f in dataclasses.fields(SegmentConfig) if f.name not in config["segment"]]
    assert not missing, missing
