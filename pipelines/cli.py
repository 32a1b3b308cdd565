"""The `synth` command line: expand, show, export (and train/search commands registered from their modules).

Exit codes: 0 done; 1 done, but some inputs failed (each listed); 2 a user error, one line naming
the file or key; 3 the output folder or file is busy (another run is writing it); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import collections
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from augment.imageio import InputError
from augment.system import stands_for_interrupt

from typer._click import exceptions as click_errors  # the click typer parses with: its own copy (typer 0.26 on)

from pipelines.command_errors import (COMMAND_ENDINGS, ENVIRONMENT_ERRNOS, INTERRUPTED_EXIT_CODE, environment_error,
                                      check_at_least, fail, run_guarded)
from pipelines.environment import (check_working_folder, command_ended, expand_home, memory_line, process_exiting,
                                   stop_as_interrupt)
from pipelines.shipped_configs import config_option
from pipelines.terminal import (console, counted, help_ends_quietly_on_broken_pipe, make_progress, out_console,  # noqa: F401
                                per_second, plain_help_when_narrow, say, setup_logging)  # (the commands' console and progress)


class _Commands(typer.core.TyperGroup):
    """synth's commands: a stop (Ctrl-C, SIGTERM) that lands outside :func:`run_guarded` (a command's
    imports and option checks, its last lines of output) is the one line ``interrupted`` and exit code
    130, as inside it. typer ended such a run with 130 and no word; one raised while a module was being
    imported came out as another error (RuntimeError from a dataclass's ``__set_name__``) and a traceback.

    A mistyped command line (an unknown option or command, ``--rows abc``, a missing argument) is one
    line too, exit code 2: typer drew it as a box of five lines or more, wrapped inside its frame to the
    terminal's width (80 columns in a log file, mid-sentence)."""

    def make_context(self, info_name, args, parent=None, **extra):
        plain_help_when_narrow(self)
        help_ends_quietly_on_broken_pipe(self)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_errors.ClickException as error:
            _usage_error(error)
        except BrokenPipeError:  # `synth --help | head -1` on a narrow terminal (click's plain help)
            out_console.on_broken_pipe()

    def resolve_command(self, ctx, args):  # a '~' that no shell expanded (systemd, a container's exec form)
        name, command, rest = super().resolve_command(ctx, args)
        try:
            return name, command, expand_home(rest)
        except InputError as error:
            fail(str(error))

    def invoke(self, ctx):
        try:
            return self._invoke(ctx)
        finally:
            command_ended()  # (in-process use keeps its own unraisablehook between commands)

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except COMMAND_ENDINGS:  # run_guarded's own line was printed (its context is the stop)
            raise
        except click_errors.ClickException as error:
            _usage_error(error)
        except BrokenPipeError:  # typer.echo's reader gone (`--print-config | head`): as out_console's
            out_console.on_broken_pipe()
        except OSError as error:  # a result line written after the work, outside run_guarded (<stdout>: full)
            if error.errno not in ENVIRONMENT_ERRNOS:
                raise
            environment_error(error)
        except BaseException as error:
            if line := memory_line(error):  # outside run_guarded: torch imported under a ulimit -v
                fail(line, 1)
            if not stands_for_interrupt(error):
                raise
        fail("interrupted", INTERRUPTED_EXIT_CODE)


def _usage_error(error: click_errors.ClickException) -> None:
    if isinstance(error, click_errors.NoArgsIsHelpError):  # `synth` alone: its help, as asked
        raise error
    context = getattr(error, "ctx", None)
    where = f" (see {context.command_path} --help)" if context is not None else ""
    if getattr(error, "option_name", None) in ("-v", "--verbose") and context is not None and context.parent:
        # `synth show -v ...`: the option is synth's own, before the command (show's --help does not list it)
        where = f" (-v goes before the command: {context.parent.command_path} -v {context.info_name} ...)"
    fail(f"{error.format_message().rstrip('. ')}{where}", error.exit_code)


class _App(typer.Typer):
    """The app as the console script (``synth``) and ``python -m pipelines.cli`` call it: once it has
    returned the process exits, and a stop from then on is ``interrupted`` and 130, not an atexit
    traceback (:func:`pipelines.environment.process_exiting`). A program invoking the app in-process (a
    test's CliRunner) does not go through here: its SIGTERM stays a KeyboardInterrupt after a command."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        finally:
            process_exiting()


app = _App(
    cls=_Commands,
    name="synth",
    help="Find a query object in images and videos, and manufacture the training data to do it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
REPO_ROOT = Path(__file__).resolve().parents[1]


def sample_data_dir(missing: str = "SOURCES") -> Path:
    """sample_data/ of the working directory, else the source checkout's (synth run from its tree). An
    installed synth (a wheel) ships no sample data: without one here, one line says which of the
    defaulted inputs (``missing``) to name."""
    for folder in (Path("sample_data"), REPO_ROOT / "sample_data"):
        if folder.is_dir():
            return folder
    fail(f"no {missing} given and no sample_data/ in {Path.cwd()} (the sample data comes with synth's source "
         f"checkout, not the installed package): name {'the source folders and --backgrounds' if missing == 'SOURCES' else 'it'}")


# What to do after Ctrl-C, for the commands that can resume.
EXPAND_RESUME_HINT = "rerun the same `synth expand` command to resume (finished shards are kept)"
TRAIN_RESUME_HINT = "rerun the same `synth train` command with --resume to continue from the last checkpoint"
# Stopped before its first checkpoint, a run has nothing to resume from (`--resume` would be refused).
TRAIN_RESTART_HINT = ("no checkpoint was written yet; rerun the same `synth train` command without --resume "
                      "to start the run again")
SEARCH_RESUME_HINT = ("rerun the same `synth search` command: it keeps the still images it finished and "
                      "searches the rest (videos again from their start)")


def _print_version(asked: bool) -> None:
    """``synth --version``: the installed distribution's version (what expand's manifest records)."""
    if not asked:
        return
    from importlib import metadata

    try:
        version = metadata.version("synth")
    except metadata.PackageNotFoundError:  # run from a source tree on PYTHONPATH, never installed
        version = "(not installed)"
    out_console.print(f"synth {version}", highlight=False)  # a reader gone: the results' quiet exit
    raise typer.Exit()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every skipped input and step."),
         version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print synth's version and exit.")) -> None:
    setup_logging(verbose)
    from augment.imageio import is_utf8, name_fix, shown_name
    from augment.pixel_limit import max_megapixels

    # A path typed or globbed with a name that is not UTF-8 (caf\xe9 from an old archive): Parquet,
    # JSON, pyarrow's file systems and OpenCV cannot hold it (tracebacks, a crash), so one line now.
    # Names inside an input folder are warned about and left out (augment.imageio.walk_files).
    for argument in sys.argv[1:]:
        if not is_utf8(argument):
            fail(f"{shown_name(argument)}: a name that is not UTF-8; {name_fix(argument)}")

    run_guarded(max_megapixels)  # a malformed SYNTH_MAX_MEGAPIXELS: one line now, not one per image read
    run_guarded(check_working_folder)  # removed under a cron job or CI step: torch's MKL cannot even load
    stop_as_interrupt()  # SIGTERM, a session's SIGHUP: as Ctrl-C


@app.command()
def expand(
    # Strings, not Paths: a Path would fold the '//' of an s3:// URI.
    sources: Optional[list[str]] = typer.Argument(
        None, help="Source folders (or COCO .json files), local or s3://, gs:// URIs. Default: sample_data/objects."
    ),
    backgrounds: Optional[str] = typer.Option(None, "--backgrounds", "-b", help="Folder (or s3://, gs:// prefix) of "
                                              "background images, or a labelled source (label_map, mask_pairs) with the "
                                              "config's backgrounds.format (copy-paste). Default: sample_data/backgrounds."),
    out: str = typer.Option("expanded/sample", "--out", "-o", help="Output folder (or s3://, gs:// prefix) for shards, "
                            "objects.parquet and manifest.json."),
    num: Optional[int] = typer.Option(None, "--num", "-n", help="Composites to make (default: the config's num, 1000)."),
    config_file: Optional[Path] = typer.Option(
        None, "--config", "-c", callback=config_option, help="YAML config; every option and its default is documented in configs/expand.yaml."
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0 = one per usable CPU: affinity, CPU quota); with --engine ray "
                                "and no --ray-address, the CPUs of the local Ray."),
    engine: str = typer.Option("local", "--engine", help="local (processes on this machine) or ray (a Ray cluster; "
                               'pip install "synth\\[ray]").'),  # \[: rich markup would eat [ray]
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --engine ray: the cluster to join "
                                              "(HOST:PORT of the head, or auto); default: start a local Ray."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Run seed (default: the config's seed, 0)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the shards of another run (other seed or "
                                   "config) found in --out, instead of refusing to mix them."),
    source_format: Optional[str] = typer.Option(
        None, "--source-format", help="auto | mask_pairs | rgba | coco | label_map | objects | labelme | yolo | cvat_mask (default: the config's, auto)."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print every option with its default and meaning, then exit."),
) -> None:
    """Cut objects from SOURCES and composite them onto backgrounds with distortions, into Parquet shards.

    Rerunning the same command resumes: finished shards are kept, the rest are made.
    The same seed gives byte-identical shards whatever the number of workers.
    Exit codes: 0 done, 2 a user error (one line), 3 --out is busy with another run, 130 interrupted.
    """
    from augment.config import ExpandConfig, example_yaml
    from augment.cutouts import default_workers
    from augment.expand import run_expand

    if print_config:
        typer.echo(example_yaml(), nl=False)
        raise typer.Exit(0)
    from augment.outputs import check_output_folder
    from augment.storage import is_uri

    check_at_least(num, 1, "--num")
    check_at_least(seed, 0, "--seed")
    check_at_least(workers, 0, "--workers")
    if not is_uri(out):
        run_guarded(check_output_folder, out)
    config = run_guarded(ExpandConfig.from_yaml, config_file) if config_file else ExpandConfig()
    if num is not None:
        config.num = num
    if seed is not None:
        config.seed = seed
    if source_format is not None:
        config.sources.format = source_format
    # The config file's own values were checked as it loaded: a problem now is an option's.
    run_guarded(config.validate, "--source-format" if source_format else "--num" if num is not None else "config")
    if config.num < 1:
        fail("num must be at least 1")
    sources = sources or [str(sample_data_dir() / "objects")]
    backgrounds = backgrounds or str(sample_data_dir("--backgrounds") / "backgrounds")
    workers = workers or default_workers()

    with make_progress() as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            known = total or None  # 0: not known ahead (objects read from the sources), a pulsing bar
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=known, rate="")
            task = progress.tasks[tasks[stage]]
            speed = f"{task.speed:.0f} /s" if task.speed else ""
            progress.update(tasks[stage], completed=done, total=known, rate=speed)

        result = run_guarded(run_expand, sources, backgrounds, out, config, workers, report, overwrite, engine,
                             ray_address, interrupt_hint=EXPAND_RESUME_HINT)

    manifest = result.manifest
    made = result.rows_written
    table = Table(title=f"synth expand → {out}", show_header=False)
    table.add_row("composites", f"{manifest['num_rows']} ({made} made now, {counted(result.shards_skipped_as_done, 'shard')} already done)")
    table.add_row("shards", str(len(manifest["shards"])))
    table.add_row("cutouts", str(manifest["objects"]["cutouts"]))
    table.add_row("backgrounds", str(manifest["backgrounds"]["count"]))
    stats = result.engine_stats
    table.add_row("engine", f"ray ({counted(stats.get('cluster_cpus', 0), 'CPU')} on {counted(stats.get('nodes', 0), 'node')}, "
                  f"{counted(stats.get('render_tasks', 0), 'render task')})" if engine == "ray" else f"local, {counted(workers, 'worker')}")
    table.add_row("time", f"{result.seconds:.1f} s ({per_second(made, result.seconds)} composites/s overall)")
    reasons = collections.Counter(_reason_kind(s.reason) for s in result.skips)
    table.add_row("skipped inputs", f"{len(result.skips)}" + "".join(f"\n  {n} × {r}" for r, n in reasons.most_common(5)))
    out_console.print(table)


def _reason_kind(reason: str) -> str:
    """Group skip reasons for the summary (drop the file name and numbers)."""
    text = reason.split(": ", 1)[-1] if reason.startswith("/") else reason
    return "".join("N" if ch.isdigit() else ch for ch in text)[:80]


MAX_SHEET_PIXELS = 100_000_000  # a contact sheet past this is a typo, not a wish (300 MB of RGB)
SHEET_SUFFIXES = (".png", ".jpg", ".jpeg")


@app.command()
def show(
    shards: list[str] = typer.Argument(..., help="Shard files or folders (or s3://, gs:// prefixes)."),
    out: Path = typer.Option(Path("sheet.png"), "--out", "-o", help="Contact sheet image to write."),
    rows: int = typer.Option(4, help="Rows of the grid."),
    columns: int = typer.Option(4, help="Columns of the grid."),
    tile: int = typer.Option(256, help="Tile size in pixels."),
    seed: int = typer.Option(0, help="Which random rows to show."),
) -> None:
    """Write a contact sheet of random composites with instance masks and boxes drawn."""
    from augment.contact_sheet import check_replaceable_sheet, contact_sheet
    from augment.locking import file_lock
    from augment.outputs import check_output_file

    check_at_least(rows, 1, "--rows")
    check_at_least(columns, 1, "--columns")
    check_at_least(tile, 16, "--tile")
    check_at_least(seed, 0, "--seed")
    if rows * columns * tile * tile > MAX_SHEET_PIXELS:
        fail(f"--rows x --columns x --tile² is {rows * columns * tile * tile} pixels; at most {MAX_SHEET_PIXELS}")
    run_guarded(check_output_file, out)
    if out.suffix.lower() not in SHEET_SUFFIXES:  # save_image writes PNG bytes under any other name
        fail(f"{out}: --out must end in .png or .jpg (a contact sheet image), not {out.suffix or '(no suffix)'!r}")
    from train.shard_set import reading_shards

    # A second `synth show` (or another command) writing this file stops at once with one line; shards
    # that an expand is writing now (no manifest.json yet) are busy, exit code 3, not a broken folder.
    with ExitStack() as held:
        run_guarded(held.enter_context, file_lock(out, "show run"))
        run_guarded(check_replaceable_sheet, out)
        run_guarded(held.enter_context, reading_shards(shards, what="synth show", create_locks=False))
        drawn = run_guarded(contact_sheet, shards, out, rows, columns, tile, seed)
    out_console.print(f"wrote {out} ({counted(drawn, 'composite')})")


@app.command()
def export(
    shards: list[str] = typer.Argument(..., help="Shard files or folders (or s3://, gs:// prefixes)."),
    format: str = typer.Option("coco", "--format", "-f", help="Export format (coco)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
) -> None:
    """Export shards to another format: COCO = images/ plus annotations.json with RLE masks."""
    from augment.coco_export import export_coco
    from train.shard_set import reading_shards

    if format != "coco":
        fail(f"--format {format!r} is not supported (supported: coco)")
    # Shards that an expand is writing now (no manifest.json yet) are busy, exit code 3, not a broken folder.
    with ExitStack() as held:
        run_guarded(held.enter_context, reading_shards(shards, what="synth export", create_locks=False))
        counts = run_guarded(export_coco, shards, out)
    out_console.print(f"wrote {out}: {counted(counts['images'], 'image')}, {counted(counts['annotations'], 'annotation')}, "
                      f"{counted(counts['categories'], 'category', 'categories')}")
    if counts["skipped"]:
        reasons = ", ".join(f"{n} × {reason}" for reason, n in counts["skip_reasons"].items())
        console.print(f"skipped {counted(counts['skipped'], 'row')}: {reasons}", highlight=False)


def _register_optional_commands() -> None:
    """Commands of the train, search and segmentation stages live beside their code."""
    import importlib

    for module_name in ("pipelines.train_commands", "pipelines.search_commands", "pipelines.segment_commands"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register(app)


_register_optional_commands()


if __name__ == "__main__":
    sys.exit(app())
