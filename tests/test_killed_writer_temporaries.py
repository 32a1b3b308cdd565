"""Temporaries of killed writes: a SIGKILL mid-write leaves a hidden temporary (a file, an export's
staging folder, a checkpoint, an object-store scratch shard); the next run writing there removes
those whose writer is gone and keeps a live writer's and the user's. Small generated data, CPU only."""

from __future__ import annotations

from pathlib import Path

from cli_checks import run_cli
from shard_factory import make_shards


# ----------------------------------------------------------------- temporaries of killed writes
def _writer_pid(temporary: Path) -> int:
    from augment.atomic_files import TEMPORARY_NAME

    return int(TEMPORARY_NAME.fullmatch(temporary.name)["pid"])


def test_a_killed_writes_temporary_is_removed_by_the_next_run_and_a_live_writers_kept(tmp_path):
    """A SIGKILL during an atomic write left its hidden temporary beside the file for good, and every
    killed run one more. The next run writing there removes those whose process is gone; a temporary
    another process is still writing, another machine's, one of an unknown format, a folder or a
    file of the user's stay."""
    from augment.atomic_files import machine_token, temporary_beside
    from cli_checks import killed_write

    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    dead = killed_write(sheets / "sheet.png")
    assert dead.read_bytes() == b"half written" and dead.name.startswith(".sheet.png.")
    pid = _writer_pid(dead)
    live = temporary_beside(sheets / "sheet.png")  # this process's: a writer still at work
    elsewhere = format(int(machine_token(), 16) ^ 1, "08x")  # the same pid on another machine
    kept = [live, sheets / f".sheet.png.{elsewhere}-{pid}.abcdefgh.tmp", sheets / ".sheet.png.abcdefgh.tmp",
            sheets / ".notes.tmp", sheets / f".sheet.png.{machine_token()}-{pid}.abcdefgh.txt.bak"]
    for path in kept[1:]:
        path.write_bytes(b"keep")
    folder = sheets / f".sheet.png.{machine_token()}-{pid}.zzzzzzzz.tmp"  # named like one, but a folder
    folder.mkdir()
    result = run_cli("--verbose", "show", tmp_path / "shards", "--out", sheets / "sheet.png", "--tile", 32)
    assert result.exit_code == 0, result.output
    assert not dead.exists() and all(path.exists() for path in kept) and folder.is_dir()
    assert "removed 1 temporary file(s)" in " ".join(result.output.split())
    assert (sheets / "sheet.png").is_file()


def test_a_temporary_of_a_name_too_long_for_its_suffixes_is_cut_not_an_error(tmp_path):
    """The temporary is the final name plus ~30 characters: a 250-character name was ENAMETOOLONG."""
    import os

    from augment.atomic_files import (atomic_write_bytes, machine_token, orphaned_temporary, temporary_beside,
                                      temporary_final_name)

    final = tmp_path / ("x" * 246 + ".png")
    atomic_write_bytes(final, b"data")
    assert final.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    temporary = temporary_beside(final)
    writer = f".{machine_token()}-{os.getpid()}."
    assert len(temporary.name) == 255
    assert temporary_final_name(temporary.name) == "x" * (255 - 1 - len(writer) - 8 - len(".tmp"))
    assert not orphaned_temporary(temporary.name)  # this process's, named like any other


def test_an_exports_starting_folder_whose_process_is_gone_is_removed_by_the_next_export(tmp_path):
    """An export killed before locking its staging folder left .<out>.XXXXXXXX.new beside --out."""
    from augment.coco_export import export_coco
    from augment.atomic_files import temporary_folder_beside
    from cli_checks import killed_write

    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    out = tmp_path / "exports" / "coco"
    out.parent.mkdir()
    gone = killed_write(out, "folder")
    starting = temporary_folder_beside(out, ".new")  # another export's, made but not yet locked
    export_coco([tmp_path / "shards"], out)
    assert not gone.exists() and sorted(p.name for p in out.parent.iterdir()) == sorted(["coco", starting.name])


