"""Trust boundaries: what a file from a stranger (a shard folder, a COCO file, a checkpoint) or another user
of the machine (a shared temporary folder) can make synth do. Each test fails without its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from augment.imageio import InputError
from augment.locking import LOCK_FILE, file_lock, file_lock_path, folder_lock, outside_lock_path
from cli_checks import assert_one_line_error, run_cli


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


def test_a_link_planted_as_the_shared_outside_lock_is_never_written_through(tmp_path, monkeypatch):
    import augment.locking as locking

    monkeypatch.setattr(locking, "SHARED_TEMPORARY", tmp_path / "tmp")  # not the machine's /tmp/synth-locks
    (tmp_path / "tmp").mkdir()
    out, victim = tmp_path / "out", _victim(tmp_path)
    out.mkdir()
    lock = outside_lock_path(out)  # another user of the machine plants it in the shared folder
    assert lock is not None
    lock.symlink_to(victim)
    with folder_lock(out, "expand"):
        pass
    assert victim.read_text() == "precious\n"


def test_a_linked_lock_file_in_a_strangers_folder_is_one_line_and_its_target_untouched(tmp_path):
    out, victim = tmp_path / "shards", _victim(tmp_path)
    out.mkdir()
    (out / LOCK_FILE).symlink_to(victim)  # a colleague's folder, unpacked
    with pytest.raises(InputError, match="symbolic link"):
        with folder_lock(out, "expand"):
            pass
    report = tmp_path / "report.json"
    file_lock_path(report).symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"):
        with file_lock(report, "eval"):
            pass
    assert victim.read_text() == "precious\n"
    objects = Path(__file__).parents[1] / "sample_data" / "objects"
    assert_one_line_error(run_cli("expand", "--out", out, objects, "--num", 1), 2, "symbolic link")
    assert victim.read_text() == "precious\n"


def test_a_fifo_as_a_shard_folders_lock_file_is_one_line_not_a_reader_waiting_forever(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    os.mkfifo(folder / LOCK_FILE)
    # (a reader goes on holding the lock outside the folder, as where no lock file can be had; it waited
    # forever on the FIFO's open)
    code = ("import logging, sys\nfrom augment.locking import reading_lock\nlogging.basicConfig(level=logging.INFO)\n"
            "with reading_lock(sys.argv[1]): print('read')\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=20,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.stdout.strip() == "read" and "not a plain file" in done.stderr, done.stderr


def _coco_with(tmp_path: Path, names: list[str]) -> Path:
    import json

    import cv2
    import numpy as np
    image = np.full((64, 64, 3), 200, np.uint8)
    image[16:48, 16:48] = (0, 0, 255)
    (tmp_path / "private").mkdir()
    cv2.imwrite(str(tmp_path / "private" / "photo.png"), image)
    source = tmp_path / "coco"
    (source / "images").mkdir(parents=True)
    cv2.imwrite(str(source / "images" / "ok.png"), image)
    square = [[16, 16, 48, 16, 48, 48, 16, 48]]
    data = {"images": [{"id": i, "file_name": name, "width": 64, "height": 64} for i, name in enumerate(names)],
            "categories": [{"id": 1, "name": "box"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "segmentation": square, "iscrowd": 0,
                             "bbox": [16, 16, 32, 32], "area": 1024} for i in range(len(names))]}
    (source / "instances.json").write_text(json.dumps(data))
    return source


def test_a_coco_file_name_outside_its_folders_is_a_skip_not_a_read_of_any_image_on_the_machine(tmp_path):
    from augment.coco_source import load_coco_index
    from augment.source_items import Skip
    outside = tmp_path / "private" / "photo.png"
    source = _coco_with(tmp_path, ["ok.png", "../../private/photo.png", str(outside), "..\\..\\private\\photo.png"])
    coco = load_coco_index(source)
    assert coco.locate(0) == source / "images" / "ok.png"
    for image_id in (1, 2, 3):
        found = coco.locate(image_id)
        assert isinstance(found, Skip) and "absolute path or climbs out" in found.reason, found


def test_a_checkpoint_made_to_look_like_one_is_one_line_naming_it_not_a_traceback(tmp_path):
    import numpy as np
    import torch

    from train.checkpoint import load_checkpoint
    from train.config import TrainConfig
    query, medium = tmp_path / "q.png", tmp_path / "m.png"
    import cv2
    cv2.imwrite(str(query), np.random.default_rng(0).integers(0, 255, (48, 48, 3), np.uint8))
    cv2.imwrite(str(medium), np.random.default_rng(1).integers(0, 255, (96, 96, 3), np.uint8))
    whole = {"format": 1, "model": {}, "config_hash": "0" * 16, "step": 0}
    cases = {"no-config.pt": {"format": 1}, "no-values.pt": {**whole, "config": {}},
             "values-a-list.pt": {**whole, "config": {"values": [1]}},
             "unknown-key.pt": {**whole, "config": {"values": {"bogus": 1}}}}
    for name, state in cases.items():
        torch.save(state, tmp_path / name)
        result = run_cli("search", query, medium, "--out", tmp_path / f"out-{name}", "--checkpoint", tmp_path / name)
        assert_one_line_error(result, 2, name)
    with pytest.raises(InputError, match="unknown-key.pt: unknown config key.*bogus"):
        TrainConfig.from_checkpoint(load_checkpoint(tmp_path / "unknown-key.pt"), tmp_path / "unknown-key.pt")


def test_a_shard_row_over_the_pixel_limit_is_never_decoded_by_show(tmp_path, monkeypatch):
    from shard_factory import make_shards
    folder = Path(make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder)
    # a colleague's row of 25000x25000 px (600 KB of PNG) took show 3.8 GB; here the limit comes down to the rows
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "0.002")
    result = run_cli("show", folder, "-o", tmp_path / "sheet.png")
    assert_one_line_error(result, 2, "composite-0", "64x64 px", "over the limit")
    assert not (tmp_path / "sheet.png").exists()


def test_json_nested_thousands_deep_is_one_line_naming_the_file_not_a_recursion_traceback(tmp_path):
    from shard_factory import make_shards
    deep = "[" * 100_000 + "]" * 100_000  # 200 KB
    source = tmp_path / "coco"
    (source / "images").mkdir(parents=True)
    (source / "instances.json").write_text('{"images": [], "annotations": ' + deep + "}")
    result = run_cli("expand", "--out", tmp_path / "out", source, "--num", 1)
    assert_one_line_error(result, 2, "instances.json", "nested too deep")
    folder = Path(make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder)
    (folder / "manifest.json").write_text(deep)  # a colleague's shard folder
    assert_one_line_error(run_cli("show", folder, "-o", tmp_path / "sheet.png"), 2, "manifest.json", "nested too deep")


def test_a_coco_polygon_point_far_outside_its_image_is_a_skip_not_gigabytes_rasterised(tmp_path):
    from augment.coco_source import annotation_mask_or_skip, coco_annotation_mask
    from augment.source_items import Skip
    assert coco_annotation_mask({"segmentation": [[0, 0, 70, 0, -5, 70]]}, 64, 64).sum() > 0  # a little outside: read
    # one corner at 3e8 took pycocotools 15 GB and a minute; 1e5 is as far outside, and quick to refuse
    with pytest.raises(ValueError, match="far outside the 64x64 image"):
        coco_annotation_mask({"segmentation": [[0, 0, 1e5, 0, 1e5, 1e5]]}, 64, 64)
    skip = annotation_mask_or_skip({"segmentation": [[0, 0, 50, 0, 1e5, -1e5]]}, tmp_path / "a.png", 64, 64)
    assert isinstance(skip, Skip) and "far outside" in skip.reason


def test_a_runs_record_file_planted_as_a_link_in_its_out_folder_is_never_written_through(tmp_path):
    from augment.atomic_files import record_file
    from pipelines.output_record import OutputRecord
    from pipelines.search_jobs import SEARCH_OUTPUTS
    out, victim = tmp_path / "found", _victim(tmp_path)
    out.mkdir()
    (out / ".synth-search-outputs").symlink_to(victim)  # a shared results folder, another user's link
    with pytest.raises(InputError, match="symbolic link"):
        with OutputRecord(out, SEARCH_OUTPUTS, [tmp_path / "a.png"], keep=False):
            pass
    for mode in ("w", "a"):
        with pytest.raises(InputError, match="symbolic link"):
            with record_file(out / ".synth-search-outputs", mode) as file:
                file.write("x\n")
    assert victim.read_text() == "precious\n"
    with record_file(out / "plain.jsonl", "w") as file:
        file.write("a\n")
    with record_file(out / "plain.jsonl", "a") as file:
        file.write("b\n")
    assert (out / "plain.jsonl").read_text() == "a\nb\n"


def test_the_instance_benchmarks_feature_cache_is_read_without_running_code(tmp_path):
    import torch
    from benchmark_modules import load_benchmark
    cases = load_benchmark("instance_cases", "instance_cases_security")
    bank = cases.Bank.__new__(cases.Bank)
    bank.photos = [cases.Photo(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 2, 2), (24, 24), {"coat": [0, 1]})]
    shot = cases.Shot(0, 1, "coat", torch.ones(3, 3, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool))
    shot.views = [(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), [torch.ones(1, 1, 3, 3)])]
    bank.shots, bank.by_category = [[shot]], {"coat": [0]}
    path = tmp_path / "valid.pt"
    torch.save({"args": ["train", 1, 2], "bank": bank.to_plain()}, path)
    torch.load(path, weights_only=True)  # plain containers only: no class of the script's is unpickled
    again = cases.Bank.cached(path, None, "train", 1, 2)
    assert again.photos[0].size == (24, 24) and again.shots[0][0].category == "coat"
    assert again.look_alikes(1, "coat") == [0]

    # A cache file handed on holding code (pickle's __reduce__) is never run: it is built again instead.
    marker = tmp_path / "ran.txt"
    torch.save({"args": ["train", 1, 2], "bank": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    built = []
    original = cases.Bank.__init__

    def cheap(self, *args):
        built.append(args)
        self.photos, self.shots, self.by_category = [], [], {}

    try:
        cases.Bank.__init__ = cheap
        cases.Bank.cached(tmp_path / "evil.pt", None, "train", 1, 2)
    finally:
        cases.Bank.__init__ = original
    assert not marker.exists() and built


class _RunsCode:
    """Unpickled by full pickle, it writes ``path`` (what a cache file from elsewhere could do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("ran",))


