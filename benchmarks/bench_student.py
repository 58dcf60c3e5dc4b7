"""Poser-only speed of a puppet student (numpy + OpenCV runtime) on this machine.

    .venv/bin/python benchmarks/bench_student.py [--student DIR] [--threads 2] [--seconds 5]

Prints frames per second and milliseconds per frame over varied poses (after warm-up), plus
the arithmetic per frame. The figure excludes tracking, compositing and output.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    from poser_models.student import StudentPoser
    from puppet.paths import DEFAULT_STUDENT_DIR
    from puppet.pose import PoseVector
    from puppet.training.distill import flops_per_frame, sample_poses

    folder = args.student or DEFAULT_STUDENT_DIR
    poser = StudentPoser.from_folder(folder)
    poser.load(poser.character_path)
    poses = [PoseVector(v) for v in sample_poses("joint", 64, seed=123)]
    for pose in poses[:5]:
        poser.pose(pose)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        t0 = time.perf_counter()
        poser.pose(poses[len(times) % len(poses)])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    print(f"student {folder}")
    print(
        f"threads {args.threads}: {len(ms)} frames, {1000 / ms.mean():.1f} fps"
        f" (mean {ms.mean():.2f} ms, median {np.median(ms):.2f} ms,"
        f" p95 {np.percentile(ms, 95):.2f} ms)"
    )
    print(f"arithmetic: {flops_per_frame(poser.config) / 1e9:.3f} GFLOP per 512x512 frame")


if __name__ == "__main__":
    main()
