"""Pose tracks: JSONL files of 45-parameter poses over time.

Line 1 is a header ``{"format": "puppet-pose-track", "version": 1, "fps": <float>,
"parameters": [45 names]}``; every further line is one frame ``{"t": <seconds>, "pose": [45
floats]}``. ``fps`` is between 0.1 and 1000; ``t`` never goes backwards and never jumps by more
than 60 s from one frame to the next (a longer gap is a damaged file, and a player would wait for
it). Readers stream the file and name the offending line; writers follow ``puppet.atomic``'s rule
(unique temporary, fsync, rename), so an interrupted recording never leaves a half file under the
final name.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from puppet.atomic import (
    FinishOrAbort,
    claim,
    fsync_file,
    os_error,
    partial_path,
    publish,
    temp_file,
)
from puppet.errors import PuppetError
from puppet.pose import NUM_PARAMETERS, PARAMETER_NAMES, PoseVector

TRACK_FORMAT = "puppet-pose-track"
TRACK_VERSION = 1
FPS_RANGE = (0.1, 1000.0)  # frames per second a track may declare
MAX_GAP_S = 60.0  # the largest step of "t" between two frames
MAX_LINE_BYTES = 1 << 20  # a frame line is ~600 bytes; a longer one is not a pose track

log = logging.getLogger(__name__)


@dataclass
class PoseFrame:
    t: float  # seconds from the start of the track
    pose: PoseVector


@dataclass
class PoseTrack:
    fps: float
    frames: list[PoseFrame]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        return self.frames[-1].t if self.frames else 0.0


def _bad(path: Path, line_number: int, problem: str) -> PuppetError:
    return PuppetError(
        f"{path}: line {line_number}: {problem}",
        "Fix or remove that line; a pose track is JSONL written by `puppet track` or "
        "`puppet live --record`.",
    )


def _parse_header(path: Path, text: str) -> float:
    try:
        header = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(path, 1, f"the header is not JSON ({error.msg}).") from None
    if not isinstance(header, dict) or header.get("format") != TRACK_FORMAT:
        raise _bad(path, 1, f'the header must have "format": "{TRACK_FORMAT}".')
    if header.get("version") != TRACK_VERSION:
        raise _bad(path, 1, f"unsupported track version {header.get('version')!r} (expected 1).")
    fps = header.get("fps")
    low, high = FPS_RANGE
    if not isinstance(fps, int | float) or isinstance(fps, bool) or not low <= fps <= high:
        raise _bad(path, 1, f'"fps" must be a number from {low:g} to {high:g}, got {fps!r}.')
    names = header.get("parameters")
    if names != list(PARAMETER_NAMES):
        raise _bad(path, 1, '"parameters" must list the 45 THA pose parameters in THA order.')
    return float(fps)


def _parse_frame(path: Path, line_number: int, text: str, previous_t: float) -> PoseFrame:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(path, line_number, f"not valid JSON ({error.msg}).") from None
    if not isinstance(item, dict) or "t" not in item or "pose" not in item:
        raise _bad(path, line_number, 'each frame must be {"t": seconds, "pose": [45 numbers]}.')
    t, values = item["t"], item["pose"]
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        raise _bad(path, line_number, f'"t" must be a number of seconds, got {t!r}.')
    if t < previous_t:
        raise _bad(path, line_number, f'"t" goes backwards ({t} after {previous_t}).')
    if previous_t > -math.inf and t - previous_t > MAX_GAP_S:
        raise _bad(
            path,
            line_number,
            f'"t" jumps from {previous_t} to {t} s: at most {MAX_GAP_S:g} s between frames.',
        )
    if not isinstance(values, list) or len(values) != NUM_PARAMETERS:
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise _bad(path, line_number, f'"pose" must hold 45 numbers, got {count}.')
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise _bad(path, line_number, '"pose" holds a value that is not a finite number.')
    return PoseFrame(float(t), PoseVector(values))


class TrackReader:
    """A pose track read as a stream: the header is validated when it opens, each frame line
    as it is read, so the first frame of a track of any length comes at once and memory stays
    flat. Every problem is a PuppetError naming the file and the line."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise PuppetError(f"Pose track {self.path} not found.", "Check the path.")
        try:
            self._handle: IO[bytes] | None = self.path.open("rb")
        except OSError as error:
            raise os_error(error, self.path, "read") from None
        try:
            first = self._readline(1)
            if not first.strip():
                raise _bad(self.path, 1, "the file is empty (no header).")
            self.fps = _parse_header(self.path, first)
        except BaseException:
            self.close()
            raise
        self._line = 1
        self._previous_t = -math.inf

    def _readline(self, number: int) -> str:
        assert self._handle is not None
        try:
            raw = self._handle.readline(MAX_LINE_BYTES + 1)
        except OSError as error:
            raise os_error(error, self.path, "read") from None
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise _bad(self.path, number, f"longer than {MAX_LINE_BYTES} bytes (not a pose track).")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(self.path, number, "not UTF-8 text (is it a pose track?).") from None

    def __iter__(self) -> Iterator[PoseFrame]:
        return self

    def __next__(self) -> PoseFrame:
        while self._handle is not None:
            self._line += 1
            text = self._readline(self._line)
            if not text:
                self.close()
                break
            if not text.strip():
                continue
            frame = _parse_frame(self.path, self._line, text, self._previous_t)
            self._previous_t = frame.t
            return frame
        raise StopIteration

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> TrackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_track_frames(path: Path | str) -> int:
    """The number of frame lines (newlines after the header), counted in 1 MiB chunks without
    parsing: a progress total for a track of any length in a fraction of a second per GB."""
    count = 0
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                count += chunk.count(b"\n")
    except OSError as error:
        raise os_error(error, path, "read") from None
    return max(count - 1, 0)


