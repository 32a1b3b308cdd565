"""Scale and system limits: thousands of inputs, long runs, what a run holds in memory as it goes."""

from __future__ import annotations

import resource
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.imageio import save_image
from pipelines.search_jobs import SearchJob
from pipelines.search_outputs import PREPARED_QUERIES, run_search


class _Prepared:
    def __init__(self, name: str) -> None:
        self.name = name
        self.features = bytearray(1024)


class _Result:
    detections: list = []

    def heat_png(self) -> np.ndarray:
        return np.zeros((8, 8), np.uint8)

    def highlight(self) -> np.ndarray:
        return np.zeros((8, 8, 3), np.uint8)

    def to_json(self) -> dict:
        return {"detections": []}


class _CountingSearcher:
    """Prepares a query per path and counts how many prepared queries are alive at each search."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.network = type("Network", (), {"use_onnx": lambda self: None})()
        self.alive: weakref.WeakSet = weakref.WeakSet()
        self.prepared = 0
        self.most_alive = 0

    def prepare(self, query, mask=None):
        if isinstance(query, _Prepared):
            return query
        if "bad" in Path(query).name:
            from augment.imageio import InputError

            raise InputError(f"{query}: not an image")
        self.prepared += 1
        prepared = _Prepared(str(query))
        self.alive.add(prepared)
        return prepared

    def find_many(self, query, media, sources=None, frames=None):
        self.most_alive = max(self.most_alive, len(self.alive))
        return [_Result() for _ in media]


def test_a_pairs_run_of_thousands_of_queries_holds_a_bounded_number_of_prepared_queries(tmp_path):
    """--pairs with a distinct query per line kept every prepared query (pixels and features, ~10 MB
    each) until the run's end: 200 pairs of 200 queries peaked at 2.6 GB, 2,000 would need ~20 GB."""
    image = tmp_path / "m.png"
    save_image(image, np.zeros((16, 16, 3), np.uint8))
    queries = [tmp_path / f"q{i:04d}.png" for i in range(300)]
    jobs = [SearchJob(q, image) for q in queries]
    # A query used again after others keeps working; a bad query repeated is one error per pair.
    jobs += [SearchJob(queries[0], image), SearchJob(tmp_path / "bad.png", image),
             SearchJob(tmp_path / "bad.png", image)]
    searcher = _CountingSearcher()
    summary = run_search(searcher, jobs, tmp_path / "out", workers=1, batch=4)
    assert summary.images == 301 and len(summary.errors) == 2
    assert searcher.most_alive <= PREPARED_QUERIES + 4  # the cache and one batch of pending media
    assert searcher.prepared == 300  # each query once (the first kept for its line after 299 others, which
    # are dropped after their only line)
    lines = (tmp_path / "out" / "detections.jsonl").read_text().splitlines()
    assert len(lines) == 303


def test_pairs_listed_photo_by_photo_prepare_each_query_once(tmp_path):
    """5 shelf photos x 20 products, listed photo by photo: the 16-query LRU prepared every query again
    on every photo (100 preparations for 20 queries); a query is kept until its last line."""
    queries = [tmp_path / f"q{i:02d}.png" for i in range(20)]
    photos = [tmp_path / f"shelf{i}.png" for i in range(5)]
    for photo in photos:
        save_image(photo, np.zeros((16, 16, 3), np.uint8))
    searcher = _CountingSearcher()
    summary = run_search(searcher, [SearchJob(q, p) for p in photos for q in queries], tmp_path / "out",
                         workers=1, batch=4)
    assert summary.images == 100 and searcher.prepared == 20


