"""The browser output: a local web page that shows the live frames with real transparency, for
OBS's Browser Source (any OS, no driver).

Add a Browser Source in OBS with the URL ``http://127.0.0.1:8787/`` and the width/height of the
frames; the page's background is transparent, so the character sits on the scene without a
chroma key.

How frames travel: the page runs a fetch loop against ``/frame?after=SEQ``, a long poll that
answers as soon as a frame newer than SEQ exists (or with 204 after 10 s). Only the newest frame
is kept: a slow client simply skips the frames it missed, and nothing queues up. Each frame is
encoded once, lazily, on the first request that wants it (PNG, zlib level 1 with the RLE
strategy: lossless, about 7 ms and 110 KiB for a 512x512 character on one core), on the HTTP
thread, so ``send`` only copies the frame. With no page open nothing is encoded. The page draws
each frame into a ``<canvas>`` scaled to fit the window. ``/latest.png`` returns the current
frame at once.

Client rendering (``BrowserOutput(student=...)``, ``puppet live -o browser --render client``):
the page downloads the puppet student once (``/student.json`` + ``/student.bin``, made by
``puppet.outputs.web_student``, and the renderer ``/student_renderer.js``), then renders it
itself with WebGL2 at the canvas size. After that only poses travel: ``/poses`` is one endless
binary response of ``POSE_RECORD_BYTES`` (184) bytes a frame (uint32 sequence number and 45
float32, little-endian), the newest pose whenever there is one newer than the last sent (a
slow page skips poses, nothing queues in the server); the stream ends after
``LONG_POLL_SECONDS`` without a pose and the page reconnects. A browser without WebGL2 says so
on the page and long-polls ``/frame`` for PNGs as in server mode; those frames are rendered
from the pose by the output's own student poser, loaded on the first such request, so the
live loop need not run its poser for this output (``needs_frames`` is False).

The server listens on 127.0.0.1 only, unless another ``host`` is given explicitly.
Client disconnects are handled on the server's threads and never reach ``send``.

Limits: a request whose ``Host`` header is not ``127.0.0.1``, ``localhost``, ``[::1]`` or the
address the server is bound to gets 421 (so a web page on another site, reached through DNS
rebinding, cannot read the frames); a connection idle for ``IDLE_TIMEOUT_S`` (20 s) is closed;
at most ``MAX_VIEWERS`` (8) connections are served at once, further ones get 503 at once
(without a thread), so viewers cannot slow the live loop by more than a few percent.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

import numpy as np

from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo
from puppet.outputs.compose import check_frame
from puppet.pose import NUM_PARAMETERS

if TYPE_CHECKING:  # the exporter needs OpenCV; server mode does not load it
    from puppet.outputs.web_student import WebStudent

log = logging.getLogger(__name__)

DEFAULT_PORT = 8787
LONG_POLL_SECONDS = 10.0
IDLE_TIMEOUT_S = 20.0  # a connection with no request for this long is closed
MAX_VIEWERS = 8  # connections served at once; more get 503 (an OBS scene needs one or two)
POSE_RECORD = struct.Struct(f"<I{NUM_PARAMETERS}f")  # sequence number, pose
POSE_RECORD_BYTES = POSE_RECORD.size  # 184

# The PNG long-poll loop: the server-mode page, and the client-mode page without WebGL2.
_PNG_LOOP = """
window.puppetSeq = 0;      // sequence number of the frame on screen (read by tests)
window.puppetFrames = 0;   // frames drawn
window.puppetPngBytes = 0; // PNG bytes received (read by benchmarks)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Long-poll loop: ask for the frame after the one shown; the server answers with the newest.
async function showPngFrames(canvas) {
  const context = canvas.getContext("2d");
  let seq = 0;
  for (;;) {
    try {
      const response = await fetch(`frame?after=${seq}`, { cache: "no-store" });
      if (response.status === 200) {
        const next = Number(response.headers.get("X-Frame-Seq"));
        const blob = await response.blob();
        window.puppetPngBytes += blob.size;
        const bitmap = await createImageBitmap(blob);
        if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
          canvas.width = bitmap.width;
          canvas.height = bitmap.height;
        }
        context.clearRect(0, 0, canvas.width, canvas.height);
        context.drawImage(bitmap, 0, 0);
        bitmap.close();
        seq = next;
        window.puppetSeq = next;
        window.puppetFrames += 1;
      } else if (response.status !== 204) {
        await sleep(500);
      }
    } catch (error) {
      await sleep(500);  // server restarting or gone: retry
    }
  }
}
"""

_STYLE = """<style>
html, body { margin: 0; height: 100%; background: transparent; overflow: hidden; }
canvas { display: block; width: 100%; height: 100%; object-fit: contain; }
#message { position: fixed; left: 0; right: 0; top: 0; padding: 8px; font: 16px sans-serif;
  color: #fff; background: rgba(160, 0, 0, 0.85); }