def test_a_training_run_removes_the_checkpoint_temporary_of_a_killed_one_without_a_lock(tmp_path):
    """selftune trains in its round folders with no lock of their own there; a kill while a checkpoint
    was written left its temporary (a whole checkpoint's size) in the kept training folder."""
    from cli_checks import killed_write
    from test_trainer import TINY_MODEL
    from train.config import TrainConfig
    from train.loop import train

    shards = make_shards(tmp_path / "shards", n_cutouts=8, n_composites=12, rows_per_group=3, rows_per_shard=6,
                         size=64).folder
    run = tmp_path / "round-001" / "train.partial"
    run.mkdir(parents=True)
    dead = killed_write(run / "checkpoint.pt")
    config = TrainConfig(model=TINY_MODEL, query_size=32, medium_size=64, batch_size=2, steps=1, num_workers=0,
                         warmup_steps=1, log_every=1, eval_every=0, checkpoint_every=1, shuffle_buffer=8,
                         eval_fraction=0.3, device="cpu")
    train(config, shards, run, show_progress=False)
    assert not dead.exists() and (run / "checkpoint.pt").is_file()


def _temporaries_beside(out: Path, shard: str) -> tuple[Path, list[Path], list[Path]]:
    """In ``out``: a killed writer's temporary of ``shard`` and a legacy fixed-name shard temporary
    (both to go), and what must stay: a temporary another command (eval --out, which takes no folder
    lock) is still writing there, and a hidden .tmp file of the user's."""
    from augment.atomic_files import temporary_beside
    from cli_checks import killed_write

    out.mkdir(parents=True, exist_ok=True)
    dead = killed_write(out / shard)
    legacy = out / f".{shard.replace('00000', '00003')}.tmp"
    legacy.write_bytes(b"an older version's")
    live = temporary_beside(out / "metrics.json")  # this process's: a writer still at work
    notes = out / ".notes.tmp"
    notes.write_bytes(b"the user's")
    return live, [dead, legacy], [live, notes]


def test_photo_shards_removes_only_the_temporaries_of_gone_writers_not_a_live_ones(tmp_path):
    """photo-shards deleted every hidden .tmp of its folder: a live `eval --out` writing there (no folder
    lock) lost its temporary and failed at its rename. Only killed writes' temporaries go now."""
    from augment.config import SourceConfig
    from augment.photo_shards import write_photo_shards
    from segment_factory import make_scene_photos

    labeled = make_scene_photos(tmp_path / "labeled", count=2)
    out = tmp_path / "photos"
    live, gone, kept = _temporaries_beside(out, "photos-00000.parquet")
    write_photo_shards([labeled], out, SourceConfig(), short_side=32)
    assert list(out.glob("photos-*.parquet")) and not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted(p.name for p in kept)


def test_extract_removes_only_the_temporaries_of_gone_writers_not_a_live_ones(tmp_path):
    from pipelines.extract import ExtractConfig, run_extract
    from pipelines.segmenter import Segmenter
    from segment_factory import make_unlabeled, save_untrained_segmenter

    photos = make_unlabeled(tmp_path / "photos", count=2)
    segmenter = Segmenter(save_untrained_segmenter(tmp_path / "segment.pt"), "cpu")
    out = tmp_path / "objects"
    live, gone, kept = _temporaries_beside(out, "pseudo-00000.parquet")
    run_extract(segmenter, sorted(photos.iterdir()), out, ExtractConfig(min_confidence=0.0, min_stability=0.0))
    assert (out / "pseudo-00000.parquet").is_file() and not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)


