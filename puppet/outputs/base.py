"""The output contract shared by every sink (virtual camera, browser, files, window)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from puppet.pose import PoseVector


@dataclass
class PacingStats:
    """How a paced output (virtual camera, browser source) or a live file kept its rate."""

    fps: float = 0.0  # frames per second it actually sent, smoothed
    sent: int = 0  # frames sent (repeats included)
    dropped: int = 0  # frames the loop made that it never sent (a newer one replaced them)
    repeated: int = 0  # ticks with no new frame, where the previous frame went out again
    file: bool = False  # a live file: ``sent`` frames written; it repeats nothing

    def text(self) -> str:
        if self.file:
            return f"{self.sent} frames written, {self.dropped} dropped"
        return f"{self.sent} sent, {self.dropped} dropped, {self.repeated} repeated"


@dataclass
class FrameInfo:
    """What the live loop knows about a frame, for outputs that show more than pixels."""

    index: int = 0
    t: float = 0.0  # seconds since the loop started (or the track time when rendering)
    fps: float = 0.0  # loop frames per second, smoothed
    stage_ms: dict[str, float] = field(default_factory=dict)  # last frame's per-stage times
    tracking: str = "off"  # "tracking", "lost", "idle", "off"
    pose: PoseVector | None = None
    camera_frame: np.ndarray | None = None  # BGR uint8 as captured (for the preview thumbnail)
    landmarks: np.ndarray | None = None  # (N, 3) normalised landmarks of camera_frame
    # The landmarks are in the horizontally flipped camera frame (the selfie view); the HUD
    # then shows the thumbnail flipped too, so the mesh lies on the face.
    mirrored: bool = False
    captured_at: float | None = None  # time.perf_counter() when camera_frame was captured
    latency_ms: tuple[float, float] | None = None  # capture->output (p50, p95), recent frames
    pacing: dict[str, PacingStats] = field(default_factory=dict)  # per paced output


class LiveControls:
    """Requests from interactive outputs (hotkeys) to the live loop; thread-safe.

    The window output calls ``request(...)``; the loop calls ``take()`` once per frame.
    Known actions: "quit", "recalibrate", "toggle_mirror", "toggle_idle",
    "expression:<name>" (toggle a pose override such as "expression:happy").
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.stop_requested = threading.Event()

    def request(self, action: str) -> None:
        with self._lock:
            self._pending.append(action)
        if action == "quit":
            self.stop_requested.set()

    def take(self) -> list[str]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending


@runtime_checkable
class Output(Protocol):
    """A frame sink. ``frame`` is straight-alpha RGBA uint8 (H, W, 4).

    ``send`` may raise; the live loop reports the failure once and drops the output.
    ``close`` is safe to call twice and finalises files atomically.
    """

    name: str

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None: ...

    def close(self) -> None: ...
