"""Face tracking latency per 640x480 frame, full vs fast mode (real mediapipe, real photo).

The frame is scikit-image's astronaut letterboxed into 640x480 BGR, fed to ``FaceTracker``
in VIDEO mode with increasing timestamps (what a webcam loop does); the time covers the whole
``detect()`` call (colour conversion, mirroring, mediapipe, FaceObservation with head angles).

Usage: python benchmarks/bench_tracking.py [--frames 200] [--warmup 20] [--modes full fast]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from puppet.tracking.tracker import FaceTracker, TrackerOptions


def test_frame() -> np.ndarray:
    from skimage import data

    photo = data.astronaut()
    frame = np.zeros((480, 640, 3), np.uint8)
    face = cv2.resize(photo, (480, 480))
    frame[:, 80:560] = face
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def bench(mode: str, frame: np.ndarray, frames: int, warmup: int) -> dict[str, float]:
    times = []
    with FaceTracker(TrackerOptions(mode=mode)) as tracker:
        start = time.perf_counter()
        first = tracker.detect(frame, 0)
        first_ms = (time.perf_counter() - start) * 1000
        if first is None:
            raise SystemExit(f"{mode}: no face found in the benchmark frame")
        for i in range(1, warmup + frames + 1):
            start = time.perf_counter()
            tracker.detect(frame, i * 33)
            if i > warmup:
                times.append((time.perf_counter() - start) * 1000)
    ms = np.asarray(times)
    return {
        "first": first_ms,
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["full", "fast"], choices=["full", "fast"])
    args = parser.parse_args()
    frame = test_frame()
    print(f"640x480 frame, {args.frames} frames after {args.warmup} warm-up, VIDEO mode")
    for mode in args.modes:
        r = bench(mode, frame, args.frames, args.warmup)
        print(
            f"{mode:>4}: median {r['median']:.2f} ms  p95 {r['p95']:.2f} ms  "
            f"mean {r['mean']:.2f} ms  first call {r['first']:.1f} ms"
        )


if __name__ == "__main__":
    main()
