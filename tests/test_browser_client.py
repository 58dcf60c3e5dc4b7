"""Client rendering in the browser source: the page renders the shipped student with WebGL2
(SwiftShader in headless Chromium) from poses streamed by ``BrowserOutput``, and its canvas is
read back and scored against the Python ``StudentPoser`` at the same poses."""

from __future__ import annotations

import base64
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_browser import DevTools, open_square_page, read_webgl_canvas

from poser_models.student import StudentPoser, rgba_to_premultiplied_linear
from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo
from puppet.outputs.browser import POSE_RECORD_BYTES, BrowserOutput
from puppet.outputs.web_student import export_web_student
from puppet.paths import DEFAULT_STUDENT_DIR
from puppet.pose import INDEX, LOWER, NUM_PARAMETERS, UPPER, PoseVector
from puppet.training.evaluation import alpha_weighted_psnr

SIZE = 512
PLACEHOLDER = np.zeros((SIZE, SIZE, 4), np.uint8)  # client mode ignores the loop's frames


def _pose(**values: float) -> np.ndarray:
    pose = np.zeros(NUM_PARAMETERS, np.float32)
    for name, value in values.items():
        pose[INDEX[name]] = value
    return pose


def test_poses() -> dict[str, np.ndarray]:
    """Neutral, a blink, an open mouth, head turns, body sway and random poses in range."""
    rng = np.random.default_rng(14)
    poses = {
        "neutral": _pose(),
        "blink": _pose(eye_wink_left=1.0, eye_wink_right=1.0),
        "mouth open": _pose(mouth_aaa=1.0),
        "head turned": _pose(head_x=0.8, head_y=-0.7, neck_z=0.5),
        "body sway": _pose(body_y=-0.9, body_z=0.8, breathing=1.0),
    }
    for i in range(3):
        poses[f"random {i}"] = rng.uniform(LOWER, UPPER).astype(np.float32)
    return poses


test_poses.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def student():
    return export_web_student(DEFAULT_STUDENT_DIR)


@pytest.fixture(scope="module")
def python_poser() -> StudentPoser:
    poser = StudentPoser.from_folder(DEFAULT_STUDENT_DIR)
    assert poser.character_path is not None
    poser.load(poser.character_path)
    return poser


