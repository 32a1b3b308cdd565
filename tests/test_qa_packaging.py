"""synth as installed from its wheel, used from another folder: what it reads must ship with it, what
it imports must be declared, and its command line must say which version it is."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.cli_checks import assert_one_line_error, run_cli

import setuptools

try:
    import tomllib  # Python 3.11+
except ImportError:  # 3.10: only the tests reading pyproject.toml skip (needs_tomllib)
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("augment", "train", "pipelines")
# The tests reading pyproject.toml need tomllib; those building synth, the setuptools that reads its
# `license = "Apache-2.0"` (77 on).
needs_tomllib = pytest.mark.skipif(tomllib is None, reason="reading pyproject.toml needs tomllib (Python 3.11+)")
needs_setuptools_77 = pytest.mark.skipif(
    int(setuptools.__version__.split(".")[0]) < 77,
    reason=f"building synth needs setuptools 77 or later (this environment has {setuptools.__version__})")


def test_expand_without_sample_data_names_the_missing_folders(tmp_path, monkeypatch):
    """An installed synth has no sample_data/ beside its package: `synth expand` with no SOURCES, run
    anywhere but a checkout, said "site-packages/sample_data/objects: no such file or directory"."""
    import pipelines.cli as cli

    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path / "site-packages")  # as from a wheel: no sample_data beside it
    monkeypatch.chdir(tmp_path)
    line = assert_one_line_error(run_cli("expand", "--out", tmp_path / "out", "-n", 1), 2,
                                 "no SOURCES given", str(tmp_path), "--backgrounds")
    assert "site-packages" not in line
    assert not (tmp_path / "out").exists()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normal(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules the packages import (anywhere, lazily too), with the files that do."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


# Modules imported without being declared, and why that is right.
NOT_DECLARED = {
    "botocore": "boto3's exceptions: boto3 pins the botocore it is built on",
}


@needs_tomllib
def test_every_imported_distribution_is_declared():
    """scipy (augment/superpixels.py, augment/scene_distortions.py) was imported but not declared: it came
    only as scikit-image's own dependency, so nothing held it to the versions synth's code needs."""
    project = _project()
    declared = _requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= _requirement_names(extra)
    distributions = metadata.packages_distributions()
    missing = {}
    for module, files in _imported_modules().items():
        if module in NOT_DECLARED:
            continue
        # a module of an extra not installed here: its own name stands for its distribution's
        providers = {_normal(d) for d in distributions.get(module, [module])}
        if not providers & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_version_is_the_installed_distributions():
    """`synth --version` was "No such option" (exit 2): an installed synth could not say which it was,
    though expand's manifest records the distribution's version."""
    result = run_cli("--version")
    assert result.exit_code == 0, result.output
    try:
        expected = metadata.version("synth")
    except metadata.PackageNotFoundError:
        expected = "(not installed)"
    assert result.stdout.strip() == f"synth {expected}"


SOURCE_ONLY = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.py[cod]", "build", "dist", "*.egg-info",
                                     "runs", "out", "expanded", ".pytest_cache", ".hypothesis", ".whl", ".gl")


def _built(tmp_path: Path, kind: str, suffix: str) -> tuple[Path, Path]:
    """A copy of the source tree (no run outputs or caches) and the ``kind`` ('sdist', 'wheel') built from it
    (by the environment's setuptools: its tests are marked needs_setuptools_77)."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=SOURCE_ONLY)
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; b.build_{kind}('../dist')"],
                   cwd=tree, check=True, capture_output=True, timeout=120)
    (built,) = (tmp_path / "dist").glob(f"synth-*.{suffix}")
    return tree, built


@needs_setuptools_77
def test_sdist_carries_what_its_tests_need(tmp_path):
    """setuptools puts only tests/test*.py into an sdist: its conftest.py and helpers (cli_checks.py,
    the factories) were left out, so no test module that imports them ran from the sdist, and neither
    did the configs, sample data or benchmarks they read."""
    tree, sdist = _built(tmp_path, "sdist", "tar.gz")
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wanted = {str(path.relative_to(tree)) for folder in ("tests", "configs", "sample_data", "benchmarks")
              for path in (tree / folder).rglob("*") if path.is_file()}
    assert {"tests/conftest.py", "tests/cli_checks.py", "configs/expand.yaml"} <= wanted
    assert not wanted - shipped, f"left out of the sdist: {sorted(wanted - shipped)[:10]}"


def _floor(requirement: str) -> tuple[int, ...]:
    found = re.search(r">=\s*([0-9.]+)", requirement)
    assert found, f"{requirement}: no lower bound"
    return tuple(int(part) for part in found.group(1).split("."))


