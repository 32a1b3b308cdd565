"""Where the command line writes: one console for errors, warnings and progress (stderr), one for a
command's result (stdout), and the logging handler that writes a record as one line."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
import signal
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text


def one_line(text: str) -> str:
    """``text`` with its control characters shown as escapes (``\\n``, ``\\x1b``): a file name holding a
    newline made an error two lines (the second free to pose as a line of its own in a log), one holding
    ESC sent its escape sequence to the terminal (colours, a cleared screen)."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


class _Stream(Console):
    """A console whose text is printed one line each (control characters escaped by :func:`one_line`: 'wrote
    out/a\\nb.png' was two lines) and whose failed write names its stream: ``synth show ... > /full/log``
    wrote the sheet, then ended in rich's OSError traceback (no file named); it is '<stdout>: No space left
    on device'. COLUMNS=0 (a CI runner's, a terminal of unknown size) is no width: rich took it as 0 and
    printed nothing at all, the error line of a failed command too."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.width < 1:
            self.width = shutil.get_terminal_size().columns  # the terminal's, else 80 (COLUMNS 0 left out)

    def on_broken_pipe(self) -> None:
        """stderr's reader gone (journald restarted under a service, ``2>&1 | head`` done reading): the run
        goes on without its log lines, to its exit code. rich ended the run at the next warning or info
        line with exit code 1 (no manifest, no shards: a selftune round lost to a log reader) and sent
        stdout, not stderr, to /dev/null. A result's reader gone (``synth show ... | head -c1``; a result
        line is printed once the outputs are whole) ends quietly as ``git log | head`` ends, exit code 141
        (128 + SIGPIPE), not rich's exit code 1, which read as a failed run."""
        self.quiet = True
        stream = sys.stderr if self.stderr else sys.stdout
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())  # Python's own lines (a flush at exit) go there too
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # (no stream to replace: nothing more is written)
            pass
        if not self.stderr:
            raise SystemExit(128 + signal.SIGPIPE)

    def print(self, *objects, **kwargs) -> None:
        try:
            super().print(*(one_line(item) if isinstance(item, str) else item for item in objects), **kwargs)
        except OSError as error:
            if error.filename is None:
                error.filename = "<stderr>" if self.stderr else "<stdout>"
            raise


# soft_wrap: a line longer than the terminal (or than a log file's 80 columns) is written whole, for the
# terminal to fold, never broken by rich mid-path into lines of its own (a grep of a cron log finds it).
# markup off: what is printed is the text given, a path's brackets too ('wrote runs/a[/x].png' was rich's
# MarkupError traceback after the sheet was written; 'co[co]' was said 'co'); styled heads by say().
console = _Stream(stderr=True, soft_wrap=True, markup=False)
# A command's result (expand's summary, show's and export's line) on stdout.
out_console = _Stream(soft_wrap=True, markup=False)


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """"1 image", "2 images" (summaries said "1 images", "1 detections", "local, 1 workers")."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def per_second(count: int, seconds: float) -> str:
    """A rate as a summary shows it: whole numbers from 10 on, two significant digits under (32
    composites in 501.7 s were '0 composites/s', as though none had been made)."""
    rate = count / max(seconds, 1e-9)
    return f"{rate:.0f}" if rate >= 10 or rate == 0 else f"{rate:.2g}"


def say(head: str, message: str, style: str = "bold red") -> None:
    """One line on stderr, ``HEAD: MESSAGE``, its head styled (the message's brackets printed as they are,
    its control characters escaped by :func:`one_line`)."""
    console.print(Text.assemble((f"{head}:", style), " ", one_line(str(message))), highlight=False)


def make_progress() -> Progress:
    """A command's progress bar, on a terminal only: a log file (cron, CI) got the bar's last state as
    lines of its own at the end, beside the summary that says the same."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


class LineHandler(logging.Handler):
    """A log record as one line on stderr, ``warning: MESSAGE``, as :func:`pipelines.command_errors.fail` writes
    ``error: ...``. rich's RichHandler set the message in a column beside the level, wrapped to the
    console's width (80 in a log file): a warning naming a long path came out as several lines, broken
    mid-word, padded with spaces. A warning said once already is not said again (a source folder
    listed twice, for its cutouts and its labels, warned of its broken links twice)."""

    STYLES = {"WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}
    REMEMBERED = 10_000

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname.lower()}: {self.format(record)}"
            if record.levelno >= logging.WARNING:
                if line in self.said:
                    return
                if len(self.said) < self.REMEMBERED:  # a run of a million distinct skips keeps no million lines
                    self.said.add(line)
            head, message = line.split(": ", 1)
            say(head, message, self.STYLES.get(record.levelname, "dim"))
        except Exception:
            self.handleError(record)


def setup_logging(verbose: bool) -> None:
    """Log records as lines on stderr (INFO with ``-v``), and a stream that cannot encode a character
    (PYTHONIOENCODING=ascii, a Latin-1 terminal) writes it escaped: the summary's '→' or a path's 'é'
    was a UnicodeEncodeError traceback after the run's work was done."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", None) == "strict":
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[LineHandler()], force=True)


# rich's help (typer's panels) sets options, types and help in table columns; under this width it cuts
# them short with '…' (`--source-form…`, `[default: sheet.pn…`: 268 cut at COLUMNS=40, 6 at 60).
RICH_HELP_MIN_WIDTH = 80


def plain_help_when_narrow(command) -> None:
    """On a terminal narrower than :data:`RICH_HELP_MIN_WIDTH`, ``command`` and its subcommands write
    click's plain help, which wraps every word and cuts none (rich's markup escape ``\\[`` undone)."""
    if Console().width >= RICH_HELP_MIN_WIDTH:
        return
    command.rich_markup_mode = None
    for param in command.params:
        if getattr(param, "help", None):
            param.help = param.help.replace("\\[", "[")
    for sub in getattr(command, "commands", {}).values():
        if not sub.short_help and sub.help:  # click cut the list's summaries at 45 characters ('Cut objects from...')
            sub.short_help = " ".join(inspect.cleandoc(sub.help).split("\n\n")[0].split())
        plain_help_when_narrow(sub)


def help_ends_quietly_on_broken_pipe(command) -> None:
    """``command`` and its subcommands write their help as a result is written: a reader gone
    (``synth --help | head -1``, ``synth search --help | head -1``) ends quietly with 141, as
    :meth:`_Stream.on_broken_pipe` ends a result. typer's help console is rich's own, whose reader gone
    was exit code 1 (a failed command to a script under pipefail). typer's help module is imported
    only once help is asked for (~0.16 s), so the console is swapped there, for the help's length."""
    if getattr(command, "_help_quiet_on_broken_pipe", False):
        return
    command._help_quiet_on_broken_pipe = True
    format_help = command.format_help

    def quiet_format_help(ctx, formatter) -> None:
        from typer import rich_utils

        make_console = getattr(rich_utils, "_get_rich_console", None)
        if make_console is None:  # a typer that renamed it: its own help (a closed pipe ends it as before)
            format_help(ctx, formatter)
            return

        def help_console(stderr: bool = False) -> Console:
            made = make_console(stderr)
            made.on_broken_pipe = functools.partial(_Stream.on_broken_pipe, made)
            return made

        rich_utils._get_rich_console = help_console
        try:
            format_help(ctx, formatter)
        finally:
            rich_utils._get_rich_console = make_console

    command.format_help = quiet_format_help
    for sub in getattr(command, "commands", {}).values():
        help_ends_quietly_on_broken_pipe(sub)
