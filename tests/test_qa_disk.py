"""A full disk, a read-only folder, a permission error under the writing commands: one line naming the
output (not the hidden temporary, not "file system"), nothing half-written under its final name."""

from __future__ import annotations

import errno
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment.photo_shards import write_row_shards
from augment.schema import COMPOSITE_SCHEMA, RUN_HASH_KEY
from augment.shard_writer import write_shard
from tests.cli_checks import assert_one_line_error, run_cli
from tests.shard_factory import make_shards

# What pyarrow's writers raise on a full disk: an errno, no file name.
PYARROW_FULL = OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")


def _full_disk(*args, **kwargs):
    raise OSError(*PYARROW_FULL.args)


def _only(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".synth.lock")


def test_export_on_a_full_disk_names_its_out_folder(tmp_path, monkeypatch):
    shards = make_shards(tmp_path / "shards", n_cutouts=3, n_composites=3).folder
    out = tmp_path / "coco"

    def full(self, data):  # Path.write_bytes on a full disk: the write to the open file names no file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    line = assert_one_line_error(run_cli("export", shards, "--format", "coco", "--out", out), 2,
                                 "coco", "No space left on device")
    assert "file system" not in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_photo_shards_on_a_full_disk_name_the_shard(tmp_path, monkeypatch):
    source = make_shards(tmp_path / "shards", n_cutouts=3, n_composites=2)
    rows = pq.read_table(next(source.folder.glob("train-*.parquet"))).to_pylist()
    out = tmp_path / "photos"
    monkeypatch.setattr(pq, "write_table", _full_disk)
    with pytest.raises(OSError) as caught:
        write_row_shards(rows, out, "photos", "0" * 16)
    assert caught.value.filename == str(out / "photos-00000.parquet")
    assert caught.value.strerror == "No space left on device"
    assert _only(out) == []


def test_a_composite_shard_on_a_full_disk_is_named(tmp_path, monkeypatch):
    source = make_shards(tmp_path / "shards", n_cutouts=3, n_composites=2)
    table = pq.read_table(next(source.folder.glob("train-*.parquet")))
    schema = COMPOSITE_SCHEMA.with_metadata({**COMPOSITE_SCHEMA.metadata, RUN_HASH_KEY: b"0" * 16})
    table = pa.Table.from_pylist(table.to_pylist(), schema=schema)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _full_disk)
    with pytest.raises(OSError) as caught:
        list(write_shard(out / "train-00000.parquet", [table], schema, 4, table.column("id").to_pylist()))
    assert caught.value.filename == str(out / "train-00000.parquet")
    assert _only(out) == []


@pytest.mark.skipif(not pathlib.Path("/dev/full").exists(), reason="needs /dev/full (a device every write to fails with ENOSPC)")
def test_a_checkpoint_on_a_full_disk_is_the_systems_error_naming_it(tmp_path, monkeypatch):
    """torch's own writer said "RuntimeError: [enforce fail at inline_container.cc] unexpected pos": a traceback."""
    import contextlib

    from torch import nn

    from augment.atomic_files import naming_errors
    from train import checkpoint

    @contextlib.contextmanager
    def onto_a_full_disk(final):
        with naming_errors(final):
            yield pathlib.Path("/dev/full")

    monkeypatch.setattr(checkpoint, "atomic_path", onto_a_full_disk)
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as caught:
        checkpoint.save_checkpoint(target, model=nn.Linear(2, 2), optimizer=None, step=1, config={}, config_hash="x")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)


