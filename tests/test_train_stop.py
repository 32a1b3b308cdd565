"""A training run stopped by a real SIGTERM: DDP ranks (two gloo processes on CPU) all stop after the
step in which any of them was signalled, checkpoint it as a one-process run does, and `--resume` ends
bit for bit as the run that was never stopped; the TensorBoard log is on disk however a run ends."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train.loop as loop
from shard_factory import make_shards
from test_trainer import _free_port, tiny_config
from train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from train.loop import train

# What a rank does as a step begins (learning_rate is called first thing in each step):
#   "group": SIGTERM to its own process group, itself and its loader workers, sent by another process
#            (what torchrun's agent does to each rank on a stop: every rank leads its own group there;
#            a worker ends on a SIGTERM from its parent, the loader's own way to end it);
#   "peer":  waits 0.5 s, by when the other rank is blocked in the step's gradient all-reduce
#            waiting for this one, then sends SIGTERM to that rank only (a scheduler that signals one
#            process).
Plan = dict[int, str]


def _rank(rank: int, port: int, shards: str, out: str, overrides: dict, plans: list[Plan], record: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    os.setpgid(0, 0)  # as torchrun starts a rank: in a process group of its own, which a stop signals whole
    record_dir = Path(record)
    (record_dir / f"pid.{rank}").write_text(str(os.getpid()))
    original_lr, original_save = loop.learning_rate, loop.save_checkpoint

    def learning_rate(step, config):
        action = plans[rank].get(step)
        if action == "group":
            subprocess.run(["kill", "-TERM", "--", f"-{os.getpgid(0)}"], check=False)  # kill gets it too
        elif action == "peer":
            time.sleep(0.5)
            os.kill(int((record_dir / f"pid.{1 - rank}").read_text()), signal.SIGTERM)
            time.sleep(0.2)
        return original_lr(step, config)

    def save_checkpoint(path, **kwargs):
        with open(record_dir / "saves", "a") as saves:
            saves.write(f"{kwargs['step']}\n")
        original_save(path, **kwargs)

    loop.learning_rate, loop.save_checkpoint = learning_rate, save_checkpoint
    try:
        result = train(tiny_config(**overrides), Path(shards), Path(out), resume=(Path(out) / CHECKPOINT_FILE).exists(),
                       show_progress=False)
        outcome = f"ended at step {result.step}"
    except KeyboardInterrupt:
        outcome = "interrupted"
    (record_dir / f"outcome.{rank}").write_text(outcome)


def _ddp(shards: Path, out: Path, record: Path, overrides: dict, plans: list[Plan] | None = None) -> dict:
    """Run (or resume, if ``out`` has a checkpoint) a two-rank training; what each rank ended with and
    the steps rank 0 wrote checkpoints at."""
    record.mkdir(parents=True)
    # Forked, not spawned: ~2 s a run instead of ~10 s of imports, and the ranks' loader workers are
    # forked as they are under torchrun (a spawned rank would spawn them too).
    mp.start_processes(_rank, args=(_free_port(), str(shards), str(out), overrides, plans or [{}, {}], str(record)),
                       nprocs=2, start_method="fork")
    saves = record / "saves"
    return {"outcomes": [(record / f"outcome.{rank}").read_text() for rank in range(2)],
            "saves": [int(s) for s in saves.read_text().split()] if saves.exists() else []}


def _weights_hash(run: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(load_checkpoint(run / CHECKPOINT_FILE)["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), n_cutouts=8, n_composites=12, rows_per_group=3,
                       rows_per_shard=6, size=64).folder


def test_a_ddp_run_stopped_by_sigterm_checkpoints_the_step_under_way_and_resumes_exactly(shards, tmp_path):
    """DDP ranks stopped at once on a SIGTERM, from the last periodic checkpoint (here: none). Now
    torchrun's SIGTERM to every rank's process group (loader workers included) is held to the step's
    end, checkpointed with both ranks' data positions, and the resumed run ends with the weights of
    the run that was never stopped."""
    config = dict(steps=6, checkpoint_every=0, num_workers=1)
    reference = _ddp(shards, tmp_path / "reference", tmp_path / "record-reference", config)
    assert reference["outcomes"] == ["ended at step 6"] * 2

    stopped = _ddp(shards, tmp_path / "run", tmp_path / "record-stop", config, [{2: "group"}, {2: "group"}])
    assert stopped["outcomes"] == ["interrupted"] * 2  # as a one-process run's stop: KeyboardInterrupt
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert state["step"] == 3 and stopped["saves"] == [3]  # the step under way (its 3rd) was finished
    assert len(state["data"]["ranks"]) == 2

    resumed = _ddp(shards, tmp_path / "run", tmp_path / "record-resume", config)
    assert resumed["outcomes"] == ["ended at step 6"] * 2
    assert _weights_hash(tmp_path / "run") == _weights_hash(tmp_path / "reference")


def test_a_sigterm_to_one_rank_waiting_in_a_collective_stops_every_rank_at_the_same_step(shards, tmp_path):
    """Rank 1 alone is signalled, while it waits in the gradient all-reduce for rank 0: both ranks stop
    after that step, and rank 0 (which got no signal) writes the checkpoint, once, though the step
    is also a periodic checkpoint's."""
    stopped = _ddp(shards, tmp_path / "run", tmp_path / "record", dict(steps=6, checkpoint_every=3),
                   [{2: "peer"}, {}])
    assert stopped["outcomes"] == ["interrupted"] * 2
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)["step"] == 3 and stopped["saves"] == [3]


