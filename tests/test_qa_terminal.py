"""The command line as it reaches terminals, log files and schedulers: a warning or a result is one line
whatever the width, a stream that cannot encode a character does not crash the command."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.terminal import console, out_console, say, setup_logging

ROOT = Path(__file__).resolve().parents[1]
LONG = "/data/" + "/".join(f"a_rather_long_folder_name_{k}" for k in range(8)) + "/objects"


@pytest.fixture
def logging_restored():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_warning_naming_a_long_path_is_one_line_in_a_log_file(capsys, logging_restored) -> None:
    setup_logging(False)
    logging.getLogger("augment.imageio").warning("%s: 1 broken symbolic link(s) left out (x.png)", LONG)
    lines = capsys.readouterr().err.splitlines()
    # RichHandler wrapped it to the console's 80 columns, mid-word, the level in a column of its own
    assert lines == [f"warning: {LONG}: 1 broken symbolic link(s) left out (x.png)"]


def test_the_same_warning_twice_is_said_once_and_info_only_with_verbose(capsys, logging_restored) -> None:
    setup_logging(False)
    log = logging.getLogger("augment.imageio")
    for _ in range(2):  # a source folder listed twice (cutouts, then labels) warned twice of its links
        log.warning("%s: 1 broken symbolic link(s) left out", LONG)
    log.warning("another folder: 1 broken symbolic link(s) left out")
    log.info("not shown without -v")
    assert capsys.readouterr().err.splitlines() == [f"warning: {LONG}: 1 broken symbolic link(s) left out",
                                                    "warning: another folder: 1 broken symbolic link(s) left out"]
    setup_logging(True)
    log.info("step %d", 3)
    assert capsys.readouterr().err.splitlines() == ["info: step 3"]


@pytest.mark.parametrize("which", ["stderr", "stdout"])
def test_a_result_line_naming_a_long_path_is_not_broken(capsys, which: str) -> None:
    # `synth show`'s "wrote PATH (N composites)", train's "checkpoint: PATH": broken at 80 columns in a log
    (console if which == "stderr" else out_console).print(f"wrote {LONG}/sheet.png (16 composites)")
    assert getattr(capsys.readouterr(), which[3:]).splitlines() == [f"wrote {LONG}/sheet.png (16 composites)"]


_PRINT_RESULT = """
from pipelines.terminal import out_console, setup_logging
setup_logging(False)
out_console.print("synth expand \u2192 /data/caf\u00e9")
"""


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_stdout_that_cannot_encode_a_character_writes_it_escaped(encoding: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": encoding}
    done = subprocess.run([sys.executable, "-c", _PRINT_RESULT], capture_output=True, env=env, timeout=60)
    # expand's summary title '→' (or a path's 'é') was a UnicodeEncodeError traceback after the run's work
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode(encoding).strip().startswith("synth expand \\u2192 /data/caf")
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize("path", ["runs/sheet[/old].png", "runs/d[bold]s.png", "out/co[co]"])
def test_a_path_with_brackets_is_printed_as_it_is(capsys, logging_restored, path: str) -> None:
    # `synth show -o 'sheet[/old].png'` wrote the sheet, then ended in rich's MarkupError traceback;
    # `export -o 'co[co]'` said "wrote out/co"
    out_console.print(f"wrote {path} (4 composites)")
    console.print(f"checkpoint: {path}")
    say("skipped", f"{path}: not an image")
    setup_logging(False)
    logging.getLogger("augment.imageio").warning("%s: 1 broken symbolic link(s) left out", path)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"wrote {path} (4 composites)"]
    assert captured.err.splitlines() == [f"checkpoint: {path}", f"skipped: {path}: not an image",
                                         f"warning: {path}: 1 broken symbolic link(s) left out"]


def test_the_training_bar_is_on_stderr_and_only_on_a_terminal(capsys, monkeypatch) -> None:
    from pipelines.terminal import make_progress
    from train.loop import _progress

    for progress in (_progress(True), make_progress()):  # a log file: no bar ('0:0…' lines at the end)
        with progress:
            progress.add_task("train", total=2, info="loss 0.5", rate="")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal
    with _progress(True) as progress:  # rich's default console: stdout, where train writes nothing else
        progress.add_task("train", total=2, info="loss 0.5")
    captured = capsys.readouterr()
    assert captured.out == "" and "train" in captured.err and "loss 0.5" in captured.err


def test_a_selftune_round_from_cron_logs_one_line(selftune_one_round) -> None:
    # `synth selftune ... --rounds 1` of the tiny config (conftest's run, which test_selftune reads too)
    result = selftune_one_round[2]
    # deploy/crontab: "this log gets one line per run"; each training's bar added one, cut at 80 columns
    assert result.exit_code == 0 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith("selftune ")


@pytest.mark.parametrize("args, fragment", [
    (["show", "--bogus", "x"], "No such option: --bogus"),
    (["show", "--rows", "abc", "x"], "Invalid value for '--rows'"),
    (["show"], "Missing argument 'shards'"),
    (["search", "q.png", "m.png"], "Missing option '--out'"),
    (["expand", "-n"], "Option '-n' requires an argument"),
    (["bogus"], "No such command 'bogus'"),
    (["--bogus"], "No such option: --bogus"),
])
def test_a_mistyped_command_line_is_one_line(args: list[str], fragment: str) -> None:
    from tests.cli_checks import assert_one_line_error, run_cli

    # typer drew each as a box of 5+ lines, wrapped inside its frame (80 columns in a log, mid-sentence)
    line = assert_one_line_error(run_cli(*args), 2, fragment)
    assert line.startswith("error: ") and "│" not in line


def test_v_after_the_command_says_where_it_goes() -> None:
    from tests.cli_checks import assert_one_line_error, run_cli

    # 'No such option: -v', and show's --help does not list it: it is synth's own option
    assert_one_line_error(run_cli("show", "-v", "x"), 2, "No such option: -v", "-v goes before the command",
                          " -v show ...")


@pytest.mark.parametrize("columns", ["40", "60"])
@pytest.mark.parametrize("command", ["expand", "show", "search", "train"])
def test_help_on_a_narrow_terminal_cuts_nothing_short(command: str, columns: str) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    # rich's panels cut options, types and defaults with '…' (--source-form…, [default: sheet.pn…)
    assert "…" not in result.output and "╭" not in result.output, result.output
    flat = " ".join(result.output.split())
    assert {"expand": '--source-format', "show": "[default: sheet.png]", "search": "--query-mask",
            "train": "--eval-shards"}[command] in flat
    if command == "expand":
        assert 'pip install "synth[ray]"' in flat  # rich's markup escape undone in the plain help


def test_the_command_list_on_a_narrow_terminal_cuts_no_summary_short() -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "40"})
    flat = " ".join(result.output.split())
    assert result.exit_code == 0 and "…" not in result.output, result.output  # nor "Cut objects from SOURCES and..."
    assert "Cut objects from SOURCES and composite them onto backgrounds with distortions, into Parquet shards." in flat


def test_a_utf8_name_in_a_c_locale_says_to_set_a_utf8_locale_not_to_rename_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C", "PYTHONUTF8": "0", "COLUMNS": "300"}
    run = [sys.executable, "-m", "pipelines.cli", "expand", "-n", "1", "-o"]
    done = subprocess.run([*run, str(tmp_path / "caf\u00e9").encode()], capture_output=True, env=env, timeout=60)
    line = done.stderr.decode("ascii", "replace").strip()
    # 'café' typed in a C locale (PYTHONUTF8=0) was "a name that is not UTF-8; rename it"
    assert done.returncode == 2 and "\n" not in line and "set LC_ALL=C.UTF-8" in line and "rename" not in line, line
    done = subprocess.run([*run, str(tmp_path).encode() + b"/caf\xe9"], capture_output=True, env=env, timeout=60)
    assert done.returncode == 2 and done.stderr.decode("ascii", "replace").strip().endswith("; rename it")


def test_a_name_with_a_newline_or_an_escape_sequence_is_one_line_shown_escaped(tmp_path: Path, capsys,
                                                                                logging_restored) -> None:
    from tests.cli_checks import assert_one_line_error, run_cli

    # a newline in a path made the error two lines; ESC reached the terminal (colours, a cleared screen)
    line = assert_one_line_error(run_cli("show", tmp_path / "sheet\nerror: forged\x1b[2J caf\u00e9"), 2)
    assert line.endswith("sheet\\nerror: forged\\x1b[2J caf\u00e9: no such file or directory") and "\x1b" not in line
    setup_logging(True)
    logging.getLogger("augment.cutouts").info("skipped %s: a text file, not an image", "bag/evil\x1b[31m\rname\n.png")
    assert capsys.readouterr().err.splitlines() == ["info: skipped bag/evil\\x1b[31m\\rname\\n.png: a text file, "
                                                    "not an image"]


def test_rays_records_are_synth_lines_not_rays_own_format(capsys, logging_restored) -> None:
    pytest.importorskip("ray")
    from augment.engines.ray_engine import _ray_records_to_the_application

    setup_logging(False)
    _ray_records_to_the_application()  # what RayEngine does before ray.init
    logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
        "Token authentication is enabled for this Ray cluster.")
    # Ray's own handler: '2026-12-07 09:47:54,685<TAB>WARNING authentication_token_setup.py:85 -- Token ...'
    assert capsys.readouterr().err.splitlines() == ["warning: Token authentication is enabled for this Ray cluster."]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_result_written_to_a_full_disk_is_one_line_naming_stdout(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    with open("/dev/full", "w") as full:  # `synth expand ... > /full/disk/log`: the summary cannot be written
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "expand", "-n", "1", "-w", "1", "-o",
                               tmp_path / "out"], stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT, timeout=120)
    # it was rich's OSError traceback, no file named, exit code 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert done.returncode == 2 and lines == ["error: <stdout>: No space left on device"], done.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()  # the run itself was done


def test_a_result_line_naming_a_path_with_a_newline_is_one_line(capsys) -> None:
    out_console.print("wrote out/a\nb.png (4 composites)")  # `synth show -o $'a\nb.png'`: two lines
    console.print("checkpoint: runs/\x1b[2Jx/checkpoint.pt")
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["wrote out/a\\nb.png (4 composites)"]
    assert captured.err.splitlines() == ["checkpoint: runs/\\x1b[2Jx/checkpoint.pt"]


@pytest.mark.parametrize("args", [["eval", "--untrained", "--shards", "shards", "--out", "-"],
                                  ["expand", "-n", "1", "-o", "-"], ["show", "shards", "-o", "-"]])
def test_out_dash_is_one_line_not_a_file_named_dash(tmp_path: Path, monkeypatch, args: list[str]) -> None:
    from tests.cli_checks import assert_one_line_error, run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    # `eval --out -` wrote its report to a file named '-' and said "wrote -"
    assert_one_line_error(run_cli(*args), 2, "-: --out - is no stdout here")
    assert not (tmp_path / "-").exists()


def test_columns_0_still_prints_the_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "0"}  # a CI runner's terminal of unknown size
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "show", tmp_path / "nothere"], capture_output=True,
                          text=True, env=env, timeout=60)
    # rich took COLUMNS=0 as a width of 0 and printed nothing: exit code 2 without a word
    assert done.returncode == 2 and done.stderr.splitlines() == [f"error: {tmp_path / 'nothere'}: no such file or "
                                                                 "directory"], done.stderr


@pytest.mark.parametrize("command", ["version", "show", "print-config", "help", "search-help", "narrow-help"])
def test_a_result_whose_reader_is_gone_ends_quietly_as_sigpipe_after_whole_outputs(tmp_path, command) -> None:
    """`synth show ... | head -c1`, `synth --version | true`: rich ended with exit code 1 (a failed run to a
    script under pipefail); `git log | head` ends 141 (128 + SIGPIPE), quietly, and so does synth. So does
    `synth --help | head -1` (typer's rich help console, or click's plain help on a narrow terminal: exit 1)."""
    from shard_factory import make_shards

    args = {"version": ["--version"], "print-config": ["expand", "--print-config"], "help": ["--help"],
            "search-help": ["search", "--help"], "narrow-help": ["--help"]}.get(command, [])
    width = {"COLUMNS": "40"} if command == "narrow-help" else {}
    if command == "show":
        shards = make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, size=48).folder
        args = ["show", str(shards), "--out", str(tmp_path / "sheet.png")]
    read, write = os.pipe()
    os.close(read)  # the reader gone before the result line
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **width})
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
    if command == "show":
        from augment.imageio import read_image

        assert read_image(tmp_path / "sheet.png").shape[0] > 0  # written whole before the result line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "sheet.png"]
