"""`puppet bench`: time each stage of the loop and the whole loop on this machine.

The loop figures come from the real live loop (``run_live``: its threads, handoffs and
outputs) driven by a synthetic camera that stamps each frame with its capture time, into an
output that records when each frame left: capture-to-output latency as a streamer feels it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poser_models.registry import Poser
from puppet.app.live import LiveConfig, load_poser, run_live
from puppet.app.threads import single_threaded_blas
from puppet.app.timing import LatencyMeter, StageStats, StageTimer
from puppet.capture.sources import SyntheticCamera
from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo
from puppet.outputs.compose import CHROMA_GREEN
from puppet.outputs.factory import PacedOutput
from puppet.outputs.vcam import compose_for_camera
from puppet.paths import BENCH_FACE
from puppet.pose import PoseVector

log = logging.getLogger(__name__)


@dataclass
class CameraRun:
    """One run of the real live loop from a synthetic camera."""

    camera_fps: float
    fps: float  # frames the loop sent to its outputs per second
    latency_ms: tuple[float, float] | None  # capture -> output left (p50, p95)
    stale_dropped: int  # camera frames/poses a newer one replaced between stages
    output_fps: float | None = None  # paced output: frames it sent per second
    dropped: int = 0  # paced output: frames never sent (a newer one came first)
    repeated: int = 0  # paced output: ticks without a new frame
    # CPU time of the whole process (all its threads) per frame sent: what the loop costs,
    # whatever else runs on the machine (wall-clock figures depend on that).
    cpu_ms_per_frame: float = 0.0
    waits_ms: dict[str, float] = field(default_factory=dict)  # mean wait between stages

    def to_json(self) -> dict:
        data: dict = {
            "camera_fps": self.camera_fps,
            "fps": round(self.fps, 2),
            "latency_ms": _latency_json(self.latency_ms),
            "stale_dropped": self.stale_dropped,
            "cpu_ms_per_frame": round(self.cpu_ms_per_frame, 2),
            "waits_mean_ms": {name: round(ms, 2) for name, ms in self.waits_ms.items()},
        }
        if self.output_fps is not None:
            data.update(
                output_fps=round(self.output_fps, 2), dropped=self.dropped, repeated=self.repeated
            )
        return data


def _latency_json(latency: tuple[float, float] | None) -> dict | None:
    if latency is None:
        return None
    return {"p50": round(latency[0], 1), "p95": round(latency[1], 1)}


@dataclass
class BenchReport:
    poser: str
    fps: float  # whole live loop (tracking, mapping, poser, output) from a fast camera
    poser_fps: float  # poser alone
    stages: dict[str, StageStats]
    peak_rss_mb: float
    notes: list[str]
    latency_ms: tuple[float, float] | None = None  # capture -> output, same run as ``fps``
    loop: CameraRun | None = None  # the run behind ``fps`` and ``latency_ms``
    paced: CameraRun | None = None  # a 30 fps camera into a 30 fps paced output
    low_latency: CameraRun | None = None  # the fast camera at --fps 30 (stages in turn)

    def to_json(self) -> dict:
        return {
            "poser": self.poser,
            "fps": round(self.fps, 2),
            "latency_ms": _latency_json(self.latency_ms),
            "poser_fps": round(self.poser_fps, 2),
            "stages": {
                name: {"mean_ms": round(s.mean_ms, 3), "p95_ms": round(s.p95_ms, 3)}
                for name, s in self.stages.items()
            },
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "loop": self.loop.to_json() if self.loop else None,
            "paced": self.paced.to_json() if self.paced else None,
            "low_latency": self.low_latency.to_json() if self.low_latency else None,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """The one-line result ``puppet bench`` prints under its table."""
        latency = ""
        if self.latency_ms is not None:
            latency = f" (capture->output p50 {self.latency_ms[0]:.1f} ms, "
            latency += f"p95 {self.latency_ms[1]:.1f} ms)"
        text = f"loop {self.fps:.1f} fps{latency}, poser alone {self.poser_fps:.1f} fps, "
        text += f"peak RSS {self.peak_rss_mb:.0f} MB"
        if self.loop is not None:
            text += f", {self.loop.cpu_ms_per_frame:.1f} CPU-ms per loop frame"
        if self.low_latency is not None and self.low_latency.latency_ms is not None:
            low = self.low_latency
            text += (
                f"; at --fps 30 {low.fps:.1f} fps, p50 {low.latency_ms[0]:.1f} ms,"
                f" p95 {low.latency_ms[1]:.1f} ms"
            )
        if self.paced is not None:
            paced = self.paced
            p95 = f"{paced.latency_ms[1]:.1f}" if paced.latency_ms else "-"
            text += (
                f"; {paced.camera_fps:g} fps camera -> paced output "
                f"{paced.output_fps or 0:.1f} fps, p95 {p95} ms, "
                f"{paced.dropped} dropped, {paced.repeated} repeated"
            )
        return text


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (0 where the OS offers no cheap figure)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return _peak_rss_mb_windows()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _peak_rss_mb_windows() -> float:
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [
            ("cb", wintypes.DWORD),
            ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t),
            ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
            ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t),
            ("PeakPagefileUsage", ctypes.c_size_t),
        ]

    try:
        counters = Counters()
        counters.cb = ctypes.sizeof(Counters)
        process = ctypes.windll.kernel32.GetCurrentProcess()  # type: ignore[attr-defined]
        ctypes.windll.psapi.GetProcessMemoryInfo(  # type: ignore[attr-defined]
            process, ctypes.byref(counters), counters.cb
        )
        return counters.PeakWorkingSetSize / (1024 * 1024)
    except (AttributeError, OSError):
        return 0.0


def bench_camera_frame() -> np.ndarray:
    """A real face as a 640x480 BGR camera frame: the bundled 480x480 crop of NASA's
    public-domain astronaut photo (the one scikit-image ships), centred on black."""
    import cv2

    face = cv2.imread(str(BENCH_FACE), cv2.IMREAD_COLOR)
    if face is None:
        raise PuppetError(
            f"The bundled bench photo {BENCH_FACE} is missing.",
            "Reinstall puppet; `puppet doctor` lists what else is missing.",
        )
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, 80:560] = cv2.resize(face, (480, 480), interpolation=cv2.INTER_AREA)
    return frame


def _random_poses(count: int, seed: int = 0) -> list[PoseVector]:
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(count):
        pose = PoseVector()
        pose["eye_wink_left"] = pose["eye_wink_right"] = float(rng.uniform(0, 1))
        pose["mouth_aaa"] = float(rng.uniform(0, 1))
        for name in ("head_x", "head_y", "neck_z", "iris_rotation_x", "iris_rotation_y"):
            pose[name] = float(rng.uniform(-0.6, 0.6))
        pose["breathing"] = float(rng.uniform(0, 1))
        poses.append(pose)
    return poses


class LatencyProbe:
    """The benchmark's output: does what the virtual camera does with a frame (composite it
    over chroma green at the camera's size) and records when each frame left
    (capture -> sent, ms)."""

    name = "latency probe"

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.frames = 0

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        compose_for_camera(frame, CHROMA_GREEN, frame.shape[1], frame.shape[0])
        self.frames += 1
        if info is not None and info.captured_at is not None:
            self.latencies.append((time.perf_counter() - info.captured_at) * 1000.0)

    def close(self) -> None:
        pass


def _camera_run(
    config: LiveConfig, poser: Poser, camera_fps: float, *, paced_fps: float | None
) -> tuple[CameraRun, dict[str, StageStats]]:
    """The real live loop (threads, handoffs, outputs) from a synthetic camera showing the
    bench face, into a latency probe (paced at ``paced_fps`` like the virtual camera, or not)."""
    probe = LatencyProbe()
    paced = PacedOutput(probe, paced_fps) if paced_fps else None
    camera = SyntheticCamera(bench_camera_frame(), camera_fps)
    cpu_before = time.process_time()
    counted: list[float] = []

    def count(image: np.ndarray, info: FrameInfo) -> None:
        if not counted:  # from the first frame on: the loading is not the loop's cost
            counted.append(time.process_time())

    report = run_live(
        config, source=camera, extra_outputs=[paced or probe], on_frame=count, poser=poser
    )
    cpu = time.process_time() - (counted[0] if counted else cpu_before)
    run = CameraRun(camera_fps, report.fps, report.latency_ms, report.stale_dropped)
    run.cpu_ms_per_frame = 1000.0 * cpu / max(report.frames - 1, 1)
    run.waits_ms = {name: stats.mean_ms for name, stats in report.waits.items()}
    if paced is not None:
        stats = paced.stats()
        latency = LatencyMeter()
        for ms in paced.latencies:
            latency.add(ms)
        run.latency_ms = latency.percentiles()
        run.output_fps = stats.sent / report.seconds if report.seconds else 0.0
        run.dropped, run.repeated = stats.dropped, stats.repeated
    return run, report.stages


def run_bench(
    poser_spec: str = "default",
    *,
    seconds: float = 10.0,
    character: Path | None = None,
    tracker: str = "full",
    device: str = "cpu",
    camera_fps: float = 60.0,
) -> BenchReport:
    """A quarter of the time on the poser alone, then the real live loop (``run_live``: the
    tracker, mapping, poser and an output on their threads) three times: from a ``camera_fps``
    synthetic camera (faster than the loop) with outputs at that rate (its fps is the loop's
    most), from the same camera at the default ``--fps 30`` (tracking and the poser in turn
    while that keeps up: the lowest latency), then from a 30 fps one into an output paced at
    30 fps (the virtual camera's case)."""
    notes: list[str] = []
    poser = load_poser(poser_spec, character, device)
    poses = _random_poses(64)
    poser.pose(poses[0])  # warm-up (first call allocates)
    timer = StageTimer()

    # Poser alone, with one BLAS thread as in the live loop (see puppet.app.threads).
    with single_threaded_blas():
        deadline = time.perf_counter() + seconds / 4
        count = 0
        start = time.perf_counter()
        while time.perf_counter() < deadline or count < 3:
            with timer.stage("poser"):
                poser.pose(poses[count % len(poses)])
            count += 1
        poser_fps = count / (time.perf_counter() - start)

    def config(fps: float) -> LiveConfig:
        return LiveConfig(
            poser=poser_spec, character=character, outputs=[], tracker=tracker, mirror=True,
            seconds=seconds / 4, fps=fps, device=device,
        )  # fmt: skip

    # As fast as the loop goes (outputs at the camera's rate: tracking overlaps the poser),
    # then at the default --fps 30 from the same camera (one stage after the other: the
    # lowest latency), then a 30 fps camera into a 30 fps paced output.
    loop, stages = _camera_run(config(camera_fps), poser, camera_fps, paced_fps=None)
    low_latency, _ = _camera_run(config(30.0), poser, camera_fps, paced_fps=None)
    paced, _ = _camera_run(config(30.0), poser, 30.0, paced_fps=30.0)
    stages["poser_only"] = timer.stats()["poser"]
    if loop.latency_ms is None:
        notes.append("no frame reached the output: no latency figure")
    return BenchReport(
        poser_spec, loop.fps, poser_fps, stages, _peak_rss_mb(), notes,
        latency_ms=loop.latency_ms, loop=loop, paced=paced, low_latency=low_latency,
    )  # fmt: skip