def test_a_checkpoints_config_asking_for_a_terabyte_network_is_refused_before_it_is_built(tmp_path):
    import cv2
    import numpy as np
    import torch

    from train.model import SearchNetConfig
    for model, words in (({"conversion_width": 4096, "conversion_layers": 4096}, "weights"),
                         ({"scale_pairs": [[1.0, 1.0]] * 100}, "at most 32 pairs"),
                         ({"scale_pairs": [[1.0, 1000.0]]}, "at most 8")):
        with pytest.raises(ValueError, match=words):  # each width and count under its maximum, together 2.5 TB
            SearchNetConfig(**model)
    query, medium = tmp_path / "q.png", tmp_path / "m.png"
    cv2.imwrite(str(query), np.random.default_rng(0).integers(0, 255, (48, 48, 3), np.uint8))
    cv2.imwrite(str(medium), np.random.default_rng(1).integers(0, 255, (96, 96, 3), np.uint8))
    state = {"format": 1, "model": {}, "config_hash": "0" * 16, "step": 0,
             "config": {"values": {"model": {"conversion_width": 4096, "conversion_layers": 4096}}}}
    torch.save(state, tmp_path / "huge.pt")  # 1 KB
    result = run_cli("search", query, medium, "--out", tmp_path / "out", "--checkpoint", tmp_path / "huge.pt")
    assert_one_line_error(result, 2, "huge.pt", "conversion_layers 4096")