def test_expand_removes_only_the_temporaries_of_gone_writers_not_a_live_ones(tmp_path):
    from augment.config import ExpandConfig
    from augment.expand import run_expand
    from sources_factory import make_backgrounds, make_rgba_source

    config = ExpandConfig.from_dict({"num": 4, "seed": 5, "sources": {"min_area": 50},
                                     "composition": {"width": 64, "height": 64, "min_objects": 1, "max_objects": 2},
                                     "output": {"shard_rows": 4, "row_group_rows": 4}})
    out = tmp_path / "out"
    live, gone, kept = _temporaries_beside(out, "train-00000.parquet")
    gone = gone[:1]  # expand never wrote fixed-name temporaries: an older version's is a file like any other
    run_expand([make_rgba_source(tmp_path / "objects")], make_backgrounds(tmp_path / "backgrounds"), out, config)
    assert (out / "train-00000.parquet").is_file() and not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)


def test_a_shard_for_an_object_store_killed_mid_write_leaves_no_scratch_file_after_the_next_write(tmp_path,
                                                                                                 monkeypatch):
    """A shard bound for an object store is written to a scratch file in the temporary folder first;
    a writer killed there (SIGKILL, the OOM killer) left it for good, a whole shard each time. It is
    named after its writer now, and the next such write removes those of gone writers, not live ones."""
    import os
    import stat

    from augment import shard_writer
    from augment.atomic_files import temporary_beside
    from cli_checks import killed_write

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("SYNTH_SCRATCH_DIR", str(scratch))
    dead = killed_write(scratch / "train-00000.parquet")
    live = temporary_beside(scratch / "train-00001.parquet")  # another shard of this process, being written
    other = scratch / ".someone-elses.tmp"
    other.write_bytes(b"keep")
    made = shard_writer._scratch_file("train-00002.parquet")
    assert made.parent == scratch and made.name.startswith(".train-00002.parquet.")
    assert stat.S_IMODE(made.stat().st_mode) == 0o600  # shard bytes in a shared temporary folder: ours alone
    assert not dead.exists() and live.exists() and other.exists()
    assert f"-{os.getpid()}." in made.name


def test_a_stop_as_a_temporary_is_made_leaves_none_behind(tmp_path, monkeypatch):
    """A SIGTERM or Ctrl-C landing just after the temporary was made, before its writer held the name
    to remove (a `synth search` stopped as a highlight's write began, an extract as a chunk's cutouts
    were written), left the empty `.m00.highlight.jpg.<writer>.XXXXXXXX.tmp` in --out of a run that
    said `interrupted`: only a killed write leaves one. The stop is raised where the signal handler
    would: as the file's open returns (inside mkstemp, before it returned the name) or at its chmod."""
    import os

    import pytest

    from augment.atomic_files import atomic_write_bytes, temporary_beside

    def stopped(*_):
        raise KeyboardInterrupt

    opened = os.open

    def open_then_stopped(*args, **kwargs):
        opened(*args, **kwargs)
        raise KeyboardInterrupt

    for where, stop in (("fchmod", stopped), ("open", open_then_stopped)):
        with monkeypatch.context() as patched:
            patched.setattr(os, where, stop)
            for write in (lambda: atomic_write_bytes(tmp_path / "m00.highlight.jpg", b"x"),
                          lambda: temporary_beside(tmp_path / "shard.parquet")):
                with pytest.raises(KeyboardInterrupt):
                    write()
                assert list(tmp_path.iterdir()) == [], where


