"""Video frames in and out on background threads, so decoding and encoding overlap the search.

:class:`FrameReader` decodes batches of RGB frames ahead of the consumer; a video that cannot be
opened is an :class:`InputError` at once, one that breaks mid-way ends the iteration early and
leaves the reason in ``reader.error`` (the frames before the break are delivered); a frame that
cannot be decoded with decodable ones after it is skipped (``reader.skipped``). A video whose
frames are over the pixel limit (:mod:`augment.pixel_limit`) is an InputError as it opens: from the
size its header declares, before any frame is decoded, and from its first frame where that differs;
a later frame of another size over the limit ends the video there with ``reader.error`` naming it,
and one under the limit is resized to the first frame's size (one size per video, as its boxes and
highlighted video need).
Writing them is :mod:`pipelines.video_writer`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import queue
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from augment.imageio import InputError, check_plain_file, empty_or_text, opencv_path
from augment.pixel_limit import check_size

logger = logging.getLogger(__name__)

# FFmpeg inside OpenCV prints its own diagnostics ("moov atom not found") straight to stderr; a
# broken video is reported as one line naming the file instead. OpenCV reads this when the first
# capture opens; set OPENCV_FFMPEG_LOGLEVEL=32 (or higher) to see FFmpeg's messages when debugging.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

_END = object()
# Frames in a row that may fail to decode, within the frame count the header declares, before the
# video counts as ending there: a damaged frame (a camera's MJPEG with a corrupt JPEG) is skipped and
# counted, as a frame folder's unreadable file is, and the frames after it are searched (OpenCV reads
# on past it). A failed read costs ~1-3 us (past a cut AVI's or MKV's end, damaged MJPEG frames): the bound
# only stops a header declaring a billion frames; 8 lost a clip whose first 10 frames were damaged.
MAX_BAD_FRAMES_IN_A_ROW = 1000
DEFAULT_FPS = 25.0  # a rate that is 0, negative, NaN or infinite: the container declares none


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int  # as the container declares it; 0 when unknown


def probe(path: Path | str) -> VideoInfo:
    """Open a video and decode its first frame; anything unreadable is an InputError."""
    capture = _open(Path(path))
    try:
        return _info(capture)
    finally:
        capture.release()


def is_animated_gif(path: Path) -> bool:
    """A .gif of more than one frame: a medium read as a video (VideoCapture decodes its frames as
    it does a film's), where a still GIF is an image. Logged once per file; a GIF whose frames
    cannot be counted is taken as a still (reading it then says what is wrong)."""
    path = Path(path)
    if path.suffix.lower() != ".gif" or not path.is_file():
        return False
    stat = path.stat()
    return _frames(str(path.resolve()), stat.st_size, stat.st_mtime_ns) > 1


def still_frames(path: Path) -> int:
    """Frames (pages) of an image file searched as a still: an animated WebP or PNG, a multi-page TIFF
    has more than one, of which only the first is read; 1 where they cannot be counted, and for a JPEG
    (an iPhone's or an Ultra HDR photo holds a second picture, its gain map, that is no frame)."""
    path = Path(path)
    if path.suffix.lower() not in (".webp", ".png", ".tif", ".tiff") or not path.is_file():
        return 1
    stat = path.stat()
    return _frames(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _frames(path: str, size: int, mtime_ns: int) -> int:
    """Frames of an image file, a GIF's or another's (size and time key the cache: a file replaced is
    counted again)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow's warning past 89 megapixels: synth's own limit applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = int(getattr(image, "n_frames", 1))  # frame headers only: no frame is decoded
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a damaged file
        return 1
    if frames > 1 and path.lower().endswith(".gif"):
        logger.info("%s: an animated GIF of %d frames; searched as a video", path, frames)
    return frames


def _open(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a video file")
    check_plain_file(path, "a video file")  # OpenCV's open of a FIFO waited for a writer forever, past SIGTERM
    capture = cv2.VideoCapture(opencv_path(path))
    if not capture.isOpened():
        capture.release()
        raise InputError(_unopened(path))
    try:  # the size the header declares (0 where it declares none: FrameReader checks the first frame)
        check_size(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                   str(path), "a video frame")
    except InputError:
        capture.release()
        raise
    return capture


def _unopened(path: Path) -> str:
    """Why OpenCV could not open ``path``: an empty file (a failed copy or recording) or a text file said so."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        return f"{path}: cannot read ({error.strerror or error})"
    return empty_or_text(head, str(path), "a video") or \
        f"{path}: cannot open video (corrupt, truncated or unsupported format)"


def _info(capture: cv2.VideoCapture) -> VideoInfo:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return VideoInfo(width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     fps=_rate(fps),
                     frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))))


