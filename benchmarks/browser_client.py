"""The browser source rendering the student in the page (``--render client``) against PNG
frames (``--render server``), in headless Chromium:

    python benchmarks/browser_client.py [--seconds 8]

Prints one JSON line each for:

- the page's renderer: frames per second at 512x512 (each frame waits for its pixels, so
  it is the whole frame, not the queued commands), the share spent in the pose MLPs on the
  page's CPU, and the GL renderer (SwiftShader here: software GL on the CPU, no GPU);
- a live session per mode (the demo pose track, so no camera tracking, the browser source as
  the only output, the page open as its viewer): loop fps, frames the page drew, bytes on the
  wire per frame (client: pose-stream bytes per loop frame; server: PNG body bytes per frame
  drawn, each PNG response also carrying ~200 B of HTTP headers), and the Python process's
  CPU time per loop frame (``time.process_time``, every thread; Chromium is another process
  and not counted).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_browser import DevTools, chromium_path  # noqa: E402

from puppet.app.live import LiveConfig, run_live  # noqa: E402
from puppet.outputs.base import FrameInfo  # noqa: E402
from puppet.outputs.browser import BrowserOutput  # noqa: E402
from puppet.outputs.web_student import export_web_student  # noqa: E402
from puppet.paths import DEFAULT_STUDENT_DIR, DEMO_TRACK  # noqa: E402
from puppet.pose import PoseVector  # noqa: E402

SIZE = 512
RENDER_LOOP = """(() => {
  const renderer = window.puppetRenderer;
  const gl = renderer.gl;
  gl.canvas.width = %(size)d;
  gl.canvas.height = %(size)d;
  const lower = renderer.lower, upper = renderer.upper;
  let seed = 1;
  const random = () => (seed = (seed * 16807) %% 2147483647) / 2147483647;
  const poses = Array.from({ length: 16 }, () =>
    Float32Array.from(lower, (low, i) => low + (upper[i] - low) * random()));
  const pixel = new Uint8Array(4);
  const frame = (i) => {
    renderer.render(poses[i %% poses.length]);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);  // wait for the frame
  };
  for (let i = 0; i < 5; i++) frame(i);  // warm up (shader compiles, first uploads)
  const n = %(frames)d;
  let start = performance.now();
  for (let i = 0; i < n; i++) frame(i);
  const frameMs = (performance.now() - start) / n;
  const c = renderer.config;
  start = performance.now();
  for (let i = 0; i < n; i++) {
    const x = poses[i %% poses.length];
    c.part_inputs.forEach((inputs, k) => renderer.partMlps[k].run(
      Float32Array.from({ length: inputs.length * (1 + 2 * c.fourier.length) }, () => x[0])));
    renderer.residualMlp.run(x);
  }
  const mlpMs = (performance.now() - start) / n;
  const info = gl.getExtension("WEBGL_debug_renderer_info");
  const name = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
  return { fps: 1000 / frameMs, frame_ms: frameMs, mlp_ms: mlpMs, gl: name };
})()"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _browser(profile: Path) -> DevTools:
    devtools = DevTools(chromium_path(), profile, SIZE, SIZE)
    devtools.page("Page.enable")
    devtools.page("Emulation.setDeviceMetricsOverride", width=SIZE, height=SIZE,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
    return devtools


def renderer_speed(profile: Path, frames: int) -> dict:
    output = BrowserOutput(port=0, student=export_web_student(DEFAULT_STUDENT_DIR))
    browser = _browser(profile)
    try:
        output.send(np.zeros((SIZE, SIZE, 4), np.uint8), FrameInfo(pose=PoseVector()))
        browser.page("Page.navigate", url=output.url)
        browser.wait_for("window.puppetMode === 'webgl2' && window.puppetSeq >= 1", timeout=60)
        result = browser.evaluate(RENDER_LOOP % {"size": SIZE, "frames": frames})
    finally:
        browser.close()
        output.close()
    software = "SwiftShader" in result["gl"]
    return {"renderer": "webgl2", "size": SIZE, "fps": round(result["fps"], 1),
            "frame_ms": round(result["frame_ms"], 2), "mlp_ms": round(result["mlp_ms"], 2),
            "gl": result["gl"], "software_gl": software}  # fmt: skip


def live_session(mode: str, seconds: float, profile: Path) -> dict:
    port = _free_port()
    browser = _browser(profile)
    browser.page("Page.navigate", url=f"http://127.0.0.1:{port}/")  # waits for the server
    counters = "[window.puppetFrames, window.puppetStreamBytes || 0, window.puppetPngBytes]"
    marks: dict = {}

    def mark_after_warm_up() -> None:
        # The page downloads the student and compiles its shaders first: measure after that.
        time.sleep(2.0)
        marks["start"] = (time.process_time(), browser.evaluate(counters), time.perf_counter())

    config = LiveConfig(source=str(DEMO_TRACK), outputs=[f"browser:{port}"],
                        browser_render=mode, seconds=seconds + 2.0)  # fmt: skip
    marker = threading.Thread(target=mark_after_warm_up, daemon=True)
    try:
        marker.start()
        report = run_live(config)
        end_cpu, end_wall = time.process_time(), time.perf_counter()
        end_counts = browser.evaluate(counters)
    finally:
        browser.close()
    cpu0, counts0, wall0 = marks["start"]
    loop_frames = report.frames * (end_wall - wall0) / report.seconds  # frames in the window
    page_frames = end_counts[0] - counts0[0]
    stream_bytes = end_counts[1] - counts0[1]
    png_bytes = end_counts[2] - counts0[2]
    # Client: every loop frame's pose goes out (the page draws the newest when it can);
    # server: one PNG per frame the page drew.
    per_frame = (
        stream_bytes / max(loop_frames, 1) if mode == "client" else png_bytes / max(page_frames, 1)
    )
    return {"render": mode, "loop_fps": round(report.fps, 1), "page_frames": page_frames,
            "wire_bytes_per_frame": round(per_frame),
            "python_cpu_ms_per_frame": round(1000 * (end_cpu - cpu0) / max(loop_frames, 1), 2),
            "stages_ms": {k: round(v.mean_ms, 2) for k, v in report.stages.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--frames", type=int, default=60, help="renderer frames to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(json.dumps(renderer_speed(root / "speed", args.frames)), flush=True)
        for mode in ("client", "server"):
            print(json.dumps(live_session(mode, args.seconds, root / mode)), flush=True)


if __name__ == "__main__":
    main()
