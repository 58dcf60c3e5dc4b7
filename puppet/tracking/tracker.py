"""Face tracking: camera frames in, ``FaceObservation`` out (mediapipe Tasks API).

Two models, both committed under ``assets/mediapipe`` (Apache-2.0, see the NOTICE there):

- ``full``: Google's official ``face_landmarker.task`` (478 landmarks, 52 blendshapes and the
  facial transformation matrix; head rotation comes from that matrix).
- ``fast``: ``face_landmarker_fast.task``, the legacy 478-point attention mesh from the
  mediapipe 0.10.21 wheel converted by ``tools/build_fast_tracker.py``. No blendshapes and no
  matrix: the head rotation is computed here from the landmarks by the same method mediapipe's
  geometry pipeline uses for the full model's matrix (``head_rotation_from_landmarks``, with
  the canonical face and camera of the official bundle), so both modes share one convention.

ALWAYS close a tracker (``with FaceTracker(...) as t:`` or try/finally + ``close()``): a
mediapipe 0.10.3x landmarker that is never closed and gets freed by Python's cyclic garbage
collector hangs the whole process forever. ``close()`` is idempotent. As a last line of
defence a tracker dropped without ``close()`` warns (``ResourceWarning``) and parks its
landmarker in a module-level list instead of letting the collector free it; nothing may
rely on that.
"""

from __future__ import annotations

import atexit
import math
import struct
import time
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from puppet.errors import PuppetError
from puppet.paths import FACE_LANDMARKER, FACE_LANDMARKER_FAST


@dataclass
class FaceObservation:
    """One tracked face in one frame.

    landmarks: (478, 3) float32, mediapipe's normalised coordinates: x in [0,1] of the image
        width, y in [0,1] of the image height, z roughly in the scale of x. Index 468-477 are
        the irises. Coordinates are in the (possibly mirrored) image the tracker saw.
    image_size: (width, height) in pixels of that image.
    timestamp_ms: the frame's timestamp.
    rotation: (3, 3) head rotation matrix (camera space), or None.
    euler_deg: (x, y, z) head angles in degrees: Euler 'xyz' of ``rotation`` as the official
        THA4 mediapipe converter computes them (x: pitch, y: yaw, z: roll).
    blendshapes: the 52 ARKit-style scores by mediapipe name (e.g. "eyeBlinkLeft"), or None
        when the model gives none (fast mode).
    presence: face presence / confidence in [0,1].
    mirrored: whether the frame was flipped horizontally (selfie view) before tracking.
    """

    landmarks: np.ndarray
    image_size: tuple[int, int]
    timestamp_ms: int
    rotation: np.ndarray | None
    euler_deg: tuple[float, float, float]
    blendshapes: dict[str, float] | None
    presence: float = 1.0
    mirrored: bool = True

    @property
    def landmarks_px(self) -> np.ndarray:
        """Landmarks in pixels (x*width, y*height, z*width)."""
        w, h = self.image_size
        return self.landmarks * np.array([w, h, w], dtype=np.float32)


FULL_MODEL_PATH = FACE_LANDMARKER
FAST_MODEL_PATH = FACE_LANDMARKER_FAST
NUM_LANDMARKS = 478
TrackerMode = Literal["full", "fast"]
TRACKER_MODES: tuple[str, ...] = ("full", "fast")

# The virtual camera of mediapipe's FaceLandmarker geometry pipeline (perspective, 63 degree
# vertical field of view, near plane at 1, image origin at the top-left corner).
_VERTICAL_FOV_DEG = 63.0
_NEAR = 1.0


@dataclass
class TrackerOptions:
    """How to build a ``FaceTracker``.

    mode: "full" (official model: blendshapes + transformation matrix, ~2x slower) or "fast"
        (converted attention mesh: landmarks only, head pose from ``head_rotation_from_landmarks``).
    mirror: flip each frame horizontally before tracking (selfie view, as the official THA4
        mediapipe app does). Landmarks are then in the mirrored image.
    min_detection_confidence / min_presence_confidence / min_tracking_confidence: passed to
        mediapipe's FaceLandmarker (its defaults are 0.5).
    model_path: use this ``.task`` bundle instead of the committed one for ``mode``.
    """

    mode: TrackerMode = "full"
    mirror: bool = True
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    model_path: Path | None = None

    def resolved_model_path(self) -> Path:
        if self.model_path is not None:
            return Path(self.model_path)
        return FULL_MODEL_PATH if self.mode == "full" else FAST_MODEL_PATH