</style>"""

PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>puppet</title>
{_STYLE}</head>
<body><canvas id="puppet" width="1" height="1"></canvas>
<script>
"use strict";
{_PNG_LOOP}
showPngFrames(document.getElementById("puppet"));
</script></body></html>
"""

CLIENT_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>puppet</title>
{_STYLE}</head>
<body><canvas id="puppet"></canvas>
<script src="student_renderer.js"></script>
<script>
"use strict";
{_PNG_LOOP}
const RECORD = {POSE_RECORD_BYTES};
window.puppetMode = "starting";  // "webgl2" or "png" once chosen (read by tests)

function fallBack(reason) {{
  const message = document.createElement("div");
  message.id = "message";
  message.textContent = `puppet: ${{reason}}, so this page cannot draw the character itself. ` +
    "It shows PNG frames from puppet instead, which costs puppet more CPU. In OBS, turn on " +
    "Settings > Advanced > Browser Source Hardware Acceleration and restart OBS.";
  document.body.appendChild(message);
  console.warn(message.textContent);
  setTimeout(() => {{ message.style.display = "none"; }}, 15000);  // keep the scene clean
  const canvas = document.createElement("canvas");  // the WebGL canvas cannot do 2D
  document.getElementById("puppet").replaceWith(canvas);
  canvas.id = "puppet";
  window.puppetMode = "png";
  showPngFrames(canvas);
}}

async function download() {{
  for (;;) {{  // the server may not be up yet: wait for it
    try {{
      const manifest = await fetch("student.json", {{ cache: "no-store" }});
      const weights = await fetch("student.bin", {{ cache: "no-store" }});
      if (manifest.ok && weights.ok) return [await manifest.json(), await weights.arrayBuffer()];
    }} catch (error) {{}}
    await sleep(500);
  }}
}}

async function followPoses(renderer, canvas) {{
  let latest = null;
  let scheduled = false;
  const draw = () => {{
    scheduled = false;
    const width = Math.max(1, Math.round(canvas.clientWidth * devicePixelRatio));
    const height = Math.max(1, Math.round(canvas.clientHeight * devicePixelRatio));
    if (canvas.width !== width || canvas.height !== height) {{
      canvas.width = width;
      canvas.height = height;
    }}
    renderer.render(latest.pose);
    window.puppetSeq = latest.seq;
    window.puppetFrames += 1;
  }};
  window.puppetStreamBytes = 0;
  for (;;) {{
    try {{
      const response = await fetch("poses", {{ cache: "no-store" }});
      if (response.status !== 200) {{ await sleep(500); continue; }}
      const reader = response.body.getReader();
      let pending = new Uint8Array(0);
      for (;;) {{
        const {{ value, done }} = await reader.read();
        if (done) break;
        window.puppetStreamBytes += value.length;
        const joined = new Uint8Array(pending.length + value.length);
        joined.set(pending);
        joined.set(value, pending.length);
        const records = Math.floor(joined.length / RECORD);
        pending = joined.slice(records * RECORD);
        if (records === 0) continue;
        // Only the newest pose of what arrived is drawn, on the next animation frame.
        const view = new DataView(joined.buffer, (records - 1) * RECORD, RECORD);
        const pose = new Float32Array({NUM_PARAMETERS});
        for (let i = 0; i < pose.length; i++) pose[i] = view.getFloat32(4 + 4 * i, true);
        latest = {{ seq: view.getUint32(0, true), pose }};
        if (!scheduled) {{
          scheduled = true;
          requestAnimationFrame(draw);
        }}
      }}
    }} catch (error) {{
      await sleep(500);  // server restarting or gone: reconnect
    }}
  }}
}}