def _project() -> dict:
    """pyproject.toml's [project] (its tests are marked needs_tomllib)."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _source_holds(text: str) -> bool:
    return any(text in path.read_text(encoding="utf-8") for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


# (distribution, the lowest version with what the code calls, the call): a floor below it lets pip keep
# an older release that has not got the call.
FLOORS = [
    # Both ONNX exports (export-onnx, the search's onnxruntime backbone): torch>=2.2 let pip keep a torch
    # 2.2-2.4, where each export was a TypeError traceback.
    ("torch", (2, 5), "dynamo=False"),
    # augment/imageio.py silences OpenCV's log at import: with opencv-python-headless 4.8-4.12 (the
    # declared >=4.8) every synth command, --help included, was an AttributeError traceback.
    ("opencv-python-headless", (4, 13), "cv2.utils.logging"),
    # pipelines/cli.py reads typer's own copy of click (typer 0.26 on); older typers parse with click
    # itself, where a usage error was an AttributeError (click<8.2: no NoArgsIsHelpError) or every
    # command a TypeError (typer 0.12 with click>=8.2.2: "Secondary flag is not valid"); 0.26 words a
    # missing argument otherwise ('SHARDS...', tests/test_qa_terminal.py).
    ("typer", (0, 27), "typer._click"),
    # pipelines/terminal.py's progress off a terminal: rich before 14.3 still wrote its bar's blank lines to
    # stderr, so a cron round's log was not its one line (tests/test_qa_terminal.py).
    ("rich", (14, 3), "make_progress"),
]
# opencv-python-headless>=4.13 needs numpy>=2: these compiled dependencies' earlier releases were built
# for numpy 1 and fail to import beside it (pyarrow 14: "numpy.core.multiarray failed to import").
# onnxruntime 1.17-1.18 (the onnx extra) failed so ("_ARRAY_API not found"), and export-onnx said to
# install the extra that was installed.
NUMPY_2_BUILDS = {"numpy": (2, 0), "pyarrow": (16,), "pycocotools": (2, 0, 8), "scikit-image": (0, 24),
                  "scipy": (1, 13), "onnxruntime": (1, 19)}


@needs_tomllib
@pytest.mark.parametrize("name, floor, call", FLOORS, ids=[name for name, _, _ in FLOORS])
def test_declared_floor_has_what_the_code_calls(name, floor, call):
    assert _source_holds(call), f"the code no longer calls {call}: drop this floor's entry"
    (requirement,) = [r for r in _project()["dependencies"] if _requirement_names([r]) == {name}]
    assert _floor(requirement) >= floor, requirement


# Declared, never imported by synth's own code, and why that is right.
NOT_IMPORTED = {"tensorboard": "torch.utils.tensorboard imports it (train/loop.py)"}


@needs_tomllib
def test_compiled_dependencies_are_floored_at_their_numpy_2_builds():
    project = _project()
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    low = sorted(r for r in requirements for name in _requirement_names([r])
                 if name in NUMPY_2_BUILDS and _floor(r) < NUMPY_2_BUILDS[name])
    assert {name for r in requirements for name in _requirement_names([r])} >= set(NUMPY_2_BUILDS)
    assert not low, f"below their first numpy-2 release: {low}"


@needs_tomllib
def test_every_declared_dependency_is_used():
    """albumentations was declared and never imported; at its declared floor (1.4.0) it pulled in
    opencv-python, whose cv2 overwrote opencv-python-headless's in site-packages."""
    modules = _imported_modules()
    provides: dict[str, set[str]] = {}
    for module, distributions in metadata.packages_distributions().items():
        for distribution in distributions:
            provides.setdefault(_normal(distribution), set()).add(module)
    unused = sorted(name for name in _requirement_names(_project()["dependencies"])
                    if name not in NOT_IMPORTED and not provides.get(name, set()) & set(modules))
    assert not unused, f"declared in pyproject.toml but never imported: {unused}"


def test_expand_engine_ray_without_the_ray_extra_is_one_line(tmp_path, monkeypatch):
    """`synth expand --engine ray` where the ray extra is not installed (a plain `pip install synth`)
    was a traceback ending in "ModuleNotFoundError: No module named 'ray'", exit code 1."""
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "augment.engines.ray_engine", raising=False)
    out = tmp_path / "out"
    result = run_cli("expand", ROOT / "sample_data" / "objects", "-b", ROOT / "sample_data" / "backgrounds",
                     "--out", out, "-n", 2, "--engine", "ray")
    assert_one_line_error(result, 2, "--engine ray", 'pip install "synth[ray]"')
    assert not out.exists()


