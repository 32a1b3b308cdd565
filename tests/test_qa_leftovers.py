"""QA leftovers: input JSON saved with a UTF-8 byte-order mark, extract's output folder against
expand's and photo-shards', a finished extract rerun, and orphaned expand workers after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augment.config import SourceConfig
from augment.sources import read_source
from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_coco, make_label_map, make_mask_pairs
from segment_factory import make_unlabeled, save_untrained_segmenter

BOM = b"\xef\xbb\xbf"
REPO = Path(__file__).resolve().parents[1]


def _with_bom(path: Path) -> None:
    path.write_bytes(BOM + path.read_bytes())


# ------------------------------------------------------------ byte-order marks
@pytest.mark.parametrize("make, json_name, categories", [
    (make_coco, "instances.json", ["shirt", "shoe"]),
    (make_label_map, "label_list.json", ["jacket", "jacket", "skirt"]),
    (make_mask_pairs, "categories.json", ["object", "cup", "bag"]),
])
def test_source_json_saved_with_a_byte_order_mark_is_read(tmp_path, make, json_name, categories):
    """Notepad and Excel save "UTF-8" with a byte-order mark: the COCO .json, label_list.json and
    categories.json were refused ('Unexpected UTF-8 BOM')."""
    source = make(tmp_path / "source")
    _with_bom(source / json_name)
    items = list(read_source(source, SourceConfig()))
    assert [item.category for item in items] == categories


def test_source_json_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    source = make_label_map(tmp_path / "source")
    (source / "label_list.json").write_bytes('["null", "caf\xe9"]'.encode("latin-1"))
    result = run_cli("photo-shards", source, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, str(source / "label_list.json"), "not UTF-8")
    assert not (tmp_path / "out").exists()


def test_a_yaml_config_and_a_pairs_file_with_a_byte_order_mark_share_the_reader(tmp_path):
    from augment.config import read_yaml_mapping
    from pipelines.search_jobs import read_pairs

    config = tmp_path / "config.yaml"
    config.write_bytes(BOM + b"seed: 3\n")
    assert read_yaml_mapping(config) == {"seed": 3}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(BOM + b'{"query": "q.png", "medium": "a.jpg"}\n')
    assert [job.error for job in read_pairs(pairs)] == [None]


# ------------------------------------------------- extract into another command's folder
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".synth.lock"}


def test_extract_into_an_expansion_or_photo_shards_folder_is_refused_and_leaves_it(tmp_path):
    """extract's start removed the folder's manifest.json and objects.parquet and wrote its own (a
    takeover: the expansion's shards no longer listed); photo-shards already refused such folders."""
    from segment_factory import make_unlabeled, save_untrained_segmenter
    from test_hardening_expand import TINY
    from sources_factory import make_backgrounds, make_rgba_source

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    expansion, photo_shards = tmp_path / "expansion", tmp_path / "photo_shards"
    assert run_cli("expand", make_rgba_source(tmp_path / "objects"), "-b", make_backgrounds(tmp_path / "backgrounds"),
                   "-o", expansion, "-c", config, "-w", 1, "-n", 2).exit_code == 0
    assert run_cli("photo-shards", make_label_map(tmp_path / "labelled"), "-o", photo_shards).exit_code == 0
    model = save_untrained_segmenter(tmp_path / "model.pt")
    photos = make_unlabeled(tmp_path / "photos", count=2, size=48)
    for folder, writer in ((expansion, "synth expand"), (photo_shards, "synth photo-shards")):
        before = _files(folder)
        result = run_cli("extract", photos, "--checkpoint", model, "--out", folder)
        assert_one_line_error(result, 2, str(folder), writer)
        assert _files(folder) == before
        assert not (folder / "previews").exists()


def test_run_extract_refuses_an_expansion_folder_itself(tmp_path):
    """The library call (selftune's rounds call it too) checks as the CLI does."""
    from augment.imageio import InputError
    from augment.shards import write_manifest
    from pipelines.extract import ExtractConfig, run_extract
    from pipelines.segmenter import Segmenter
    from segment_factory import make_unlabeled, save_untrained_segmenter

    out = tmp_path / "expansion"
    write_manifest(out.mkdir() or out, {"config_hash": "abc", "shards": [], "num_rows": 0})
    (out / "objects.parquet").write_bytes(b"an expansion's objects")
    before = _files(out)
    images = sorted(make_unlabeled(tmp_path / "photos", count=1, size=48).glob("*.png"))
    with pytest.raises(InputError, match="synth expand"):
        run_extract(Segmenter(save_untrained_segmenter(tmp_path / "model.pt"), "cpu"), images, out, ExtractConfig())
    assert _files(out) == before


# ------------------------------------------------------ a finished extract rerun
def test_a_finished_extract_rerun_keeps_its_output_and_another_key_redoes_it(tmp_path, monkeypatch):
    """segment and expand keep a finished run's output when rerun with the same inputs; extract removed
    its parts folder on completion, so a rerun extracted every photo again."""
    import pipelines.extract as extract_module
    from augment.schema import MANIFEST_FILE, OBJECTS_FILE
    from pipelines.extract import SUMMARY_FILE, ExtractConfig, run_extract
    from test_extract_resume import LENIENT, Counting

    monkeypatch.setattr(extract_module, "CHUNK_PHOTOS", 2)
    images = sorted(make_unlabeled(tmp_path / "photos", count=3, size=48).glob("*.png"))
    segmenter = Counting(save_untrained_segmenter(tmp_path / "model.pt"), "cpu")
    out = tmp_path / "out"
    Counting.calls = 0
    first = run_extract(segmenter, images, out, ExtractConfig(**LENIENT))
    assert Counting.calls == 3 and not first.kept and first.cutouts > 0
    complete = {name: (out / name).read_bytes() for name in (SUMMARY_FILE, OBJECTS_FILE, MANIFEST_FILE)}
    again = run_extract(segmenter, images, out, ExtractConfig(**LENIENT))
    assert Counting.calls == 3 and again.kept  # no photo segmented again
    assert {k: v for k, v in again.to_dict().items() if k != "kept"} == \
        {k: v for k, v in first.to_dict().items() if k != "kept"}
    assert {name: (out / name).read_bytes() for name in complete} == complete

    (out / OBJECTS_FILE).write_bytes(b"damaged since")  # a finished output no longer whole: redone
    assert not run_extract(segmenter, images, out, ExtractConfig(**LENIENT)).kept and Counting.calls == 6
    other = run_extract(segmenter, images, out, ExtractConfig(**{**LENIENT, "min_area": 0.001}))
    assert not other.kept and Counting.calls == 9  # another config: extracted again


def test_extract_cli_says_a_finished_run_was_kept(tmp_path):
    model = save_untrained_segmenter(tmp_path / "model.pt")
    photos = make_unlabeled(tmp_path / "photos", count=2, size=48)
    first = run_cli("extract", photos, "--checkpoint", model, "--out", tmp_path / "out")
    assert first.exit_code == 0 and "kept" not in first.output
    again = run_cli("extract", photos, "--checkpoint", model, "--out", tmp_path / "out")
    assert again.exit_code == 0 and "kept: an earlier run" in " ".join(again.output.split()), again.output


# ------------------------------------------------------ orphaned expand workers
def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_expand_workers_orphaned_by_a_sigkill_end_without_a_traceback(tmp_path):
    """kill -9 of `synth expand --workers 2`: its pool workers finished their row group, then printed a
    BrokenPipeError traceback (twice) on the terminal the command shared, after its prompt came back."""
    from sources_factory import make_backgrounds, make_rgba_source

    config = tmp_path / "slow.yaml"
    config.write_text("sources: {min_area: 50}\ncomposition: {width: 384, height: 384}\n"
                      "output: {shard_rows: 16, row_group_rows: 8}\n")
    objects, backgrounds = make_rgba_source(tmp_path / "objects"), make_backgrounds(tmp_path / "bg", size=(400, 400))
    out, stderr_path = tmp_path / "out", tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:  # inherited by the workers: what they print lands here
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "expand", objects, "-b", backgrounds, "-o", out,
                                    "-c", config, "-n", "4000", "-w", "2"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=stderr, start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list(out.glob("train-00001.parquet")):
            assert process.poll() is None, stderr_path.read_text()
            time.sleep(0.02)
        workers = _children(process.pid)
        assert len(workers) == 2 and process.poll() is None, "rendering should be under way"
        time.sleep(0.5)  # workers mid-row-group and blocked sending one alike
        assert _orphans_end(process, workers, 60), "the orphaned workers should end after their row group"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever of this test's own session is left
        except ProcessLookupError:
            pass
    printed = stderr_path.read_text()
    assert "Traceback" not in printed and "BrokenPipeError" not in printed, printed
    assert not (out / "manifest.json").exists()  # killed: no finished output


def _orphans_end(process: subprocess.Popen, workers: list[int], seconds: float) -> bool:
    """Kill ``process`` (-9) and wait up to ``seconds`` for its ``workers`` to end; whether they did."""
    process.kill()
    process.wait()
    deadline = time.monotonic() + seconds
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(map(_running, workers))


def test_process_pool_workers_orphaned_by_a_sigkill_end_instead_of_waiting_for_good(tmp_path):
    """extract's superpixel workers (a ProcessPoolExecutor, with the same initializer as expand's pool)
    keep both ends of their queues: after a kill -9 of the command no broken pipe told them, and they
    waited for their next task, or to send a result, until reboot."""
    script = ("import time\nfrom concurrent.futures import ProcessPoolExecutor\nfrom augment.system import ignore_interrupts\n"
              "def slow(i):\n    time.sleep(0.3)\n    return b'x' * 200_000\n"
              "pool = ProcessPoolExecutor(2, initializer=ignore_interrupts)\n"
              "print(sum(len(r) for r in pool.map(slow, range(2))), flush=True)\n"
              "for r in pool.map(slow, range(1000)):\n    pass\n")
    (tmp_path / "pool.py").write_text(script)
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, str(tmp_path / "pool.py")], cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=stderr, start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout.readline().strip() == b"400000"  # both workers up and working
        workers = _children(process.pid)
        assert len(workers) == 2
        time.sleep(1.0)  # results piling up in the pipe
        assert _orphans_end(process, workers, 5), "orphaned workers still waiting"
    finally:
        process.stdout.close()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