def test_an_output_files_lock_on_a_full_disk_is_named_and_removed(tmp_path, monkeypatch):
    """eval --out, calibrate, show, export-onnx: the lock's record failed as "file system: No space left
    on device" and left the hidden .NAME.synth.lock beside the output for good."""
    from augment import locking

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locking.os, "pwrite", full)
    out = tmp_path / "metrics.json"
    with pytest.raises(OSError) as caught, locking.file_lock(out, "eval run"):
        pass
    assert caught.value.filename == str(locking.file_lock_path(out))
    assert sorted(tmp_path.iterdir()) == []
    with pytest.raises(OSError) as caught, locking.folder_lock(tmp_path / "found", "search run"):
        pass
    assert caught.value.filename == str(tmp_path / "found" / locking.LOCK_FILE)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_a_highlighted_video_cut_short_by_a_full_disk_is_not_kept(tmp_path, suffix):
    """OpenCV's writer says nothing when its writes fail: search renamed the truncated file into place."""
    import numpy as np

    from augment.imageio import InputError
    from pipelines.video_writer import VideoWriter

    target = tmp_path / f"clip.highlight{suffix}"
    writer = VideoWriter(target, 10.0, 64, 48)
    encoder, temporary = writer._writer, writer._temporary

    class CutShort:  # the disk filled up under the encoder: its file ends where the space did
        def write(self, frame):
            encoder.write(frame)

        def release(self):
            encoder.release()
            with open(temporary, "r+b") as file:
                file.truncate(temporary.stat().st_size // 2)

    writer._writer = CutShort()
    for value in range(0, 250, 25):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    with pytest.raises(InputError, match="clip.highlight"):
        writer.close()
    assert sorted(tmp_path.iterdir()) == []


class _FullFile:
    """A text file on a full disk: its writes land in the buffer, its flush and close fail (no file name)."""

    def __init__(self, real):
        self.real = real

    def write(self, text):
        return len(text)

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self.real.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def _fill_disk_under(monkeypatch, name: str) -> None:
    """Every text file named ``name`` opened from now on is on a full disk."""
    import builtins

    real_open = builtins.open

    def opening(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        return _FullFile(handle) if pathlib.Path(str(file)).name == name else handle

    monkeypatch.setattr(builtins, "open", opening)


def test_searchs_output_record_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """search said "file system: No space left on device": the record's write and then its close named no file."""
    from pipelines.output_record import OutputRecord
    from pipelines.search_jobs import SEARCH_OUTPUTS

    _fill_disk_under(monkeypatch, ".synth-search-outputs")
    record = OutputRecord(tmp_path / "found", SEARCH_OUTPUTS)
    with pytest.raises(OSError) as caught, record:
        record.add("photo")
    assert caught.value.filename == str(record.path)


def test_segments_progress_file_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """The progress line after a photo's files, then the file's close on leaving: neither named the file."""
    import numpy as np

    from pipelines import segment_outputs

    from train.segment_config import SegmentClass

    class Tiny:
        classes = (SegmentClass("background"), SegmentClass("thing"))
        model_id = "tiny"

        def predict(self, image):
            labels = np.zeros(image.shape[:2], np.uint8)

            class Prediction:
                def at_photo_size(self):
                    return labels, np.ones(labels.shape, np.float32)
            return Prediction()

    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photos / "a.png")
    _fill_disk_under(monkeypatch, segment_outputs.PROGRESS_FILE)
    out = tmp_path / "labelled"
    with pytest.raises(OSError) as caught:
        segment_outputs.run_segment(Tiny(), [photos / "a.png"], out)
    assert caught.value.filename == str(out / segment_outputs.PROGRESS_FILE)


def test_a_write_whose_rename_fails_names_the_output_not_its_temporary(tmp_path):
    """A folder under a search output's name: the line named '.0001.heat.png.<writer>.xxxxxxxx.tmp'."""
    from augment.atomic_files import atomic_write_text

    (tmp_path / "0001.heat.png").mkdir()
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "0001.heat.png", "x")
    assert caught.value.errno == errno.EISDIR
    assert str(caught.value) == f"[Errno {errno.EISDIR}] Is a directory: '{tmp_path / '0001.heat.png'}'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001.heat.png"]


def test_an_output_folder_made_on_a_full_disk_is_not_left_behind(tmp_path, monkeypatch):
    """expand, search, segment, extract, photo-shards, train, selftune on a full disk each left an
    empty --out holding only .synth.lock (the lock's record failed before claim_output_folder's block)."""
    from augment import locking

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    existing = tmp_path / "existing"
    existing.mkdir()
    monkeypatch.setattr(locking.os, "pwrite", full)
    for folder in (tmp_path / "out" / "deeper", existing):
        with pytest.raises(OSError), locking.claim_output_folder(folder, "expand run"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_tensorboard_on_a_full_disk_is_one_error_naming_its_folder(tmp_path, monkeypatch, capfd):
    """train on a full disk printed TensorBoard's writer thread's traceback, then 'file system: No space
    left on device'."""
    from tensorboard.summary.writer import record_writer

    from train import tensorboard_log

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    with pytest.raises(OSError) as caught:
        tensorboard_log.tensorboard_writer(tmp_path / "tb", 1)
    assert caught.value.filename == str(tmp_path / "tb")
    assert "Traceback" not in capfd.readouterr().err