async function main() {{
  const canvas = document.getElementById("puppet");
  const options = {{ alpha: true, premultipliedAlpha: false, preserveDrawingBuffer: true,
    antialias: false, depth: false, stencil: false }};
  const gl = canvas.getContext("webgl2", options);
  if (!gl) return fallBack("this browser has no WebGL2");
  if (!gl.getExtension("EXT_color_buffer_float")) {{
    return fallBack("this browser's WebGL2 has no float render targets (EXT_color_buffer_float)");
  }}
  const [manifest, weights] = await download();
  let renderer;
  try {{
    renderer = new PuppetStudent.Renderer(gl, manifest, weights);
  }} catch (error) {{
    return fallBack(`the student does not load in WebGL2 (${{error.message}})`);
  }}
  window.puppetRenderer = renderer;
  window.puppetMode = "webgl2";
  followPoses(renderer, canvas);
}}
main();
</script></body></html>
"""


def encode_png(frame: np.ndarray) -> bytes:
    """Straight RGBA uint8 -> PNG bytes (lossless; fast settings)."""
    import cv2

    ok, buffer = cv2.imencode(
        ".png",
        cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA),
        [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE],
    )
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


class _LatestFrame:
    """The newest frame (server mode) or pose (client mode) and its PNG, shared between
    ``send`` and the HTTP threads. ``render`` (client mode) makes a frame from a pose when a
    page asks for a PNG; it is called under the encode lock, one frame at a time."""

    def __init__(self, render: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()
        self._render = render
        self.seq = 0
        self._frame: np.ndarray | None = None
        self._pose: np.ndarray | None = None
        self._png: bytes = b""
        self._png_seq = 0
        self.closed = False
        self.encodes = 0
        self.encode_seconds = 0.0

    def put(self, frame: np.ndarray | None, pose: np.ndarray | None = None) -> None:
        with self._cond:
            self._frame, self._pose = frame, pose
            self.seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def pose_after(self, after: int, timeout: float) -> bytes | None:
        """Wait up to ``timeout`` for a pose newer than seq ``after``; its ``POSE_RECORD``
        (the newest pose), or None on timeout or close."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.closed or (self._pose is not None and self.seq != after), timeout
            )
            if self.closed or self._pose is None or self.seq == after:
                return None
            return POSE_RECORD.pack(self.seq, *self._pose)

    def newer_than(self, after: int | None, timeout: float) -> tuple[int, bytes] | None:
        """Wait up to ``timeout`` for a frame whose seq differs from ``after`` (None: any frame)
        and return (seq, png); None on timeout or close."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.closed or (self.seq > 0 and self.seq != after), timeout
            )
            if self.closed or self.seq == 0 or self.seq == after:
                return None
            seq, frame, pose = self.seq, self._frame, self._pose
            if self._png_seq == seq:
                return seq, self._png
        with self._encode_lock:  # one encode per frame, however many clients
            with self._cond:
                if self._png_seq == seq:
                    return seq, self._png
            start = time.perf_counter()
            if frame is None:
                assert self._render is not None and pose is not None
                frame = self._render(pose)
            png = encode_png(frame)
            with self._cond:
                self.encodes += 1
                self.encode_seconds += time.perf_counter() - start
                if seq > self._png_seq:
                    self._png, self._png_seq = png, seq
        return seq, png


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per page
    # Headers and body go out in two writes; with Nagle's algorithm the body would wait for
    # the client's delayed ACK (~40 ms per frame).
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S  # socket timeout: an idle keep-alive connection is closed
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self.server.host_allowed(self.headers.get("Host")):
            self._reply(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host", "text/plain")
            self.close_connection = True
            return
        url = urlparse(self.path)
        student = self.server.student
        if url.path in ("/", "/index.html"):
            page = PAGE if student is None else CLIENT_PAGE
            self._reply(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif student is not None and url.path in _STUDENT_FILES:
            content_type, body = _STUDENT_FILES[url.path](student)
            self._reply(HTTPStatus.OK, body, content_type)
        elif student is not None and url.path == "/poses":
            self._stream_poses()
        elif url.path == "/frame":
            after_text = parse_qs(url.query).get("after", ["0"])[0]
            after = int(after_text) if after_text.isdigit() else 0
            found = self.server.latest.newer_than(after, LONG_POLL_SECONDS)
            if found is None:
                self._reply(HTTPStatus.NO_CONTENT, b"", None)
            else:
                self._reply(HTTPStatus.OK, found[1], "image/png", {"X-Frame-Seq": str(found[0])})
        elif url.path == "/latest.png":
            found = self.server.latest.newer_than(None, 0.0)
            if found is None:
                self._reply(HTTPStatus.NOT_FOUND, b"no frame yet", "text/plain")
            else:
                self._reply(HTTPStatus.OK, found[1], "image/png", {"X-Frame-Seq": str(found[0])})
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _stream_poses(self) -> None:
        """One response of pose records, no length: it ends with the connection."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Pose-Record-Bytes", str(POSE_RECORD_BYTES))
        self.end_headers()
        self.close_connection = True
        seq = 0
        while True:
            record = self.server.latest.pose_after(seq, LONG_POLL_SECONDS)
            if record is None:
                return  # idle or closing: the page reconnects
            # The socket timeout bounds a write to a page that stopped reading.
            self.wfile.write(record)
            seq = POSE_RECORD.unpack_from(record)[0]

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("browser output: " + format, *args)