class FrameReader:
    """Iterate over (frame indices, RGB frames) batches decoded by a background thread.

    After the iteration ``frames_read`` holds the number of frames delivered and ``error`` a
    one-line message naming the file if the video ended before its declared frame count.
    """

    def __init__(self, path: Path | str, batch_size: int = 4, prefetch: int = 4) -> None:
        self.path = Path(path)
        self.batch_size = max(1, int(batch_size))
        self._capture = _open(self.path)
        self.info = _info(self._capture)
        self.frames_read = 0
        self.error: str | None = None
        self.skipped: list[str] = []  # frames that could not be decoded, the video going on past them
        self._first = self._first_frame()
        self._resize_logged = False
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name=f"decode {self.path.name}",
                                        daemon=True)
        self._thread.start()

    def _first_frame(self) -> tuple[bool, np.ndarray | None] | cv2.error:
        """The first frame, decoded now: a header that declares no size, or another than the frames
        have, would let frames over the pixel limit through. Its size, if it differs, is checked and
        becomes :attr:`info`'s (the highlighted video is written at it); a decoder failure is kept
        for the decoding thread to report as it would any frame's."""
        try:
            ok, frame = self._capture.read()
        except cv2.error as error:
            return error
        if ok and frame is not None and frame.shape[1::-1] != (self.info.width, self.info.height):
            height, width = frame.shape[:2]
            try:
                check_size(width, height, str(self.path), "a video frame")
            except InputError:
                self._capture.release()
                raise
            logger.info("%s: frames are %dx%d, its header says %dx%d", self.path, width, height,
                        self.info.width, self.info.height)
            self.info = dataclasses.replace(self.info, width=width, height=height)
        return ok, frame

    def _read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame: the first one, decoded by :meth:`_first_frame`, then the capture's."""
        first, self._first = self._first, None
        if first is None:
            return self._capture.read()
        if isinstance(first, cv2.error):
            raise first
        return first

    def _decode(self) -> None:
        indices: list[int] = []
        frames: list[np.ndarray] = []
        index = 0
        failed = 0  # frames in a row, from ``index`` on, that could not be decoded
        try:
            while not self._stop.is_set():
                ok, frame = self._read()
                if not ok or frame is None:
                    failed += 1
                    if failed >= MAX_BAD_FRAMES_IN_A_ROW or index + failed >= self.info.frame_count:
                        break  # the end (declared or not), or a break past repair
                    continue
                for bad in range(index, index + failed):  # decodable frames follow: those were damaged
                    self.skipped.append(f"{self.path} (frame {bad}): could not be decoded")
                    logger.info("skipped frame: %s", self.skipped[-1])
                index, failed = index + failed, 0
                if frame.shape[1::-1] != (self.info.width, self.info.height):
                    if self._over_limit(frame, index):
                        break
                    frame = self._resized(frame, index)
                indices.append(index)
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                index += 1
                if len(frames) == self.batch_size:
                    self._put((indices, frames))
                    indices, frames = [], []
            if frames:
                self._put((indices, frames))
        except cv2.error as error:  # a decoder failure mid-stream: keep what was decoded
            self.error = f"{self.path}: video breaks at frame {index} ({str(error).strip()[:80]})"
            if frames:
                self._put((indices, frames))
        finally:
            self._capture.release()
            declared = self.info.frame_count
            if self.error is None and not self._stop.is_set() and declared and index < declared:
                self.error = (f"{self.path}: video breaks after {index} of {declared} frames "
                              "(truncated or corrupt)")
            self._put(_END)

    def _over_limit(self, frame: np.ndarray, index: int) -> bool:
        """A frame of another size than the first (a stream that changes resolution) is held to the
        pixel limit too: over it, the video ends there with :attr:`error` naming the frame, so a
        stream that grows mid-way cannot run the search out of memory."""
        height, width = frame.shape[:2]
        try:
            check_size(width, height, f"{self.path} (frame {index})", "a video frame")
        except InputError as error:
            self.error = f"{error}; the video ends there"
            return True
        return False

    def _resized(self, frame: np.ndarray, index: int) -> np.ndarray:
        """A frame of another size than the first, under the limit, brought to the first's (as OpenCV
        does for some streams itself): the search, the tracker's boxes and the highlighted video all
        hold one size per video. Logged once per video."""
        if not self._resize_logged:
            self._resize_logged = True
            logger.warning("%s: frame %d is %dx%d where the first is %dx%d; such frames are resized to the "
                           "first's", self.path, index, frame.shape[1], frame.shape[0], self.info.width,
                           self.info.height)
        return cv2.resize(frame, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        while True:
            item = self._queue.get()
            if item is _END:
                self._thread.join()
                return
            indices, frames = item
            self.frames_read += len(frames)
            yield indices, frames

    def close(self) -> None:
        """Stop decoding early (e.g. the consumer failed); safe to call twice."""
        self._stop.set()
        self._thread.join()


def _rate(fps: float) -> float:
    """A declared frame rate, or :data:`DEFAULT_FPS` where it is none (0, negative, NaN, infinite)."""
    return float(fps) if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
