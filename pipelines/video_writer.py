"""Video frames out: :class:`VideoWriter` encodes RGB frames on a background thread to a temporary
file beside the target and renames it into place on :meth:`VideoWriter.close` (atomic: a crash never
leaves a half-written video under the final name). Reading them is :mod:`pipelines.video`.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from augment.atomic_files import remove_made, replace_into_place, temporary_beside
from augment.imageio import InputError, opencv_path
from pipelines.video import _rate  # importing pipelines.video also quiets FFmpeg's own messages (before any capture)

logger = logging.getLogger(__name__)

# FourCC per output container; mp4v/MJPG are built into every OpenCV wheel (no system codecs).
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
_END = object()
# Frame rates the encoders take (FFmpeg's MPEG-4: a time base denominator up to 65535, and no rate that
# rounds to nothing; OpenCV's own MJPEG writer: at least 1 frame/s). A container may declare any rate (a
# damaged header, a time-lapse): the highlighted video is written at the nearest rate the encoder takes,
# where OpenCV refused to open the writer and the medium was lost as "cannot write this video format".
_FPS_RANGE = {"mp4v": (0.01, 65535.0), "MJPG": (1.0, 65535.0)}


def writable_fps(fps: float, fourcc: str, path: Path) -> float:
    """``fps`` brought into the range ``fourcc``'s encoder takes (logged where it changes): a rate a
    container declares far out of it (100000 or 0.001 frames/s) made OpenCV refuse the writer."""
    low, high = _FPS_RANGE[fourcc]
    rate = min(max(_rate(fps), low), high)
    if rate != fps:
        logger.warning("%s: written at %g frames/s (the encoder takes %g to %g; the medium declares %g)",
                       path, rate, low, high, fps)
    return rate


class VideoWriter:
    """Encode RGB frames on a background thread; the file appears under ``path`` on close()."""

    def __init__(self, path: Path | str, fps: float, width: int, height: int,
                 prefetch: int = 8) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise InputError(f"{self.path}: cannot write video with suffix {suffix!r} "
                             f"(supported: {', '.join(sorted(_FOURCC))})")
        opencv_path(self.path)  # before anything is created for it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary keeps the suffix: OpenCV picks the container from it. Its name is in ``made``
        # before the file exists: a stop anywhere in the rest of __init__ (the fps check, the encoder's
        # opening, the thread's start) removes it, not only a refused format.
        made: list[Path] = []
        try:
            self._temporary = temporary_beside(self.path, suffix=suffix, made=made)
            self.size = (int(width), int(height))
            # The encoders (mp4v, MJPG) take even sizes only: a 641 x 481 medium's video came out 640 x 480,
            # its last column and row cut (a box along that edge lost its line). Odd sides get a black pixel.
            self.encoded_size = (self.size[0] + self.size[0] % 2, self.size[1] + self.size[1] % 2)
            self.fps = writable_fps(fps, _FOURCC[suffix], self.path)
            self._writer = cv2.VideoWriter(str(self._temporary), cv2.VideoWriter_fourcc(*_FOURCC[suffix]),
                                           self.fps, self.encoded_size)
            if not self._writer.isOpened():
                raise InputError(f"{self.path}: OpenCV cannot write this video format")
            self.frames_written = 0
            self.error: str | None = None  # the encoder's failure, one line naming the file
            self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
            self._thread = threading.Thread(target=self._encode, name=f"encode {self.path.name}",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            writer = getattr(self, "_writer", None)
            if writer is not None:
                writer.release()
            remove_made(made)
            raise

    def _encode(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _END:
                return
            if self.error is not None:  # failed: frames are taken and dropped, so write() never blocks
                continue
            try:
                if self.encoded_size != self.size:
                    frame = cv2.copyMakeBorder(frame, 0, self.encoded_size[1] - self.size[1], 0,
                                               self.encoded_size[0] - self.size[0], cv2.BORDER_CONSTANT, value=0)
                self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            except Exception as error:  # noqa: BLE001 - an encoder thread that died left write() waiting forever
                self.error = f"{self.path}: cannot encode frame {self.frames_written} ({str(error).strip()[:80]})"
                continue
            self.frames_written += 1

    def write(self, frame_rgb: np.ndarray) -> None:
        """Queue an RGB frame (resized to the video's size where it differs); an InputError once the
        encoder has failed."""
        if self.error is not None:
            raise InputError(self.error)
        if frame_rgb.shape[1::-1] != self.size:
            frame_rgb = cv2.resize(frame_rgb, self.size, interpolation=cv2.INTER_AREA)
        self._queue.put(frame_rgb)

    def close(self, keep: bool = True) -> None:
        """Finish encoding; ``keep`` renames the file into place, else it is deleted. A video whose
        encoder failed is deleted and its error raised (an InputError), where ``keep`` asked for it."""
        self._queue.put(_END)
        self._thread.join()
        self._writer.release()
        if keep and self.frames_written and self.error is None:
            self.error = self._unreadable()
        if keep and self.frames_written and self.error is None:
            replace_into_place(self._temporary, self.path)
        else:
            self._temporary.unlink(missing_ok=True)
        if keep and self.error is not None:
            raise InputError(self.error)

    def _unreadable(self) -> str | None:
        """Why the encoded temporary is not the whole video, or None. OpenCV's writer says nothing
        when a write fails (a full disk, a quota): it left a truncated file (an MP4 without its index)
        that would be renamed into place as the highlighted video; read back, it opens with every frame."""
        capture = cv2.VideoCapture(str(self._temporary))
        try:
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else -1
        finally:
            capture.release()
        if frames == self.frames_written:
            return None
        found = "does not open" if frames < 0 else f"reads back {frames} of its {self.frames_written} frames"
        return f"{self.path}: the video written {found} (a full disk or quota?); not kept"

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(keep=exc_type is None)