def test_extract_never_writes_previews_through_a_link_left_in_its_out_folder(tmp_path, monkeypatch):
    import pipelines.extract as extract_module
    from pipelines.extract import ExtractConfig, run_extract
    from segment_factory import make_unlabeled, save_untrained_segmenter
    from test_extract_resume import LENIENT, Counting
    monkeypatch.setattr(extract_module, "CHUNK_PHOTOS", 2)
    images = sorted(make_unlabeled(tmp_path / "photos", count=3, size=48).glob("*.png"))
    segmenter = Counting(save_untrained_segmenter(tmp_path / "model.pt"), "cpu")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "previews").symlink_to(elsewhere)  # a shared folder's older content: a link out of --out
    run_extract(segmenter, images, out, ExtractConfig(**LENIENT))
    assert list(elsewhere.iterdir()) == []
    assert not (out / "previews").is_symlink() and len(list((out / "previews").iterdir())) == 3


def test_an_output_written_again_keeps_the_private_mode_its_user_gave_it(tmp_path):
    from augment.atomic_files import atomic_write_text, current_umask
    from shard_factory import make_shards
    report = tmp_path / "report.json"
    atomic_write_text(report, "{}")
    assert report.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # a new file: as open() makes it
    report.chmod(0o600)
    atomic_write_text(report, '{"a": 1}')
    assert report.stat().st_mode & 0o777 == 0o600 and report.read_text() == '{"a": 1}'
    folder = Path(make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder)
    sheet = tmp_path / "sheet.png"
    assert run_cli("show", folder, "-o", sheet).exit_code == 0
    sheet.chmod(0o640)
    assert run_cli("show", folder, "-o", sheet, "--seed", 1).exit_code == 0
    assert sheet.stat().st_mode & 0o777 == 0o640


