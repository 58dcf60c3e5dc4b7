"""``puppet export-web``: the static site, served by a plain static file server, in real headless
Chromium with a fake camera playing a real face video; and the site's clear errors.

The camera video is made at test time from the fixture clip d14.mp4 (../shared/fixtures/faces):
2.5 s of real frames with the eyes open, then 2.5 s of the frames where the reference blendshapes
say they are closed, looped by Chromium. A white square in the clip's black side bar marks the
closed half, so the test knows what the camera shows when it reads the page's pose.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_browser import DevTools, open_square_page, read_webgl_canvas
from typer.testing import CliRunner

from puppet.__main__ import load_app
from puppet.errors import PuppetError
from puppet.mediapipe_web import cached_tasks_vision
from puppet.outputs.web_site import MARKER, export_web_site
from puppet.paths import DEFAULT_STUDENT_DIR
from puppet.pose import INDEX

SIZE = 512
FPS = 10
OPEN_FRAMES = range(213, 238)  # d14: 25 frames, both reference blink scores < 0.2
CLOSED_FRAMES = (110, 111)  # d14: both reference blink scores >= 0.79
PHASE_S = len(OPEN_FRAMES) / FPS
# The mark fills the top of the clip's black left bar; the page reads x 24-40 of the video,
# inside the mark whether or not Chromium crops the 512x512 clip to 480x512 (it does, for the
# page's 640x480 request).
MARK = (slice(0, 60), slice(0, 60))
READ_STATE = """(() => {
  const v = document.getElementById("camera");
  let mark = -1;
  if (v.videoWidth) {
    const c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    const d = g.getImageData(24, 8, 16, 32).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i];
    mark = sum / (d.length / 4);
  }
  const p = window.puppet;
  return { mark, pose: p.pose, observation: p.observation, faces: p.facesSeen };
})()"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        cached_tasks_vision()
    except PuppetError as error:
        pytest.skip(f"{error} (make test fetches it before pytest)")
    out = tmp_path_factory.mktemp("web") / "site"
    export_web_site("default", out)
    return out


@pytest.fixture(scope="module")
def server(site: Path):
    """The site from a plain static file server: no puppet code answers any request."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _write_y4m(path: Path, frames: list[np.ndarray]) -> Path:
    """BGR frames -> an uncompressed YUV4MPEG2 (4:2:0) file, the format of Chromium's
    --use-file-for-fake-video-capture."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def _blink_video(clip: Path, path: Path) -> Path:
    import av

    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    frames = [decoded[i].copy() for i in OPEN_FRAMES]
    for k in range(len(OPEN_FRAMES)):
        closed = decoded[CLOSED_FRAMES[k % len(CLOSED_FRAMES)]].copy()
        closed[MARK] = 255
        frames.append(closed)
    return _write_y4m(path, frames)


def _read_canvas(chromium: DevTools) -> tuple[np.ndarray, np.ndarray]:
    pixels, pose = read_webgl_canvas(chromium, "window.puppet.pose")
    return np.array(pose, np.float32), pixels


def test_the_site_holds_everything_it_loads(site: Path) -> None:
    names = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    for name in (
        "index.html", "site.js", "mapping.js", "mapping.json", "student_renderer.js",
        "student.json", "student.bin", "mediapipe/vision_bundle.mjs",
        "mediapipe/wasm/vision_wasm_internal.wasm", "mediapipe/face_landmarker.task",
        "mediapipe/LICENSE", MARKER,
    ):  # fmt: skip
        assert name in names, name
    assert not any(name.endswith(".py") for name in names)  # no server code
    text = "".join((site / n).read_text() for n in ("index.html", "site.js", "mapping.js"))
    assert "https://" not in text.replace("https or", "")  # nothing from a CDN
    assert (
        b"face_landmarks_detector.tflite" in (site / "mediapipe/face_landmarker.task").read_bytes()
    )


