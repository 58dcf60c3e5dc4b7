"""Opening outputs from ``--output`` specs, and fanning frames out to several at once.

Specs: ``vcam`` (or ``vcam:BACKEND``), ``window``, ``browser`` (or ``browser:PORT``,
``browser:HOST:PORT``), a video file path (``.mp4 .webm .mov .gif``), or a directory path ending
in ``/`` for PNG frames. The browser source renders on the server (PNG frames) or, with
``browser_render="client"``, in the page (the puppet student in WebGL2; poses only on the wire).

Live runs (``open_outputs(..., live=True)``) keep slow outputs off the loop's thread:

- The virtual camera and the browser source are ``PacedOutput``: frames go out on their own
  thread at the configured fps, always the newest one. A tick with no new frame repeats the
  previous one (the virtual camera; the browser page simply keeps showing it), frames replaced
  before their tick are dropped; both are counted (``PacingStats``). A blocking camera driver
  holds back only its own thread.
- Files are ``BackgroundFileOutput``: encoded on their own thread, at the lowest priority,
  behind a bounded queue. When the encoder cannot keep up, the oldest waiting frame is dropped
  (camera sources; said once, with the advice to ``--record`` and ``render`` afterwards) or
  the loop waits (pose tracks, which give every line to the files). With ``wall_clock`` each
  video frame is stamped with the time it was made (frame ``round(t * fps)``), so the file
  plays at real speed even when the loop is slower than ``--fps``; frames beyond ``--fps`` are
  merged (the first of a tick is kept).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from puppet.atomic import FinishOrAbort
from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo, LiveControls, Output, PacingStats
from puppet.outputs.files import VIDEO_FORMATS

if TYPE_CHECKING:
    from puppet.outputs.web_student import WebStudent

log = logging.getLogger(__name__)

BROWSER_RENDERS = ("server", "client")

SPEC_HELP = (
    "vcam, window, browser, or a file: "
    + ", ".join(f"NAME{ext}" for ext in VIDEO_FORMATS)
    + ", DIR/ (PNG frames)"
)


def open_output(
    spec: str,
    *,
    width: int,
    height: int,
    fps: float,
    background: str | None,
    controls: LiveControls | None = None,
    audio_from: Path | None = None,
    vcam_device: str | None = None,
    browser_port: int | None = None,
    browser_render: str = "server",
    browser_student: Path | None = None,
) -> Output:
    """Open one output from its spec (see the module docstring). Raises PuppetError for an
    unknown spec or an output that cannot open. ``browser_student``: the poser's student
    folder, which client rendering sends to the page (None: the poser is not a puppet
    student)."""
    text = spec.strip()
    kind, _, argument = text.partition(":")
    if kind == "vcam":
        from puppet.outputs.vcam import VirtualCameraOutput

        return VirtualCameraOutput(
            width=width, height=height, fps=fps, device=vcam_device,
            backend=argument or None, background=background,
        )  # fmt: skip
    if text == "window":
        from puppet.outputs.window import PreviewWindow

        return PreviewWindow(controls or LiveControls(), background=background)
    if kind == "browser":
        from puppet.outputs.browser import DEFAULT_PORT, BrowserOutput

        host, _, port_text = argument.rpartition(":")
        if port_text and not port_text.isdigit():
            raise PuppetError(f"{spec!r}: {port_text!r} is not a port.", "Use browser:8787.")
        port = int(port_text) if port_text else browser_port
        host = host.strip("[]") or "127.0.0.1"
        return BrowserOutput(
            host=host,
            port=DEFAULT_PORT if port is None else port,
            student=_web_student(browser_render, browser_student),
        )
    if text.endswith(("/", os.sep)):
        from puppet.outputs.files import PngDirectoryOutput

        return PngDirectoryOutput(Path(text))
    path = Path(text)
    if path.suffix.lower() in VIDEO_FORMATS:
        from puppet.outputs.files import VideoFileOutput

        return VideoFileOutput(path, fps=fps, background=background, audio_from=audio_from)
    hint = " (add a trailing / for a directory of PNGs)" if not path.suffix else ""
    raise PuppetError(
        f"Unknown output {spec!r}{hint}.",
        f"Use {SPEC_HELP}.",
    )


def _web_student(render: str, folder: Path | None) -> WebStudent | None:
    """The student packed for the page in client mode (checked before the server starts)."""
    if render not in BROWSER_RENDERS:
        raise PuppetError(
            f"Unknown browser rendering {render!r}.", "Use --render server or --render client."
        )
    if render == "server":
        return None
    if folder is None:
        raise PuppetError(
            "Only a puppet student can render in the browser; this poser (THA3 or a THA4"
            " student) renders on the server.",
            "Use --render server (PNG frames), or a student: --poser default or student:DIR.",
        )
    from puppet.outputs.web_student import export_web_student

    return export_web_student(folder)


class _Rate:
    """Frames per second over the last second or so of send times."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=61)

    def tick(self, now: float) -> None:
        self._times.append(now)

    @property
    def fps(self) -> float:
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


