"""Opening outputs from ``--output`` specs, and fanning frames out to several at once.

Specs: ``vcam`` (or ``vcam:BACKEND``), ``window``, ``browser`` (or ``browser:PORT``,
``browser:HOST:PORT``), a video file path (``.mp4 .webm .mov .gif``), or a directory path ending
in ``/`` for PNG frames.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from puppet.atomic import FinishOrAbort
from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo, LiveControls, Output
from puppet.outputs.files import VIDEO_FORMATS

log = logging.getLogger(__name__)

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
) -> Output:
    """Open one output from its spec (see the module docstring). Raises PuppetError for an
    unknown spec or an output that cannot open."""
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
        return BrowserOutput(host=host, port=DEFAULT_PORT if port is None else port)
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
    retry_seconds: float = 5.0,
) -> OutputSet:
    """Open every spec into an OutputSet. A virtual camera that cannot open now is reported once
    and retried in the background of ``send`` (unless it is the only output: then its
    PuppetError is raised). Any other output that cannot open raises, after closing the ones
    already opened."""
    specs = list(specs)
    if not specs:
        raise PuppetError("No output given.", f"Use --output with {SPEC_HELP}.")
    outputs = OutputSet(retry_seconds=retry_seconds)

    def opener(spec: str) -> Callable[[], Output]:
        return lambda: open_output(
            spec, width=width, height=height, fps=fps, background=background, controls=controls,
            audio_from=audio_from, vcam_device=vcam_device, browser_port=browser_port,
        )  # fmt: skip

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
