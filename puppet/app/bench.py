"""`puppet bench`: time each stage of the loop and the whole loop on this machine."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from puppet.app.live import load_poser
from puppet.app.timing import StageStats, StageTimer
from puppet.errors import PuppetError
from puppet.paths import BENCH_FACE
from puppet.pose import PoseVector

log = logging.getLogger(__name__)


@dataclass
class BenchReport:
    poser: str
    fps: float  # whole loop: tracking + mapping + poser + output
    poser_fps: float  # poser alone
    stages: dict[str, StageStats]
    peak_rss_mb: float
    notes: list[str]

    def to_json(self) -> dict:
        return {
            "poser": self.poser,
            "fps": round(self.fps, 2),
            "poser_fps": round(self.poser_fps, 2),
            "stages": {
                name: {"mean_ms": round(s.mean_ms, 3), "p95_ms": round(s.p95_ms, 3)}
                for name, s in self.stages.items()
            },
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "notes": self.notes,
        }


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


def run_bench(
    poser_spec: str = "default",
    *,
    seconds: float = 10.0,
    character: Path | None = None,
    tracker: str = "full",
    device: str = "cpu",
) -> BenchReport:
    """Half the time on the poser alone, half on the whole loop into a real .mp4 output."""
    notes: list[str] = []
    poser = load_poser(poser_spec, character, device)
    poses = _random_poses(64)
    poser.pose(poses[0])  # warm-up (first call allocates)
    timer = StageTimer()

    # Poser alone.
    deadline = time.perf_counter() + seconds / 2
    count = 0
    start = time.perf_counter()
    while time.perf_counter() < deadline or count < 3:
        with timer.stage("poser"):
            image = poser.pose(poses[count % len(poses)])
        count += 1
    poser_fps = count / (time.perf_counter() - start)

    # Whole loop: tracking -> mapping -> poser -> outputs (an mp4 written to a temp dir).
    frame = bench_camera_frame()
    from puppet.mapping.pose_mapper import PoseMapper
    from puppet.tracking.tracker import FaceTracker, TrackerOptions

    tracker_obj = FaceTracker(TrackerOptions(mode=tracker, mirror=True))
    mapper = PoseMapper(None)
    from puppet.outputs.factory import open_output

    loop_timer = StageTimer()
    with tempfile.TemporaryDirectory() as temp:
        height, width = image.shape[:2]
        output = open_output(
            str(Path(temp) / "bench.mp4"),
            width=width,
            height=height,
            fps=30.0,
            background=None,
            controls=None,
        )
        try:
            deadline = time.perf_counter() + seconds / 2
            frames = 0
            start = time.perf_counter()
            while time.perf_counter() < deadline or frames < 3:
                t = time.perf_counter() - start
                pose = poses[frames % len(poses)]
                if tracker_obj is not None and frame is not None:
                    with loop_timer.stage("tracking"):
                        observation = tracker_obj.detect(frame, int(t * 1000) + frames)
                    with loop_timer.stage("mapping"):
                        pose = mapper.update(observation, t)
                with loop_timer.stage("poser"):
                    image = poser.pose(pose)
                with loop_timer.stage("outputs"):
                    output.send(image)
                frames += 1
            loop_fps = frames / (time.perf_counter() - start)
        finally:
            output.close()
            if tracker_obj is not None:
                tracker_obj.close()
    stages = loop_timer.stats()
    stages["poser_only"] = timer.stats()["poser"]
    return BenchReport(poser_spec, loop_fps, poser_fps, stages, _peak_rss_mb(), notes)
