"""The run-time environment a scheduler gives (systemd, cron, a container, CI): no shell to expand `~`,
no HOME, signals a session's end sends, a container's CPU quota."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest
import torch

from augment.system import DeferredStop, stop_signals
from cli_checks import assert_one_line_error, run_cli
from object_store import s3_server  # noqa: F401 (a fixture)
from sources_factory import make_backgrounds, make_rgba_source


def test_out_with_a_tilde_no_shell_expanded_is_the_home_folder_for_every_file(tmp_path, monkeypatch):
    # systemd's ExecStart passes '~' as typed: Python made ./~/ex for the lock and objects table while
    # pyarrow read and wrote $HOME/ex, so the run failed ('not a readable objects table') leaving ./~/ex
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    sources, backgrounds = make_rgba_source(tmp_path / "rgba", 2), make_backgrounds(tmp_path / "bg", 1)
    result = run_cli("expand", sources, "-b", backgrounds, "--out=~/ex", "--num", 2, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert (home / "ex" / "manifest.json").is_file() and list((home / "ex").glob("train-*.parquet"))
    assert list(work.iterdir()) == []


def test_a_tilde_with_no_home_to_expand_to_is_one_line(tmp_path, monkeypatch):
    # a container's arbitrary uid: no HOME, no password entry
    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(tmp_path)
    result = run_cli("search", tmp_path / "q.png", tmp_path, "--out", "~/found")
    assert_one_line_error(result, 2, "~/found", "HOME is not set", "full path")
    assert list(tmp_path.iterdir()) == []


def test_a_tilde_word_naming_no_user_is_left_as_a_shell_leaves_it():
    # `--include '~draft*'`, a file ~nosuchuser.png: bash leaves them as typed; they were refused as
    # "no user named ..." whatever the option
    from pipelines.environment import expand_home

    assert expand_home(["~nosuchuser-x9.png", "--include=~draft*"]) == ["~nosuchuser-x9.png", "--include=~draft*"]


# ----------------------------------------------------------------- a session's end (SIGHUP)
def test_a_sessions_hangup_is_held_to_the_steps_end_and_checkpointed_as_sigterm_is(tmp_path, monkeypatch):
    # an ssh connection dropped under `synth train`: SIGHUP's default action killed it mid-step, no
    # checkpoint, no line, exit 129 (SIGTERM checkpoints the step and says how to resume)
    import train.loop as loop
    from shard_factory import make_shards
    from test_trainer import tiny_config
    from train.checkpoint import CHECKPOINT_FILE, load_checkpoint

    received = []
    previous = signal.signal(signal.SIGHUP, lambda number, frame: received.append(number))  # not the default:
    try:  # without the fix the run would take this handler's word and go on, not end pytest
        original = loop.learning_rate

        def learning_rate(step, config):
            if step == 2:
                os.kill(os.getpid(), signal.SIGHUP)
            return original(step, config)

        monkeypatch.setattr(loop, "learning_rate", learning_rate)
        shards = make_shards(tmp_path / "shards", n_cutouts=6, n_composites=12, size=64).folder
        with pytest.raises(KeyboardInterrupt):
            loop.train(tiny_config(steps=6, checkpoint_every=0), shards, tmp_path / "run", show_progress=False)
        assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)["step"] == 3
        assert received == []
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_nohups_ignored_hangup_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.SIGHUP not in stop_signals()
        with DeferredStop():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # (pytest itself may run under nohup)
        assert signal.SIGHUP in stop_signals()
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_hangup_to_the_whole_group_stops_expand_with_the_resume_line(tmp_path):
    # a terminal closed: every process of the foreground group gets SIGHUP, the forked workers too
    config = tmp_path / "slow.yaml"
    config.write_text("sources: {min_area: 50}\ncomposition: {width: 160, height: 160, min_objects: 3, max_objects: 5}\n"
                      "output: {shard_rows: 50, row_group_rows: 5}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.cli", "expand", make_rgba_source(tmp_path / "objects"), "-b",
               make_backgrounds(tmp_path / "backgrounds"), "-o", out, "-c", config, "-n", "400", "-w", "2"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=_hangup_as_default)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and not list(out.glob(".train-00000.parquet*.tmp")):
            time.sleep(0.02)
        assert process.poll() is None, process.communicate()[1]  # still making its first shard
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGHUP)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted; rerun the same `synth expand`" in stderr.strip().splitlines()[-1], stderr
    assert not list(out.glob(".*.tmp"))


def test_object_store_sources_with_no_home_to_mirror_under_is_one_line(s3_server, tmp_path, monkeypatch):
    # a container's uid with no HOME and no password entry: Path.home()'s RuntimeError was a traceback
    def no_entry(uid):
        raise KeyError(uid)

    objects = s3_server.upload_folder(make_rgba_source(tmp_path / "rgba", 2), "env/objects")
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("SYNTH_CACHE_DIR", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    result = run_cli("expand", objects, "-b", make_backgrounds(tmp_path / "bg", 1), "--out", tmp_path / "out", "--num", 2)
    assert_one_line_error(result, 2, "SYNTH_CACHE_DIR")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- a container's CPU quota
def _cgroup_file(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_usable_cpus_reads_a_containers_cpu_quota_v1_and_v2(tmp_path):
    # `docker run --cpus 1.5` on a many-core host: affinity shows every core, the quota allows 1.5 CPUs
    import augment.system as system

    cores = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    _cgroup_file(v2 / "cpu.max", "max 100000\n")
    _cgroup_file(v2 / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    assert system.cpu_quota("0::/kubepods/pod1\n", v2) == 1.5
    assert system.usable_cpus("0::/kubepods/pod1\n", v2) == min(cores, 2)
    assert system.cpu_quota("0::/\n", v2) is None and system.usable_cpus("0::/\n", v2) == cores
    v1 = tmp_path / "v1"  # inside the container the mount is its own cgroup: the host's path is not under it
    _cgroup_file(v1 / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    _cgroup_file(v1 / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert system.cpu_quota("4:cpu,cpuacct:/docker/0123abcd\n1:name=systemd:/x\n", v1) == 0.5
    assert system.usable_cpus("4:cpu,cpuacct:/docker/0123abcd\n", v1) == 1
    _cgroup_file(v1 / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    assert system.cpu_quota("4:cpu,cpuacct:/docker/0123abcd\n", v1) is None


def test_a_containers_memory_limit_is_read_v1_and_v2_and_bounds_the_usable_memory(tmp_path, monkeypatch):
    # `docker run --memory 4g` on a large host: the page count shows the host's memory, the cgroup the 4 GB
    import augment.system as system

    v2 = tmp_path / "v2"
    _cgroup_file(v2 / "memory.max", "max\n")
    _cgroup_file(v2 / "kubepods" / "pod1" / "memory.max", "4294967296\n")
    assert system.memory_limit("0::/kubepods/pod1\n", v2) == 4 << 30
    assert system.memory_limit("0::/\n", v2) is None
    v1 = tmp_path / "v1"
    _cgroup_file(v1 / "memory" / "memory.limit_in_bytes", "2147483648\n")
    assert system.memory_limit("9:memory:/docker/0123abcd\n1:name=systemd:/x\n", v1) == 2 << 30
    _cgroup_file(v1 / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    assert system.memory_limit("9:memory:/docker/0123abcd\n", v1) is None
    monkeypatch.setattr(system, "memory_limit", lambda: 1 << 30)
    assert system.usable_memory() == 1 << 30


def test_expand_and_search_workers_and_threads_keep_within_the_quota(monkeypatch):
    import augment.system as system
    from augment.cutouts import default_workers
    from pipelines.search_workers import default_workers as search_workers

    monkeypatch.setattr(system, "cpu_quota", lambda *args: 1.0)  # one CPU's time whatever the cores
    assert default_workers() == 1
    assert search_workers(torch.device("cpu")) == 1
    environ = {}
    system.threads_within_quota(environ)
    assert environ == ({"OMP_NUM_THREADS": "1"} if len(os.sched_getaffinity(0)) > 1 else {})
    environ = {"OMP_NUM_THREADS": "3"}  # the user's own word is kept
    system.threads_within_quota(environ)
    assert environ == {"OMP_NUM_THREADS": "3"}


def test_a_local_ray_under_a_home_it_cannot_write_says_so(tmp_path, monkeypatch):
    # a service user's HOME (nobody's /nonexistent, a read-only one): Ray keeps its token in ~/.ray;
    # the line was '/nonexistent: Permission denied', not saying Ray or HOME
    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.write_text("a file, not a folder: no ~/.ray under it, even for root")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    result = run_cli("expand", make_rgba_source(tmp_path / "rgba", 2), "-b", make_backgrounds(tmp_path / "bg", 1),
                     "--out", tmp_path / "out", "--num", 2, "--engine", "ray", "-w", 1)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.stderr.strip().splitlines()[-1]  # (after Ray's own warning about its token)
    assert line.startswith("error:") and "cannot start or join Ray" in line and "set HOME" in line, line
    assert str(home) in line and not (tmp_path / "out").exists()


# ----------------------------------------------------------------- a container's small /dev/shm
WORKER_SHM = ("Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
              "  File \"...\", line 1, in _new_shared\nRuntimeError: unable to allocate shared memory(shm) for file "
              "</torch_19521_678368082_0>: No space left on device (28)\n")
WORKER_SIGBUS = ("DataLoader worker (pid 123) is killed by signal: Bus error. It is possible that dataloader's "
                 "workers are out of shared memory. Please try to raise your shared memory limit.")


@pytest.mark.parametrize("text", [WORKER_SHM, WORKER_SIGBUS])
def test_a_dataloader_out_of_shared_memory_is_one_line_naming_dev_shm(text, capsys):
    # docker's 64 MB /dev/shm under `synth train` (reproduced with a 256 kB tmpfs there): PyTorch's
    # traceback of the worker's traceback, or 'out of memory? fewer num_workers ...' for the SIGBUS
    import typer

    from pipelines.cli import TRAIN_RESUME_HINT
    from pipelines.command_errors import run_guarded

    def training():
        raise RuntimeError(text)

    with pytest.raises(typer.Exit) as ended:
        run_guarded(training, interrupt_hint=TRAIN_RESUME_HINT)
    assert ended.value.exit_code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "/dev/shm" in lines[0] and "--shm-size" in lines[0], lines
    assert lines[0].endswith(TRAIN_RESUME_HINT)


def test_a_working_directory_removed_under_the_shell_is_one_line(tmp_path):
    # a cron job's or CI step's folder cleaned up under it: torch could not even load there (oneMKL's
    # 'FATAL ERROR: Cannot load libtorch_cpu.so', exit code 2); a relative --out was 'file system: No such file'
    (tmp_path / "gone").mkdir()
    script = 'cd gone && rmdir ../gone && exec "$0" -m pipelines.cli search q.png photos --out found'
    done = subprocess.run(["bash", "-c", script, sys.executable], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "working directory no longer exists" in lines[0], done.stderr


def test_a_missing_synth_scratch_dir_is_one_line_naming_it_before_any_work(s3_server, tmp_path, monkeypatch):
    # the line named the hidden temporary it could not make, at the first shard, after the cutouts
    monkeypatch.setenv("SYNTH_SCRATCH_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    result = run_cli("expand", make_rgba_source(tmp_path / "rgba", 2), "-b", make_backgrounds(tmp_path / "bg", 1),
                     "-o", s3_server.uri("env/scratch"), "--num", 2, "-w", 1)
    assert_one_line_error(result, 2, f"SYNTH_SCRATCH_DIR={tmp_path / 'missing'}: no such folder")
    assert s3_server.keys("env/scratch") == []


# ----------------------------------------------------------------- a team's group-writable folder
def _as_user(uid: int, umask: int, *args: object, home: Path = Path("/tmp")) -> subprocess.CompletedProcess:
    """The CLI as user ``uid`` of group 4242 under ``umask`` (setpriv: the test runs as root), its HOME
    and TMPDIR ``home`` (what it leaves there goes with the test's folder)."""
    code = ("import os, sys, runpy; os.umask(int(sys.argv[1], 8)); sys.argv = ['synth'] + sys.argv[2:]; "
            "runpy.run_module('pipelines.cli', run_name='__main__')")
    command = ["setpriv", f"--reuid={uid}", "--regid=4242", "--clear-groups", sys.executable, "-c", code,
               f"{umask:o}", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(home), "TMPDIR": str(home)})


