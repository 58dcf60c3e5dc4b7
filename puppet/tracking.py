"""Face tracking: camera frames in, ``FaceObservation`` out (mediapipe Tasks API)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
