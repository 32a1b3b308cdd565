"""What a run of `synth search` or `synth segment` wrote into ``--out``, so the next run of the same
command into that folder removes it first and the folder holds one run's outputs only.

Every output name (stem) a run takes (:class:`pipelines.search_outputs.OutputNames`) is appended to
a hidden record, ``.synth-<command>-outputs``, before anything is written under it: the record also
covers a run that was killed half-way. A command's outputs are each recorded stem plus the command's
fixed suffixes (and the frames in a ``<stem>.heat/`` folder) and its fixed names
(``detections.jsonl``, ``classes.json``). Nothing else is removed: not a file of the user's beside
them, not a symbolic link, not an input of the new run. Use while holding the folder's lock
(:func:`augment.locking.folder_lock`): the record and the clearing assume one writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Iterable

from augment.atomic_files import NAME_MAX, atomic_write_bytes, naming_errors, record_file, temporary_final_name
from augment.textfiles import loads_json

logger = logging.getLogger(__name__)

FRAME_NAME = re.compile(r"\d{6}\.png")  # a frame's heat map in a <stem>.heat/ folder


def inputs_key(settings: dict, paths: list[Path]) -> str:
    """A run's key: its ``settings`` (JSON) and its input files in order, each with its size and time
    of change. A rerun of a killed run with the same key goes on where it stopped; another starts over."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}:missing\n".encode())
    return digest.hexdigest()[:16]


def progress_entries(path: Path, key: str) -> list[dict]:
    """The entries after the first line of a run's progress file (``{"key": KEY}``, then a line per
    input done, each written and flushed after that input's outputs), where its key is ``key``;
    none for another key, a missing file or a damaged first line. A line cut short by a kill (the
    last) is left out: its input is done again. Anything but a plain file (a FIFO would be waited on
    for ever, a link read through) is none: the run's own write then refuses it, one line."""
    if path.is_symlink() or not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(loads_json(line))
        except ValueError:  # a line cut short by a kill
            continue
    if not entries or not isinstance(entries[0], dict) or entries[0].get("key") != key:
        return []
    return [entry for entry in entries[1:] if isinstance(entry, dict)]


def made_ours(path: Path, keep: bool) -> None:
    """Before a run opens its record or progress file ``path`` to append (``keep``) or to write: another
    team member's (0644 under their umask) in a folder both may write is made this run's (the run was
    refused: "<out>/.synth-search-outputs: Permission denied"), by a rename where it is kept, removed
    where this run starts a new one. (A link is left to record_file's refusal.)"""
    if path.is_file() and not path.is_symlink() and not os.access(path, os.W_OK):
        if keep:
            atomic_write_bytes(path, path.read_bytes())
        else:
            path.unlink()


@dataclass(frozen=True)
class OutputKinds:
    """The names one command writes into its output folder."""

    command: str  # names the record, so two commands sharing a folder keep apart
    suffixes: tuple[str, ...]  # appended to each output stem
    fixed: tuple[str, ...] = ()  # written by every run under the same name
    frame_folder: str | None = None  # suffix of a per-stem folder of FRAME_NAME files


def _usable_stem(stem: object) -> bool:
    """A stem read back from a record names a file directly in the folder (a damaged record cannot
    reach elsewhere)."""
    return (isinstance(stem, str) and stem not in ("", ".", "..")
            and not any(c in stem for c in "/\\\0"))