def _other_users_run_synth() -> bool:
    """Whether uid 5001 can run this Python and import synth (a checkout or venv under a 0700 folder: no)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(["setpriv", "--reuid=5001", "--regid=4242", "--clear-groups", sys.executable, "-c",
                            "import pipelines.cli"], capture_output=True, timeout=60,
                           env={**os.environ, "HOME": "/tmp"}, cwd="/")
    return probe.returncode == 0


@pytest.mark.skipif(not _other_users_run_synth(), reason="needs root, setpriv, and a synth other users can run")
def test_a_team_member_reruns_in_a_group_folder_another_members_umask_022_run_left():
    # a 2775 team folder: member A (umask 022) leaves .synth.lock and .synth-search-outputs 0644; member B,
    # free to write every other file there, was refused: '<out>/.synth.lock: Permission denied'
    import tempfile

    team = Path(tempfile.mkdtemp(prefix="synth-team-"))  # (pytest's own folders are 0700: no other user enters)
    try:
        team.chmod(0o755)
        home = team / "home"
        home.mkdir()
        home.chmod(0o1777)
        sources, backgrounds = make_rgba_source(team / "rgba", 2), make_backgrounds(team / "bg", 1)
        query = next((team / "rgba").rglob("*.png"))
        for folder in (team / "shards", team / "found"):
            folder.mkdir()
            os.chown(folder, 0, 4242)
            folder.chmod(0o2775)
        for uid, umask, num in ((5001, 0o022, 2), (5002, 0o002, 4)):
            done = _as_user(uid, umask, "expand", sources, "-b", backgrounds, "-o", team / "shards", "-n", num, "-w", 1,
                            home=home)
            assert done.returncode == 0, done.stderr
            done = _as_user(uid, umask, "search", query, backgrounds, "--out", team / "found", home=home)
            assert done.returncode == 0, done.stderr
        assert (team / "shards" / ".synth.lock").stat().st_uid == 5001  # locked read-only, left as it was
        assert (team / "found" / "detections.jsonl").stat().st_uid == 5002
    finally:
        shutil.rmtree(team)


def test_a_file_named_in_bytes_is_shown_as_a_name(capsys):
    # TensorBoard opens its event file by a bytes name: a team folder's tb/ of another member's umask was
    # "error: b'runs/tb/events.out.tfevents...': Permission denied"
    import typer

    from pipelines.command_errors import run_guarded

    def writing():
        raise PermissionError(13, "Permission denied", b"runs/tb/events.out.tfevents.1.vm.2.0")

    with pytest.raises(typer.Exit):
        run_guarded(writing)
    assert capsys.readouterr().err.strip() == "error: runs/tb/events.out.tfevents.1.vm.2.0: Permission denied"


def test_a_run_whose_stderr_reader_is_gone_goes_on_to_its_end(tmp_path):
    # journald restarted under a service, or `2>&1 | head` done reading: rich ended the run at its next
    # log line with exit code 1 and no manifest or shards
    objects = make_rgba_source(tmp_path / "rgba", 2)
    for index in range(4):  # a skip (and its warning) per file
        (objects / "box" / f"broken_{index}.png").write_text("not an image")
    command = [sys.executable, "-m", "pipelines.cli", "-v", "expand", objects, "-b",
               make_backgrounds(tmp_path / "bg", 1), "-o", tmp_path / "out", "-n", "4", "-w", "1"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process.stderr.close()  # the reader gone before the first line
    assert process.wait(timeout=120) == 0
    assert (tmp_path / "out" / "manifest.json").is_file() and list((tmp_path / "out").glob("train-*.parquet"))


def test_a_hangup_sends_the_terminals_output_to_dev_null_so_the_resume_line_cannot_fail():
    # after a hang-up the terminal's writes fail with EIO: the resume line and the bar's last refresh
    # raised while the run unwound; a file or a pipe is kept
    import pty

    code = ("import os, signal, sys\nfrom pipelines import environment\nenvironment.stop_as_interrupt()\n"
            "try:\n    os.kill(os.getpid(), signal.SIGHUP)\nexcept KeyboardInterrupt:\n"
            "    sys.stderr.write(f'{os.isatty(1)} {os.isatty(2)}')\n")
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", code], stdout=follower, stderr=subprocess.PIPE, text=True,
                              timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                              preexec_fn=_hangup_as_default)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.stderr == "False False", done.stderr  # stdout was the terminal: now /dev/null; stderr a pipe


def _hangup_as_default() -> None:
    """A child's SIGHUP at its default, whatever the tests run under (nohup, a CI agent ignoring it: the
    child inherits that, and synth rightly keeps ignoring it)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