def read_track(path: Path | str) -> PoseTrack:
    """Read and validate a whole track (into memory: for short tracks; stream long ones with
    :class:`TrackReader`)."""
    with TrackReader(path) as reader:
        return PoseTrack(reader.fps, list(reader))


def _header_line(fps: float) -> str:
    header = {
        "format": TRACK_FORMAT,
        "version": TRACK_VERSION,
        "fps": float(fps),
        "parameters": list(PARAMETER_NAMES),
    }
    return json.dumps(header) + "\n"


def _frame_line(t: float, pose: PoseVector) -> str:
    values = [round(float(v), 6) for v in pose.values]
    return json.dumps({"t": round(float(t), 6), "pose": values}) + "\n"


class PoseTrackWriter(FinishOrAbort):
    """Streams frames into a unique temporary next to ``path`` and renames it on ``close()``
    (after an fsync), so the final name is never a half-written file. ``abort()`` discards;
    ``keep_partial()`` keeps what was written as ``NAME.partial.jsonl`` (see
    ``puppet.atomic``). ``on_interrupt="partial"`` does that on Ctrl+C inside ``with``.

    Write errors (disk full, read-only, ...) raise PuppetError naming the path; the
    temporary file is removed."""

    def __init__(self, path: Path | str, fps: float, *, on_interrupt: str = "finish") -> None:
        low, high = FPS_RANGE
        if not (isinstance(fps, int | float) and low <= fps <= high):
            raise PuppetError(
                f"Track fps must be from {low:g} to {high:g}, got {fps}.", "Use e.g. --fps 30."
            )
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise PuppetError(
                f"A pose track must be a .jsonl file, got {self.path.name}.",
                "Name it e.g. session.jsonl.",
            )
        if self.path.is_dir():
            raise PuppetError(f"{self.path} is a folder.", "Give a file name such as take.jsonl.")
        self.on_interrupt = on_interrupt
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise os_error(error, self.path) from None
        self._release = claim(self.path)
        try:
            self._temp = temp_file(self.path)
            try:
                self._handle: IO[str] | None = open(self._temp, "w", encoding="utf-8")  # noqa: SIM115
                self._handle.write(_header_line(fps))
            except OSError as error:
                self._temp.unlink(missing_ok=True)
                raise os_error(error, self.path) from None
        except BaseException:
            self._release()
            raise
        self.frames_written = 0

    def write(self, t: float, pose: PoseVector) -> None:
        if self._handle is None:
            raise RuntimeError("track writer is closed")
        try:
            self._handle.write(_frame_line(t, pose))
        except OSError as error:
            self.abort()
            raise os_error(error, self.path) from None
        self.frames_written += 1

    def _finish(self, target: Path) -> None:
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            publish(self._temp, target)
        except (OSError, PuppetError) as error:
            _close_quietly(handle)
            self._temp.unlink(missing_ok=True)
            raise (os_error(error, target) if isinstance(error, OSError) else error) from None
        finally:
            self._release()

    def close(self) -> None:
        """Finish: the track appears under its final name (idempotent)."""
        self._finish(self.path)

    def keep_partial(self) -> Path | None:
        """Finish under ``NAME.partial.jsonl``; the final name keeps what it had."""
        if self._handle is None:
            return None
        target = partial_path(self.path)
        self._finish(target)
        log.warning("interrupted: kept the %d frames written as %s", self.frames_written, target)
        return target

    def abort(self) -> None:
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        _close_quietly(handle)
        self._temp.unlink(missing_ok=True)
        self._release()


