"""The bundled driving source for `make demo`: a procedurally generated pose track.

Regenerate the committed file with ``python -m puppet.app.demo_track`` (seeded, reproducible).
It shows what a streamer does: idle sway and breathing, natural blinks, a wink, looking
around, talking (vowels), a smile, head turns and a tilt.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from puppet.paths import DEMO_TRACK
from puppet.pose import PoseVector
from puppet.pose_track import PoseFrame, PoseTrack, write_track


def _bump(t: float, start: float, length: float) -> float:
    """0 -> 1 -> 0 over [start, start+length] (raised cosine)."""
    if not start <= t <= start + length:
        return 0.0
    return 0.5 - 0.5 * math.cos(2 * math.pi * (t - start) / length)


def _plateau(t: float, start: float, end: float, ramp: float = 0.3) -> float:
    """Smoothly 0 -> 1 at ``start``, 1 -> 0 at ``end``."""
    rise = min(max((t - start) / ramp, 0.0), 1.0)
    fall = min(max((end - t) / ramp, 0.0), 1.0)
    x = min(rise, fall)
    return x * x * (3 - 2 * x)


def make_demo_track(seconds: float = 12.0, fps: float = 30.0, seed: int = 7) -> PoseTrack:
    rng = np.random.default_rng(seed)
    blinks: list[float] = []
    t = 0.8
    while t < seconds:
        blinks.append(t)
        t += float(rng.uniform(2.0, 4.0))
    syllables = [
        (5.0 + 0.18 * i, str(rng.choice(["aaa", "iii", "uuu", "eee", "ooo"]))) for i in range(14)
    ]
    frames = []
    for i in range(int(seconds * fps)):
        t = i / fps
        pose = PoseVector()
        # Idle sway, breathing, and two deliberate head moves.
        turn = 0.8 * _plateau(t, 2.0, 3.6, 0.5) - 0.8 * _plateau(t, 3.6, 5.0, 0.5)
        pose["head_y"] = 0.15 * math.sin(2 * math.pi * t / 6.0) + turn
        pose["body_y"] = 0.5 * pose["head_y"]
        pose["head_x"] = 0.1 * math.sin(2 * math.pi * t / 4.3) - 0.4 * _plateau(t, 9.5, 10.8)
        tilt = 0.6 * _plateau(t, 8.0, 10.0, 0.5)
        pose["neck_z"] = 0.08 * math.sin(2 * math.pi * t / 5.1) + tilt
        pose["body_z"] = 0.4 * pose["neck_z"]
        pose["breathing"] = 0.5 - 0.5 * math.cos(2 * math.pi * t / 3.5)
        # Blinks (both eyes) and one wink of the character's left eye.
        blink = max((_bump(t, b, 0.22) for b in blinks), default=0.0)
        wink = _plateau(t, 6.9, 7.5, 0.12)
        pose["eye_wink_left"] = max(blink, wink)
        pose["eye_wink_right"] = blink
        # Looking around, following the head turn.
        pose["iris_rotation_y"] = -0.7 * _plateau(t, 1.2, 2.0, 0.15) + 0.6 * turn
        pose["iris_rotation_x"] = 0.3 * _plateau(t, 10.5, 11.5, 0.2)
        # Talking: one vowel per syllable.
        for start, vowel in syllables:
            level = _bump(t, start, 0.22)
            if level > pose[f"mouth_{vowel}"]:
                pose[f"mouth_{vowel}"] = level
        # A smile with happy brows, and raised brows when looking up.
        smile = _plateau(t, 8.0, 10.0, 0.4)
        pose["mouth_raised_corner_left"] = pose["mouth_raised_corner_right"] = smile
        pose["eyebrow_happy_left"] = pose["eyebrow_happy_right"] = 0.7 * smile
        raised = _plateau(t, 10.5, 11.5, 0.2)
        pose["eyebrow_raised_left"] = pose["eyebrow_raised_right"] = raised
        pose["eye_surprised_left"] = pose["eye_surprised_right"] = 0.5 * raised
        frames.append(PoseFrame(t, pose.clamped()))
    return PoseTrack(fps, frames)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEMO_TRACK
    track = make_demo_track()
    write_track(out, track.fps, track.frames)
    print(f"wrote {len(track)} frames to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
