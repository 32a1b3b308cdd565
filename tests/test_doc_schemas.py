"""README's lists of the fields synth writes are the fields it writes: the Parquet columns of
``objects.parquet`` and of the shards (nested fields included), and the keys of ``detections.jsonl``
lines (a still image, with and without verification). A column or key added, renamed or dropped
without README following fails here. README's objects.parquet list lacked ``source_size``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from cli_checks import run_cli

REPO = Path(__file__).resolve().parents[1]
NOT_FIELDS = {"huggingface", "auto", "null", "bytes", "path"}  # named there, no column (image structs' fields left out)


def _readme() -> str:
    return " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def _bullet(start: str) -> str:
    """README's ``- `NAME`: ...`` bullet of an output file, up to the next bullet."""
    text = _readme()
    begin = text.index(f"- `{start}`:")
    return text[text.index("`:", begin) + 2:text.index(" - `", begin + 1)]


def _names(passage: str) -> set[str]:
    """The plain names README puts in code spans (`box`, and each name of `{a, b [x0,y0], c: auto}`)."""
    names = set()
    for span in re.findall(r"`([^`]+)`", passage):
        if re.fullmatch(r"[a-z_]+", span):
            names.add(span)
        elif span.startswith("{"):
            names.update(re.findall(r"(?:^|,)\s*([a-z_]+)", re.sub(r"\[.*?\]", "", span.strip("{}"))))
    return names - NOT_FIELDS


def _columns(schema, said_elsewhere: frozenset[str] = frozenset()) -> set[str]:
    """Column names and their nested fields' (not those of ``said_elsewhere``: a struct another list names)."""
    import pyarrow as pa

    names = set()
    for field in schema:
        if field.name in NOT_FIELDS:
            continue
        names.add(field.name)
        kind = field.type
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
            kind = kind.value_type
        if pa.types.is_struct(kind) and field.name not in said_elsewhere:
            names |= _columns(kind, said_elsewhere)
    return names


def test_readme_lists_the_columns_of_objects_parquet() -> None:
    from augment.schema import OBJECTS_SCHEMA

    assert _names(_bullet("objects.parquet")) == _columns(OBJECTS_SCHEMA)


def test_readme_lists_the_columns_of_the_shards() -> None:
    from augment.schema import COMPOSITE_SCHEMA

    assert _names(_bullet("{split}-{index:05d}.parquet")) == _columns(COMPOSITE_SCHEMA, frozenset({"provenance"}))


def _documented_detection_keys() -> tuple[set[str], set[str], set[str]]:
    """The line's keys, DET's keys, and the keys verification adds (README's "Outputs in --out" and
    "Verification")."""
    text = _readme()
    line = re.search(r'`(\{"source", .*?\})` \(`highlight`', text).group(1)
    det = re.search(r"`DET = (\{.*?\})`", text).group(1)
    verified = re.search(r"and otherwise also (.*?)\.", text).group(1)
    return set(re.findall(r'"(\w+)"(?!\s*\|)', line)), set(re.findall(r'(?<!\| )"(\w+)"(?=[,}:])', det)), \
        set(re.findall(r"`(\w+)`", verified)) - NOT_FIELDS


def test_readme_lists_the_keys_of_detections_jsonl(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    query = cv2.GaussianBlur(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), (0, 0), 1)
    medium = np.full((96, 128, 3), 127, np.uint8)
    medium[30:70, 50:90] = query
    cv2.imwrite(str(tmp_path / "query.png"), query)
    cv2.imwrite(str(tmp_path / "medium.png"), medium)
    line_keys, det_keys, verified_keys = _documented_detection_keys()
    for extra, verify in ((set(), ["--no-verify"]), (verified_keys, [])):
        out = tmp_path / f"out{len(verify)}"
        result = run_cli("search", tmp_path / "query.png", tmp_path / "medium.png", "--out", out, "--untrained",
                         "--device", "cpu", "--workers", 1, *verify)
        assert result.exit_code == 0, result.output
        line = json.loads((out / "detections.jsonl").read_text().splitlines()[0])
        assert set(line) == line_keys
        assert set(line["best"]) == det_keys | extra, verify


def test_readme_names_every_image_and_video_format_read() -> None:
    """README's formats are those the commands read (search's --help listed mp4, avi and mov only;
    mkv, m4v and webm were read too, and README named no video format)."""
    from augment.imageio import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    passage = _readme().split("Images are ", 1)[1][:400]
    said = {word.lower() for word in re.findall(r"\b[A-Za-z][A-Za-z0-9]+\b", passage)}
    aliases = {"jpg": "jpeg", "tif": "tiff"}
    missing = sorted(e for e in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS if aliases.get(e[1:], e[1:]) not in said)
    assert not missing, missing


def test_readme_lists_the_keys_of_a_video_frames_detections_line(tmp_path: Path) -> None:
    """The temporal mode's line (README, "Video": per frame in detections.jsonl)."""
    text = _readme()
    span = re.search(r'Per frame in `detections.jsonl`: `(\{"frame".*?\})` with (.*?) as on a still image', text)
    documented = set(re.findall(r'(?<![:|] )"(\w+)"(?=[,:}])', span.group(1)))  # keys, not values
    documented |= set(re.findall(r"`(\w+)`", span.group(2)))
    rng = np.random.default_rng(1)
    target = cv2.GaussianBlur(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), (0, 0), 1)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for index in range(4):
        frame = np.full((96, 128, 3), 110, np.uint8)
        frame[30:62, 40 + 4 * index:72 + 4 * index] = target
        writer.write(frame)
    writer.release()
    cv2.imwrite(str(tmp_path / "query.png"), target)
    result = run_cli("search", tmp_path / "query.png", video, "--out", tmp_path / "out", "--untrained", "--device",
                     "cpu", "--box", "40,30,32,32")
    assert result.exit_code == 0, result.output
    line = json.loads((tmp_path / "out" / "detections.jsonl").read_text().splitlines()[1])
    assert set(line) | set(line["best"]) == documented