def _renderer_script() -> bytes:
    return resources.files("puppet.outputs").joinpath("web/student_renderer.js").read_bytes()


_STUDENT_FILES: dict[str, Callable[[WebStudent], tuple[str, bytes]]] = {
    "/student.json": lambda student: ("application/json", student.manifest),
    "/student.bin": lambda student: ("application/octet-stream", student.weights),
    "/student_renderer.js": lambda student: ("text/javascript; charset=utf-8", _renderer_script()),
}

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 46\r\n"
    b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many viewers of this puppet browser source"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    latest: _LatestFrame
    student: WebStudent | None = None

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_VIEWERS)
        bound = self.server_address[0]
        self.allowed_hosts = {"127.0.0.1", "localhost", "::1", str(bound), str(address[0])}

    def host_allowed(self, header: str | None) -> bool:
        """The Host header names this server (a loopback name or the bound address)."""
        if not header:
            return False
        host = header.strip().lower()
        if host.startswith("["):  # [::1]:8787
            host = host[1 : host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        return host in self.allowed_hosts

    def process_request(self, request, client_address) -> None:  # noqa: ANN001
        if not self._slots.acquire(blocking=False):
            # Full: answer at once on the accept thread, with no thread for this client.
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        # A page closed mid-response is normal; anything else is logged, never raised.
        log.debug("browser output: client %s dropped", client_address, exc_info=True)


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


class BrowserOutput:
    """Serve the live frames to browsers (see the module docstring).

    ``port=0`` picks a free port (see ``url``). ``host`` other than loopback serves every
    machine that can reach this one: only when asked explicitly. ``student`` (from
    ``export_web_student``): client rendering, the page draws the poses itself and ``send``
    needs ``info.pose``; the frames it is given are not used.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        student: WebStudent | None = None,
    ) -> None:
        self.host = host
        self.student = student
        # The live loop may skip its poser when every output draws poses itself.
        self.needs_frames = student is None
        self._fallback_poser = None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise PuppetError(
                f"The browser output's port must be from 1 to 65535, got {port!r}.",
                "Use e.g. --port 8787.",
            )
        self._latest = _LatestFrame(None if student is None else self._render_fallback)
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PuppetError(
                    f"Port {port} on {host} is already in use (is puppet running twice?).",
                    "Choose another with --port, e.g. --port 8788 (or -o browser:8788).",
                ) from error
            raise PuppetError(
                f"Cannot serve the browser output on {host}:{port}: {error}.",
                "Use --port with a free port above 1024, e.g. --port 8788.",
            ) from error
        self._server.latest = self._latest
        self._server.student = student
        self.port = self._server.server_address[1]
        self.name = f"browser ({self.url})"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="puppet-browser-output", daemon=True,
        )  # fmt: skip
        self._thread.start()
        self.frames_sent = 0
        self._closed = False
        if not _is_loopback(host):
            log.warning("browser output serves %s: anyone on the network can watch", self.url)
        log.info("browser output at %s (OBS: add a Browser Source with this URL)", self.url)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def mean_encode_ms(self) -> float:
        """Mean PNG encode time so far (0 before the first encode)."""
        latest = self._latest
        return 1000.0 * latest.encode_seconds / latest.encodes if latest.encodes else 0.0

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        """Publish a straight-RGBA frame (copied; encoding happens when a page asks), or in
        client mode the pose of ``info`` (``frame`` is ignored)."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        if self.student is None:
            check_frame(frame)
            self._latest.put(np.array(frame, copy=True))
        else:
            if info is None or info.pose is None:
                raise TypeError("client rendering needs the pose: send(frame, FrameInfo(pose=...))")
            values = np.asarray(getattr(info.pose, "values", info.pose), np.float32)
            if values.shape != (NUM_PARAMETERS,):
                raise ValueError(f"pose must have shape ({NUM_PARAMETERS},), got {values.shape}")
            self._latest.put(None, values.copy())
        self.frames_sent += 1

    def _render_fallback(self, pose: np.ndarray) -> np.ndarray:
        """A frame for a page without WebGL2, by a student poser of this output's own (the
        loop's poser may be busy on its thread, or not running at all)."""
        if self._fallback_poser is None:
            from poser_models.student import StudentPoser

            assert self.student is not None
            poser = StudentPoser.from_folder(self.student.folder)
            assert poser.character_path is not None
            poser.load(poser.character_path)
            self._fallback_poser = poser
            log.info("browser output: a page without WebGL2 gets PNG frames")
        return self._fallback_poser.pose(pose)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._latest.close()  # wakes the long polls
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
