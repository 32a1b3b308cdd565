"""`synth expand --engine ray` on a cluster of several nodes (Ray's own test cluster: separate raylets and
object stores on this machine, a shared file system): the driver's node runs no task, so the job and the
rendered tables travel between nodes; a node lost mid-run is survived; a cluster left with no CPUs
stops with one line instead of waiting without end, and a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from augment.config import ExpandConfig
from augment.expand import run_expand
from augment.imageio import InputError

ray = pytest.importorskip("ray", reason='Ray not installed (pip install -e ".[test]" or "synth[ray]")')
from ray.cluster_utils import Cluster  # noqa: E402

from augment.engines import ray_engine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OBJECTS, BACKGROUNDS = REPO / "sample_data" / "objects", REPO / "sample_data" / "backgrounds"
CONFIG = ExpandConfig.from_dict({"num": 64, "seed": 21, "composition": {"width": 96, "height": 96},
                                 "output": {"shard_rows": 16, "row_group_rows": 4}})


# A node killed is known dead after 3 failed health checks 0.5 s apart (Ray's defaults, 5 failed checks 3 s apart
# after a 5 s delay, left each test ~15 s of waiting for it); a check still fails only on an error or after
# Ray's 10 s timeout, so a slow live node on a busy machine is not taken for dead. What the tests check is unchanged.
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                   "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The local engine's shards, made in this process (one worker: the same bytes as any number, tested in
    test_expand): two workers would fork, and the tests ask for it after the module's cluster is up, whose
    gRPC threads live in this process; a fork after them hung a CI run (its pool workers never started)."""
    out = tmp_path_factory.mktemp("local") / "out"
    run_expand([OBJECTS], BACKGROUNDS, out, CONFIG, workers=1)
    return out


@pytest.fixture(scope="module")
def module_cluster():
    """A head with no CPUs (it runs no task) and one worker node of 2 CPUs: one for the module (each start costs
    5-12 s); every test leaves it so again, or the ``cluster`` fixture restores it."""
    if ray.is_initialized():
        ray.shutdown()
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                         "_system_config": FAST_NODE_DEATH})
    made.add_node(num_cpus=2)
    made.wait_for_nodes()
    yield made
    if ray.is_initialized():
        ray.shutdown()
    made.shutdown()


@pytest.fixture
def cluster(module_cluster):
    """The module's cluster as a test starts: the head and one worker node of 2 CPUs, no driver connected."""
    yield module_cluster
    if ray.is_initialized():  # a run that failed before it let go of the cluster
        ray.shutdown()
    workers = [node for node in module_cluster.list_all_nodes() if node is not module_cluster.head_node]
    if len(workers) != 1:  # a test that failed mid-way (each adds its nodes of 2 CPUs, or 1 it removes again)
        for node in workers:
            module_cluster.remove_node(node, allow_graceful=False)
        module_cluster.add_node(num_cpus=2)
        module_cluster.wait_for_nodes()


def assert_same_shards(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("train-*.parquet"))
    assert names and sorted(p.name for p in out.glob("train-*.parquet")) == names
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert json.loads((out / "manifest.json").read_text()) == json.loads((reference / "manifest.json").read_text())


def test_a_cluster_whose_head_runs_no_task_makes_the_local_engines_shards_and_survives_a_lost_node(
        cluster, reference, tmp_path):
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    lost = []

    def progress(stage: str, done: int, total: int) -> None:
        if done > 0 and not lost:  # one worker node dies once rendering is under way: its tasks run again elsewhere
            lost.append(done)
            cluster.remove_node(second, allow_graceful=False)

    result = run_expand([OBJECTS], BACKGROUNDS, tmp_path / "out", CONFIG, workers=2, engine="ray",
                        ray_address=cluster.address, progress=progress)
    assert lost and lost[0] < CONFIG.num
    assert_same_shards(tmp_path / "out", reference)
    stats = result.engine_stats
    assert stats["nodes"] == 3 and stats["cluster_cpus"] == 3
    # The job was put by the driver on the head's node and fetched by the worker nodes' processes.
    assert stats["job_fetches"] == stats["render_processes"] >= 1 and stats["job_bytes"] > 100_000


def test_a_cluster_left_without_cpus_stops_with_one_line_and_a_rerun_resumes(cluster, reference, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(ray_engine, "NO_CPU_WAIT_S", 3.0)
    monkeypatch.setattr(ray_engine, "CPU_POLL_S", 0.5)
    worker_node = next(node for node in cluster.list_all_nodes() if node is not cluster.head_node)
    lost = []

    def progress(stage: str, done: int, total: int) -> None:
        if done > 0 and not lost:  # the worker node dies once rendering is under way
            lost.append(done)
            cluster.remove_node(worker_node, allow_graceful=False)

    with pytest.raises(InputError, match=r"has had no CPUs for 3 s .*rerun to resume") as raised:
        run_expand([OBJECTS], BACKGROUNDS, tmp_path / "out", CONFIG, workers=2, engine="ray",
                   ray_address=cluster.address, progress=progress)
    assert "\n" not in str(raised.value) and cluster.address in str(raised.value)
    assert not (tmp_path / "out" / "manifest.json").exists()  # the run is not presented as complete

    cluster.add_node(num_cpus=2)  # a node joins again: the rerun finishes the same shards
    cluster.wait_for_nodes()
    run_expand([OBJECTS], BACKGROUNDS, tmp_path / "out", CONFIG, workers=2, engine="ray", ray_address=cluster.address)
    assert_same_shards(tmp_path / "out", reference)