_LOADER_UNDER_64_FILES = """
import resource, sys, torch
from torch.utils.data import IterableDataset
from augment.imageio import InputError
from train.data import make_loader

class Many(IterableDataset):
    seed = 0
    def __iter__(self):
        for i in range(64):
            yield {f"t{k}": torch.full((4,), float(i)) for k in range(24)}

hard = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
try:
    batches = sum(1 for _ in make_loader(Many(), batch_size=2, num_workers=1))
except InputError as error:
    print("line", error)
else:
    print("batches", batches, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _loader_under(hard: int, folder: Path) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _LOADER_UNDER_64_FILES, str(hard)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])


_HARD_FILES = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.mark.skipif(_HARD_FILES != resource.RLIM_INFINITY and _HARD_FILES < 1024,
                    reason=f"raising the soft open-file limit to 1024 needs a hard limit of 1024 or more "
                           f"(this machine's is {_HARD_FILES})")
def test_training_loader_workers_under_a_low_open_file_limit_run_or_say_so_in_one_line(tmp_path):
    """Under ulimit -n 64 the loader's workers passed each batch's tensors as descriptors, four batches
    in flight: 'OSError: [Errno 24] Too many open files' tracebacks, then 'Aborted.', exit code 1, at
    synth train's first batch (128 files were enough). A soft limit under a higher hard one is raised;
    a hard limit of 64 is one line naming ulimit -n and num_workers, before any batch."""
    raised = _loader_under(1024, tmp_path)
    assert raised.returncode == 0, raised.stderr[-2000:]
    assert raised.stdout.split() == ["batches", "32", "1024"]
    assert "Too many open files" not in raised.stderr
    low = _loader_under(64, tmp_path)
    assert low.returncode == 0, low.stderr[-2000:]
    assert low.stdout.startswith("line open files are limited to 64 (ulimit -n")
    assert "num_workers: 0" in low.stdout and "Traceback" not in low.stderr


def _first_free_names(stems: list[str], suffixes: tuple[str, ...], existing: set[str]) -> list[str]:
    """What OutputNames gives, counted from -2 for every medium (the rule, written out plainly)."""
    used, files, out = set(), {name.lower() for name in existing}, []
    for stem in stems:
        name, k = stem, 2
        while name.lower() in used or any(f"{name}{s}".lower() in files for s in suffixes):
            name, k = f"{stem}-{k}", k + 1
        used.add(name.lower())
        files.update(f"{name}{s}".lower() for s in suffixes)
        out.append(name)
    return out


def test_thousands_of_media_sharing_a_name_get_their_output_names_in_linear_time(monkeypatch):
    """A tree of folders each holding image.jpg (a dataset's per-item folders): each medium's '-k' was
    searched from -2 up, ~k checks for the k-th, quadratic (4,000 media 4.6 s, 10,000 ~30 s, 50,000
    ~12 min before the first search); the names are the same as before."""
    import random

    from augment.outputs import OutputNames

    suffixes = (".heat.png", ".highlight.jpg", ".highlight.mp4")
    checks = []
    free = OutputNames._free
    monkeypatch.setattr(OutputNames, "_free", lambda self, name: checks.append(name) or free(self, name))
    names = OutputNames(None, suffixes)
    taken = [names.take(Path(f"d{i}/image.jpg")) for i in range(3000)]
    assert taken[:3] == ["image", "image-2", "image-3"] and taken[-1] == "image-3000"
    assert len(checks) <= 3 * 3000  # the bare name, the last one found (taken since), the next

    rng = random.Random(0)  # mixed stems, case variants, stems that look like suffixed ones, files already there
    stems = [rng.choice(["a", "A", "a-2", "b", "a-3", "b.heat", "c"]) for _ in range(400)]
    existing = {"a-4.heat.png", "c.highlight.jpg", "B-3.highlight.mp4"}
    names = OutputNames(None, suffixes, existing)
    assert [names.take(Path(f"x/{stem}.jpg")) for stem in stems] == _first_free_names(stems, suffixes, existing)


def test_pairs_lines_naming_folders_read_the_out_record_once_and_list_each_folder_once(tmp_path, monkeypatch):
    """--pairs lines whose medium is a folder each read --out's record of an earlier search again (0.4 s
    a line beside a 2,000-image run: 200 lines of one-image folders took 79 s before the first search)
    and listed their folder again (40 queries against one 2,000-image folder: 22 s)."""
    from pipelines import search_jobs
    from pipelines.output_record import OutputRecord
    from pipelines.search_jobs import expand_pair_media

    shop, empty, out = tmp_path / "shop", tmp_path / "empty", tmp_path / "out"
    shop.mkdir(), empty.mkdir()
    for name in ("a.png", "b.png"):
        save_image(shop / name, np.zeros((16, 16, 3), np.uint8))
    with OutputRecord(out, search_jobs.SEARCH_OUTPUTS) as record:  # an earlier search's output inside shop/
        record.add("a")
    (out / "a.heat.png").write_bytes(b"x")
    reads, listings = [], []
    earlier, list_images = OutputRecord.earlier_outputs, search_jobs.list_images
    monkeypatch.setattr(OutputRecord, "earlier_outputs", lambda self: reads.append(1) or earlier(self))
    monkeypatch.setattr(search_jobs, "list_images", lambda folder: listings.append(folder) or list_images(folder))
    query = tmp_path / "q.png"
    jobs = [SearchJob(query, shop) for _ in range(50)] + [SearchJob(query, empty) for _ in range(2)]
    expanded = expand_pair_media(jobs, False, out)
    assert [job.medium.name for job in expanded[:4]] == ["a.png", "b.png", "a.png", "b.png"]
    assert len(expanded) == 102 and all("no images" in job.error for job in expanded[100:])
    assert len(reads) == 1 and sorted(listings) == [empty, shop]


def test_a_contact_sheet_of_a_shard_of_many_row_groups_reads_its_footer_once_per_shard(tmp_path, monkeypatch):
    """synth show opened the shard again for each of its 16 picks, parsing its footer each time: on a
    100,000-row shard (3,125 row groups, 365 MB) 9.2 s, 2.8 s reading it once; the sheet is the same."""
    from augment import shards as shards_module
    from augment.contact_sheet import contact_sheet
    from tests.shard_factory import make_shards

    made = make_shards(tmp_path / "s", n_composites=48, rows_per_group=2, rows_per_shard=24, size=32)
    opened = []
    open_parquet = shards_module.open_parquet
    monkeypatch.setattr(shards_module, "open_parquet", lambda path: opened.append(path) or open_parquet(path))
    assert contact_sheet([made.folder], tmp_path / "sheet.png", rows=4, columns=4, tile=32) == 16
    assert len(opened) <= 3 * 2  # each of the two shards: checked, its row-group sizes, its picks (was 1 + 16)


def _numpy_out_of_memory():
    return np.empty(2 ** 62, np.uint8)  # numpy's own MemoryError ("Unable to allocate 4 EiB ...")


def _arrow_out_of_memory():
    import pyarrow as pa

    raise pa.ArrowMemoryError("realloc of size 131072 failed")  # what expand under ulimit -v 1000000 raised


def _torch_out_of_memory():
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")


def test_a_run_out_of_memory_is_one_line_with_its_resume_hint(capsys):
    """Under ulimit -v (a shared server's per-user limit) expand ended in pyarrow's ArrowMemoryError
    traceback, search in torch's; numpy's MemoryError likewise: one line now, exit code 1, how to resume."""
    import typer

    from pipelines.cli import EXPAND_RESUME_HINT, run_guarded

    for work in (_numpy_out_of_memory, _arrow_out_of_memory, _torch_out_of_memory):
        with pytest.raises(typer.Exit) as ended:
            run_guarded(work, interrupt_hint=EXPAND_RESUME_HINT)
        assert ended.value.exit_code == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: out of memory ("), lines
        assert "address space (ulimit -v" in lines[0] or "memory is used up" in lines[0]
        assert lines[0].endswith(EXPAND_RESUME_HINT)


def test_torch_that_cannot_be_mapped_under_an_address_space_limit_is_one_line(tmp_path):
    """`synth search` under ulimit -v 1000000: 'ImportError: libtorch_cpu.so: failed to map segment from
    shared object', a traceback from the command's import of torch, outside run_guarded."""
    import subprocess
    import sys

    # a real medium: where torch loads within the limit (fewer threads, e.g. OMP_NUM_THREADS=1 as a pytest-xdist
    # worker might set), the missing query is the one mistake left (it was 'm.png: no such file or folder')
    save_image(tmp_path / "m.png", np.zeros((32, 32, 3), np.uint8))
    script = ("import resource, sys\n"
              "resource.setrlimit(resource.RLIMIT_AS, (1000 * 2 ** 20, resource.RLIM_INFINITY))\n"
              "from pipelines.cli import app\n"
              "sys.argv = ['synth', 'search', 'q.png', 'm.png', '--out', 'out']\n"
              "app()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # no traceback, whichever happened
    if done.returncode == 1:  # torch could not be mapped (as on the 2-core CI machine): the limit named
        assert lines[0].startswith("error: cannot load libtorch") and "ulimit -v" in lines[0], lines
    else:  # torch loaded within the limit here: the search went on to its missing query, the user's mistake
        assert done.returncode == 2 and "q.png" in lines[0], lines


def test_a_folder_tree_deeper_than_pythons_recursion_limit_is_listed(tmp_path):
    """walk_files recursed once per folder level: a tree 1,200 folders deep was a RecursionError
    traceback (every command lists its input folders through it) after 7 s of realpath calls. Here a
    tree 300 deep under a recursion limit 150 frames above this test's (a tree past the real limit
    would break shutil.rmtree, which recurses too, in pytest's clean-up of the shared temporary folder)."""
    import os
    import sys

    from augment.imageio import walk_files

    deep = tmp_path / "deep"
    bottom = deep.joinpath(*["a"] * 300)
    os.makedirs(bottom)
    save_image(bottom / "x.png", np.zeros((8, 8, 3), np.uint8))
    (deep / "a" / "up").symlink_to(deep / "a")  # a link back up is still not followed
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 150)
    try:
        found = walk_files(deep)
    finally:
        sys.setrecursionlimit(limit)
    assert found == [bottom / "x.png"]


