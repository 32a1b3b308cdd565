"""Shared test set-up: the tests' own helpers import by plain name."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# scripts/test.sh runs the suite in pytest-xdist workers, one per CPU: each worker, and each command a test
# starts, keeps to one OpenMP / BLAS thread (read as torch and numpy load, so set before either), or two workers'
# threads contend for the same cores. A count the caller set is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

# The tests' tensors are tiny: a second intra-op thread gains nothing, and on a busy shared machine its
# hand-offs made a 20-step training 10x slower (143 s against 13 s).
import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_cache_folder(tmp_path_factory):
    """The session's own SYNTH_CACHE_DIR (subprocesses inherit it): the ONNX graphs the tests export
    (pipelines/onnx_graph_cache.py) are kept there, not in the user's ~/.cache/synth."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTH_CACHE_DIR", str(tmp_path_factory.mktemp("synth-cache")))
        yield


# Test files that start Ray: scripts/test.sh's workers run them in one worker, one after another (two Ray
# clusters at once on a 2-core machine each wait on the other's processes).
RAY_TEST_FILES = frozenset({"test_ray_cluster.py", "test_ray_engine.py", "test_qa_scale_ray_signals.py"})


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # pytest-xdist's hook (a test extra), before its own
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under ``--dist loadfile`` (scripts/test.sh) a test file is one unit of work, so its module-scoped fixtures
    are built once, in one worker; the files of :data:`RAY_TEST_FILES` are one unit together. (``--dist
    loadgroup`` with ``xdist_group`` marks cannot say this: pytest-xdist 3.8 groups by rewriting test ids,
    which pytest 9.2 no longer takes, so every test was its own unit.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "ray" if Path(path).name in RAY_TEST_FILES else path

    return FileScheduling(config, log)


@pytest.fixture(scope="session")
def selftune_one_round(tmp_path_factory):
    """`synth selftune --rounds 1` of segment_factory's tiny config on its generated photos, as cron runs it:
    (state folder, inputs, the command's result). Read only: test_selftune's one-round tests and
    test_qa_terminal's cron line share it (each ran the same round, ~2 s)."""
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.selftune import Inputs
    from segment_factory import make_noise_backgrounds, make_scene_photos, make_unlabeled, tiny_selftune_config

    root = tmp_path_factory.mktemp("selftune-one-round")
    inputs = Inputs(make_scene_photos(root / "labeled"), make_unlabeled(root / "unlabeled"),
                    make_noise_backgrounds(root / "backgrounds"))
    (root / "c.yaml").write_text(yaml.safe_dump(tiny_selftune_config()))
    result = CliRunner().invoke(app, ["selftune", "--state", root / "state", "--labeled", inputs.labeled,
                                      "--unlabeled", inputs.unlabeled, "--backgrounds", inputs.backgrounds,
                                      "--config", root / "c.yaml", "--rounds", "1"])
    return root / "state", inputs, result
