"""Shared test vectors of the face mapping: observations recorded from a real face video through
puppet's tracker -> the poses the Python mapping makes of them (``PoseMapper`` with no profile,
as ``puppet live`` and the exported web page use it). ``tests/test_mapping_vectors.py`` checks
that the Python mapping still makes exactly these poses and that the page's JavaScript port
(``puppet/outputs/web/mapping.js``) makes them too.

The sequence: the first 100 frames of the fixture clip d12.mp4 (talking, head turns, blinks),
then 9 s with no face (hold, ease to neutral, then idle blinks and breathing), then the rest of
the clip. Idle blinks come from the mapper's seeded numpy generator; the draws it made are
recorded with the poses, so the JavaScript replays them instead of reimplementing numpy.

Re-record (only when the mapping is meant to change; needs ../shared/fixtures):
    .venv/bin/python tests/mapping_vectors.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VECTORS = Path(__file__).parent / "data" / "mapping_vectors.json"
CLIP = REPO_ROOT.parent / "shared" / "fixtures" / "faces" / "d12.mp4"
SEED = 0
CASES = ({"mirror_character": True}, {"mirror_character": False})
FIRST_PART = 100  # clip frames before the gap
GAP_FRAMES = 225  # frames with no face (9 s at 25 fps)


class RecordingGenerator:
    """A numpy Generator that remembers each draw ``AutoBlink`` makes, as [kind, value]."""

    def __init__(self, generator: np.random.Generator) -> None:
        self._generator = generator
        self.draws: list[list] = []

    def standard_normal(self) -> float:
        value = float(self._generator.standard_normal())
        self.draws.append(["normal", value])
        return value

    def uniform(self, low: float, high: float) -> float:
        value = float(self._generator.uniform(low, high))
        self.draws.append(["uniform", value])
        return value

    def random(self) -> float:
        value = float(self._generator.random())
        self.draws.append(["random", value])
        return value


def observation(frame: dict, names: list[str]):  # noqa: ANN201 - FaceObservation or None
    """A recorded frame (``scores`` in the order of ``names``) as the tracker's FaceObservation
    (the blendshape mapping reads no landmarks); None for a frame with no face."""
    from puppet.tracking.tracker import FaceObservation, euler_xyz_deg

    if frame.get("scores") is None:
        return None
    rotation = np.array(frame["rotation"], np.float64)
    return FaceObservation(
        landmarks=np.zeros((478, 3), np.float32),
        image_size=(512, 512),
        timestamp_ms=round(1000 * frame["t"]),
        rotation=rotation,
        euler_deg=euler_xyz_deg(rotation),
        blendshapes=dict(zip(names, frame["scores"], strict=True)),
        mirrored=frame["mirrored"],
    )


def python_poses(
    frames: list[dict], names: list[str], mirror_character: bool
) -> tuple[list[list[float]], list]:
    """(45 floats per frame, the blink draws) from the Python mapping, as the page runs it."""
    from puppet.mapping.pose_mapper import PoseMapper

    mapper = PoseMapper(seed=SEED)
    mapper.mirror_character = mirror_character
    recorder = RecordingGenerator(mapper.idle.blink.rng)
    mapper.idle.blink.rng = recorder
    poses = [mapper.update(observation(f, names), f["t"]).to_list() for f in frames]
    return poses, recorder.draws


def record(clip: Path = CLIP) -> dict:
    """Track ``clip`` with puppet's full tracker (selfie view, as ``puppet live``)."""
    import av

    from puppet.tracking.tracker import FaceTracker, TrackerOptions

    tracked = []
    names: list[str] = []
    with av.open(str(clip)) as container, FaceTracker(TrackerOptions(mirror=True)) as tracker:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for i, frame in enumerate(container.decode(stream)):
            found = tracker.detect(frame.to_ndarray(format="bgr24"), round(i * 1000 / fps))
            if found is None:
                tracked.append({})
                continue
            names = names or list(found.blendshapes)
            tracked.append(
                {
                    "scores": [round(found.blendshapes[name], 6) for name in names],
                    "rotation": [[round(float(v), 9) for v in row] for row in found.rotation],
                    "mirrored": found.mirrored,
                }
            )
    sequence = tracked[:FIRST_PART] + [{}] * GAP_FRAMES + tracked[FIRST_PART:]
    frames = [{"t": round(i / fps, 6), **f} for i, f in enumerate(sequence)]
    cases = []
    for case in CASES:
        poses, draws = python_poses(frames, names, case["mirror_character"])
        cases.append({**case, "draws": draws, "poses": [[round(v, 7) for v in p] for p in poses]})
    return {
        "about": (
            f"{clip.name} tracked by puppet's full tracker (mirror=True), frames"
            f" 0-{FIRST_PART - 1}, {GAP_FRAMES} frames with no face, then the rest; poses from"
            f" PoseMapper(seed={SEED}) with no profile."
            " Re-record with: .venv/bin/python tests/mapping_vectors.py"
        ),
        "blendshape_names": names,
        "frames": frames,
        "cases": cases,
    }


def load() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(record(), separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {VECTORS} ({VECTORS.stat().st_size // 1024} KiB)")