class PacedOutput:
    """Sends the newest frame to ``inner`` at ``fps`` on its own thread (see the module
    docstring). ``repeat``: on a tick without a new frame send the previous one again (a
    virtual camera expects a steady stream); otherwise the tick is only counted as repeated.

    A new frame within a quarter period of its tick goes out at once, a tick waits up to half a
    period for a late frame, and the schedule re-anchors on a late frame; while frames come no
    faster than fps it re-anchors on early ones too. So a camera at the output's rate is
    followed frame for frame with no added wait (the output phase-locks to the source) while a
    faster loop is thinned to fps. ``latencies`` holds the capture->sent
    latency (ms) of every new frame that had a capture time.
    """

    def __init__(self, inner: Output, fps: float, *, repeat: bool = True) -> None:
        if not fps > 0:
            raise PuppetError(f"Output rate {fps} is not positive.", "Use e.g. --fps 30.")
        self.inner = inner
        self.name = inner.name
        self.needs_frames = getattr(inner, "needs_frames", True)
        self.period = 1.0 / fps
        self.repeat = repeat
        self.stats_ = PacingStats()
        self.latencies: deque[float] = deque(maxlen=10_000)
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, FrameInfo | None] | None = None
        self._error: BaseException | None = None
        self._stop = False
        self._rate = _Rate()
        self._arrived: float | None = None  # when the last frame was handed over
        self._arrival_interval = 0.0  # smoothed time between handed-over frames (s)
        self._thread = threading.Thread(target=self._run, name=f"puppet-paced-{self.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stats(self) -> PacingStats:
        self.stats_.fps = self._rate.fps
        return self.stats_

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        """Hand the frame to the pacing thread (never blocks); raises the inner output's error
        once it has failed, so the output set drops it."""
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._stop:
                raise RuntimeError(f"{self.name} is closed")
            if self._pending is not None:
                self.stats_.dropped += 1
            self._pending = (frame, info)
            now = time.perf_counter()
            if self._arrived is not None and now - self._arrived < 1.0:
                gap = now - self._arrived
                self._arrival_interval += 0.2 * (gap - self._arrival_interval)
            self._arrived = now
            self._cond.notify_all()

    def _wait(self, until: float, *, for_frame: bool) -> None:
        """Wait until ``until`` (perf_counter), or for a new frame, or close. Holds the lock."""
        while not self._stop and not (for_frame and self._pending is not None):
            remaining = until - time.perf_counter()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _run(self) -> None:
        period = self.period
        early = period / 4  # a new frame this close to its tick goes out at once
        next_due: float | None = None  # the tick the next frame belongs to
        last_sent = -1e9
        last: tuple[np.ndarray, FrameInfo | None] | None = None
        while True:
            with self._cond:
                limit = time.perf_counter() + 0.25 if next_due is None else next_due + period / 2
                self._wait(limit, for_frame=True)
                if self._stop:
                    return
                if self._pending is not None and next_due is not None:
                    # Too early (or too soon after the last one): hold it, a newer frame
                    # meanwhile replaces it. The average rate never exceeds fps. A source
                    # no faster than fps (a 30 fps camera into a 30 fps virtual camera) is
                    # followed at once instead: the schedule re-anchors on its early frames
                    # too, else the phase between the two clocks would add up to half a
                    # period of waiting to every frame.
                    slow_source = self._arrival_interval >= 0.98 * period
                    hold = last_sent + period / 2 if slow_source else next_due - early
                    hold = max(hold, last_sent + period / 2)
                    self._wait(hold, for_frame=False)
                    if self._stop:
                        return
                item, self._pending = self._pending, None
            now = time.perf_counter()
            fresh = item is not None
            if item is None:
                if next_due is None or last is None:
                    continue
                self.stats_.repeated += 1
                next_due = next_due + period if now - next_due < period else now + period
                if not self.repeat:
                    continue
                item = last
            else:
                # On schedule: keep it; late (a source slower than fps, or a stall): re-anchor
                # on this frame, so a source at the output's rate is followed without waiting.
                late = next_due is None or now > next_due + period / 2 or now < next_due - early
                next_due = now + period if late or next_due is None else next_due + period
            try:
                self.inner.send(*item)
            except BaseException as error:  # noqa: BLE001 - handed to the loop by send()
                with self._cond:
                    self._error = error
                return
            last_sent = time.perf_counter()
            self._rate.tick(last_sent)
            self.stats_.sent += 1
            info = item[1]
            if fresh and info is not None and info.captured_at is not None:
                self.latencies.append((last_sent - info.captured_at) * 1000.0)
            last = item

    def _halt(self) -> bool:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.warning("output %s is blocked; leaving it behind", self.name)
            return False
        return True

    def close(self) -> None:
        if self._halt():
            self.inner.close()

    def abort(self) -> None:
        if self._halt():
            _discard(self.inner)


# The lowest priority: measured with a live ProRes .mov on the 2-core machine, the loop kept
# 18.3-18.4 fps at nice 19 against 13.3-13.7 at nice 10 and 11.3-13.9 at nice 0 (rig poser,
# 30 fps camera, `benchmarks/bench_live.py --output x.mov`).
ENCODER_NICENESS = 19


def _lower_priority() -> None:
    """Run this thread (and the codec threads it starts) at the lowest priority: an encoder
    slower than real time then takes the CPU the loop leaves over, and drops frames, instead of
    slowing the loop. Linux only (a thread id is a process id to setpriority); elsewhere the
    encoder runs at normal priority."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, tid) + ENCODER_NICENESS)
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except (OSError, AttributeError) as error:
        log.debug("cannot lower the encoder's priority: %s", error)


class BackgroundFileOutput:
    """Encodes into ``inner`` (a video file or PNG directory) on its own thread, behind a queue
    of ``depth`` frames (see the module docstring).

    ``lossless``: when the queue is full, wait for room (every frame is written) instead of
    dropping the oldest waiting frame. ``wall_clock``: stamp video frames with ``FrameInfo.t``
    (frame number ``round((t - t0) * fps)``) instead of numbering them one after another.
    """

    def __init__(
        self,
        inner: Output,
        fps: float,
        *,
        lossless: bool = False,
        wall_clock: bool = False,
        depth: int = 8,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.fps = float(fps)
        self.lossless = lossless
        # Only video files have timestamps; a PNG sequence is numbered frame after frame.
        self.wall_clock = wall_clock and hasattr(inner, "frames_written")
        self.written = 0
        self.dropped = 0  # the encoder was behind: the queue was full
        self.merged = 0  # more than one frame in one tick of --fps: the newest was kept
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._t0: float | None = None
        self._last_slot = -1
        self._warned = False
        self._closed = False
        self._rate = _Rate()
        self._thread = threading.Thread(target=self._run, name=f"puppet-encode-{self.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stats(self) -> PacingStats:
        return PacingStats(self._rate.fps, self.written, self.dropped + self.merged, 0, file=True)

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        slot = None
        if self.wall_clock and info is not None:
            if self._t0 is None:
                self._t0 = info.t
            slot = round((info.t - self._t0) * self.fps)
            if slot <= self._last_slot:
                self.merged += 1  # faster than --fps: the file keeps one frame per tick
                return
        if info is not None and info.camera_frame is not None:
            # Files never show the camera: do not keep its frames alive in the queue.
            info = dataclasses.replace(info, camera_frame=None, landmarks=None)
        if self.lossless:
            while True:
                try:
                    self._queue.put((frame, info, slot), timeout=0.5)
                    break
                except queue.Full:
                    if self._error is not None or not self._thread.is_alive():
                        stopped = RuntimeError(f"{self.name}: the encoder stopped")
                        raise (self._error or stopped) from None
        else:
            try:
                self._queue.put_nowait((frame, info, slot))
            except queue.Full:
                # Drop the oldest waiting frame, not this one: a starved encoder then still
                # writes frames from the whole session (with gaps), never a stale beginning.
                # ``send`` is the only producer, so after taking one out there is room.
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._queue.put_nowait((frame, info, slot))
                if slot is not None:
                    self._last_slot = slot
                self.dropped += 1
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "%s: the encoder cannot keep up live, so frames are dropped (the file "
                        "still plays at real speed). For every frame, record the poses with "
                        "--record TRACK.jsonl and make the file afterwards with "
                        "`puppet render TRACK.jsonl %s`.", self.name, self.name,
                    )  # fmt: skip
                return
        if slot is not None:
            self._last_slot = slot

    def _run(self) -> None:
        _lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            frame, info, slot = item
            try:
                if slot is not None:
                    # VideoFileOutput stamps frame k with k / fps, k = frames_written: start it
                    # at this frame's tick so the gap of a slow stretch is kept in the file.
                    self.inner.frames_written = slot  # type: ignore[attr-defined]
                self.inner.send(frame, info)
            except BaseException as error:  # noqa: BLE001 - raised on the loop's next send
                self._error = error
                self._drain()
                return
            self.written += 1
            self._rate.tick(time.perf_counter())

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _finish_thread(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()

    def close(self) -> None:
        """Encode what is queued, then finish the file. Raises the encoder's error, if any
        (the partial file is then deleted)."""
        if self._closed:
            return
        self._closed = True
        self._finish_thread()
        if self._error is not None:
            _discard(self.inner)
            raise self._error
        self.inner.close()

    def abort(self) -> None:
        self._closed = True
        self._drain()
        self._finish_thread()
        _discard(self.inner)


def wrap_live(output: Output, spec: str, *, fps: float, lossless: bool, wall_clock: bool) -> Output:
    """The live-run form of an output opened from ``spec`` (see the module docstring)."""
    kind = spec.strip().partition(":")[0]
    if kind == "vcam":
        return PacedOutput(output, fps, repeat=True)
    if kind == "browser":
        return PacedOutput(output, fps, repeat=False)
    if kind == "window":
        return output  # OpenCV's window must stay on the thread that made it
    return BackgroundFileOutput(output, fps, lossless=lossless, wall_clock=wall_clock)


def _discard(output: Output) -> None:
    """Throw a failed output away: abort (delete partial files) where it can, else close."""
    try:
        abort = getattr(output, "abort", None)
        (abort or output.close)()
    except Exception as error:  # noqa: BLE001 - it has already failed; just record it
        log.debug("closing the failed output %s also failed: %s", output.name, error)


class OutputSet(FinishOrAbort):
    """Sends each frame to several outputs. One that raises is reported once (a warning with its
    name and the reason) and dropped; the others go on. Outputs added with ``reopen`` (the
    virtual camera) are retried every ``retry_seconds`` and come back when they open again.

    A file output that failed is aborted (its partial file deleted), never finalised.
    """

    def __init__(self, outputs: Iterable[Output] = (), *, retry_seconds: float = 5.0) -> None:
        self.name = "outputs"
        self.retry_seconds = retry_seconds
        self._active: list[tuple[Output, Callable[[], Output] | None]] = []
        self._waiting: list[tuple[str, Callable[[], Output], float]] = []  # name, reopen, due
        self.failures: dict[str, str] = {}  # output name -> the first error
        self._closed = False
        for output in outputs:
            self.add(output)

    def add(self, output: Output, reopen: Callable[[], Output] | None = None) -> None:
        self._active.append((output, reopen))

    def add_waiting(self, name: str, reopen: Callable[[], Output], reason: str) -> None:
        """An output that could not open now; ``reopen`` is tried every ``retry_seconds``."""
        self._report(name, reason)
        self._waiting.append((name, reopen, time.monotonic() + self.retry_seconds))

    @property
    def outputs(self) -> list[Output]:
        return [output for output, _ in self._active]

    def needs_frames(self) -> bool:
        """Whether any output wants the posed frames: False only when every one (none
        waiting to reopen) draws the pose itself (``needs_frames = False``, the browser source
        rendering in the page), so the live loop can skip its poser."""
        if self._waiting or not self._active:
            return True
        return any(getattr(output, "needs_frames", True) for output, _ in self._active)

    def pacing(self) -> dict[str, PacingStats]:
        """Rate, dropped and repeated frames of the paced outputs and live files."""
        return {
            output.name: output.stats()
            for output, _ in self._active
            if isinstance(output, PacedOutput | BackgroundFileOutput)
        }

    def __len__(self) -> int:
        return len(self._active) + len(self._waiting)

    def _report(self, name: str, reason: str) -> None:
        if name not in self.failures:
            self.failures[name] = reason
            log.warning("output %s failed: %s (the other outputs go on)", name, reason)

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        """Send to every active output; failures are reported and dropped, never raised."""
        if self._closed:
            raise RuntimeError("the outputs are closed")
        if self._waiting:
            self._retry()
        kept = []
        for output, reopen in self._active:
            try:
                output.send(frame, info)
            except Exception as error:  # noqa: BLE001 - any failure of one output is contained
                self._report(output.name, str(error) or type(error).__name__)
                _discard(output)
                if reopen is not None:
                    due = time.monotonic() + self.retry_seconds
                    self._waiting.append((output.name, reopen, due))
                continue
            kept.append((output, reopen))
        self._active = kept

    def _retry(self) -> None:
        now = time.monotonic()
        still_waiting = []
        for name, reopen, due in self._waiting:
            if now < due:
                still_waiting.append((name, reopen, due))
                continue
            try:
                output = reopen()
            except Exception as error:  # noqa: BLE001 - keep waiting, quietly
                log.debug("output %s still unavailable: %s", name, error)
                still_waiting.append((name, reopen, now + self.retry_seconds))
                continue
            log.warning("output %s is back", output.name)
            self.failures.pop(name, None)
            self._active.append((output, reopen))
        self._waiting = still_waiting

    def close(self) -> None:
        """Close every output (files are finalised); raises one PuppetError naming all the
        outputs whose close failed, after trying them all. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for output, _ in self._active:
            try:
                output.close()
            except Exception as error:  # noqa: BLE001 - collect, then report together
                errors.append(f"{output.name}: {error}")
        self._active, self._waiting = [], []
        if errors:
            raise PuppetError("Closing outputs failed: " + "; ".join(errors) + ".")

    def abort(self) -> None:
        """Stop everything without finalising files (partial files are deleted)."""
        self._closed = True
        for output, _ in self._active:
            _discard(output)
        self._active, self._waiting = [], []


def open_outputs(
    specs: Iterable[str],
    *,
    width: int,
    height: int,
    fps: float,
    background: str | None,
    controls: LiveControls | None = None,
    audio_from: Path | None = None,
    vcam_device: str | None = None,
    browser_port: int | None = None,
    browser_render: str = "server",
    browser_student: Path | None = None,
    retry_seconds: float = 5.0,
    live: bool = False,
    lossless: bool = True,
    wall_clock: bool = False,
) -> OutputSet:
    """Open every spec into an OutputSet. A virtual camera that cannot open now is reported once
    and retried in the background of ``send`` (unless it is the only output: then its
    PuppetError is raised). Any other output that cannot open raises, after closing the ones
    already opened. ``live``: paced outputs and background encoding (``wrap_live``), with
    ``lossless`` and ``wall_clock`` for the files."""
    specs = list(specs)
    if not specs:
        raise PuppetError("No output given.", f"Use --output with {SPEC_HELP}.")
    outputs = OutputSet(retry_seconds=retry_seconds)

    def opener(spec: str) -> Callable[[], Output]:
        def open_one() -> Output:
            output = open_output(
                spec, width=width, height=height, fps=fps, background=background,
                controls=controls, audio_from=audio_from, vcam_device=vcam_device,
                browser_port=browser_port, browser_render=browser_render,
                browser_student=browser_student,
            )  # fmt: skip
            if not live:
                return output
            return wrap_live(output, spec, fps=fps, lossless=lossless, wall_clock=wall_clock)

        return open_one

    try:
        for spec in specs:
            is_vcam = spec.strip().partition(":")[0] == "vcam"
            try:
                output = opener(spec)()
            except PuppetError as error:
                if not is_vcam or len(specs) == 1:
                    raise
                outputs.add_waiting(spec.strip(), opener(spec), str(error))
                continue
            outputs.add(output, reopen=opener(spec) if is_vcam else None)
    except BaseException:
        outputs.abort()
        raise
    return outputs
