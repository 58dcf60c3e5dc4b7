"""Jitter and lag of the One Euro smoothing on real tracked face videos.

    .venv/bin/python benchmarks/bench_smoothing.py [VIDEO ...] [--mode full|fast|both]

Runs the real tracker + mapper over each video (default: the two fixture clips in
../shared/fixtures/faces), then filters the unfiltered pose track with the default per-group
One Euro parameters (``puppet.mapping.smoothing``), and reports per parameter:

* jitter: std of frame-to-frame differences in the stillest 1 s segment of the clip for that
  parameter (the window where its raw value varies least, so blinks and turns are excluded),
  raw vs filtered, and the reduction;
* lag: the delay (frames, sub-frame by parabolic interpolation) that maximises the
  cross-correlation of the filtered track with the raw one over the whole clip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from puppet.mapping.converters import map_observation
from puppet.mapping.smoothing import OneEuroFilter
from puppet.pose import INDEX, LOWER, UPPER
from puppet.tracking.tracker import FaceTracker, TrackerOptions

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "faces"
REPORTED = ["head_x", "head_y", "neck_z", "iris_rotation_y", "eye_wink_left", "mouth_aaa"]


def track(video: Path, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(times_s, raw poses (N, 45)) for the frames where a face was found."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    times, poses = [], []
    with FaceTracker(TrackerOptions(mode=mode, mirror=False)) as tracker:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            t = index / fps
            observation = tracker.detect(frame, int(round(t * 1000)))
            if observation is not None:
                times.append(t)
                poses.append(map_observation(observation).values.astype(np.float64))
            index += 1
    capture.release()
    return np.array(times), np.array(poses)


def lag_frames(raw: np.ndarray, filtered: np.ndarray, max_lag: int = 12) -> float:
    a = raw - raw.mean()
    b = filtered - filtered.mean()
    if a.std() < 1e-6 or b.std() < 1e-6:
        return float("nan")
    scores = np.array([np.dot(a[: len(a) - k], b[k:]) for k in range(max_lag + 1)])
    k = int(np.argmax(scores))
    if 0 < k < max_lag:  # parabolic refinement
        y0, y1, y2 = scores[k - 1], scores[k], scores[k + 1]
        denom = y0 - 2 * y1 + y2
        if denom != 0:
            return k + 0.5 * (y0 - y2) / denom
    return float(k)


def stillest_window(values: np.ndarray, length: int, lo: float, hi: float) -> slice | None:
    """The least-varying window whose values are all inside (lo, hi): clamped values carry
    no jitter to measure."""
    best, best_score = None, np.inf
    for start in range(0, len(values) - length):
        segment = values[start : start + length]
        if segment.min() <= lo or segment.max() >= hi:
            continue
        score = float(segment.std())
        if score < best_score:
            best, best_score = start, score
    return None if best is None else slice(best, best + length)


def report(video: Path, mode: str) -> None:
    times, raw = track(video, mode)
    filt = OneEuroFilter.for_pose()
    smooth = np.array([filt.filter(p, t) for p, t in zip(raw, times, strict=True)])
    fps = 1.0 / np.median(np.diff(times))
    print(f"\n{video.name} ({mode} tracker, {len(raw)} frames at {fps:.0f} fps)")
    print(f"{'parameter':18s} {'jitter raw':>11s} {'filtered':>10s} {'reduction':>10s} "
          f"{'lag (frames)':>13s} {'lag (ms)':>9s}")  # fmt: skip
    for name in REPORTED:
        i = INDEX[name]
        window = stillest_window(raw[:, i], int(round(fps)), float(LOWER[i]), float(UPPER[i]))
        lag = lag_frames(raw[:, i], smooth[:, i])
        if window is None:
            j_raw = j_out = float("nan")
        else:
            j_raw = float(np.diff(raw[window, i]).std())
            j_out = float(np.diff(smooth[window, i]).std())
        reduction = f"{j_raw / j_out:9.1f}x" if j_out > 1e-9 else "      n/a"
        print(f"{name:18s} {j_raw:11.5f} {j_out:10.5f} {reduction:>10s} {lag:13.2f} "
              f"{1000 * lag / fps:9.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--mode", choices=["full", "fast", "both"], default="both")
    args = parser.parse_args(argv)
    videos = args.videos or [FIXTURES / "d14.mp4", FIXTURES / "d12.mp4"]
    missing = [v for v in videos if not v.is_file()]
    if missing:
        print(f"video not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    modes = ["full", "fast"] if args.mode == "both" else [args.mode]
    for video in videos:
        for mode in modes:
            report(video, mode)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