@pytest.fixture(scope="module")
def profile_dir():
    folder = Path(tempfile.mkdtemp(prefix="puppet-chromium-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _read_canvas(chromium: DevTools) -> np.ndarray:
    return read_webgl_canvas(chromium)[0]


def test_page_renders_the_student_like_python(student, python_poser, profile_dir) -> None:
    chromium = open_square_page(profile_dir / "webgl", SIZE)
    # The page opens before the server exists (the loop still loading): it waits.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    chromium.page("Page.navigate", url=f"http://127.0.0.1:{port}/")
    time.sleep(1.0)
    output = BrowserOutput(port=port, student=student)
    try:
        assert not output.needs_frames
        chromium.wait_for("window.puppetMode === 'webgl2'", timeout=30)
        scores = {}
        for seq, (name, pose) in enumerate(test_poses().items(), start=1):
            output.send(PLACEHOLDER, FrameInfo(pose=PoseVector(pose)))
            chromium.wait_for(f"window.puppetSeq === {seq}", timeout=20)
            page = _read_canvas(chromium)
            assert page.shape == (SIZE, SIZE, 4)
            expected = python_poser.pose(pose)
            scores[name] = alpha_weighted_psnr(
                rgba_to_premultiplied_linear(expected), rgba_to_premultiplied_linear(page)
            )
            assert page[0, 0, 3] == 0 and page[-1, -1, 3] == 0  # transparent background
        print(
            "browser vs Python alpha-weighted PSNR (dB):",
            {k: round(v, 1) for k, v in scores.items()},
        )
        assert min(scores.values()) >= 40.0, scores
        # The score tells poses apart: the last page against the neutral pose is far off.
        neutral = rgba_to_premultiplied_linear(python_poser.pose(_pose()))
        assert alpha_weighted_psnr(neutral, rgba_to_premultiplied_linear(page)) < 35.0
        assert output._latest.encodes == 0  # no PNG was made for a WebGL2 page
    finally:
        output.close()
        chromium.close()


def test_a_frame_is_one_small_record_on_the_wire(student) -> None:
    output = BrowserOutput(port=0, student=student)
    try:
        with socket.create_connection(("127.0.0.1", output.port), timeout=5) as sock:
            sock.sendall(b"GET /poses HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            frames = 30
            for i in range(frames):
                output.send(PLACEHOLDER, FrameInfo(pose=PoseVector(_pose(head_x=i / frames))))
                time.sleep(0.01)
            deadline = time.monotonic() + 5
            while received.count(b"\r\n\r\n") == 0 or len(received.partition(b"\r\n\r\n")[2]) < (
                frames * POSE_RECORD_BYTES
            ):
                assert time.monotonic() < deadline, received[:200]
                received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        per_frame = len(body) / frames
        print(f"bytes per frame on the wire: {per_frame:.0f} (headers once: {len(head) + 4})")
        assert per_frame <= 200
        last = np.frombuffer(body[-POSE_RECORD_BYTES + 4 :], "<f4")
        assert last[INDEX["head_x"]] == pytest.approx((frames - 1) / frames)
        # A foreign Host header is refused in client mode too.
        request = urllib.request.Request(f"{output.url}student.json", headers={"Host": "evil.test"})
        with pytest.raises(urllib.error.HTTPError, match="421"):
            urllib.request.urlopen(request, timeout=5)
        # Pages that go away never hold the loop: send stays instant with dead streams.
        for _ in range(3):
            dead = socket.create_connection(("127.0.0.1", output.port))
            dead.sendall(b"GET /poses HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            dead.close()
        start = time.perf_counter()
        for i in range(200):
            output.send(PLACEHOLDER, FrameInfo(pose=PoseVector(_pose(body_y=i / 200))))
        assert time.perf_counter() - start < 0.5
        with pytest.raises(TypeError, match="needs the pose"):
            output.send(PLACEHOLDER)
    finally:
        output.close()


def test_missing_or_corrupt_student_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PuppetError, match="does not exist") as caught:
        export_web_student(tmp_path / "nowhere")
    assert caught.value.fix
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_STUDENT_DIR, broken)
    shutil.copy(DEFAULT_STUDENT_DIR.parent / "character.png", tmp_path / "character.png")
    weights = broken / "student.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: 1 << 20])  # truncated
    with pytest.raises(PuppetError, match="Cannot read") as caught:
        export_web_student(broken)
    assert "puppet distill" in caught.value.fix
    weights.write_bytes(intact)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(PuppetError, match="not valid JSON"):
        export_web_student(broken)


def test_no_webgl2_shows_a_message_and_png_frames(student, python_poser, profile_dir) -> None:
    chromium = open_square_page(profile_dir / "no-webgl", SIZE, "--disable-3d-apis")
    output = BrowserOutput(port=0, student=student)
    try:
        pose = _pose(mouth_aaa=1.0, head_x=0.5)
        output.send(PLACEHOLDER, FrameInfo(pose=PoseVector(pose)))
        chromium.page("Page.navigate", url=output.url)
        chromium.wait_for("window.puppetMode === 'png' && window.puppetSeq === 1", timeout=30)
        message = chromium.evaluate("document.getElementById('message').textContent")
        assert "no WebGL2" in message and "PNG frames" in message
        data = chromium.evaluate(
            "document.getElementById('puppet').toDataURL('image/png').split(',')[1]"
        )
        import cv2

        shown = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
        shown = cv2.cvtColor(shown, cv2.COLOR_BGRA2RGBA)
        expected = python_poser.pose(pose)
        assert shown.shape == expected.shape
        psnr = alpha_weighted_psnr(
            rgba_to_premultiplied_linear(expected), rgba_to_premultiplied_linear(shown)
        )
        assert psnr >= 40.0
        assert output._latest.encodes >= 1  # made lazily, because this page asked
    finally:
        output.close()
        chromium.close()


def test_live_loop_sends_poses_and_skips_its_poser() -> None:
    """``puppet live -o browser --render client`` from a pose track: the stream carries the
    track's poses and, with the browser as the only output, the loop never runs its poser."""
    import threading

    from puppet.app.live import LiveConfig, run_live

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    records: list[bytes] = []

    def watch() -> None:  # a viewer that connects before the loop's server is up
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            with sock:
                sock.sendall(b"GET /poses HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                body = data.partition(b"\r\n\r\n")[2]
                records.extend(
                    body[i : i + POSE_RECORD_BYTES] for i in range(0, len(body), POSE_RECORD_BYTES)
                )
            return

    viewer = threading.Thread(target=watch, daemon=True)
    viewer.start()
    config = LiveConfig(
        source=str(Path(__file__).parents[1] / "assets" / "driving" / "demo.jsonl"),
        outputs=[f"browser:{port}"],
        browser_render="client",
        frames=40,
    )
    report = run_live(config)
    viewer.join(timeout=15)
    assert report.frames == 40
    assert "poser" not in report.stages  # the page renders; Python only mapped poses
    assert len(records) >= 10 and all(len(r) == POSE_RECORD_BYTES for r in records)


def test_a_poser_that_cannot_run_in_the_browser_is_refused() -> None:
    from puppet.app.live import LiveConfig, run_live

    config = LiveConfig(
        source=str(Path(__file__).parents[1] / "assets" / "driving" / "demo.jsonl"),
        poser="rig:hana",
        outputs=["browser:0"],
        browser_render="client",
        frames=1,
    )
    with pytest.raises(PuppetError, match="Only a puppet student") as caught:
        run_live(config)
    assert "--render server" in caught.value.fix