def test_a_stop_during_the_last_step_ends_the_ddp_run_normally(shards, tmp_path):
    ended = _ddp(shards, tmp_path / "run", tmp_path / "record", dict(steps=4, checkpoint_every=2),
                 [{3: "group"}, {3: "group"}])
    assert ended["outcomes"] == ["ended at step 4"] * 2 and ended["saves"] == [2, 4]


# ------------------------------------------------------------------------------------ TensorBoard
@pytest.mark.parametrize("ending", ["signal", "error"])
def test_the_tensorboard_writer_is_closed_however_a_run_ends(shards, tmp_path, monkeypatch, ending):
    """The TensorBoard writer was closed only at a normal end: a stopped or failed run left its last
    scalars to a daemon thread that the process's exit ends, and unflushed where the file is
    buffered (TensorFlow's gfile). Here TensorBoard's own file writes each record through, so the
    event file alone would not tell: the writer's being closed does."""
    import torch.utils.tensorboard

    writers = []

    class Writer(torch.utils.tensorboard.SummaryWriter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            writers.append(self)

    original = loop.learning_rate

    def learning_rate(step, config):
        if step == 2:
            if ending == "signal":
                os.kill(os.getpid(), signal.SIGTERM)  # held to this step's end (the 3rd)
            else:
                raise RuntimeError("a failure in the 3rd step")
        return original(step, config)

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", Writer)
    monkeypatch.setattr(loop, "learning_rate", learning_rate)
    with pytest.raises(KeyboardInterrupt if ending == "signal" else RuntimeError):
        train(tiny_config(steps=6, log_every=1), shards, tmp_path, show_progress=False)
    assert len(writers) == 1 and writers[0].all_writers is None  # closed, so flushed
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert max(event.step for event in events.Scalars("train/loss")) == (3 if ending == "signal" else 2)


# ------------------------------------------------------------------------------------ loader workers
_KEPT_LOADER = """
import sys, torch
from torch.utils.data import IterableDataset
from train.data import make_loader

class Numbers(IterableDataset):
    def __iter__(self):
        return iter(torch.arange(10_000).float())

def run():
    batches = iter(make_loader(Numbers(), batch_size=2, num_workers=1))
    next(batches)
    print(batches._workers[0].pid, flush=True)
    raise RuntimeError("a failure once the loader runs (a CUDA out-of-memory error, a bug)")

run()
"""


def test_a_run_that_fails_with_a_traceback_ends_and_so_do_its_loader_workers(tmp_path):
    """An uncaught exception (CUDA out of memory, a bug) keeps the loader's iterator alive until the
    interpreter exits (sys.last_traceback holds its frame), so PyTorch leaves its workers to
    multiprocessing's exit hook, which ends them with SIGTERM and then joins them. Workers that
    ignored every SIGTERM made that join wait for good: `synth train` printed its traceback and hung
    (a DDP rank so never ended, and torchrun never learnt of the failure)."""
    script = tmp_path / "kept_loader.py"
    script.write_text(_KEPT_LOADER)
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, start_new_session=True)
    try:
        out, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        pytest.fail("the process hung at its exit, joining a loader worker that ignores its SIGTERM")
    assert run.returncode == 1 and "RuntimeError: a failure once the loader runs" in err
    worker = int(out.split()[0])
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_loader_workers_ignore_stops_sent_by_others_and_end_on_their_loaders_sigterm():
    """A stop that reaches the whole process group (systemd, `kill -- -PGID`, torchrun's to a rank)
    leaves the workers running, for the run to stop at its step's end; the SIGTERM their own loader
    sends (Process.terminate(): the DataLoader's last resort, multiprocessing's at exit) ends them,
    quietly (exit code 0, as PyTorch's own handler does)."""
    from torch.utils.data import IterableDataset

    from train.data import make_loader

    class Numbers(IterableDataset):
        def __iter__(self):
            return iter(torch.arange(10_000).float())

    batches = iter(make_loader(Numbers(), batch_size=2, num_workers=1))
    try:
        next(batches)
        [worker] = batches._workers
        for stop in ("INT", "TERM"):
            subprocess.run(["kill", f"-{stop}", str(worker.pid)], check=True)  # sent by another process
        time.sleep(0.5)
        assert worker.is_alive()
        assert next(batches).shape == (2,)
        worker.terminate()  # SIGTERM from the worker's parent
        worker.join(timeout=10)
        assert worker.exitcode == 0
    finally:
        del batches



def test_forkserver_workers_end_on_their_loaders_sigterm_too():
    """With forkserver (Python 3.14's default on Linux) or spawn, a worker's parent is a server
    process, not the process that made the loader: the loader's SIGTERM (Process.terminate(), as
    the DataLoader's last resort and multiprocessing's exit hook send it) must still end it, not be
    ignored as a stranger's (a run failed with a traceback would hang at its exit). Such a worker has
    threads before its worker_init_fn runs, so a group-wide stop can reach one of them and end the
    worker as PyTorch's handler does: the step-end stop holds for forked workers only."""
    from torch.utils.data import TensorDataset

    from train.data import make_loader

    loader = make_loader(TensorDataset(torch.arange(10_000).float()), batch_size=2, num_workers=1)
    loader.multiprocessing_context = "forkserver"
    batches = iter(loader)
    try:
        next(batches)
        [worker] = batches._workers
        worker.terminate()
        worker.join(timeout=10)
        # Ended: quietly where the worker's own thread takes the signal (its sender is the loader's
        # process), or by PyTorch's handler where one of the threads the server's import started does.
        assert worker.exitcode in (0, -signal.SIGTERM), "a forkserver worker ignored its loader's SIGTERM"
    finally:
        del batches
