"""A real face video made from scikit-image's public-domain astronaut photo (no fixture needed):
the photo rotated and shifted a little per frame, encoded with PyAV, optionally with a tone."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data


def astronaut_frame(angle_deg: float = 0.0, shift: float = 0.0, size=(640, 480)) -> np.ndarray:
    """The astronaut letterboxed into a BGR frame, rotated in-plane by ``angle_deg``."""
    width, height = size
    face = cv2.resize(data.astronaut(), (height, height), interpolation=cv2.INTER_AREA)
    frame = np.zeros((height, width, 3), np.uint8)
    left = (width - height) // 2
    frame[:, left : left + height] = face[:, :, ::-1]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle_deg, 1.0)
    matrix[0, 2] += shift
    return cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def make_face_video(path: Path, frames: int = 20, fps: int = 10, audio: bool = False) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        audio_stream = None
        if audio:
            audio_stream = container.add_stream("aac", rate=48000)
            audio_stream.layout = "mono"
        for i in range(frames):
            image = astronaut_frame(8 * np.sin(i / 3), 10 * np.cos(i / 4))
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            samples = int(48000 * frames / fps)
            t = np.arange(samples) / 48000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, samples, chunk):
                block = tone[start : start + chunk].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                frame.sample_rate = 48000
                frame.pts = start
                frame.time_base = Fraction(1, 48000)
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path
