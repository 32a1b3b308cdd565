"""A folder of frames read as one video (``synth search --sequence``), in name order.

:class:`FolderFrames` yields (frame indices, RGB frames) batches like
:class:`pipelines.video.FrameReader`, decoding ahead on a background thread. A file that cannot be
read, or whose size differs from the commonest among the first five readable frames', is skipped,
counted and logged (``skipped``: one line per file, naming it) and the sequence goes on; frame
indices are the files' positions in name order (numbers in names compared as numbers: ``frame2``
before ``frame10``), so a skipped file leaves a gap. A folder with no readable frame is an
:class:`InputError`.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from augment.draw_labels import put_label
from augment.imageio import InputError, list_images, read_image, save_image
from pipelines.highlight import dim

logger = logging.getLogger(__name__)

# Frame rate written into the highlighted video of a frame folder (a folder has none of its own).
SEQUENCE_FPS = 25.0
# Readable frames whose commonest size is the sequence's (the others are skipped as of another size).
SIZE_SAMPLE = 5
# Why a frame was skipped, as its placeholder in the highlighted video says it.
UNREADABLE, ANOTHER_SIZE = "unreadable", "another size"


@dataclass(frozen=True)
class SequenceInfo:
    width: int
    height: int
    fps: float
    frame_count: int


def name_order(name: str) -> tuple[tuple[Any, ...], str]:
    """Sort key of a frame's name: runs of digits compared as numbers (``frame2`` before ``frame10``,
    as ffmpeg's unpadded ``%d`` names need; zero-padded names keep their order), then the name."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts)), name


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's image files in frame order, less the heat maps and highlights earlier
    searches wrote into output folders inside it (an ``--out`` kept beside the frames)."""
    return _listed(folder)[0]


def _listed(folder: Path) -> tuple[list[Path], list[Path]]:
    """(:func:`frame_files`, the folder's other files: not images, nor an earlier search's outputs)."""
    from pipelines.search_jobs import earlier_outputs_below

    images, others = list_images(folder)
    earlier = earlier_outputs_below(folder)
    kept = [path for path in images if not earlier or path.resolve() not in earlier]
    others = [path for path in others if not earlier or path.resolve() not in earlier]
    return sorted(kept, key=lambda p: name_order(str(p.relative_to(folder)))), others


class FolderFrames:
    """Iterate over a frame folder's (indices, RGB frames) batches; see the module docstring."""

    def __init__(self, folder: Path | str, batch_size: int = 4, prefetch: int = 8) -> None:
        from pipelines.search_jobs import report_left_out

        self.path = Path(folder)
        self.files, others = _listed(self.path)
        # a video, notes or Thumbs.db among the frames: counted in a warning, as a MEDIA folder's are
        report_left_out(others, self.path, "not an image (a --sequence folder's frames)", "not images")
        if not self.files:
            raise InputError(f"{self.path}: no image frames in this folder")
        self.batch_size = max(1, int(batch_size))
        self.prefetch = max(1, int(prefetch))
        self.skipped: list[str] = []
        # frame index -> why it was skipped, in short (UNREADABLE, ANOTHER_SIZE): its placeholder says so
        self.skip_reasons: dict[int, str] = {}
        self.frames_read = 0
        self.error: str | None = None
        self._size = self._sequence_size()
        self.info = SequenceInfo(self._size[1], self._size[0], SEQUENCE_FPS, len(self.files))

    def _sequence_size(self) -> tuple[int, int]:
        """(height, width) of the frames: the commonest among the first SIZE_SAMPLE readable files (the
        earliest on a tie), so a thumbnail or cover sorted first does not get every real frame skipped."""
        sizes: list[tuple[int, int]] = []
        first_error: InputError | None = None
        for path in self.files:
            try:
                sizes.append(read_image(path, "rgb").shape[:2])
            except InputError as error:  # unreadable, or over the pixel limit (from its header)
                first_error = first_error or error
                continue
            if len(sizes) == SIZE_SAMPLE:
                break
        if not sizes:  # why, from the first file: frames over the pixel limit are told apart from broken ones
            raise InputError(f"{self.path}: none of its {len(self.files)} image files could be read "
                             f"(the first: {first_error})")
        return max(sizes, key=sizes.count)

    def _read(self, path: Path) -> np.ndarray | tuple[str, str]:
        """The frame, or (why it is skipped, in short: its placeholder's words; the line naming it)."""
        try:
            frame = read_image(path, "rgb")
        except InputError as error:
            return UNREADABLE, str(error)
        if frame.shape[:2] != self._size:
            return ANOTHER_SIZE, (f"{path}: frame is {frame.shape[1]}x{frame.shape[0]}, the sequence is "
                                  f"{self._size[1]}x{self._size[0]}")
        return frame

    def __iter__(self) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        indices: list[int] = []
        frames: list[np.ndarray] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames") as pool:
            # map() reads ahead; the window bounds memory to about prefetch frames.
            for start in range(0, len(self.files), self.prefetch):
                chunk = self.files[start:start + self.prefetch]
                for offset, item in enumerate(pool.map(self._read, chunk)):
                    if isinstance(item, tuple):
                        self.skip_reasons[start + offset], line = item
                        self.skipped.append(line)
                        logger.info("skipped frame: %s", line)
                        continue
                    indices.append(start + offset)
                    frames.append(item)
                    if len(frames) == self.batch_size:
                        self.frames_read += len(frames)
                        yield indices, frames
                        indices, frames = [], []
        if frames:
            self.frames_read += len(frames)
            yield indices, frames

    def close(self) -> None:
        """Nothing to release (kept for the FrameReader interface)."""


