"""`puppet bench`: time each stage of the loop and the whole loop on this machine."""

from __future__ import annotations

import logging
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from puppet.pose import PoseVector
from puppet.posers import create_poser
from puppet.timing import StageStats, StageTimer

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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def bench_camera_frame() -> np.ndarray | None:
    """A real face as a 640x480 BGR camera frame (scikit-image's public-domain astronaut)."""
    try:
        from skimage import data
    except ImportError:
        return None
    import cv2

    face = data.astronaut()  # 512x512 RGB
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    small = cv2.resize(face, (480, 480), interpolation=cv2.INTER_AREA)
    frame[:, 80:560] = small[:, :, ::-1]
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
    poser = create_poser(poser_spec, character, device)
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
    tracker_obj = mapper = None
    if frame is None:
        notes.append("scikit-image missing: tracking not timed")
    else:
        try:
            from puppet.mapping import PoseMapper
            from puppet.tracking import FaceTracker, TrackerOptions

            tracker_obj = FaceTracker(TrackerOptions(mode=tracker, mirror=True))
            mapper = PoseMapper(None)
        except ImportError as error:
            notes.append(f"tracking not available: {error}")
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