def test_a_fifo_in_a_strangers_shard_or_coco_folder_is_one_line_not_a_run_waiting_forever(tmp_path):
    from cli_checks import error_lines, run_cli_process
    from shard_factory import make_shards
    folder = Path(make_shards(tmp_path / "shards", n_cutouts=4, n_composites=4, rows_per_shard=4, size=64).folder)
    shard = sorted(folder.glob("train-*.parquet"))[0]
    shard.unlink()
    os.mkfifo(shard)  # unpacked from a tarball; SIGTERM did not end the wait either
    done = run_cli_process(["show", folder, "-o", tmp_path / "sheet.png"], tmp_path, timeout=30)
    assert done.returncode == 2 and len(error_lines(done.stderr)) == 1 and "no plain file" in done.stderr
    from augment.objects_table import read_objects_table
    (folder / "objects.parquet").unlink()
    os.mkfifo(folder / "objects.parquet")
    with pytest.raises(InputError, match="no plain file"):
        read_objects_table(folder / "objects.parquet")
    source = tmp_path / "coco"
    (source / "images").mkdir(parents=True)
    os.mkfifo(source / "instances.json")
    done = run_cli_process(["expand", "--out", tmp_path / "out", source, "--num", 1], tmp_path, timeout=30)
    # One error line, after the warning that says why instances.json was not read (not a file: left out).
    lines = error_lines(done.stderr)
    assert done.returncode == 2 and [line.split(":")[0] for line in lines] == ["warning", "error"], done.stderr
    assert "FIFO(s), socket(s) or device(s), not files, left out (instances.json)" in lines[0]


@pytest.mark.parametrize("mode", [(), ("--every-instance",)])
def test_search_never_writes_a_videos_heat_frames_through_a_link_in_its_out_folder(tmp_path, mode):
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 96))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (96, 96, 3), np.uint8))
    writer.release()
    query = tmp_path / "q.png"
    cv2.imwrite(str(query), rng.integers(0, 255, (48, 48, 3), np.uint8))
    out, elsewhere = tmp_path / "found", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "clip.heat").symlink_to(elsewhere)  # a shared folder's link, out of --out
    result = run_cli("search", query, video, "--out", out, "--save-heatmaps", "--no-verify", *mode)
    assert result.exit_code == 0, result.output
    assert list(elsewhere.iterdir()) == []
    assert not (out / "clip.heat").is_symlink() and len(list((out / "clip.heat").iterdir())) == 3


def test_a_hard_linked_record_file_is_refused_before_it_is_emptied(tmp_path):
    """open(..., 'w') passed O_TRUNC: the other name's file was emptied before the link check refused it."""
    from augment.atomic_files import record_file
    from augment.outputs import UnsafeFileError

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.link(victim, tmp_path / "record.jsonl")
    with pytest.raises(UnsafeFileError, match="hard links"):
        with record_file(tmp_path / "record.jsonl", "w"):
            pass
    assert victim.read_text() == "keep me"
    (tmp_path / "own.jsonl").write_text("old")
    with record_file(tmp_path / "own.jsonl", "w") as file:  # a plain file of its own: truncated as asked
        file.write("new")
    assert (tmp_path / "own.jsonl").read_text() == "new"


def test_a_lock_file_its_holder_removes_as_it_is_opened_is_taken_afresh(tmp_path, monkeypatch):
    """A link count of 0 (the holder removed it between our open and fstat) was refused as 'a file with
    other names (hard links)'; file_lock's retry takes the one under the name."""
    import augment.outputs as outputs

    target = tmp_path / "report.json"
    real_open, calls = os.open, []

    def open_then_removed(path, flags, mode=0o777):
        handle = real_open(path, flags, mode)
        if str(path).endswith(".lock") and not calls:
            calls.append(path)
            os.unlink(path)
        return handle

    monkeypatch.setattr(outputs.os, "open", open_then_removed)
    with file_lock(target, "calibrate"):
        assert file_lock_path(target).exists()
    assert calls


def test_a_reader_of_a_folder_whose_lock_file_is_a_link_reads_holding_the_outside_lock(tmp_path):
    """A symbolic or hard-linked .synth.lock (a DVC or cp -al copy) stopped `synth train` and `show` with
    'remove it': reading through it writes nothing."""
    from augment.locking import reading_lock

    folder = tmp_path / "shards"
    folder.mkdir()
    (tmp_path / "elsewhere").write_text("")
    os.symlink(tmp_path / "elsewhere", folder / LOCK_FILE)
    with reading_lock(folder):
        pass
    assert (tmp_path / "elsewhere").read_text() == ""


def test_a_fifo_named_as_an_image_is_one_line_not_a_read_waiting_forever(tmp_path):
    """read_image's first read of a FIFO waited for a writer forever (SIGTERM did not end it)."""
    os.mkfifo(tmp_path / "photo.png")
    code = ("import sys\nfrom augment.imageio import InputError, read_image\n"
            "try:\n    read_image(sys.argv[1])\nexcept InputError as e: print(e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "photo.png")], capture_output=True, text=True,
                          timeout=20, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert "is no plain file" in done.stdout and "an image file" in done.stdout, done.stderr