def _close_quietly(handle: IO[str]) -> None:
    try:
        handle.close()
    except OSError:
        pass  # the buffered tail could not be written: the file is thrown away or truncated


class SessionRecorder(PoseTrackWriter):
    """The ``live --record`` writer: a write that fails (disk full, drive gone) is reported
    once and the recording is dropped, never the session. What it had recorded up to the
    last complete line is kept under the final name as a valid track."""

    def __init__(self, path: Path | str, fps: float) -> None:
        super().__init__(path, fps)
        self.failure: str | None = None

    def write(self, t: float, pose: PoseVector) -> None:
        if self.failure is not None or self._handle is None:
            return
        try:
            self._handle.write(_frame_line(t, pose))
        except OSError as error:
            self.failure = str(os_error(error, self.path))
            self.abort()
            return
        self.frames_written += 1

    def close(self) -> None:
        """Finish; a full disk at the end keeps the complete lines, as a failed write does."""
        if self._handle is None:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            self.failure = str(os_error(error, self.path))
            self.abort()
            return
        super().close()

    def abort(self) -> None:
        """Stop writing; keep the complete lines so far (the session's track up to here)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        _close_quietly(handle)
        kept = _truncate_to_last_line(self._temp)
        try:
            if kept > 1:
                fsync_file(self._temp)
                publish(self._temp, self.path)
                log.warning(
                    "recording %s stopped (%s); kept %d frames in it",
                    self.path, self.failure or "aborted", kept - 1,
                )  # fmt: skip
            else:
                self._temp.unlink(missing_ok=True)
                log.warning("recording %s stopped (%s); nothing kept", self.path, self.failure)
        except (OSError, PuppetError) as error:
            self._temp.unlink(missing_ok=True)
            log.warning("recording %s lost: %s", self.path, error)
        finally:
            self._release()


def _truncate_to_last_line(path: Path) -> int:
    """Cut ``path`` after its last newline; return the number of complete lines (0 if the file
    cannot be read). A write cut by a full disk can end mid-line."""
    try:
        with open(path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            position = size
            while position > 0:
                step = min(position, 1 << 16)
                handle.seek(position - step)
                chunk = handle.read(step)
                index = chunk.rfind(b"\n")
                if index >= 0:
                    position = position - step + index + 1
                    break
                position -= step
            handle.truncate(position)
            handle.seek(0)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return 0


def write_track(path: Path | str, fps: float, frames: Iterable[PoseFrame]) -> None:
    """Write a whole track atomically."""
    with PoseTrackWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame.t, frame.pose)