# ------------------------------------------------------------ special files
@pytest.mark.parametrize("name, option", [("clip.mp4", None), ("checkpoint.pt", "--checkpoint")])
def test_a_fifo_named_as_a_video_or_a_checkpoint_is_one_line_not_a_wait(tmp_path, name, option):
    """`synth search q.png clip.mp4` on a FIFO waited in OpenCV's open forever (SIGTERM did not end it); a
    FIFO as --checkpoint was 'no such checkpoint'. Both are augment.imageio.check_plain_file's line."""
    import numpy as np

    from augment.imageio import save_image

    save_image(tmp_path / "q.png", np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    os.mkfifo(tmp_path / name)
    args = ["search", "q.png", "q.png" if option else name, "--out", "found", "--no-verify", "--device", "cpu"]
    args += [option, name] if option else ["--untrained"]
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=40, env={**os.environ, "PYTHONPATH": str(REPO)})
    kind = "a checkpoint" if option else "a video file"
    assert done.returncode in (1, 2) and f"{name}: is no plain file" in done.stderr and kind in done.stderr, \
        done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------ flat queries
def test_a_flat_colour_query_is_warned_about_once_and_a_textured_one_not(tmp_path):
    """A solid red square matched flat regions of any medium with high scores, without a word."""
    import numpy as np

    from augment.imageio import save_image

    flat = np.zeros((48, 48, 3), np.uint8)
    flat[..., 0] = 220
    save_image(tmp_path / "red.png", flat)
    textured = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    save_image(tmp_path / "pattern.png", textured)
    medium = np.full((120, 160, 3), 90, np.uint8)
    medium[20:80, 30:110] = (220, 0, 0)
    save_image(tmp_path / "medium.png", medium)
    for query, warned in (("red.png", 1), ("pattern.png", 0)):
        result = run_cli("search", tmp_path / query, tmp_path / "medium.png", tmp_path / "medium.png", "--untrained",
                         "--no-verify", "--device", "cpu", "--out", tmp_path / f"out-{query}")
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stderr.splitlines() if "one flat colour" in line]
        assert len(lines) == warned, result.stderr
        assert all(line.startswith(f"warning: {tmp_path / query}: the query is one flat colour") for line in lines)