def test_training_streams_a_shard_of_many_row_groups_parsing_its_footer_once(tmp_path, monkeypatch):
    """ShardPairs opened the shard again for every row group it read: a 100,000-row shard (3,125 groups,
    a 7 MB footer) took 90 ms per group to parse against 0.7 ms to read it, ~280 s per epoch."""
    from train import data as train_data
    from train.data import OPEN_SHARDS, PairConfig, ShardPairs
    from tests.shard_factory import make_shards

    made = make_shards(tmp_path / "s", n_composites=48, rows_per_group=2, rows_per_shard=24, size=64)
    dataset = ShardPairs(made.folder, PairConfig(query_size=32, medium_size=64, negative_fraction=0.0,
                                                 eval_fraction=0.0, shuffle_buffer=4), split="all")
    assert len(dataset.units) == 24
    opened = []
    open_parquet = train_data.open_parquet
    monkeypatch.setattr(train_data, "open_parquet", lambda path: opened.append(path) or open_parquet(path))
    rows = sum(1 for _ in dataset._rows(list(range(24)) + list(range(24))))  # two epochs' row groups
    assert rows == 96
    assert len(opened) == 2 and OPEN_SHARDS >= 2  # each shard once
    # ...and a dataset read in process still pickles, for spawned loader workers (open files left out)
    import pickle

    again = pickle.loads(pickle.dumps(dataset))
    assert again._parquets == {} and sum(1 for _ in again._rows([0])) == 2
