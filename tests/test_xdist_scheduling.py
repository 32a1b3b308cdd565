"""scripts/test.sh runs the suite in pytest-xdist workers (``--dist loadfile``): tests/conftest.py's scheduler keeps
each test file whole on one worker (its module-scoped fixtures built once) and every file that starts Ray on one
worker together, one after another. (``--dist loadgroup`` with ``xdist_group`` marks silently distributed each
test on its own under pytest 9.2.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("xdist", reason='pytest-xdist not installed (pip install -e ".[test]")')

import conftest  # noqa: E402

COLLECTION = ["tests/test_a.py::test_1", "tests/test_a.py::test_2[x@y]", "tests/test_ray_engine.py::test_1",
              "tests/test_b.py::Case::test_1", "tests/test_ray_cluster.py::test_1", "tests/test_b.py::Case::test_2",
              "tests/test_c.py::test_1", "tests/test_qa_scale_ray_signals.py::test_1", "tests/test_ray_engine.py::test_2",
              "tests/test_c.py::test_2", "tests/test_d.py::test_1"]


class Worker:
    """What the scheduler calls on a pytest-xdist worker: the tests it is sent, by index."""

    def __init__(self, name: str) -> None:
        self.gateway, self.shutting_down, self.sent = SimpleNamespace(id=name), False, []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def _config(dist: str) -> SimpleNamespace:
    options = {"dist": dist, "tx": ["2*popen"], "maxschedchunk": None, "loadscopereorder": True}
    return SimpleNamespace(getvalue=options.get, option=SimpleNamespace(**options))


def test_each_file_runs_whole_on_one_worker_and_every_ray_file_on_the_same_one() -> None:
    scheduler = conftest.pytest_xdist_make_scheduler(config=_config("loadfile"), log=None)
    workers = [Worker("gw0"), Worker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, COLLECTION)
    scheduler.schedule()
    ran: dict[str, str] = {}
    while any(worker.sent for worker in workers):  # each worker completes its tests in turn, and is sent more
        for worker in workers:
            while worker.sent:
                index = worker.sent.pop(0)
                ran[COLLECTION[index]] = worker.gateway.id
                scheduler.mark_test_complete(worker, index)
    assert sorted(ran) == sorted(COLLECTION)  # each test once
    by_file: dict[str, set[str]] = {}
    for nodeid, worker in ran.items():
        by_file.setdefault(nodeid.split("::")[0], set()).add(worker)
    assert all(len(names) == 1 for names in by_file.values()), by_file
    assert len({ran[nodeid] for nodeid in COLLECTION if "ray" in nodeid}) == 1, ran
    assert set(ran.values()) == {"gw0", "gw1"}  # the rest still spread over both


def test_other_distribution_modes_are_xdists_own() -> None:
    assert conftest.pytest_xdist_make_scheduler(config=_config("load"), log=None) is None