# ------------------------------------------------------------ one header open per image
def test_an_image_reads_pillows_header_once_with_every_check_kept(tmp_path, monkeypatch):
    """A photo with EXIF opened Pillow's header twice (pixel limit, orientation), an indexed PNG mask with
    EXIF three times (limit, indices, orientation); once now, and the limit and the turn still apply."""
    import io

    import numpy as np
    from PIL import Image

    import augment.pixel_limit as pixel_limit
    from augment.imageio import InputError, image_from_bytes
    from augment.mask_files import read_mask

    opened = []
    original = pixel_limit.open_header

    def counted(data):
        opened.append(1)
        return original(data)

    monkeypatch.setattr(pixel_limit, "open_header", counted)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: read 90 degrees round
    colour = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8))
    for kind in ("JPEG", "PNG", "TIFF"):
        encoded = io.BytesIO()
        colour.save(encoded, kind, exif=exif)
        opened.clear()
        assert image_from_bytes(encoded.getvalue(), kind).shape == (60, 50, 3), kind
        assert len(opened) == 1, kind
    with_alpha = io.BytesIO()  # an RGBA TIFF: its stored alpha read from the same header (review)
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (50, 60, 4), dtype=np.uint8), "RGBA").save(with_alpha, "TIFF")
    opened.clear()
    assert image_from_bytes(with_alpha.getvalue(), "a.tif", "unchanged").shape == (50, 60, 4) and len(opened) == 1
    palette = Image.fromarray(np.random.default_rng(1).integers(0, 3, (50, 60), dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "mask.png", exif=exif)
    opened.clear()
    assert read_mask(tmp_path / "mask.png").shape == (60, 50) and len(opened) == 1
    monkeypatch.setenv("SYNTH_MAX_MEGAPIXELS", "0.001")  # 1,000 pixels: both refused before decoding
    for read in (lambda: image_from_bytes(encoded.getvalue(), "big.tif"), lambda: read_mask(tmp_path / "mask.png")):
        with pytest.raises(InputError, match="megapixel|pixel limit|SYNTH_MAX_MEGAPIXELS"):
            read()