class OutputRecord:
    """Clears the previous run's outputs on entry, then records this run's stems (:meth:`add`)."""

    def __init__(self, out: Path, kinds: OutputKinds, inputs: Iterable[Path | None] = (), keep: bool = False) -> None:
        """``keep``: a resumed run, which keeps the earlier (killed) run's outputs and adds to its record."""
        self.out, self.kinds, self.keep = Path(out), kinds, keep
        self.path = self.out / f".synth-{kinds.command}-outputs"
        # An input of this run is never removed, even if an older run wrote it (a highlight searched again).
        self._inputs = {Path(p).resolve() for p in inputs if p is not None}
        self._file: IO[str] | None = None
        self._stems: set[str] = set()

    def __enter__(self) -> "OutputRecord":
        self.out.mkdir(parents=True, exist_ok=True)
        # A resumed run keeps the outputs but not the temporaries the killed run's writes left.
        cleared = self.clear(outputs=not self.keep)
        if cleared:
            logger.info("%s: cleared %d output file(s) of an earlier synth %s run", self.out, cleared,
                        self.kinds.command)
        # Truncated only now: a run killed while clearing leaves the old record for the next run to finish.
        made_ours(self.path, self.keep)
        self._closing = contextlib.ExitStack()
        self._file = self._closing.enter_context(record_file(self.path, "a" if self.keep else "w"))
        self._stems = set(self._recorded()) if self.keep else set()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._file is not None:
            self._file = None
            self._closing.__exit__(kind, error, trace)

    def add(self, stem: str) -> None:
        """Record ``stem`` before any file is written under it."""
        assert self._file is not None, "OutputRecord.add outside its with block"
        if stem in self._stems:  # a resumed run's photo the killed run recorded
            return
        self._stems.add(stem)
        with naming_errors(self.path):  # a full disk: the record named, not "file system"
            self._file.write(json.dumps(stem) + "\n")
            self._file.flush()  # on disk (page cache) before the outputs: a killed run's files stay findable

    def earlier_outputs(self) -> set[Path]:
        """The files an earlier run wrote, as the record names them (what :meth:`clear` removes, less
        temporaries): a search of a folder that holds ``out`` leaves them out of its inputs."""
        if not self.out.is_dir():
            return set()
        names, folders = self._names()
        # A name past NAME_MAX (a long stem recorded before stems were cut to fit) is no file: is_file()
        # would raise ENAMETOOLONG for it.
        found = {self.out / name for name in names if len(os.fsencode(name)) <= NAME_MAX}
        for folder in folders:
            if len(os.fsencode(folder)) > NAME_MAX:
                continue
            if (self.out / folder).is_dir() and not (self.out / folder).is_symlink():
                found.update(child for child in (self.out / folder).iterdir() if FRAME_NAME.fullmatch(child.name))
        return {path for path in found if path.is_file() and not path.is_symlink()}

    @classmethod
    def outputs_below(cls, folder: Path, kinds: OutputKinds) -> set[Path]:
        """The files earlier runs of ``kinds.command`` wrote into output folders inside ``folder``
        (below it, not ``folder`` itself), as their records name them, resolved: a search of
        ``folder`` leaves them out, as it does an earlier run's outputs in its own ``--out``."""
        found: set[Path] = set()
        for record in Path(folder).rglob(f".synth-{kinds.command}-outputs"):
            if record.parent != Path(folder) and record.is_file() and not record.is_symlink():
                found.update(path.resolve() for path in cls(record.parent, kinds).earlier_outputs())
        return found

    def _names(self) -> tuple[set[str], set[str]]:
        """(Output file names, per-stem frame folders) of the stems the record names."""
        stems = self._recorded()
        names = {*self.kinds.fixed, *(f"{stem}{suffix}" for stem in stems for suffix in self.kinds.suffixes)}
        folders = {f"{stem}{self.kinds.frame_folder}" for stem in stems} if self.kinds.frame_folder else set()
        return names, folders

    def clear(self, outputs: bool = True) -> int:
        """Remove the outputs the record names, the fixed names and the temporaries a killed write of
        any of them left (:func:`augment.atomic_files.temporary_beside`); the number of outputs removed.
        Without ``outputs`` (a resumed run) only the temporaries."""
        names, folders = self._names()
        removed = 0
        for child in list(self.out.iterdir()):  # one listing: a folder may hold thousands of outputs
            if child.name in names:
                removed += self._remove(child) if outputs else 0
            elif temporary_final_name(child.name) in names:
                self._remove(child)
            elif child.name in folders:
                removed += self._clear_frames(child, outputs)
        return removed

    def _recorded(self) -> list[str]:
        if not self.path.is_file() or self.path.is_symlink():
            return self._unrecorded()
        stems = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                stem = loads_json(line)
            except ValueError:  # a line cut short by a kill
                continue
            if _usable_stem(stem):
                stems.append(stem)
        return stems

    def _unrecorded(self) -> list[str]:
        """The stems of a run of a synth older than the record (2026-12-06), which wrote none: only in a
        folder holding one of the command's fixed names (``detections.jsonl``, ``classes.json``), each
        stem with at least two of its output files there (a still's heat map and highlight, a photo's
        three maps). Without them that run's outputs stayed beside the new run's (a segmented photo's
        new maps named ``NAME-2``, its old ``NAME.png`` read as the new)."""
        if not self.out.is_dir() or not any((self.out / name).is_file() for name in self.kinds.fixed):
            return []
        files: dict[str, int] = {}
        for child in self.out.iterdir():
            for suffix in self.kinds.suffixes:
                stem = child.name[:-len(suffix)]
                if child.name.endswith(suffix) and _usable_stem(stem) and child.is_file():
                    files[stem] = files.get(stem, 0) + 1
        return sorted(stem for stem, count in files.items() if count >= 2)

    def _kept(self, path: Path) -> bool:
        """An input, or inside an input folder (a --sequence of frames) that lies within --out: a folder
        holding --out itself protects nothing, or --out under the photos searched would never clear."""
        resolved, out = path.resolve(), self.out.resolve()
        return resolved in self._inputs or any(parent in self._inputs for parent in resolved.parents
                                               if parent != out and parent.is_relative_to(out))

    def _remove(self, path: Path) -> int:
        """Remove ``path`` if it is a regular file (not a link) and no input of this run; 1 if removed."""
        if path.is_symlink() or not path.is_file() or self._kept(path):
            return 0
        path.unlink(missing_ok=True)
        return 1

    def _clear_frames(self, folder: Path, outputs: bool = True) -> int:
        if folder.is_symlink() or not folder.is_dir() or self._kept(folder):
            return 0
        removed = 0
        for child in list(folder.iterdir()):
            if FRAME_NAME.fullmatch(child.name):
                removed += self._remove(child) if outputs else 0
            elif FRAME_NAME.fullmatch(temporary_final_name(child.name) or ""):
                self._remove(child)
        try:
            folder.rmdir()  # only when empty: a file of the user's keeps it
        except OSError:
            pass
        return removed