def open_frames(medium: Path, batch: int) -> Any:
    """A frame folder (``--sequence``) or a video file, as (indices, frames) batches."""
    if medium.is_dir():
        return FolderFrames(medium, batch_size=batch)
    from pipelines.video import FrameReader

    return FrameReader(medium, batch_size=batch)


class FrameWriter:
    """The highlighted video's writer, its frame i the medium's frame i (the number detections.jsonl
    and the heat maps give it): a frame skipped as unreadable is a placeholder, the frame before it
    dimmed with "frame N skipped" written on it. Without it the video lost a frame at each skip, and
    every later frame showed the one after its number (and ran early)."""

    def __init__(self, writer: Any, heat_folder: Path | None = None,
                 reasons: Mapping[int, str] | None = None) -> None:
        self.writer = writer
        # frame index -> why it was skipped (a reader's ``skip_reasons``, filled as it reads); unreadable
        # where not given: a frame of another size said "(unreadable)" on a frame any viewer opens
        self.reasons = {} if reasons is None else reasons
        self.next = 0  # the index of the video's next frame
        self.last: np.ndarray | None = None
        self.heat_folder = heat_folder  # ``<name>.heat/`` with --save-heatmaps (else None)
        self.heat_written: list[Path] = []

    def heat(self, picture: np.ndarray, index: int) -> None:
        """Save ``picture`` (8-bit grey) as the heat map of the medium's frame ``index``."""
        assert self.heat_folder is not None, "FrameWriter.heat without a heat folder"
        path = self.heat_folder / f"{index:06d}.png"
        save_image(path, picture)
        self.heat_written.append(path)

    def discard_heat(self) -> None:
        """Remove the heat maps this video wrote (an interrupted video's, searched again from its start
        by a rerun): half a video's maps were left beside no highlight. A file of the user's in the
        folder keeps it."""
        for path in self.heat_written:
            path.unlink(missing_ok=True)
        self.heat_written = []
        if self.heat_folder is not None:
            try:
                self.heat_folder.rmdir()  # only when empty
            except OSError:
                pass

    def write(self, picture: np.ndarray, index: int) -> None:
        """Write ``picture`` as the medium's frame ``index``, placeholders before it for any skipped."""
        self.skip_to(index, picture)
        self.writer.write(picture)
        self.last, self.next = picture, max(self.next, index + 1)

    def skip_to(self, index: int, picture: np.ndarray | None = None) -> None:
        """Placeholders for the skipped frames before ``index`` (a frame folder's unreadable last
        files too: its video has a frame per file wherever the unreadable ones lie). Nothing before
        the first picture is known when none is given."""
        like = self.last if self.last is not None else picture
        if like is None:
            return
        while self.next < index:
            placeholder = dim(self.last if self.last is not None else np.zeros_like(like))
            reason = self.reasons.get(self.next, UNREADABLE)
            put_label(placeholder, (f"frame {self.next} skipped ({reason})", f"{self.next} skipped"),
                      (6, 2), (255, 255, 255), base_scale=0.5, above=False)
            self.writer.write(placeholder)
            self.next += 1


@contextmanager
def frames_and_highlights(medium: Path, video: Path, batch: int,
                          heat_folder: Path | None = None) -> Iterator[tuple[Any, Any]]:
    """(reader, writer): ``medium``'s frames and a highlighted video written at its size and rate
    (a :class:`FrameWriter`: ``writer.write(picture, frame_index)``; ``writer.heat(map, frame_index)``
    saves a heat map into ``heat_folder``).

    Both are closed however the block ends. The frames written before a failure of this medium (an
    exception: the run goes on and reports it) are kept; an interrupt (Ctrl-C, or the consumer
    stopping early) removes the part-written video, which would otherwise pass for a complete one,
    and the heat maps written for it.
    A medium that delivered no frame is an InputError after the block, one whose frames are under
    8 px a side one before it (as a still image that small is: searched, it gives only noise).
    """
    from pipelines.search import check_min_side
    from pipelines.video_writer import VideoWriter

    reader = open_frames(medium, batch)
    try:
        if reader.info.width > 0 and reader.info.height > 0:  # 0: a size the container does not declare
            check_min_side(str(medium), reader.info.width, reader.info.height, what="video frame")
        writer = VideoWriter(video, reader.info.fps, reader.info.width, reader.info.height)
    except BaseException:
        reader.close()
        raise
    keep = True
    frame_writer = FrameWriter(writer, heat_folder, getattr(reader, "skip_reasons", None))
    try:
        yield reader, frame_writer
        if isinstance(reader, FolderFrames):  # its files after the last readable one (a video's end there)
            frame_writer.skip_to(len(reader.files))
    except BaseException as error:
        keep = isinstance(error, Exception)  # not KeyboardInterrupt, SystemExit, GeneratorExit
        raise
    finally:
        reader.close()
        writer.close(keep=keep)
        if not keep:
            frame_writer.discard_heat()
    if reader.frames_read == 0:
        raise InputError(f"{medium}: no frame could be decoded")
