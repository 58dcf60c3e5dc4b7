"""Pose tracks: JSONL files of 45-parameter poses over time.

Line 1 is a header ``{"format": "puppet-pose-track", "version": 1, "fps": <float>,
"parameters": [45 names]}``; every further line is one frame ``{"t": <seconds>, "pose": [45
floats]}``. Readers name the offending line; writers are atomic (temp file, then rename), so
an interrupted recording never leaves a half file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from puppet.atomic import FinishOrAbort
from puppet.errors import PuppetError
from puppet.pose import NUM_PARAMETERS, PARAMETER_NAMES, PoseVector

TRACK_FORMAT = "puppet-pose-track"
TRACK_VERSION = 1


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
    if not isinstance(fps, int | float) or isinstance(fps, bool) or not fps > 0:
        raise _bad(path, 1, f'"fps" must be a positive number, got {fps!r}.')
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
    if not isinstance(values, list) or len(values) != NUM_PARAMETERS:
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise _bad(path, line_number, f'"pose" must hold 45 numbers, got {count}.')
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise _bad(path, line_number, '"pose" holds a value that is not a finite number.')
    return PoseFrame(float(t), PoseVector(values))


def iter_track(path: Path | str) -> Iterator[PoseFrame]:
    """Yield frames one by one (a long track is never held in memory), validating each line."""
    path = Path(path)
    yield from _iter_lines(path)[1]


def _iter_lines(path: Path) -> tuple[float, Iterator[PoseFrame]]:
    if not path.is_file():
        raise PuppetError(f"Pose track {path} not found.", "Check the path.")
    handle = path.open("r", encoding="utf-8")
    first = handle.readline()
    if not first.strip():
        handle.close()
        raise _bad(path, 1, "the file is empty (no header).")
    try:
        fps = _parse_header(path, first)
    except PuppetError:
        handle.close()
        raise

    def frames() -> Iterator[PoseFrame]:
        previous = -math.inf
        with handle:
            for number, line in enumerate(handle, start=2):
                if not line.strip():
                    continue
                frame = _parse_frame(path, number, line, previous)
                previous = frame.t
                yield frame

    return fps, frames()


def read_track_fps(path: Path | str) -> float:
    """The header's fps (validates the header only)."""
    fps, frames = _iter_lines(Path(path))
    frames.close()
    return fps


def read_track(path: Path | str) -> PoseTrack:
    """Read and validate a whole track."""
    fps, frames = _iter_lines(Path(path))
    return PoseTrack(fps, list(frames))


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
    """Streams frames to ``<dir>/.<name>.partial`` and renames it on ``close()``.

    If the process dies, the final name is never a half-written file. ``abort()`` discards.
    """

    def __init__(self, path: Path | str, fps: float) -> None:
        if not fps > 0:
            raise PuppetError(f"Track fps must be positive, got {fps}.")
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise PuppetError(
                f"A pose track must be a .jsonl file, got {self.path.name}.",
                "Name it e.g. session.jsonl.",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent
        )
        self._temp = Path(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; a track is an ordinary file
        self._handle: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8")
        self._handle.write(_header_line(fps))
        self.frames_written = 0

    def write(self, t: float, pose: PoseVector) -> None:
        if self._handle is None:
            raise RuntimeError("track writer is closed")
        self._handle.write(_frame_line(t, pose))
        self.frames_written += 1

    def close(self) -> None:
        if self._handle is None:
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        os.replace(self._temp, self.path)

    def abort(self) -> None:
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        self._temp.unlink(missing_ok=True)


def write_track(path: Path | str, fps: float, frames: Iterable[PoseFrame]) -> None:
    """Write a whole track atomically."""
    with PoseTrackWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame.t, frame.pose)
