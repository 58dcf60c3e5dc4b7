"""Frame sources for the live loop: a camera or a video file, read on their own thread.

The reader thread keeps only the newest frame (no queue growth): when the loop is slower than
the camera, old frames are dropped, so latency stays one frame deep. Every frame carries the
``time.perf_counter()`` at which it was captured, so the loop can measure capture-to-output
latency; ``SyntheticCamera`` is a camera stand-in at an exact frame rate for ``puppet bench``
and the tests.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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
    # time.perf_counter() when the frame was captured (cameras: when the driver handed it
    # over; files: when it was due at the file's own rate).
    captured_at: float = field(default_factory=time.perf_counter)


class LiveSource(Protocol):
    """What the live loop reads frames from (``FrameSource``, ``SyntheticCamera``)."""

    is_file: bool
    fps: float
    connected: bool
    dropped: int

    def start(self) -> None: ...

    def read(self, timeout: float = 1.0) -> CapturedFrame | None: ...

    @property
    def finished(self) -> bool: ...

    def close(self) -> None: ...


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
        # Reopen rather than seek back: seeking to frame 0 fails on a 1-frame video, which
        # then read as 0 frames.
        capture.release()
        capture = cv2.VideoCapture(str(source))
        ok = ok and capture.isOpened()
    if not ok:
        capture.release()
        raise PuppetError(
            f"{source} could not be read as a video.",
            "Use a video file OpenCV/FFmpeg can decode (e.g. .mp4 with H.264).",
        )
    return capture


class FreshFramePicker:
    """Which camera frame to track: the newest one, or the next when that is due sooner than
    the newest is old.

    A loop slower than its camera (2 cores, a 60 fps camera) picks up a frame anywhere from 0
    to one frame interval old. When the newest frame is older than ``share`` of the interval,
    waiting for the next one lowers capture->output latency by the frame's age for a smaller
    delay, so a tracked frame is at most half an interval old. The interval is measured from
    the frames' capture times; files (frames due at their own rate) are left as they are."""

    def __init__(self, share: float = 0.5) -> None:
        self.share = share
        self.interval = 0.0  # the camera's measured frame interval (s), 0 until known
        self.skipped = 0  # frames passed over for the next, fresher one
        self._last: tuple[int, float] | None = None  # (index, captured_at)

    def _note(self, captured: CapturedFrame) -> None:
        last, self._last = self._last, (captured.index, captured.captured_at)
        if last is not None and captured.index > last[0]:
            interval = (captured.captured_at - last[1]) / (captured.index - last[0])
            if 0.0 < interval < 1.0:
                self.interval += (0.2 if self.interval else 1.0) * (interval - self.interval)

    def pick(self, source: LiveSource, captured: CapturedFrame) -> CapturedFrame:
        """``captured`` (just read from ``source``), or the source's next frame."""
        self._note(captured)
        if not self.interval or source.is_file:
            return captured
        now = time.perf_counter()
        due = captured.captured_at + self.interval - now
        if now - captured.captured_at <= self.share * self.interval or due <= 0:
            return captured  # fresh enough, or the next frame is late (a stalling camera)
        newer = source.read(timeout=due + 0.1 * self.interval)
        if newer is None:
            return captured
        self.skipped += 1
        self._note(newer)
        return newer