def test_eyes_close_when_the_video_s_do(site: Path, server: str, tmp_path: Path, fixtures_dir):
    from poser_models.student import StudentPoser, rgba_to_premultiplied_linear
    from puppet.training.evaluation import alpha_weighted_psnr

    clip = fixtures_dir / "faces" / "d14.mp4"
    reference = np.array(
        json.loads((fixtures_dir / "faces" / "official_blendshapes.json").read_text())["clips"][
            "d14.mp4"
        ]
    )
    assert reference[list(OPEN_FRAMES), :2].max() < 0.2
    assert reference[list(CLOSED_FRAMES), :2].min() > 0.75
    video = _blink_video(clip, tmp_path / "blinks.y4m")
    start = time.perf_counter()
    chromium = open_square_page(
        tmp_path / "profile",
        SIZE,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    try:
        chromium.page("Page.navigate", url=server)
        chromium.wait_for(
            "window.puppet && puppet.mode === 'webgl2' && puppet.camera === 'on'"
            " && puppet.tracker === 'ready' && puppet.facesSeen > 0",
            timeout=60,
        )
        loaded_s = time.perf_counter() - start
        # Sample what the camera shows and what the character does, until both halves of the
        # loop were seen for long enough (the pose follows the video within a few frames).
        samples, shown_since, last_mark = [], time.perf_counter(), None
        canvases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        deadline = time.perf_counter() + 50
        while time.perf_counter() < deadline:
            state = chromium.evaluate(READ_STATE)
            now = time.perf_counter()
            closed = state["mark"] > 128
            if closed != last_mark:
                shown_since, last_mark = now, closed
            settled = now - shown_since > 0.8 and state["observation"] is not None
            if settled:
                samples.append((closed, state))
                kind = "closed" if closed else "open"
                if kind not in canvases and now - shown_since > 1.2:
                    canvases[kind] = _read_canvas(chromium)
            counts = [sum(1 for c, _ in samples if c is k) for k in (True, False)]
            if min(counts) >= 8 and len(canvases) == 2:
                break
            time.sleep(0.1)
        assert min(counts) >= 8, f"samples (closed, open): {counts}"
        winks = {True: [], False: []}
        for closed, state in samples:
            pose = state["pose"]
            winks[closed].append(min(pose[INDEX["eye_wink_left"]], pose[INDEX["eye_wink_right"]]))
        closed_wink, open_wink = np.median(winks[True]), np.median(winks[False])
        assert closed_wink > 0.6, winks
        assert open_wink < 0.25, winks
        # The page's own tracker saw the blinks, and its head angles are the reference's.
        blinks = {k: [s["observation"]["eyeBlinkLeft"] for c, s in samples if c is k]
                  for k in (True, False)}  # fmt: skip
        assert np.median(blinks[True]) > 0.5 > np.median(blinks[False])
        angles = np.array([s["observation"]["eulerDeg"] for c, s in samples if not c])
        ref = reference[list(OPEN_FRAMES)]
        ref_xyz = np.stack([ref[:, 5], ref[:, 4], ref[:, 6]], axis=1)  # pitch, yaw, roll
        assert np.abs(np.median(angles, 0) - np.median(ref_xyz, 0)).max() < 4.0, angles

        # The character drawn: the student at the page's pose (as Python renders it), and its
        # eyes differ between the two halves.
        poser = StudentPoser.from_folder(DEFAULT_STUDENT_DIR)
        assert poser.character_path is not None
        poser.load(poser.character_path)
        linear = {k: rgba_to_premultiplied_linear(canvases[k][1]) for k in canvases}
        for kind, (pose, _) in canvases.items():
            expected = rgba_to_premultiplied_linear(poser.pose(pose))
            assert alpha_weighted_psnr(expected, linear[kind]) >= 40.0, kind
        assert canvases["closed"][1][0, 0, 3] == 0  # transparent background
        closed_pose, open_pose = canvases["closed"][0], canvases["open"][0]
        assert min(closed_pose[INDEX["eye_wink_left"]], closed_pose[INDEX["eye_wink_right"]]) > 0.5
        assert max(open_pose[INDEX["eye_wink_left"]], open_pose[INDEX["eye_wink_right"]]) < 0.3
        eyes = (
            np.abs(
                poser.pose(np.where(np.arange(45) == INDEX["eye_wink_left"], 1.0, 0.0)).astype(
                    float
                )
                - poser.pose(np.zeros(45, np.float32)).astype(float)
            ).max(axis=2)
            > 40
        )  # where the left eye's closing changes the picture
        change = np.abs(canvases["closed"][1].astype(float) - canvases["open"][1]).max(axis=2)
        assert change[eyes].mean() > 3 * change[~eyes].mean()

        # The mirror toggle switches the mapping's mirror.
        assert chromium.evaluate("puppetMapper.mirrorCharacter") is True
        chromium.evaluate("document.getElementById('mirror').click()")
        assert chromium.evaluate("puppetMapper.mirrorCharacter") is False
        print(
            f"export-web in Chromium: loaded in {loaded_s:.1f} s; eyes (min of the two winks)"
            f" median {closed_wink:.2f} closed / {open_wink:.2f} open; tracked"
            f" {chromium.evaluate('puppet.framesTracked')} frames in"
            f" {time.perf_counter() - start:.0f} s; landmarker"
            f" {chromium.evaluate('puppet.trackMs'):.0f} ms/frame, render call"
            f" {chromium.evaluate('puppet.renderMs'):.0f} ms (CPU delegate, SwiftShader)"
        )
    finally:
        chromium.close()


def test_no_camera_and_no_webgl2_say_so_and_the_character_still_idles(
    site: Path, server: str, tmp_path: Path
) -> None:
    # No fake camera and no WebGL: the page explains both; the pose it shows still blinks.
    chromium = open_square_page(tmp_path / "profile", SIZE, "--disable-3d-apis")
    try:
        chromium.page("Page.navigate", url=server)
        chromium.wait_for(
            "window.puppet && puppet.mode === 'no-webgl2' && puppet.camera !== 'starting'",
            timeout=30,
        )
        message = chromium.evaluate("document.getElementById('message').textContent")
        assert "no WebGL2" in message and "no puppet program behind it" in message
        assert "camera" in message and "idles" in message
        assert chromium.evaluate("document.getElementById('pose').hidden") is False
        wink = f"Math.max(...puppet.history.map(([, p]) => p[{INDEX['eye_wink_left']}]))"
        chromium.wait_for(f"{wink} > 0.9", timeout=15)  # an idle blink
        breathing = [p[INDEX["breathing"]] for _, p in chromium.evaluate("puppet.history")]
        assert max(breathing) - min(breathing) > 0.01
    finally:
        chromium.close()


def test_without_the_cached_package_the_error_names_the_fetch(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PUPPET_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(PuppetError, match="not in puppet's download cache") as caught:
        export_web_site("default", tmp_path / "site")
    assert "export-web --fetch" in caught.value.fix
    assert not (tmp_path / "site").exists()
    result = CliRunner().invoke(load_app(), ["export-web", "default", str(tmp_path / "site")])
    assert result.exit_code == 2
    assert "export-web --fetch" in result.output and "Traceback" not in result.output


def test_an_earlier_export_is_replaced_whole(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    shutil.copytree(site, out)
    (out / "stale.js").write_text("// from an older export")
    written = export_web_site(f"student:{DEFAULT_STUDENT_DIR}", out)
    assert not (out / "stale.js").exists() and (out / "index.html").is_file()
    assert written.bytes == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging folder left


def test_export_refuses_a_folder_of_other_files(site: Path, tmp_path: Path) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(PuppetError, match="not an earlier"):
        export_web_site("default", other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(PuppetError, match="does not exist"):
        export_web_site(tmp_path / "no-student", tmp_path / "out")


def test_cli_hands_the_arguments_to_the_library(tmp_path: Path, monkeypatch) -> None:
    import puppet.outputs.web_site as web_site

    calls = []

    def fake(student, out_dir, **options):  # noqa: ANN001, ANN003, ANN202
        calls.append((student, out_dir, options))
        return web_site.WebSite(Path(out_dir), ("index.html",), 10)

    monkeypatch.setattr(web_site, "export_web_site", fake)
    result = CliRunner().invoke(
        load_app(), ["export-web", "student:/s", str(tmp_path / "o"), "--fetch"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [("student:/s", tmp_path / "o", {"fetch": True, "tarball": None})]
    assert "http.server" in result.output
