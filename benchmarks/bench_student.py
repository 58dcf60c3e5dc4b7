"""Poser-only speed of a puppet student (numpy + OpenCV runtime, no torch) on this machine.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_student.py [--student DIR]
        [--poser-threads 2] [--threads 1] [--seconds 5] [--rounds 2] [--track TRACK.jsonl ...]

Prints frames per second and milliseconds per frame over varied poses (after warm-up): the
poses of ``--track`` pose tracks (``puppet track`` output: real faces) or 64 random joint
poses. Also the load average (the machine is shared: say what else ran) and the arithmetic
per frame. The figure excludes tracking, compositing and output. Set OPENBLAS_NUM_THREADS
before starting: numpy's BLAS reads it once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--student",
        type=Path,
        default=None,
        help="student folder (default: the bundled character's student)",
    )
    parser.add_argument(
        "--poser-threads", type=int, default=2, help="the student's threads (row bands at once)"
    )
    parser.add_argument("--threads", type=int, default=1, help="OpenCV's own threads")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--track", type=Path, nargs="*", default=[])
    args = parser.parse_args()

    import cv2
    import numpy as np

    cv2.setNumThreads(args.threads)

    from poser_models.student import StudentPoser
    from puppet.paths import DEFAULT_STUDENT_DIR
    from puppet.pose import PoseVector
    from puppet.training.evaluation import flops_per_frame, tracked_poses
    from puppet.training.teacher_frames import sample_poses

    folder = args.student or DEFAULT_STUDENT_DIR
    poser = StudentPoser.from_folder(folder)
    poser.load(poser.character_path)
    poser.threads = args.poser_threads
    if args.track:
        values = np.concatenate([tracked_poses(t, 64) for t in args.track])
    else:
        values = sample_poses("joint", 64, seed=123)
    poses = [PoseVector(v) for v in values]
    print(f"student {folder} ({poser.manifest.format})")
    print(
        f"student threads {args.poser_threads}, cv2 threads {args.threads}, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS')}, poses: "
        + (", ".join(str(t) for t in args.track) if args.track else "64 random joint poses")
    )
    for pose in poses[:5]:
        poser.pose(pose)
    for round_ in range(args.rounds):
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            t0 = time.perf_counter()
            poser.pose(poses[len(times) % len(poses)])
            times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1000
        print(
            f"round {round_}: {len(ms)} frames, {1000 / ms.mean():.1f} fps"
            f" (mean {ms.mean():.2f} ms, median {np.median(ms):.2f} ms,"
            f" p95 {np.percentile(ms, 95):.2f} ms), load average {_load()}"
        )
    print(f"arithmetic: {flops_per_frame(poser.config) / 1e9:.3f} GFLOP per 512x512 frame")
    print(f"torch imported: {'torch' in sys.modules}")


def _load() -> str:
    if not hasattr(os, "getloadavg"):  # Windows
        return "n/a"
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