def test_a_stop_just_after_a_writes_temporary_is_made_leaves_none_behind(tmp_path, monkeypatch):
    """The stop landing as the temporary's name was returned, before the writer's `try` held it (an
    atomic write, a shard, detections.jsonl's lines, a highlighted video's encoder): the empty temporary
    stayed in --out."""
    import pyarrow as pa
    import pytest

    import augment.atomic_files as atomic_files
    import augment.shard_writer as shard_writer
    from augment.atomic_files import atomic_write_bytes
    from augment.schema import RUN_HASH_KEY
    import pipelines.video_writer as video_writer
    from pipelines.search_outputs import LineFile

    real = atomic_files.temporary_beside

    def made_then_stopped(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    schema = pa.schema([("id", pa.string())], metadata={RUN_HASH_KEY: b"run"})
    lines = LineFile(tmp_path / "detections.jsonl")
    writes = [lambda: atomic_write_bytes(tmp_path / "m00.highlight.jpg", b"x"),
              lambda: list(shard_writer.write_shard(tmp_path / "train-00000.parquet",
                                                    [pa.table({"id": ["a"]}, schema=schema)], schema, 1, ["a"])),
              lambda: lines.append({"source": "a.png"}),
              lambda: video_writer.VideoWriter(tmp_path / "clip.highlight.mp4", 25.0, 64, 48)]
    for module in (atomic_files, shard_writer, __import__("pipelines.search_outputs", fromlist=["x"]),
                   video_writer):
        monkeypatch.setattr(module, "temporary_beside", made_then_stopped)
    for write in writes:
        with pytest.raises(KeyboardInterrupt):
            write()
    lines.close()  # (as run_search's finally does)
    assert list(tmp_path.iterdir()) == []


def test_a_write_on_a_read_only_file_system_raises_its_own_error_not_the_cleanups(tmp_path, monkeypatch):
    """The temporary could not be made (EROFS): the writer's cleanup unlinked its never-made name, which
    a read-only file system refuses with EROFS too, raised chained over the real error (FileNotFoundError
    alone was passed over). An atomic write, a shard and detections.jsonl's lines."""
    import errno
    import os

    import pyarrow as pa
    import pytest

    import augment.shard_writer as shard_writer
    from augment.atomic_files import atomic_write_bytes
    from augment.schema import RUN_HASH_KEY
    from pipelines.search_outputs import LineFile

    real_open = os.open
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS))

    def refused(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    def unlink_refused(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    schema = pa.schema([("id", pa.string())], metadata={RUN_HASH_KEY: b"run"})
    writes = [lambda: atomic_write_bytes(tmp_path / "report.json", b"{}"),
              lambda: list(shard_writer.write_shard(tmp_path / "train-00000.parquet",
                                                    [pa.table({"id": ["a"]}, schema=schema)], schema, 1, ["a"])),
              lambda: LineFile(tmp_path / "detections.jsonl").append({"source": "a.png"})]
    monkeypatch.setattr(os, "open", refused)
    monkeypatch.setattr(os, "unlink", unlink_refused)
    for write in writes:
        with pytest.raises(OSError) as raised:
            write()
        assert raised.value.errno == read_only.errno and raised.value.__context__ is None, raised.value.__context__
    lines = LineFile(tmp_path / "detections.jsonl")
    lines._made.append(tmp_path / ".detections.jsonl.never-made.tmp")  # as after a stop
    lines.close()  # (run_search's finally: its error is the run's, not this)


def test_a_temporarys_names_in_one_process_never_repeat_and_keep_mkstemps_format(tmp_path):
    """tempfile._get_candidate_names (a private API) gave the names: random alone, two live writers of
    one process could draw the same one. A local generator: counted, then random."""
    import itertools
    import os

    from augment.atomic_files import TEMPORARY_NAME, _temporary_names, temporary_beside

    names = list(itertools.islice(_temporary_names(), 50000))
    assert len(set(names)) == len(names)
    assert all(len(name) == 8 and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_") for name in names)
    made = temporary_beside(tmp_path / "report.json")
    match = TEMPORARY_NAME.fullmatch(made.name)
    assert match and match["final"] == "report.json" and int(match["pid"]) == os.getpid()


def test_a_stop_as_a_staging_folder_is_made_leaves_none_behind(tmp_path, monkeypatch):
    """An export's staging folder (`temporary_folder_beside`) is made, then given its mode: a stop at that
    step left the hidden folder in --out of a run that said 'interrupted'."""
    import pytest

    import augment.atomic_files as atomic_files

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_files.os, "chmod", stopped)
    with pytest.raises(KeyboardInterrupt):
        atomic_files.temporary_folder_beside(tmp_path / "coco")
    assert list(tmp_path.iterdir()) == []
