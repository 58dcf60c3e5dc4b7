"""The browser output in a real headless Chromium (Debian's ``chromium``), driven through the
DevTools protocol over ``--remote-debugging-pipe`` (no extra Python packages)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.outputs.browser import BrowserOutput

W, H = 128, 96


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium found: install it with 'apt-get install -y chromium' (Debian)")


KEEP_COMPOSITOR_AWAKE = """(() => {
  if (window.puppetTestTicker) return;
  const dot = document.createElement("div");
  dot.style.cssText = "position:fixed;right:0;bottom:0;width:1px;height:1px;pointer-events:none";
  document.body.appendChild(dot);
  let n = 0;
  window.puppetTestTicker = true;
  (function tick() {
    dot.style.background = `rgba(0,0,0,${(n++ % 2) / 255})`;
    requestAnimationFrame(tick);
  })();
})()"""


# The WebGL canvas of puppet's page (window.puppetRenderer), read back as base64 RGBA, with
# ``extra`` (a JS expression) evaluated alongside it.
_READ_CANVAS = """(() => {
  const gl = window.puppetRenderer.gl;
  const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
  const pixels = new Uint8Array(w * h * 4);
  gl.bindFramebuffer(gl.FRAMEBUFFER, null);
  gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
  let text = "";
  for (let i = 0; i < pixels.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, pixels.subarray(i, i + 0x8000));
  }
  return [w, h, btoa(text), EXTRA];
})()"""


def open_square_page(profile: Path, size: int, *flags: str) -> DevTools:
    """Headless Chromium (extra command-line ``flags``) with a ``size`` x ``size`` page."""
    devtools = DevTools(chromium_path(), profile, size, size, flags)
    devtools.page("Page.enable")
    devtools.page(
        "Emulation.setDeviceMetricsOverride", width=size, height=size, deviceScaleFactor=1,
        mobile=False,
    )  # fmt: skip
    return devtools


def read_webgl_canvas(devtools: DevTools, extra: str = "null") -> tuple[np.ndarray, object]:
    """(the canvas as RGBA uint8 rows top-down, the value of ``extra``)."""

    width, height, data, value = devtools.evaluate(_READ_CANVAS.replace("EXTRA", extra))
    pixels = np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)
    return pixels[::-1], value  # GL rows run bottom-up


class DevTools:
    """A minimal Chrome DevTools Protocol client over the pipe (fd 3 in, fd 4 out)."""

    def __init__(
        self, executable: str, profile: Path, width: int, height: int, flags: tuple[str, ...] = ()
    ) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_pipes() -> None:  # in the child, before exec
            # Copy above 4 first: dup2 onto the same number would keep close-on-exec.
            high_r, high_w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--remote-debugging-pipe",
            f"--window-size={width},{height}", *flags, "about:blank",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, close_fds=False, preexec_fn=wire_pipes,  # noqa: PLW1509 - single-threaded use
            stdout=subprocess.DEVNULL, stderr=open(profile.parent / "chromium.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = next(
            t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"
        )
        self.session = self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                break
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._cond:
                        self._replies[message["id"]] = message
                        self._cond.notify_all()

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: self._next_id in self._replies, timeout=30):
                raise TimeoutError(f"no reply to {method}")
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str):  # noqa: ANN201
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.002) -> float:
        """Poll until the expression is truthy; returns the seconds it took."""
        start = time.perf_counter()
        while not self.evaluate(expression):
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{expression} still false after {timeout} s")
            time.sleep(interval)
        return time.perf_counter() - start

    def screenshot_rgba(self) -> np.ndarray:
        """The page as the compositor draws it, with the page background left transparent.

        Headless Chromium answers Page.captureScreenshot only once its compositor produces a new
        frame, and an idle page produces none (the call then never returns). So a 1-px element in
        the bottom-right corner flips between alpha 0 and 1/255 on every animation frame; the
        tests never look at that pixel."""
        self.evaluate(KEEP_COMPOSITOR_AWAKE)
        png = base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.ndim == 3 and image.shape[2] == 4, "screenshot has no alpha channel"
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - the process is killed below anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_child)


@pytest.fixture
def chromium(tmp_path: Path):
    devtools = DevTools(chromium_path(), tmp_path / "profile", W, H)
    devtools.page("Page.enable")
    devtools.page(
        "Emulation.setDeviceMetricsOverride", width=W, height=H, deviceScaleFactor=1, mobile=False
    )
    devtools.page("Emulation.setDefaultBackgroundColorOverride", color={"r": 0, "g": 0, "b": 0,
                                                                         "a": 0})  # fmt: skip
    yield devtools
    devtools.close()


def disc(cx: int, colour: tuple[int, int, int]) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    frame = np.zeros((H, W, 4), np.uint8)
    frame[(xx - cx) ** 2 + (yy - H // 2) ** 2 < 20**2] = (*colour, 255)
    return frame


def test_page_shows_live_frames_with_transparency(chromium: DevTools) -> None:
    output = BrowserOutput(port=0)
    try:
        assert output.url.startswith("http://127.0.0.1:")
        output.send(disc(30, (255, 0, 0)))
        chromium.page("Page.navigate", url=output.url)
        chromium.wait_for("window.puppetSeq === 1")
        shot = chromium.screenshot_rgba()
        assert shot.shape == (H, W, 4)
        assert tuple(shot[H // 2, 30]) == (255, 0, 0, 255)  # the character: opaque
        assert shot[5, 5, 3] == 0 and shot[H // 2, 100, 3] == 0  # the page: transparent
        assert np.mean(shot[..., 3] > 0) == pytest.approx(np.pi * 20**2 / (W * H), rel=0.1)
        # The canvas pixels themselves.
        pixel = "Array.from(document.getElementById('puppet').getContext('2d')" \
                ".getImageData({x}, {y}, 1, 1).data)"  # fmt: skip
        assert chromium.evaluate(pixel.format(x=30, y=H // 2)) == [255, 0, 0, 255]
        assert chromium.evaluate(pixel.format(x=100, y=H // 2)) == [0, 0, 0, 0]

        # The page follows new frames: the disc moves right and turns blue.
        latencies = []
        for seq in range(2, 12):
            output.send(disc(30 + 7 * (seq - 1), (0, 0, 255)))
            latencies.append(chromium.wait_for(f"window.puppetSeq === {seq}"))
        shot = chromium.screenshot_rgba()
        assert tuple(shot[H // 2, 100]) == (0, 0, 255, 255)
        assert shot[H // 2, 30, 3] == 0
        print(
            f"browser send->drawn latency: median {1000 * np.median(latencies):.1f} ms, "
            f"max {1000 * max(latencies):.1f} ms; PNG encode {output.mean_encode_ms:.2f} ms"
        )
        assert np.median(latencies) < 0.5
    finally:
        output.close()


def test_only_the_newest_frame_is_encoded_and_disconnects_are_harmless() -> None:
    output = BrowserOutput(port=0)
    try:
        for i in range(50):
            output.send(disc(20 + i, (0, 200, 0)))
        with urllib.request.urlopen(f"{output.url}frame?after=0", timeout=5) as response:
            assert response.headers["X-Frame-Seq"] == "50"
            image = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(
            cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA), disc(69, (0, 200, 0))
        )
        assert output._latest.encodes == 1  # the 49 stale frames were never encoded
        # Clients that go away in the middle of a long poll and mid-response.
        with socket.create_connection(("127.0.0.1", output.port)) as sock:
            sock.sendall(b"GET /frame?after=50 HTTP/1.1\r\nHost: x\r\n\r\n")
        with socket.create_connection(("127.0.0.1", output.port)) as sock:
            # Linger 0: the close sends a reset, like a browser tab killed mid-request.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"GET /frame?after=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        for i in range(5):
            output.send(disc(60 - i, (0, 200, 0)))
            time.sleep(0.01)
        with urllib.request.urlopen(f"{output.url}frame?after=50", timeout=5) as response:
            assert response.headers["X-Frame-Seq"] == "55"
        with urllib.request.urlopen(f"{output.url}latest.png", timeout=5) as response:
            assert response.headers["Content-Type"] == "image/png"
        with urllib.request.urlopen(output.url, timeout=5) as response:
            page = response.read().decode()
            assert "background: transparent" in page and "<canvas" in page
        assert output._server.server_address[0] == "127.0.0.1"  # loopback only by default
        with pytest.raises(PuppetError, match="already in use"):
            BrowserOutput(port=output.port)
        with pytest.raises(TypeError):
            output.send(disc(20, (0, 0, 0)).astype(np.float64))
    finally:
        output.close()
        output.close()
