"""Outputs: real files through PyAV/FFmpeg, the virtual camera up to the pyvirtualcam boundary,
the HUD drawing, the factory and the fan-out with a failing output."""

from __future__ import annotations

import logging
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.outputs.files import PngDirectoryOutput, VideoFileOutput

FPS = 30
W, H = 97, 64  # odd width on purpose (yuv420p needs padding)
N = 12
DISC_RGB = (230, 40, 30)


def disc_frame(i: int, width: int = W, height: int = H) -> np.ndarray:
    """An opaque red disc moving right on a fully transparent background."""
    yy, xx = np.mgrid[:height, :width]
    frame = np.zeros((height, width, 4), np.uint8)
    inside = (xx - (18 + 5 * i)) ** 2 + (yy - height // 2) ** 2 < 13**2
    frame[inside] = (*DISC_RGB, 255)
    return frame


def write(path: Path, frames: int = N, **kwargs) -> Path:
    with VideoFileOutput(path, fps=kwargs.pop("fps", FPS), **kwargs) as out:
        for i in range(frames):
            out.send(disc_frame(i))
    return path


def decode_rgba(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream, str]:
    """All frames as RGBA arrays, the stream, and the decoded pixel format. VP9 goes through
    libvpx-vp9 because FFmpeg's native vp9 decoder drops the alpha side data."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    frames = []
    if stream.codec_context.name == "vp9":
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        decoded = (f for p in container.demux(stream) if p.size for f in decoder.decode(p))
    else:
        decoded = container.decode(stream)
    fmt = ""
    for frame in decoded:
        fmt = frame.format.name
        if fmt == "bgra":
            frames.append(frame.to_ndarray(format="rgba"))
            continue
        # swscale's yuv(a) -> rgba conversion leaves the alpha of the last columns of odd-width
        # frames unset, so read the alpha plane itself.
        rgb = frame.to_ndarray(format="rgb24")
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        if fmt.startswith("yuva"):
            plane = frame.planes[3]
            deep = fmt.endswith(("10le", "12le", "16le"))
            raw = np.frombuffer(plane, np.uint16 if deep else np.uint8)
            raw = raw.reshape(frame.height, -1)[:, : frame.width].astype(np.float32)
            bits = int(fmt[-4:-2]) if deep else 8
            alpha = np.clip(raw * 255 / (2**bits - 1) + 0.5, 0, 255).astype(np.uint8)
        frames.append(np.dstack([rgb, alpha]))
    container.close()
    return frames, stream, fmt


@pytest.mark.parametrize(
    ("ext", "alpha", "pix_prefix"),
    [(".mp4", False, "yuv420p"), (".webm", True, "yuva420p"), (".mov", True, "yuva444p"),
     (".gif", True, "bgra")],
)  # fmt: skip
def test_video_round_trip(tmp_path: Path, ext: str, alpha: bool, pix_prefix: str) -> None:
    path = write(tmp_path / f"clip{ext}")
    frames, stream, fmt = decode_rgba(path)
    assert len(frames) == N
    assert fmt.startswith(pix_prefix)
    if ext == ".gif":  # GIF delays are centiseconds: check the total duration instead
        assert stream.duration * stream.time_base == pytest.approx(N / FPS, abs=0.011)
    else:
        assert stream.average_rate == FPS
    expected_w = W + 1 if ext == ".mp4" else W
    assert (stream.codec_context.width, stream.codec_context.height) == (expected_w, H)
    for i, got in enumerate(frames):
        want = disc_frame(i)
        centre = got[H // 2, 18 + 5 * i]
        assert np.abs(centre[:3].astype(int) - DISC_RGB).max() <= 6, (i, centre)
        assert centre[3] == 255
        if alpha:
            mismatch = np.mean(np.abs(got[..., 3].astype(int) - want[..., 3]) > 128)
            assert mismatch < 0.01, (ext, i, mismatch)
            assert got[2, W - 3, 3] == 0  # background transparent
        else:
            assert (got[..., 3] == 255).all()
            assert np.abs(got[2, W - 3, :3].astype(int) - (0, 255, 0)).max() <= 4  # chroma green


def test_webm_declares_alpha_and_mp4_background_colour(tmp_path: Path) -> None:
    container = av.open(str(write(tmp_path / "a.webm")))
    assert container.streams.video[0].metadata.get("alpha_mode") == "1"
    container.close()
    frames, _, _ = decode_rgba(write(tmp_path / "white.mp4", background="#FFFFFF"))
    assert np.abs(frames[0][2, 2, :3].astype(int) - 255).max() <= 3
    frames, _, fmt = decode_rgba(write(tmp_path / "blue.webm", background=(0, 0, 255)))
    assert (frames[3][..., 3] == 255).all()  # a colour background removes transparency
    assert np.abs(frames[3][2, 2, :3].astype(int) - (0, 0, 255)).max() <= 6


def test_ntsc_fps_is_exact(tmp_path: Path) -> None:
    frames, stream, _ = decode_rgba(write(tmp_path / "ntsc.mp4", fps=29.97, frames=5))
    assert len(frames) == 5
    assert stream.average_rate == Fraction(30000, 1001)


def test_png_directory_straight_alpha(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    out = PngDirectoryOutput(target)
    soft = disc_frame(0)
    soft[..., 3] = np.where(soft[..., 3] > 0, 100, 0)  # semi-transparent, colour must stay
    out.send(soft)
    for i in range(1, 4):
        out.send(disc_frame(i))
    assert not target.exists()  # still in its temporary .frames.XXXX.tmp/
    out.close()
    out.close()
    assert sorted(p.name for p in target.iterdir()) == [f"{i:06d}.png" for i in range(4)]
    back = cv2.cvtColor(cv2.imread(str(target / "000000.png"), cv2.IMREAD_UNCHANGED),
                        cv2.COLOR_BGRA2RGBA)  # fmt: skip
    np.testing.assert_array_equal(back, soft)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    # A previous render is replaced; a directory with other files is refused.
    again = PngDirectoryOutput(target)
    again.send(disc_frame(5))
    again.close()
    assert [p.name for p in target.iterdir()] == ["000000.png"]
    (target / "notes.txt").write_text("mine")
    with pytest.raises(PuppetError, match="other files"):
        PngDirectoryOutput(target)


def test_exception_mid_write_leaves_no_file(tmp_path: Path) -> None:
    for name in ("clip.mp4", "clip.webm", "clip.mov", "clip.gif"):
        path = tmp_path / name
        with pytest.raises(RuntimeError, match="boom"):
            with VideoFileOutput(path, fps=FPS) as out:
                for i in range(5):
                    out.send(disc_frame(i))
                raise RuntimeError("boom")
        assert not path.exists()
    with pytest.raises(RuntimeError, match="boom"):
        with PngDirectoryOutput(tmp_path / "pngs") as out:
            out.send(disc_frame(0))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # A crash (no close at all) leaves only the hidden partial file, never the final name.
    out = VideoFileOutput(tmp_path / "crash.mp4", fps=FPS)
    for i in range(40):  # enough for x264 to emit packets past its lookahead
        out.send(disc_frame(i % N))
    assert not (tmp_path / "crash.mp4").exists()
    assert len(list(tmp_path.glob(".crash.mp4.*.tmp"))) == 1  # its own unique temporary
    out.abort()
    assert list(tmp_path.iterdir()) == []


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(PuppetError, match=r"\.mp4.*\.webm.*\.mov.*\.gif"):
        VideoFileOutput(tmp_path / "clip.avi", fps=FPS)
    with pytest.raises(PuppetError, match="does not exist"):
        VideoFileOutput(tmp_path / "missing" / "clip.mp4", fps=FPS)
    with pytest.raises(PuppetError, match="not positive"):
        VideoFileOutput(tmp_path / "clip.mp4", fps=0)
    with pytest.raises(PuppetError, match="not a colour"):
        VideoFileOutput(tmp_path / "clip.mp4", fps=FPS, background="greenish")
    out = VideoFileOutput(tmp_path / "clip.mp4", fps=FPS)
    with pytest.raises(TypeError):
        out.send(disc_frame(0).astype(np.float32))
    with pytest.raises(ValueError):
        out.send(disc_frame(0)[..., :3])
    out.send(disc_frame(0))
    with pytest.raises(ValueError, match="opened for"):
        out.send(disc_frame(0, width=W + 2))
    out.close()
    assert len(decode_rgba(tmp_path / "clip.mp4")[0]) == 1


def make_driver_with_tone(path: Path, seconds: float = 1.0, fps: int = 24) -> None:
    """A small H.264 + AAC video whose audio is a 440 Hz sine, made with PyAV."""
    rate = 44100
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width = video.height = 64
    video.pix_fmt = "yuv420p"
    audio = container.add_stream("aac", rate=rate, layout="mono")
    frames = round(seconds * fps)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 8, np.uint8), format="rgb24")
        frame.pts = i
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    t = np.arange(round(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, len(tone), 1024):
        chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp",
                                           layout="mono")  # fmt: skip
        chunk.sample_rate = rate
        chunk.pts = start
        container.mux(audio.encode(chunk))
    container.mux(audio.encode(None))
    container.close()


@pytest.mark.parametrize(("ext", "codec"), [(".mp4", "aac"), (".mov", "aac"), (".webm", "opus")])
def test_audio_copied_from_driver(tmp_path: Path, ext: str, codec: str) -> None:
    driver = tmp_path / "driver.mp4"
    make_driver_with_tone(driver)
    out_path = write(tmp_path / f"out{ext}", frames=24, fps=24, audio_from=driver)
    container = av.open(str(out_path))
    assert container.streams.audio[0].codec_context.name == codec
    rate = container.streams.audio[0].codec_context.sample_rate
    samples = np.concatenate(
        [f.to_ndarray().reshape(-1) for f in container.decode(container.streams.audio[0])]
    )
    container.close()
    assert len(samples) / rate == pytest.approx(1.0, abs=0.05)
    spectrum = np.abs(np.fft.rfft(samples[rate // 10 : rate // 10 + rate // 2]))
    peak_hz = np.argmax(spectrum) * rate / (2 * (len(spectrum) - 1))
    assert peak_hz == pytest.approx(440, abs=5)
    assert np.sqrt(np.mean(samples[rate // 10 : -rate // 10] ** 2)) == pytest.approx(0.212, rel=0.1)
    assert len(decode_rgba(out_path)[0]) == 24


def test_audio_from_video_without_audio_writes_video_only(tmp_path: Path, caplog) -> None:
    silent = write(tmp_path / "silent.mp4", frames=3)
    with caplog.at_level(logging.INFO):
        path = write(tmp_path / "out.mp4", frames=3, audio_from=silent)
    container = av.open(str(path))
    assert len(container.streams.audio) == 0
    container.close()


# -- virtual camera ---------------------------------------------------------------------------


def test_vcam_without_backend_explains_how_to_get_one() -> None:
    """Real pyvirtualcam call: this machine has no v4l2loopback device (kernel modules cannot be
    loaded here), so opening the camera must fail with the per-OS fix."""
    from puppet.outputs.vcam import VirtualCameraOutput, no_backend_fix, vcam_status

    ok, message = vcam_status()
    if ok:
        pytest.skip(f"a virtual camera exists on this machine ({message})")
    assert "No virtual camera" in message
    with pytest.raises(PuppetError) as raised:
        VirtualCameraOutput(width=64, height=48, fps=30)
    text = str(raised.value)
    assert "v4l2loopback" in text and "exclusive_caps=1" in text and "--output browser" in text
    assert "\n" not in text
    assert "OBS" in no_backend_fix("Windows") and "Unity Capture" in no_backend_fix("Windows")
    assert "OBS Studio 30" in no_backend_fix("Darwin")
    with pytest.raises(PuppetError, match="Unknown virtual camera backend"):
        VirtualCameraOutput(width=64, height=48, fps=30, backend="nonesuch")


def test_compose_for_camera_colour_image_and_fit(tmp_path: Path) -> None:
    from puppet.outputs.compose import resolve_background
    from puppet.outputs.vcam import compose_for_camera

    frame = np.zeros((4, 4, 4), np.uint8)
    frame[0, 0] = (200, 100, 0, 255)  # opaque
    frame[1, 1] = (200, 100, 0, 51)  # 20 % opaque
    green = resolve_background(None, 4, 4)
    assert green == (0, 255, 0)
    out = compose_for_camera(frame, green, 4, 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (200, 100, 0)
    assert tuple(out[1, 1]) == (40, 224, 0)  # 0.2 * colour + 0.8 * green
    assert tuple(out[3, 3]) == (0, 255, 0)
    assert tuple(compose_for_camera(frame, resolve_background("#FF00FF", 4, 4), 4, 4)[2, 2]) == (
        255, 0, 255,
    )  # fmt: skip
    # An image background is scaled to cover the camera frame (8x4 image -> centre 4x4).
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, :2] = (255, 0, 0)  # left quarter red: cropped away
    image[:, 2:] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "bg.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    background = resolve_background(str(tmp_path / "bg.png"), 4, 4)
    assert background.shape == (4, 4, 3)
    assert (background == (0, 0, 255)).all()
    with pytest.raises(PuppetError, match="Cannot read the background image"):
        resolve_background(str(tmp_path / "missing.png"), 4, 4)
    # A 2x1-aspect frame in a square camera: scaled to fit, centred, letterboxed.
    wide = np.zeros((8, 16, 4), np.uint8)
    wide[...] = (10, 20, 30, 255)
    fitted = compose_for_camera(wide, (0, 0, 0), 32, 32)
    assert fitted.shape == (32, 32, 3)
    assert (fitted[8:24] == (10, 20, 30)).all() and (fitted[:8] == 0).all()
    assert (fitted[24:] == 0).all()
    rgba = compose_for_camera(wide, None, 32, 32)
    assert rgba.shape == (32, 32, 4) and rgba[0, 0, 3] == 0 and rgba[16, 16, 3] == 255


class RecordingBackend:
    """A pyvirtualcam backend (registered with pyvirtualcam.register_backend, its documented
    extension point) that records what pyvirtualcam hands to a device: there is no virtual
    camera hardware or kernel module on this machine."""

    frames: list[np.ndarray] = []
    fourccs: list[int] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:  # noqa: ANN001
        self._device = device or "recorder0"
        RecordingBackend.fourccs.append(fourcc)

    def send(self, frame: np.ndarray) -> None:
        RecordingBackend.frames.append(frame.copy())

    def close(self) -> None:
        pass

    def device(self) -> str:
        return self._device

    def native_fourcc(self):  # noqa: ANN201
        return None


@pytest.fixture
def recording_backend():
    import pyvirtualcam
    from pyvirtualcam.camera import BACKENDS

    RecordingBackend.frames, RecordingBackend.fourccs = [], []
    pyvirtualcam.register_backend("puppet-test-recorder", RecordingBackend)
    yield RecordingBackend
    BACKENDS.pop("puppet-test-recorder", None)


def test_vcam_send_reaches_pyvirtualcam_boundary(recording_backend) -> None:
    """Everything up to the device: the frames pyvirtualcam passes to its backend."""
    from pyvirtualcam.util import encode_fourcc

    from puppet.outputs.vcam import VirtualCameraOutput, compose_for_camera

    out = VirtualCameraOutput(width=W, height=H, fps=FPS, backend="puppet-test-recorder",
                              background="#0000FF")  # fmt: skip
    assert out.alpha is False and out.device == "recorder0"
    for i in range(3):
        out.send(disc_frame(i))
    out.close()
    out.close()
    assert recording_backend.fourccs == [encode_fourcc("raw ")]  # PixelFormat.RGB
    assert len(recording_backend.frames) == 3
    got = recording_backend.frames[2].reshape(H, W, 3)
    np.testing.assert_array_equal(got, compose_for_camera(disc_frame(2), (0, 0, 255), W, H))
    assert tuple(got[0, 0]) == (0, 0, 255) and tuple(got[H // 2, 28]) == DISC_RGB
    with pytest.raises(RuntimeError, match="closed"):
        out.send(disc_frame(0))

    # A backend that takes RGBA gets the straight frame itself (as Unity Capture does).
    rgba_out = VirtualCameraOutput(width=W, height=H, fps=FPS, backend="puppet-test-recorder",
                                   alpha=True, device="cam9")  # fmt: skip
    rgba_out.send(disc_frame(1))
    rgba_out.close()
    assert rgba_out.name == "vcam (puppet-test-recorder: cam9)"
    np.testing.assert_array_equal(recording_backend.frames[-1].reshape(H, W, 4), disc_frame(1))
    with pytest.raises(TypeError):
        VirtualCameraOutput(width=W, height=H, fps=FPS, backend="puppet-test-recorder").send(
            disc_frame(0).astype(np.int16)
        )


# -- factory and fan-out ------------------------------------------------------------------------


def test_open_output_by_spec(tmp_path: Path) -> None:
    from puppet.outputs.browser import BrowserOutput
    from puppet.outputs.factory import open_output

    common = dict(width=W, height=H, fps=FPS, background=None)
    for name, cls in (("a.mp4", VideoFileOutput), ("a.WEBM", VideoFileOutput),
                      ("a.mov", VideoFileOutput), ("a.gif", VideoFileOutput),
                      ("frames/", PngDirectoryOutput)):  # fmt: skip
        output = open_output(f"{tmp_path}/{name}", **common)
        assert isinstance(output, cls)
        output.abort()
    browser = open_output("browser", **common, browser_port=0)
    assert isinstance(browser, BrowserOutput) and browser.url.startswith("http://127.0.0.1:")
    browser.close()
    browser = open_output("browser:0", **common)
    assert browser.host == "127.0.0.1"
    browser.close()
    with pytest.raises(PuppetError, match=r"Unknown output.*\.mp4.*\.webm.*\.mov.*\.gif"):
        open_output(str(tmp_path / "clip.avi"), **common)
    with pytest.raises(PuppetError, match="trailing /"):
        open_output(str(tmp_path / "frames"), **common)
    with pytest.raises(PuppetError, match="No virtual camera|Unknown virtual camera"):
        open_output("vcam", **common)


def test_output_set_drops_a_failing_output_once(tmp_path: Path, caplog) -> None:
    """A PNG directory whose folder disappears mid-run (as a full or unplugged disk would make
    writes fail) is reported once and dropped; the video and the browser get every frame."""
    from puppet.outputs.browser import BrowserOutput
    from puppet.outputs.factory import OutputSet

    video = VideoFileOutput(tmp_path / "clip.mp4", fps=FPS)
    pngs = PngDirectoryOutput(tmp_path / "frames")
    browser = BrowserOutput(port=0)
    outputs = OutputSet([video, pngs, browser])
    with caplog.at_level(logging.WARNING):
        for i in range(N):
            if i == 5:
                (temporary,) = tmp_path.glob(".frames.*.tmp")
                shutil.rmtree(temporary)
            outputs.send(disc_frame(i))
    outputs.close()
    outputs.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "frames/" in warnings[0] and "failed" in warnings[0]
    assert list(outputs.failures) == [pngs.name]
    assert pngs.frames_written == 5 and not (tmp_path / "frames").exists()
    assert browser.frames_sent == N
    assert len(decode_rgba(tmp_path / "clip.mp4")[0]) == N


def test_vcam_missing_at_start_is_retried_until_it_appears(tmp_path: Path, caplog) -> None:
    """On this machine the virtual camera cannot open (no v4l2loopback); the other output runs,
    and once a backend appears (registered through pyvirtualcam's extension point, as a loaded
    driver would) the camera is reopened and receives frames."""
    import pyvirtualcam
    from pyvirtualcam.camera import BACKENDS

    from puppet.outputs.factory import open_outputs
    from puppet.outputs.vcam import vcam_status

    if vcam_status()[0]:
        pytest.skip("a virtual camera exists on this machine")
    with caplog.at_level(logging.WARNING):
        outputs = open_outputs(["vcam", str(tmp_path / "clip.webm")], width=W, height=H, fps=FPS,
                               background=None, retry_seconds=0.0)  # fmt: skip
        assert len(outputs.outputs) == 1 and len(outputs) == 2
        try:
            for i in range(3):
                outputs.send(disc_frame(i))
            RecordingBackend.frames, RecordingBackend.fourccs = [], []
            pyvirtualcam.register_backend("puppet-test-recorder", RecordingBackend)
            for i in range(3, 6):
                outputs.send(disc_frame(i))
        finally:
            BACKENDS.pop("puppet-test-recorder", None)
            outputs.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "output vcam failed: No virtual camera" in warnings[0]
    assert "is back" in warnings[1]
    assert len(RecordingBackend.frames) == 3
    assert len(decode_rgba(tmp_path / "clip.webm")[0]) == 6
    with pytest.raises(PuppetError, match="No virtual camera"):
        open_outputs(["vcam"], width=W, height=H, fps=FPS, background=None)


def test_output_set_close_collects_errors(tmp_path: Path) -> None:
    from puppet.outputs.factory import OutputSet

    (tmp_path / "a").mkdir()
    first = VideoFileOutput(tmp_path / "a" / "one.mp4", fps=FPS)
    second = VideoFileOutput(tmp_path / "two.mp4", fps=FPS)
    outputs = OutputSet([first, second])
    outputs.send(disc_frame(0))
    shutil.rmtree(tmp_path / "a")  # the folder is gone: the first file cannot be finished
    with pytest.raises(PuppetError, match="one.mp4"):
        outputs.close()
    assert (tmp_path / "two.mp4").exists()  # the other one was still finalised
