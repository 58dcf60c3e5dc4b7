"""Face tracking with real mediapipe on real faces (committed models, no downloads).

Photos: scikit-image's astronaut (NASA) and matplotlib's Grace Hopper (US Navy), both public
domain and shipped inside those packages. Videos: the two real face clips in
../shared/fixtures/faces with the official model's per-frame reference
(``official_blendshapes.json``, computed WITHOUT mirroring, so those comparisons use
mirror=False). Every tracker is closed with ``with``: an unclosed mediapipe landmarker that the
garbage collector frees hangs the process (see puppet/tracking.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.tracking.tracker import (
    FAST_MODEL_PATH,
    FULL_MODEL_PATH,
    FaceObservation,
    FaceTracker,
    TrackerOptions,
    euler_xyz_deg,
    head_rotation_from_landmarks,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("full", "fast")
CLIPS = {"d12.mp4": 25, "d14.mp4": 30}


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def letterbox(rgb: np.ndarray, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """RGB photo -> BGR frame of ``size`` (a webcam-like 640x480 by default)."""
    w, h = size
    scale = min(w / rgb.shape[1], h / rgb.shape[0])
    resized = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
    frame = np.zeros((h, w, 3), np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    frame[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """cv2 in-plane rotation about the centre (positive = counter-clockwise on screen)."""
    h, w = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from skimage import data

    grace = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"astronaut": data.astronaut(), "grace_hopper": cv2.cvtColor(grace, cv2.COLOR_BGR2RGB)}


def track_one(frame_bgr: np.ndarray, mode: str, mirror: bool = False) -> FaceObservation | None:
    """A fresh tracker per still image, so each result is a detection, not a tracked frame."""
    with FaceTracker(TrackerOptions(mode=mode, mirror=mirror)) as tracker:
        return tracker.detect(frame_bgr, 0)


# --- committed models ---------------------------------------------------------------------


def test_official_model_is_the_published_one():
    fetch = _load_tool("fetch_face_landmarker")
    data = FULL_MODEL_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == fetch.SHA256
    assert len(data) == fetch.SIZE
    notice = (FULL_MODEL_PATH.parent / "NOTICE").read_text()
    assert fetch.SHA256 in notice and "face_landmarker/float16/1" in notice
    assert "Apache License" in (FULL_MODEL_PATH.parent / "LICENSE").read_text()


def test_fast_bundle_is_built_as_documented():
    build = _load_tool("build_fast_tracker")
    data = FAST_MODEL_PATH.read_bytes()
    notice = (FAST_MODEL_PATH.parent / "NOTICE").read_text()
    assert hashlib.sha256(data).hexdigest() in notice and "MODIFIED" in notice
    with zipfile.ZipFile(FAST_MODEL_PATH) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert set(infos) == {"face_detector.tflite", "face_landmarks_detector.tflite"}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos.values())
        detector = zf.read("face_detector.tflite")
        landmarker = zf.read("face_landmarks_detector.tflite")
    assert hashlib.sha256(detector).hexdigest() == build.DETECTOR_SHA256
    model = build.tfl.Model.GetRootAsModel(landmarker, 0)
    graph = model.Subgraphs(0)
    outputs = [graph.Tensors(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    shapes = [list(tensor.ShapeAsNumpy()) for tensor in outputs]
    assert shapes == [[1, 1, 1, 1434], [1, 1, 1, 1]]


def test_refinement_tables_reproduce_the_legacy_merge():
    """The gather tables baked into the fast model == the legacy refinement, on random data."""
    build = _load_tool("build_fast_tracker")
    rng = np.random.default_rng(0)
    mesh = rng.normal(size=(468, 3)).astype(np.float32)
    heads = [rng.normal(size=(len(p), 2)).astype(np.float32) for _, p in build.HEAD_OUTS]
    xy_rows, z_rows = build.refinement_tables()
    # What the appended ops compute: gather rows of [mesh xy; heads] and of [mesh z; irises z].
    xy = np.concatenate([mesh[:, :2], *heads])[xy_rows]
    left_z = mesh[list(build.LEFT_EYE[:16]), 2].mean()
    right_z = mesh[list(build.RIGHT_EYE[:16]), 2].mean()
    z = np.concatenate([mesh[:, 2], [left_z, right_z]])[z_rows]
    merged = np.concatenate([xy, z[:, None]], axis=1)
    np.testing.assert_allclose(merged, build.refine_reference(mesh, heads), atol=1e-6)
    # Spot facts: lips point 0 is landmark 61, the left iris centre is 468 from its head.
    assert build.LIPS[0] == 61 and merged[61, 0] == heads[0][0, 0]
    assert merged[468, 0] == heads[3][0, 0] and merged[473, 1] == heads[4][0, 1]


# --- photos -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_photo_face_found_and_frontal(photos, name, mode):
    obs = track_one(letterbox(photos[name]), mode)
    assert obs is not None, f"no face found in {name} ({mode})"
    assert obs.landmarks.shape == (478, 3) and obs.landmarks.dtype == np.float32
    assert obs.image_size == (640, 480) and obs.mirrored is False
    assert (obs.landmarks[:, :2] > 0).all() and (obs.landmarks[:, :2] < 1).all()
    np.testing.assert_allclose(obs.rotation @ obs.rotation.T, np.eye(3), atol=1e-4)
    if mode == "full":
        assert obs.blendshapes is not None and len(obs.blendshapes) == 52
        assert 0.0 <= obs.blendshapes["eyeBlinkLeft"] <= 1.0
    else:
        assert obs.blendshapes is None
    pitch, yaw, roll = obs.euler_deg
    assert abs(yaw) < 10 and abs(roll) < 10
    # mediapipe's own matrix puts the astronaut (seen a little from above) at ~16 deg pitch.
    assert abs(pitch) < (20 if name == "astronaut" else 12)


@pytest.mark.parametrize("mode", MODES)
def test_in_plane_rotation_moves_roll(photos, mode):
    """A +20 deg cv2 rotation (counter-clockwise on screen) raises euler z (roll) by ~20 deg.

    The mapping turns roll into neck_z = clamp(roll, +-15)/15, so a counter-clockwise tilt of
    the picture gives a positive neck_z.
    """
    for name in ("astronaut", "grace_hopper"):
        base = track_one(letterbox(photos[name]), mode).euler_deg[2]
        for angle in (20.0, -20.0):
            obs = track_one(letterbox(rotate(photos[name], angle)), mode)
            assert obs is not None
            change = obs.euler_deg[2] - base
            assert abs(change - angle) < 6.0, (name, angle, change)


@pytest.mark.parametrize("mode", MODES)
def test_no_face_gives_none(mode):
    from skimage import data

    with FaceTracker(TrackerOptions(mode=mode)) as tracker:
        if mode == "full":
            # The cameraman's own face is small and half hidden by his camera: the full model
            # finds none; the fast model finds it in the mirrored view, which is fair.
            assert tracker.detect(data.camera(), 0) is None  # grey (H, W) frames work
        for i, image in enumerate((data.coffee(), data.rocket(), data.brick(), data.grass())):
            frame = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
            assert tracker.detect(frame, 100 + i) is None
        assert tracker.detect(np.zeros((480, 640, 3), np.uint8), 200) is None
        assert tracker.detect(np.full((480, 640, 4), 200, np.uint8), 300) is None  # BGRA


def test_errors_are_puppet_errors(tmp_path):
    with pytest.raises(PuppetError, match="not found"):
        FaceTracker(TrackerOptions(model_path=tmp_path / "missing.task"))
    garbage = tmp_path / "garbage.task"
    garbage.write_bytes(b"not a model")
    with pytest.raises(PuppetError, match="not a mediapipe .task"):
        FaceTracker(TrackerOptions(model_path=garbage))
    broken = tmp_path / "broken.task"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("face_detector.tflite", b"x" * 100)
        zf.writestr("face_landmarks_detector.tflite", b"y" * 100)
    with pytest.raises(PuppetError, match="could not load"):
        FaceTracker(TrackerOptions(model_path=broken))
    with pytest.raises(PuppetError, match="Unknown tracker mode"):
        FaceTracker(TrackerOptions(mode="turbo"))  # type: ignore[arg-type]
    tracker = FaceTracker(TrackerOptions())
    with tracker:
        with pytest.raises(PuppetError, match="uint8"):
            tracker.detect(np.zeros((48, 64, 3), np.float32))
        with pytest.raises(PuppetError, match="channels"):
            tracker.detect(np.zeros((48, 64, 2), np.uint8))
    assert tracker.closed
    tracker.close()  # idempotent
    with pytest.raises(PuppetError, match="closed"):
        tracker.detect(np.zeros((48, 64, 3), np.uint8))


def test_timestamps_are_made_strictly_increasing(photos):
    frame = letterbox(photos["grace_hopper"])
    with FaceTracker(TrackerOptions(mode="fast")) as tracker:
        first = tracker.detect(frame, 1000)
        again = tracker.detect(frame, 1000)
        older = tracker.detect(frame, 5)
        clock = tracker.detect(frame)
    assert (first.timestamp_ms, again.timestamp_ms, older.timestamp_ms) == (1000, 1001, 1002)
    assert clock.timestamp_ms > 1002


def test_unclosed_tracker_does_not_hang_the_process():
    """A tracker dropped in a reference cycle and collected must not hang (it warns)."""
    script = (
        "import gc, numpy as np\n"
        "from puppet.tracking.tracker import FaceTracker\n"
        "class Holder: pass\n"
        "h = Holder(); h.tracker = FaceTracker(); h.me = h\n"
        "h.tracker.detect(np.zeros((64, 64, 3), np.uint8), 1)\n"
        "del h\n"
        "gc.collect()\n"
        "print('collected', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "collected" in done.stdout
    assert "FaceTracker was not closed" in done.stderr


# --- real face videos ---------------------------------------------------------------------


def blink_events(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    both = np.minimum(left, right)
    return np.flatnonzero((both[1:] >= 0.5) & (both[:-1] < 0.5)) + 1


@pytest.fixture(scope="module")
def clip_tracks(fixtures_dir):
    """Every frame of both clips through both modes, mirror off (as the reference)."""
    import av

    reference = json.loads((fixtures_dir / "faces" / "official_blendshapes.json").read_text())
    tracks = {}
    for clip, fps in CLIPS.items():
        with av.open(str(fixtures_dir / "faces" / clip)) as container:
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        per_mode = {}
        for mode in MODES:
            with FaceTracker(TrackerOptions(mode=mode, mirror=False)) as tracker:
                per_mode[mode] = [
                    tracker.detect(frame, round(i * 1000 / fps)) for i, frame in enumerate(frames)
                ]
        tracks[clip] = (frames, per_mode, np.asarray(reference["clips"][clip], np.float64))
    return tracks


@pytest.mark.parametrize("clip", list(CLIPS))
def test_video_full_mode_matches_official_reference(clip_tracks, clip):
    frames, per_mode, ref = clip_tracks[clip]
    obs = per_mode["full"]
    assert len(obs) == len(ref)
    found = [i for i, o in enumerate(obs) if o is not None]
    assert len(found) >= 0.95 * len(obs)
    bs = np.array(
        [
            [obs[i].blendshapes[k] for k in ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen")]
            for i in found
        ]
    )
    for k in range(3):
        assert np.corrcoef(bs[:, k], ref[found, k])[0, 1] > 0.98
        assert np.abs(bs[:, k] - ref[found, k]).max() < 0.1
    events = blink_events(bs[:, 0], bs[:, 1])
    ref_events = blink_events(ref[found, 0], ref[found, 1])
    assert abs(len(events) - len(ref_events)) <= 1
    # Reference columns: yaw, pitch, roll = our euler y, x, z.
    angles = np.array([obs[i].euler_deg for i in found])
    ref_angles = ref[found][:, [5, 4, 6]]
    assert np.abs(angles - ref_angles).max() < 2.0


@pytest.mark.parametrize("clip", list(CLIPS))
def test_head_rotation_from_landmarks_reproduces_the_official_matrix(clip_tracks, clip):
    _, per_mode, _ = clip_tracks[clip]
    for obs in per_mode["full"][::5]:
        if obs is None:
            continue
        ours = euler_xyz_deg(head_rotation_from_landmarks(obs.landmarks, obs.image_size))
        np.testing.assert_allclose(ours, obs.euler_deg, atol=0.5)


@pytest.mark.parametrize("clip", list(CLIPS))
def test_video_fast_mode_agrees_with_full_mode(clip_tracks, clip):
    frames, per_mode, ref = clip_tracks[clip]
    both = [i for i in range(len(frames)) if per_mode["full"][i] and per_mode["fast"][i]]
    assert len(both) >= 0.95 * len(frames)
    full = [per_mode["full"][i] for i in both]
    fast = [per_mode["fast"][i] for i in both]
    distance = np.array(
        [
            np.linalg.norm(a.landmarks_px[:, :2] - b.landmarks_px[:, :2], axis=1)
            for a, b in zip(full, fast, strict=True)
        ]
    )
    assert np.median(distance) < 3.0  # pixels in a 512x512 video
    assert np.median(distance[:, 468:]) < 3.0  # irises
    full_angles = np.array([o.euler_deg for o in full])
    fast_angles = np.array([o.euler_deg for o in fast])
    error = np.abs(fast_angles - full_angles)
    assert error.mean(axis=0).max() < 2.0 and error.max() < 8.0
    for k in range(3):  # pitch, yaw, roll follow the same motion
        assert np.corrcoef(fast_angles[:, k], full_angles[:, k])[0, 1] > 0.85
    assert all(o.blendshapes is None for o in fast)


def test_flipped_frame_mirrors_yaw_and_roll(clip_tracks):
    """Take the d12 frame with the largest head turn; flipping it negates yaw and roll.

    Also checks the mirror option: mirror=True on the frame == mirror=False on the flipped one.
    """
    frames, per_mode, ref = clip_tracks["d12.mp4"]
    index = int(np.argmax(np.abs(ref[:, 4])))
    assert abs(ref[index, 4]) > 10
    frame = frames[index]
    for mode in MODES:
        plain = track_one(frame, mode)
        flipped = track_one(cv2.flip(frame, 1), mode)
        mirrored = track_one(frame, mode, mirror=True)
        assert abs(plain.euler_deg[1]) > 8
        assert abs(flipped.euler_deg[1] + plain.euler_deg[1]) < 3.0
        assert abs(flipped.euler_deg[2] + plain.euler_deg[2]) < 3.0
        assert mirrored.mirrored is True
        np.testing.assert_allclose(mirrored.landmarks, flipped.landmarks, atol=1e-5)
