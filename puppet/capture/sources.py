"""Frame sources for the live loop: a camera or a video file, read on their own thread.

The reader thread keeps only the newest frame (no queue growth): when the loop is slower than
the camera, old frames are dropped, so latency stays one frame deep.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from puppet.errors import PuppetError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif", ".wmv", ".mpg", ".mpeg"}


@dataclass
class CapturedFrame:
    image: np.ndarray  # BGR uint8 (H, W, 3)
    index: int  # frame number from the source (counts dropped frames too)
    timestamp: float  # seconds: video time for files, monotonic time for cameras


def parse_source(text: str) -> int | Path:
    """'0' -> camera 0; anything else is a video path (checked to exist)."""
    if text.strip().isdigit():
        return int(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise PuppetError(
            f"Source {text!r} is neither a camera index nor an existing video file.",
            "Pass a camera index such as 0, or the path of a video file.",
        )
    return path


def open_video_capture(source: int | Path) -> cv2.VideoCapture:
    """Open a camera index or file; a camera that does not open gives one clear error."""
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            capture.release()
            raise PuppetError(
                f"Camera {source} could not be opened.",
                "Check that it is plugged in and not used by another app; `puppet doctor` "
                "lists the cameras found. Or pass a video file with --source.",
            )
        return capture
    capture = cv2.VideoCapture(str(source))
    ok = capture.isOpened()
    if ok:
        ok, _ = capture.read()
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    if not ok:
        capture.release()
        raise PuppetError(
            f"{source} could not be read as a video.",
            "Use a video file OpenCV/FFmpeg can decode (e.g. .mp4 with H.264).",
        )
    return capture


class FrameSource:
    """The newest frame of a camera or video file, read on a background thread.

    Files are read at their own frame rate when ``realtime`` (like a camera), or as fast as
    the consumer takes them otherwise (then no frame is dropped). A camera that disappears is
    reopened every ``reconnect_s`` seconds; ``connected`` tells the loop so it can idle.
    """

    def __init__(
        self,
        source: int | Path,
        *,
        realtime: bool = True,
        reconnect_s: float = 1.0,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        self.source = source
        self.is_file = not isinstance(source, int)
        self.realtime = realtime
        self.reconnect_s = reconnect_s
        self._capture = open_video_capture(source)
        if width and height and not self.is_file:
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else 30.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self.is_file else 0
        self.frame_count = count if count > 0 else None
        self._lock = threading.Condition()
        self._latest: CapturedFrame | None = None
        self._taken_index = -1
        self._finished = False
        self.connected = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="puppet-capture", daemon=True)
        self._thread.start()

    # -- reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        index = 0
        start = time.monotonic()
        while not self._stop.is_set():
            if not self.is_file and not self.connected:
                self._try_reconnect()
                continue
            if self.is_file and not self.realtime:
                with self._lock:  # wait until the consumer took the previous frame
                    while (
                        self._latest is not None
                        and self._latest.index > self._taken_index
                        and not self._stop.is_set()
                    ):
                        self._lock.wait(0.05)
            ok, image = self._capture.read()
            if not ok or image is None:
                if self.is_file:
                    break
                log.warning("camera %s stopped delivering frames; reconnecting", self.source)
                self.connected = False
                continue
            stamp = index / self.fps if self.is_file else time.monotonic()
            if self.is_file and self.realtime:
                delay = start + index / self.fps - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            with self._lock:
                self._latest = CapturedFrame(image, index, stamp)
                self._lock.notify_all()
            index += 1
        with self._lock:
            self._finished = True
            self._lock.notify_all()

    def _try_reconnect(self) -> None:
        self._capture.release()
        if self._stop.wait(self.reconnect_s):
            return
        capture = cv2.VideoCapture(int(self.source))
        if capture.isOpened():
            self._capture = capture
            self.connected = True
            log.warning("camera %s is back", self.source)
        else:
            capture.release()

    # -- consumer ------------------------------------------------------------------------
    def read(self, timeout: float = 1.0) -> CapturedFrame | None:
        """The newest frame not yet returned; None on timeout or at the end of a file."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                latest = self._latest
                if latest is not None and latest.index > self._taken_index:
                    self._taken_index = latest.index
                    self._lock.notify_all()
                    return latest
                if self._finished:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)

    @property
    def finished(self) -> bool:
        """True once a file source has delivered its last frame and it was taken."""
        with self._lock:
            latest_taken = self._latest is None or self._latest.index <= self._taken_index
            return self._finished and latest_taken

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=2.0)
        self._capture.release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_cameras(max_index: int = 4) -> list[int]:
    """Camera indices that open (for `puppet doctor`); quiet when there are none."""
    found = []
    previous = cv2.utils.logging.getLogLevel() if hasattr(cv2, "utils") else None
    if previous is not None:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        for index in range(max_index):
            capture = cv2.VideoCapture(index)
            if capture.isOpened():
                found.append(index)
            capture.release()
    finally:
        if previous is not None:
            cv2.utils.logging.setLogLevel(previous)
    return found
