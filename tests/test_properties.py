"""Property-based tests (issue 7): whatever config values and input bytes a user hands `synth expand`
and `synth search`, the command exits 0, 1 (search: some inputs failed, each listed) or 2 (one line),
never with a traceback, and writes nothing outside --out."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from augment.distortions import REGISTRY
from augment.imageio import encode_jpeg, encode_png
from cli_checks import files_under, run_cli

# Values of every type a YAML file can hold, in and out of every range.
SCALARS = st.one_of(st.integers(-5, 400), st.floats(-2.0, 3.0), st.sampled_from([math.nan, math.inf, -math.inf]),
                    st.text(max_size=6), st.none(), st.booleans())
# Plausible values (in range for many keys) as often as nonsense, so runs also get past the config.
PLAUSIBLE = st.one_of(st.floats(0.0, 1.0), st.integers(0, 64), st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2).map(sorted))
VALUES = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, SCALARS, st.lists(SCALARS, max_size=4),
                   st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))
SECTION_KEYS = {
    "sources": ["format", "min_area", "keep_labels", "max_cutout_side", "superpixel_max_side", "limit", "nonsense"],
    "composition": ["width", "height", "min_objects", "max_objects", "repeat_probability", "object_scale",
                    "max_overlap", "min_visible", "placement_tries", "background_crop", "blend", "feather_px"],
    "output": ["split", "shard_rows", "shard_bytes", "row_group_rows", "jpeg_quality"],
}
DISTORTION_SETTINGS = [(name, setting) for name, cls in REGISTRY.items()
                       for setting in [f.name for f in cls.__dataclass_fields__.values()] + ["bogus"]]


@st.composite
def expand_configs(draw) -> dict:
    """A small valid config with a few settings replaced by drawn values (or drawn nonsense)."""
    config: dict = {"sources": {"min_area": 20}, "composition": {"width": 48, "height": 48}, "output": {}}
    top: dict = {}
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["section", "section", "distortion", "top"]))
        if kind == "section":
            section = draw(st.sampled_from(sorted(SECTION_KEYS)))
            config[section][draw(st.sampled_from(SECTION_KEYS[section]))] = draw(VALUES)
        elif kind == "distortion":
            name, setting = draw(st.sampled_from(DISTORTION_SETTINGS))
            config.setdefault("distortions", {}).setdefault(name, {})[setting] = draw(VALUES)
        else:
            top[draw(st.sampled_from(["seed", "num", "unknown_key", "composition"]))] = draw(st.one_of(SCALARS, st.just(1)))
    return {**config, **top}


def _object_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    alpha = np.zeros((24, 24), np.uint8)
    cv2.ellipse(alpha, (12, 12), (10, 8), 0, 0, 360, 255, -1)
    return encode_png(np.dstack([rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), alpha]))


def _photo(seed: int, side: int = 40) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8))


FILE_BYTES = st.one_of(st.binary(max_size=64), st.just(b""), st.just(b"plain text\n"),
                       st.integers(0, 9).map(_object_png), st.integers(0, 9).map(_photo),
                       st.integers(0, 9).map(lambda seed: _photo(seed, 8)))
NAMES = st.sampled_from(["a.png", "b.jpg", "c.jpeg", "d.txt", "e.webp", "f.mp4"])


def input_folders(good: Callable[[int], bytes]) -> st.SearchStrategy[dict[str, bytes]]:
    """Files of drawn names and bytes, usually beside one good file (so runs get past the inputs)."""
    drawn = st.dictionaries(NAMES, FILE_BYTES, max_size=2)
    return st.tuples(st.booleans(), st.booleans(), st.integers(0, 9), drawn).map(
        lambda t: {**({"good.png": good(t[2])} if t[0] or t[1] else {}), **t[3]} or {"empty.png": b""})


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A fresh folder that is also the working directory (relative writes would land in it)."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="synth-prop-") as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(previous)


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def check_outcome(result, allowed: set[int]) -> None:
    event(f"exit {result.exit_code}")  # shown by --hypothesis-show-statistics
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in allowed, result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


OUT_KINDS = st.sampled_from(["fresh", "fresh", "fresh", "fresh", "a file", "foreign shards"])


def prepare_out(root: Path, kind: str) -> Path:
    out = root / "run" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "a file":
        out.write_bytes(b"mine")
    elif kind == "foreign shards":
        write_files(out, {"train-00000.parquet": b"PAR1 someone else's PAR1"})
    return out


# Few examples keep the suite fast; explore longer with e.g. SYNTH_PROPERTY_EXAMPLES=500.
EXAMPLES = int(os.environ.get("SYNTH_PROPERTY_EXAMPLES", "0"))


@settings(max_examples=EXAMPLES or 12, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(config=expand_configs(), sources=input_folders(_object_png), backgrounds=input_folders(_photo),
       num=st.integers(1, 3), out_kind=OUT_KINDS)
def test_expand_never_tracebacks_and_writes_only_under_out(config, sources, backgrounds, num, out_kind):
    with sandbox() as root:
        source_dir = write_files(root / "objects", sources)
        background_dir = write_files(root / "backgrounds", backgrounds)
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        out = prepare_out(root, out_kind)
        before = files_under(root, skip=out)
        out_before = files_under(out) if out.is_dir() else out.read_bytes() if out.exists() else None
        result = run_cli("expand", source_dir, "-b", background_dir, "-o", out, "-c", config_path, "-n", num, "-w", 1)
        check_outcome(result, {0, 2})
        assert files_under(root, skip=out) == before
        if result.exit_code != 0:  # a refused run leaves --out as it found it (the lock file aside)
            after = files_under(out, skip=out / ".synth.lock") if out.is_dir() else (
                out.read_bytes() if out.exists() else None)
            assert after == out_before


@st.composite
def search_inputs(draw) -> dict:
    return {
        "query": draw(st.one_of(st.integers(0, 9).map(_object_png), st.integers(0, 9).map(_photo), FILE_BYTES,
                                st.integers(0, 9).map(lambda seed: _photo(seed, 2)))),
        "query_name": draw(st.sampled_from(["query.png", "query.png", "query.jpg", "query"])),
        "media": draw(input_folders(_photo)),
        "scales": draw(st.one_of(st.sampled_from(["0.5,1,2", "0.5,1,2", "1", "0.0001", "-1", "1,,2", "30", "abc"]),
                                 st.text(max_size=6))),
        "threshold": draw(st.one_of(st.none(), st.floats(-1.0, 2.0, allow_nan=False))),
        "pairs": draw(st.one_of(st.none(), st.none(), st.binary(max_size=40),
                                st.just(b'{"query": "query.png", "medium": "media/good.png"}\n'))),
    }


@settings(max_examples=EXAMPLES or 8, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(case=search_inputs(), out_kind=st.sampled_from(["fresh", "fresh", "a file"]))
def test_search_never_tracebacks_and_writes_only_under_out(case, out_kind):
    with sandbox() as root:
        query = root / case["query_name"]
        query.write_bytes(case["query"])
        media = write_files(root / "media", case["media"])
        out = prepare_out(root, out_kind)
        options = ["--out", out, "--device", "cpu", "--scales", case["scales"]]
        if case["threshold"] is not None:
            options += ["--threshold", repr(case["threshold"])]
        if case["pairs"] is not None:
            (root / "pairs.jsonl").write_bytes(case["pairs"])
            args = ["search", "--pairs", root / "pairs.jsonl", *options]
        else:
            args = ["search", query, *sorted(media.iterdir()), *options]
        before = files_under(root, skip=out)
        result = run_cli(*args)
        check_outcome(result, {0, 1, 2})
        assert files_under(root, skip=out) == before