class _NewestFrameSlot:
    """The newest-frame handoff both live sources share: a producer thread publishes into
    ``_latest`` under ``_lock``; :meth:`read` returns each frame at most once, newest first."""

    _lock: threading.Condition
    _latest: CapturedFrame | None
    _taken_index: int

    def _no_more_frames(self) -> bool:
        """True when waiting is pointless (a file ended, the source was closed)."""
        raise NotImplementedError

    def read(self, timeout: float = 1.0) -> CapturedFrame | None:
        """The newest frame not yet returned; None on timeout or when no more will come."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                latest = self._latest
                if latest is not None and latest.index > self._taken_index:
                    self._taken_index = latest.index
                    self._lock.notify_all()  # a non-realtime file reader waits for this
                    return latest
                remaining = deadline - time.monotonic()
                if self._no_more_frames() or remaining <= 0:
                    return None
                self._lock.wait(remaining)


class FrameSource(_NewestFrameSlot):
    """The newest frame of a camera or video file, read on a background thread.

    Files are read at their own frame rate when ``realtime`` (like a camera), or as fast as
    the consumer takes them otherwise (then no frame is dropped). A camera that disappears is
    reopened every ``reconnect_s`` seconds; ``connected`` tells the loop so it can idle.

    ``start=False`` opens the source (so a bad file fails early) but reads nothing until
    ``start()``: the live loop starts it once the poser and tracker are loaded, so a video file
    plays from its first frame, like a camera just switched on. ``loop=True`` replays a file
    from the start when it ends (demos, soak runs); timestamps keep increasing.
    """

    def __init__(
        self,
        source: int | Path,
        *,
        realtime: bool = True,
        reconnect_s: float = 1.0,
        width: int | None = None,
        height: int | None = None,
        start: bool = True,
        loop: bool = False,
    ) -> None:
        self.source = source
        self.is_file = not isinstance(source, int)
        self.realtime = realtime
        self.loop = loop and self.is_file
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
        self.dropped = 0  # frames replaced by a newer one before the consumer took them
        self.connected = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="puppet-capture", daemon=True)
        self._started = False
        if start:
            self.start()

    def start(self) -> None:
        """Start reading (idempotent); a file's clock starts now."""
        if not self._started:
            self._started = True
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
            if (not ok or image is None) and self.loop and index > 0:
                ok, image = self._rewind()
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
                if self._latest is not None and self._latest.index > self._taken_index:
                    self.dropped += 1
                self._latest = CapturedFrame(image, index, stamp, time.perf_counter())
                self._lock.notify_all()
            index += 1
        with self._lock:
            self._finished = True
            self._lock.notify_all()

    def _rewind(self) -> tuple[bool, np.ndarray | None]:
        """The first frame again (``loop``): seek, or reopen where the container cannot seek."""
        if not self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self._capture.release()
            self._capture = cv2.VideoCapture(str(self.source))
        return self._capture.read()

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
    def _no_more_frames(self) -> bool:
        return self._finished

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
        if self._started:
            self._thread.join(timeout=2.0)
        self._capture.release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyntheticCamera(_NewestFrameSlot):
    """A camera stand-in that delivers ``image`` (BGR) at exactly ``fps``, each frame stamped
    with its capture time, for the latency benchmark and the tests.

    Each frame is a fresh copy shifted by up to 2 pixels (a slow sway), as a real camera hands
    over a new buffer showing a face that is never perfectly still. ``stall_after`` frames in,
    the camera stops delivering for ``stall_s`` seconds (still "connected"), as a USB camera
    that hiccups does. Frames are produced on a thread, newest only, like ``FrameSource``.
    """

    is_file = False

    def __init__(
        self,
        image: np.ndarray,
        fps: float = 30.0,
        *,
        stall_after: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        if not fps > 0:
            raise PuppetError(f"Synthetic camera rate {fps} is not positive.", "Use e.g. 30.")
        self.fps = float(fps)
        self.connected = True
        self.frames_made = 0
        self.dropped = 0  # frames replaced by a newer one before the consumer took them
        self._image = np.ascontiguousarray(image)
        self._stall_after = stall_after
        self._stall_s = stall_s
        self._lock = threading.Condition()
        self._latest: CapturedFrame | None = None
        self._taken_index = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="puppet-synthetic", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.fps
        start = time.perf_counter()
        index = 0
        while not self._stop.is_set():
            due = start + index * period
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._stall_after is not None and index == self._stall_after and self._stall_s:
                if self._stop.wait(self._stall_s):
                    break
                start += self._stall_s  # then carry on at the same rate
            shift = int(round(2 * np.sin(index * 0.2)))
            image = np.roll(self._image, shift, axis=1)
            captured = CapturedFrame(image, index, index * period, time.perf_counter())
            with self._lock:
                if self._latest is not None and self._latest.index > self._taken_index:
                    self.dropped += 1
                self._latest = captured
                self._lock.notify_all()
            self.frames_made += 1
            index += 1

    def _no_more_frames(self) -> bool:
        return self._stop.is_set()

    @property
    def finished(self) -> bool:
        return False

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._started:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> SyntheticCamera:
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