@needs_setuptools_77
def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    """pyproject.toml lists the packages and their data by hand: a new subpackage or data file left off
    the list works in the checkout (and its editable install) and is missing from the wheel."""
    tree, wheel = _built(tmp_path, "wheel", "whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    wanted = {str(path.relative_to(tree)) for package in PACKAGES for path in (tree / package).rglob("*")
              if path.is_file() and not path.name.startswith(".")}
    assert "pipelines/fusion_untrained.json" in wanted
    assert not wanted - shipped, f"left out of the wheel: {sorted(wanted - shipped)[:10]}"
    # README's `--config configs/train_cpu.yaml`: the configs ship too (a pip-installed synth had none)
    configs = {f"pipelines/configs/{path.name}" for path in (tree / "configs").glob("*.yaml")}
    assert "pipelines/configs/train_cpu.yaml" in configs and not configs - shipped, sorted(configs - shipped)
    assert {name.split("/")[0] for name in shipped if "/" in name} == {*PACKAGES, wheel.name.split("-")[0] + "-"
                                                                       + wheel.name.split("-")[1] + ".dist-info"}


def test_remote_sources_are_mirrored_in_the_users_cache_folder(tmp_path, monkeypatch):
    """The mirror of s3:// and gs:// sources went to ~/.cache/synth whatever XDG_CACHE_HOME said (a
    cluster's small home quota filled while the user had moved caches to scratch)."""
    from augment.store_writes import cache_root

    monkeypatch.delenv("SYNTH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "synth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "synth"
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_an_extra_that_is_installed_but_broken_is_not_called_missing(tmp_path, monkeypatch):
    """onnxruntime built for numpy 1 beside numpy 2 fails to import with an ImportError; export-onnx then
    said "needs onnxruntime: pip install 'synth[onnx]'", the extra that was installed."""
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text('raise ImportError("numpy.core.multiarray failed to import")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.delitem(sys.modules, "augment.engines.ray_engine", raising=False)
    out = tmp_path / "out"
    result = run_cli("expand", ROOT / "sample_data" / "objects", "-b", ROOT / "sample_data" / "backgrounds",
                     "--out", out, "-n", 2, "--engine", "ray")
    line = assert_one_line_error(result, 2, "ray is installed but does not import",
                                 "numpy.core.multiarray failed to import", "--force-reinstall ray")
    assert "synth[ray]" not in line and not out.exists()


@pytest.mark.parametrize("broken", [False, True], ids=["absent", "broken"])
def test_the_s3_lock_without_a_working_boto3_is_one_line(tmp_path, monkeypatch, broken):
    """The s3:// output lock caught only a boto3 that was absent: one installed that failed to import
    (an ImportError of its own) came out as a traceback."""
    from augment import object_lock
    from augment.imageio import InputError

    if broken:
        (tmp_path / "boto3").mkdir()
        (tmp_path / "boto3" / "__init__.py").write_text('raise ImportError("cannot import name \'x\' from botocore")\n')
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "boto3", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(InputError, match="boto3 is installed but does not import" if broken else r'synth\[s3\]'):
        object_lock.client()


def test_a_shipped_config_is_found_by_its_name_or_readmes_path_from_any_folder(tmp_path, monkeypatch):
    """`synth train --config configs/train_cpu.yaml` outside a checkout (a pip-installed synth) was
    'config file not found'; the shipped copy is read, by that path or by its name alone."""
    from pipelines.shipped_configs import config_option

    monkeypatch.chdir(tmp_path)
    for given in ("configs/train_cpu.yaml", "train_cpu", "train_cpu.yaml"):
        found = config_option(Path(given))
        assert found is not None and found.is_file() and found.name == "train_cpu.yaml", given
        assert found.read_bytes() == (ROOT / "configs" / "train_cpu.yaml").read_bytes()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train_cpu.yaml").write_text("steps: 5\n")  # the user's own file wins
    assert config_option(Path("configs/train_cpu.yaml")) == Path("configs/train_cpu.yaml")
    for missing in ("nope.yaml", "other/train_cpu.yaml", "../train_cpu.yaml"):  # named missing by its reader
        assert config_option(Path(missing)) == Path(missing)
    result = run_cli("train", "--shards", tmp_path, "--out", tmp_path / "run", "--config", "nope.yaml")
    assert_one_line_error(result, 2, "nope.yaml: config file not found")