def euler_xyz_deg(rotation: np.ndarray) -> tuple[float, float, float]:
    """Head angles as the official THA4 mediapipe converter computes them.

    The official code calls ``scipy Rotation.from_matrix(M[:3, :3]).as_euler('xyz')``: the
    nearest rotation to M, as extrinsic x-y-z angles (R = Rz(z) Ry(y) Rx(x)), in degrees here:
    x = pitch, y = yaw, z = roll. Computed with numpy (tested against scipy).
    """
    u, _, vt = np.linalg.svd(np.asarray(rotation, dtype=np.float64)[:3, :3])
    r = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt  # nearest rotation
    x = np.arctan2(r[2, 1], r[2, 2])
    y = np.arctan2(-r[2, 0], np.hypot(r[2, 1], r[2, 2]))
    z = np.arctan2(r[1, 0], r[0, 0])
    return tuple(float(np.degrees(v)) for v in (x, y, z))  # type: ignore[return-value]


# --- head pose from landmarks (fast mode) ---------------------------------------------------


def _protobuf_fields(buf: bytes):
    """Yield (field_number, wire_type, value) of one protobuf message (wire format only).

    mediapipe 0.10.31 does not depend on protobuf, and the canonical face metadata is a tiny
    fixed message, so a minimal reader is enough.
    """
    i = 0
    n = len(buf)

    def varint(i: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            byte = buf[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result, i

    while i < n:
        key, i = varint(i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = varint(i)
        elif wire_type == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire_type == 2:
            length, i = varint(i)
            value, i = buf[i : i + length], i + length
        elif wire_type == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, wire_type, value


@lru_cache(maxsize=1)
def canonical_face() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mediapipe's canonical face, read from the official bundle's geometry metadata.

    Returns (vertices (468, 3) float64 in cm: x right, y up, z towards the camera; the
    Procrustes basis landmark ids (int array); their weights). Source: the file
    ``geometry_pipeline_metadata_landmarks.binarypb`` inside ``face_landmarker.task``
    (message ``face_geometry.GeometryPipelineMetadata``: canonical_mesh = 1 with
    vertex_buffer = 3 as x,y,z,u,v floats; procrustes_landmark_basis = 2 with landmark_id = 1,
    weight = 2). The basis is the set of landmarks Google picked to follow head pose and not
    facial expression.
    """
    try:
        with zipfile.ZipFile(FULL_MODEL_PATH) as zf:
            buf = zf.read("geometry_pipeline_metadata_landmarks.binarypb")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise PuppetError(
            f"Cannot read the canonical face from {FULL_MODEL_PATH} ({exc}).",
            "Restore it with: python tools/fetch_face_landmarker.py",
        ) from exc
    floats: list[float] = []
    ids: list[int] = []
    weights: list[float] = []
    for number, _wire, value in _protobuf_fields(buf):
        if number == 1:  # canonical_mesh
            for sub_number, sub_wire, sub_value in _protobuf_fields(value):
                if sub_number != 3:
                    continue
                if sub_wire == 5:
                    floats.append(struct.unpack("<f", sub_value)[0])
                else:  # packed
                    floats.extend(np.frombuffer(sub_value, "<f4").tolist())
        elif number == 2:  # procrustes_landmark_basis
            entry = {k: v for k, _, v in _protobuf_fields(value)}
            ids.append(int(entry.get(1, 0)))
            weights.append(struct.unpack("<f", entry[2])[0] if 2 in entry else 0.0)
    vertices = np.asarray(floats, dtype=np.float64).reshape(-1, 5)[:, :3]
    if vertices.shape != (468, 3) or not ids:
        raise PuppetError(
            f"Unexpected canonical face in {FULL_MODEL_PATH}.",
            "Restore it with: python tools/fetch_face_landmarker.py",
        )
    return vertices, np.asarray(ids, dtype=np.int64), np.asarray(weights, dtype=np.float64)


def _weighted_similarity(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, float]:
    """Rotation R and scale s minimising sum w_i |s R source_i + t - target_i|^2 (Umeyama)."""
    w = weights / weights.sum()
    src = source - w @ source
    dst = target - w @ target
    u, sv, vt = np.linalg.svd((dst * w[:, None]).T @ src)
    d = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ np.diag(d) @ vt
    scale = float((sv * d).sum() / (w @ (src**2).sum(axis=1)))
    return rotation, scale


def head_rotation_from_landmarks(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Head rotation (3, 3) from mediapipe's normalised landmarks, as the full model's matrix.

    Follows the published method of mediapipe's face geometry pipeline (which makes the
    official model's facial transformation matrix): put the landmarks on the near plane of a
    63 degree perspective camera, estimate the face scale with a weighted Procrustes fit to
    the canonical face, unproject with that scale (twice), and take the rotation of the final
    weighted Procrustes fit. Only the canonical Procrustes basis landmarks (pose, not
    expression) are used. On the full model's own landmarks this reproduces its matrix's
    Euler angles within 0.2 degrees (tests/test_tracking.py); the fast mode uses it because
    its model has no matrix.
    """
    vertices, ids, weights = canonical_face()
    width, height = image_size
    height_at_near = 2.0 * _NEAR * math.tan(math.radians(_VERTICAL_FOV_DEG) / 2.0)
    width_at_near = width * height_at_near / height
    points = np.asarray(landmarks, dtype=np.float64)
    depth_offset = points[: len(vertices), 2].mean() * width_at_near
    screen = points[ids].copy()
    screen[:, 1] = 1.0 - screen[:, 1]  # top-left image origin -> y up
    screen *= (width_at_near, height_at_near, width_at_near)
    screen[:, 0] -= width_at_near / 2.0
    screen[:, 1] -= height_at_near / 2.0
    canonical = vertices[ids]

    def metric(scale: float) -> np.ndarray:
        out = screen.copy()
        out[:, 2] = (out[:, 2] - depth_offset + _NEAR) / scale
        out[:, :2] *= out[:, 2:3] / _NEAR
        out[:, 2] *= -1.0  # screen space is left-handed, metric space right-handed
        return out

    first = screen * (1.0, 1.0, -1.0)
    _, scale1 = _weighted_similarity(canonical, first, weights)
    _, scale2 = _weighted_similarity(canonical, metric(scale1), weights)
    rotation, _ = _weighted_similarity(canonical, metric(scale1 * scale2), weights)
    return rotation


# --- the tracker ----------------------------------------------------------------------------

# Landmarkers of trackers dropped without close(): kept alive on purpose (a landmarker freed by
# the cyclic GC hangs the process) and closed at interpreter exit if still possible.
_UNCLOSED_LANDMARKERS: list[Any] = []


def _close_unclosed_landmarkers() -> None:
    while _UNCLOSED_LANDMARKERS:
        landmarker = _UNCLOSED_LANDMARKERS.pop()
        try:
            landmarker.close()
        except Exception:  # best effort at exit; nothing left to report to
            pass


atexit.register(_close_unclosed_landmarkers)


def _check_model_file(path: Path, mode: str) -> None:
    build_hint = (
        "Restore it with: python tools/fetch_face_landmarker.py"
        if mode == "full"
        else "Rebuild it with: python tools/build_fast_tracker.py"
    )
    if not path.is_file():
        raise PuppetError(f"Face tracker model not found: {path}.", build_hint)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise PuppetError(
            f"Face tracker model {path} is not a mediapipe .task bundle ({exc}).", build_hint
        ) from exc
    missing = {"face_detector.tflite", "face_landmarks_detector.tflite"} - names
    if missing:
        raise PuppetError(
            f"Face tracker model {path} lacks {', '.join(sorted(missing))}.", build_hint
        )


def _frame_to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame_bgr)
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or frame.size == 0:
        raise PuppetError(
            f"Cannot track a frame of dtype {frame.dtype} and shape {frame.shape}.",
            "Pass an OpenCV-style uint8 BGR image (H, W, 3).",
        )
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    raise PuppetError(
        f"Cannot track a frame with {frame.shape[2]} channels.",
        "Pass an OpenCV-style uint8 BGR image (H, W, 3).",
    )


class FaceTracker:
    """mediapipe FaceLandmarker in VIDEO mode, one face, ``FaceObservation`` out.

    Use as a context manager (or call ``close()``, which is idempotent): see the module
    docstring for why an unclosed tracker is dangerous. Not thread-safe: one tracker per
    thread.
    """

    def __init__(self, options: TrackerOptions | None = None) -> None:
        self._landmarker: Any = None
        self.options = options if options is not None else TrackerOptions()
        mode = self.options.mode
        if mode not in TRACKER_MODES:
            raise PuppetError(
                f"Unknown tracker mode {mode!r}.", f"Use one of: {', '.join(TRACKER_MODES)}."
            )
        self.model_path = self.options.resolved_model_path()
        _check_model_file(self.model_path, mode)
        self._last_timestamp_ms: int | None = None

        from mediapipe.tasks.python import BaseOptions, vision

        full = mode == "full"
        landmarker_options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            min_face_detection_confidence=self.options.min_detection_confidence,
            min_face_presence_confidence=self.options.min_presence_confidence,
            min_tracking_confidence=self.options.min_tracking_confidence,
            output_face_blendshapes=full,
            output_facial_transformation_matrixes=full,
        )
        try:
            self._landmarker = vision.FaceLandmarker.create_from_options(landmarker_options)
        except Exception as exc:  # mediapipe raises RuntimeError/ValueError with C++ status text
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PuppetError(
                f"mediapipe could not load the face tracker model {self.model_path} ({reason}).",
                "Use the committed model (tools/fetch_face_landmarker.py re-obtains it) or a "
                "valid FaceLandmarker .task bundle.",
            ) from exc

    @classmethod
    def create(cls, options: TrackerOptions | None = None, **overrides: Any) -> FaceTracker:
        """``FaceTracker(TrackerOptions(**overrides))``, or ``options`` with ``overrides``."""
        if options is None:
            options = TrackerOptions(**overrides)
        elif overrides:
            options = TrackerOptions(**{**options.__dict__, **overrides})
        return cls(options)

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def closed(self) -> bool:
        return self._landmarker is None

    @property
    def provides_blendshapes(self) -> bool:
        return self.options.mode == "full"

    def _next_timestamp(self, timestamp_ms: int | None) -> int:
        ts = int(time.monotonic() * 1000) if timestamp_ms is None else int(timestamp_ms)
        if self._last_timestamp_ms is not None and ts <= self._last_timestamp_ms:
            ts = self._last_timestamp_ms + 1  # VIDEO mode needs strictly increasing stamps
        self._last_timestamp_ms = ts
        return ts

    def detect(
        self, frame_bgr: np.ndarray, timestamp_ms: int | None = None
    ) -> FaceObservation | None:
        """Track one frame; None when no face is found.

        frame_bgr: uint8 (H, W, 3) BGR as OpenCV delivers it (grey and BGRA are accepted).
        timestamp_ms: the frame's time in ms (default: a monotonic clock). Stamps that do not
            increase are bumped to last + 1, which the observation reports.
        """
        if self._landmarker is None:
            raise PuppetError("This face tracker is closed.", "Create a new FaceTracker.")
        import mediapipe as mp

        rgb = _frame_to_rgb(frame_bgr)
        if self.options.mirror:
            rgb = cv2.flip(rgb, 1)
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        ts = self._next_timestamp(timestamp_ms)
        result = self._landmarker.detect_for_video(
            mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), ts
        )
        if not result.face_landmarks:
            return None
        points = result.face_landmarks[0]
        landmarks = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)
        if landmarks.shape != (NUM_LANDMARKS, 3):
            raise PuppetError(
                f"The face tracker model {self.model_path} gave {len(points)} landmarks, "
                f"not {NUM_LANDMARKS}.",
                "Use the committed models under assets/mediapipe.",
            )
        blendshapes: dict[str, float] | None = None
        rotation: np.ndarray | None = None
        if self.options.mode == "full":
            if result.face_blendshapes:
                blendshapes = {c.category_name: float(c.score) for c in result.face_blendshapes[0]}
            if result.facial_transformation_matrixes:
                rotation = np.asarray(result.facial_transformation_matrixes[0], np.float64)[:3, :3]
        else:
            rotation = head_rotation_from_landmarks(landmarks, (width, height))
        euler = euler_xyz_deg(rotation) if rotation is not None else (0.0, 0.0, 0.0)
        return FaceObservation(
            landmarks=landmarks,
            image_size=(width, height),
            timestamp_ms=ts,
            rotation=rotation,
            euler_deg=euler,
            blendshapes=blendshapes,
            # The Tasks API drops faces below min_presence_confidence and reports no score.
            presence=1.0,
            mirrored=self.options.mirror,
        )

    def close(self) -> None:
        """Release the mediapipe graph. Idempotent; always call it (or use ``with``)."""
        landmarker, self._landmarker = self._landmarker, None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        landmarker = getattr(self, "_landmarker", None)
        if landmarker is not None:
            # Never let the collector free it (that hangs the process): park it instead.
            _UNCLOSED_LANDMARKERS.append(landmarker)
            self._landmarker = None
            warnings.warn(
                "FaceTracker was not closed; use `with FaceTracker(...)` or call close().",
                ResourceWarning,
                stacklevel=2,
            )
