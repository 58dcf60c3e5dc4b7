"""The virtual camera output, over pyvirtualcam.

Backends (pyvirtualcam 0.15): ``v4l2loopback`` on Linux, ``obs`` (OBS Virtual Camera) on
Windows and macOS, ``unitycapture`` on Windows. Only Unity Capture carries alpha: it gets the
straight RGBA frame. Every other backend gets RGB with the frame composited over the background
(chroma green by default, any ``#RRGGBB``, or an image file scaled to cover the camera frame).

Frames whose size differs from the camera's are scaled to fit (aspect kept) and centred, so a
512x512 character can feed a 1280x720 camera (the size macOS's OBS camera handles best).

Pacing: ``send`` never sleeps by default. In ``puppet live`` the camera is wrapped in
``puppet.outputs.factory.PacedOutput``, which calls ``send`` on its own thread at ``fps`` with
the newest frame (repeating the last one when the loop is slower, counting drops and repeats),
so a driver that blocks holds back only that thread. Pass ``pace=True`` when this is the only
consumer and frames are produced faster than ``fps`` (pyvirtualcam's
``sleep_until_next_frame``, which measures the time spent between frames and so does not
drift).
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np

from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo
from puppet.outputs.compose import (
    Background,
    check_frame,
    flatten,
    is_transparent,
    resolve_background,
)

log = logging.getLogger(__name__)

# Backends that take RGBA and keep its alpha for the receiving application.
ALPHA_BACKENDS = frozenset({"unitycapture"})


def no_backend_fix(system: str | None = None) -> str:
    """How to get a virtual camera on this OS (one sentence per OS)."""
    system = system or platform.system()
    browser = "or use --output browser with an OBS Browser Source instead."
    if system == "Linux":
        return (
            "Load v4l2loopback: 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
            'card_label="puppet"\' (Debian/Ubuntu package v4l2loopback-dkms; your user must be '
            f"in the 'video' group), {browser}"
        )
    if system == "Windows":
        return (
            "Install OBS Studio (28 or newer), click 'Start Virtual Camera' once and stop it, or "
            f"install Unity Capture for a camera with transparency, {browser}"
        )
    if system == "Darwin":
        return (
            "Install OBS Studio 30 or newer, click 'Start Virtual Camera' once (allow the system "
            f"extension) and stop it, {browser}"
        )
    return f"pyvirtualcam has no virtual camera backend for {system}; {browser}"


def _fit(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """The frame scaled to fit inside width x height (aspect kept), and its centred offset."""
    import cv2

    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    # Resize premultiplied colour so transparent pixels' colours do not bleed into edges.
    premultiplied = cv2.cvtColor(frame, cv2.COLOR_RGBA2mRGBA)
    resized = cv2.resize(premultiplied, (new_w, new_h), interpolation=interpolation)
    return cv2.cvtColor(resized, cv2.COLOR_mRGBA2RGBA), (width - new_w) // 2, (height - new_h) // 2


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale a straight-RGBA frame to fit inside width x height (aspect kept), centred on a
    transparent canvas. Returns the frame itself when it already has that size."""
    if (frame.shape[1], frame.shape[0]) == (width, height):
        return frame
    region, x0, y0 = _fit(frame, width, height)
    out = np.zeros((height, width, 4), np.uint8)
    out[y0 : y0 + region.shape[0], x0 : x0 + region.shape[1]] = region
    return out


def compose_for_camera(
    frame: np.ndarray, background: tuple[int, int, int] | np.ndarray | None, width: int, height: int
) -> np.ndarray:
    """What the camera receives: RGBA (background None, alpha backends) or RGB over the
    background colour/image, at the camera's size."""
    if background is None:
        return np.ascontiguousarray(fit_frame(frame, width, height))
    if (frame.shape[1], frame.shape[0]) == (width, height):
        return flatten(frame, background)
    # Composite only where the frame lands; the letterbox is the background as it is.
    region, x0, y0 = _fit(frame, width, height)
    if isinstance(background, np.ndarray):
        out = np.array(background, dtype=np.uint8, copy=True)
    else:
        out = np.empty((height, width, 3), np.uint8)
        out[:] = background
    window = out[y0 : y0 + region.shape[0], x0 : x0 + region.shape[1]]
    window[:] = flatten(region, np.ascontiguousarray(window))
    return out


def _import_pyvirtualcam():  # noqa: ANN202
    try:
        import pyvirtualcam
    except Exception as error:  # noqa: BLE001 - a broken native wheel raises OSError/ImportError
        raise PuppetError(
            f"The virtual camera library pyvirtualcam does not load ({error}).",
            "Reinstall it with 'pip install pyvirtualcam', or use --output browser.",
        ) from error
    return pyvirtualcam


class VirtualCameraOutput:
    """Frames to a virtual camera (see the module docstring).

    ``device``: a ``/dev/videoN`` path (Linux) or a camera name (Windows: "Unity Video Capture",
    "OBS Virtual Camera"); ``backend``: a pyvirtualcam backend name, default: try them all,
    Unity Capture first (it keeps alpha). ``background``: None means chroma green where the
    camera has no alpha and transparency where it has; a colour or image is always composited.
    ``alpha``: None = automatic (RGBA for Unity Capture only); True forces RGBA (for a backend
    registered with ``pyvirtualcam.register_backend`` that accepts it), False forces RGB.
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: float,
        device: str | None = None,
        backend: str | None = None,
        background: Background | Path = None,
        alpha: bool | None = None,
        pace: bool = False,
    ) -> None:
        pyvirtualcam = _import_pyvirtualcam()
        from pyvirtualcam.camera import BACKENDS

        if width <= 0 or height <= 0 or not fps > 0:
            raise PuppetError(
                f"Virtual camera size {width}x{height} at {fps} fps is not valid.",
                "Use a positive size and frame rate.",
            )
        if backend is not None and backend not in BACKENDS:
            raise PuppetError(
                f"Unknown virtual camera backend {backend!r}.",
                f"Available here: {', '.join(BACKENDS) or 'none'}.",
            )
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self._pace = pace
        explicit_background = not is_transparent(background) or isinstance(background, Path)
        names = [backend] if backend else sorted(BACKENDS, key=lambda n: n not in ALPHA_BACKENDS)
        errors: list[str] = []
        self._camera = None
        for name in names:
            rgba = (name in ALPHA_BACKENDS and not explicit_background) if alpha is None else alpha
            fmt = pyvirtualcam.PixelFormat.RGBA if rgba else pyvirtualcam.PixelFormat.RGB
            try:
                self._camera = pyvirtualcam.Camera(
                    self.width, self.height, self.fps, fmt=fmt, device=device, backend=name
                )
            except Exception as error:  # noqa: BLE001 - each backend raises its own kind
                errors.append(str(error).strip())
                continue
            self.alpha = rgba
            break
        if self._camera is None:
            details = "; ".join(e.replace("\n", " ").rstrip(".") for e in errors)
            details = details or "pyvirtualcam has no backend here"
            where = f" {device!r}" if device else ""
            raise PuppetError(
                f"No virtual camera{where} is available ({details}).", no_backend_fix()
            )
        self.backend = self._camera.backend
        self.device = self._camera.device
        self.name = f"vcam ({self.backend}: {self.device})"
        if self.alpha:
            self._background = None
        else:
            self._background = resolve_background(background, self.width, self.height)
        self._closed = False
        log.info("virtual camera %s, %dx%d at %g fps, alpha=%s", self.name, self.width,
                 self.height, self.fps, self.alpha)  # fmt: skip

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        """Send one straight-RGBA frame (any size; fitted to the camera's)."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        check_frame(frame)
        image = compose_for_camera(frame, self._background, self.width, self.height)
        try:
            self._camera.send(image)
        except (RuntimeError, OSError) as error:
            raise PuppetError(
                f"The virtual camera {self.device} stopped taking frames ({error}).",
                "Check that the device still exists and no other program writes to it.",
            ) from error
        if self._pace:
            self._camera.sleep_until_next_frame()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._camera is not None:
            self._camera.close()
            self._camera = None


def vcam_status(device: str | None = None) -> tuple[bool, str]:
    """For ``puppet doctor``: (True, "backend: device") when a virtual camera opens, else
    (False, the reason and the fix for this OS). Opens the camera for a moment."""
    try:
        camera = VirtualCameraOutput(width=640, height=480, fps=30, device=device)
    except PuppetError as error:
        return False, str(error)
    try:
        return True, f"{camera.backend}: {camera.device} (alpha: {'yes' if camera.alpha else 'no'})"
    finally:
        camera.close()
