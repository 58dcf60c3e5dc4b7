"""The preview window: HUD drawing headless, the window itself under Xvfb with real key presses
(xdotool). The window runs in a child process: Qt aborts a process whose display goes away."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo, LiveControls
from puppet.outputs.window import (
    BAR_FILL,
    BAR_ROW,
    BARS,
    LANDMARK,
    PreviewWindow,
    checkerboard,
    draw_hud,
    hud_layout,
)
from puppet.pose import PoseVector


def character(h: int = 320, w: int = 240) -> np.ndarray:
    frame = np.zeros((h, w, 4), np.uint8)
    frame[100:200, 80:160] = (255, 0, 0, 255)  # opaque red block
    frame[220:240, 80:160] = (0, 0, 255, 128)  # half-transparent blue strip
    return frame


def full_info() -> FrameInfo:
    pose = PoseVector()
    pose["mouth_aaa"] = 1.0
    pose["eye_wink_left"] = 0.5
    pose["head_x"] = -1.0
    pose["neck_z"] = 0.5
    camera = np.full((120, 160, 3), 90, np.uint8)
    landmarks = np.stack(np.meshgrid(np.linspace(0.2, 0.8, 10), np.linspace(0.2, 0.8, 10)),
                         axis=-1).reshape(-1, 2)  # fmt: skip
    landmarks = np.concatenate([landmarks, np.zeros((100, 1))], axis=1).astype(np.float32)
    return FrameInfo(index=42, t=1.4, fps=29.5, stage_ms={"capture": 2.0, "track": 9.5,
                     "pose": 31.0}, tracking="tracking", pose=pose, camera_frame=camera,
                     landmarks=landmarks)  # fmt: skip


def bar_fill_span(image: np.ndarray, layout, row: int) -> tuple[int, int] | None:  # noqa: ANN001
    bx, by, bw, _ = layout.bars
    y = by + row * BAR_ROW + BAR_ROW // 2
    filled = np.nonzero((image[y, bx : bx + bw] == BAR_FILL).all(axis=1))[0]
    return (int(filled[0]), int(filled[-1]) + 1) if len(filled) else None


def test_draw_hud_contents() -> None:
    frame = character()
    info = full_info()
    image = draw_hud(frame, info)
    layout = hud_layout(frame.shape, info)
    assert image.dtype == np.uint8 and image.shape == (layout.size[1], layout.size[0], 3)
    # The view: the frame over the checkerboard, BGR.
    assert layout.view == (0, 0, 240, 320)
    board = checkerboard(320, 240)
    assert tuple(image[150, 120]) == (0, 0, 255)  # opaque red, as BGR
    assert tuple(image[5, 5]) == tuple(board[5, 5][::-1])  # transparent: the checkerboard
    half = np.round(0.502 * np.array([0, 0, 255]) + 0.498 * board[230, 100]).astype(int)
    assert np.abs(image[230, 100, ::-1].astype(int) - half).max() <= 1
    # The bars: mouth a full, blink L half, head x full to the left, neck z half to the right.
    rows = {name: i for i, (_, name, _) in enumerate(BARS)}
    bw = layout.bars[2]
    assert bar_fill_span(image, layout, rows["mouth_aaa"]) == (0, bw)
    assert bar_fill_span(image, layout, rows["eye_wink_left"]) == (0, bw // 2)
    assert bar_fill_span(image, layout, rows["head_x"]) == (0, bw // 2)
    assert bar_fill_span(image, layout, rows["neck_z"]) == (bw // 2, bw // 2 + bw // 4)
    assert bar_fill_span(image, layout, rows["mouth_iii"]) is None
    # The camera thumbnail with its 100 landmarks.
    tx, ty, tw, th = layout.thumbnail
    assert (tw, th) == (240, 180)
    thumb = image[ty : ty + th, tx : tx + tw]
    assert 90 <= (thumb == LANDMARK).all(axis=2).sum() <= 100
    assert tuple(thumb[0, 0]) == (90, 90, 90)
    # Text is drawn in the panel and on the help line.
    assert (image[: layout.bars[1], 240:] > 200).any()
    assert (image[-20:, :] > 100).any()
    # The HUD follows the info.
    info.pose["mouth_aaa"] = 0.25
    assert bar_fill_span(draw_hud(frame, info), layout, rows["mouth_aaa"]) == (0, round(bw / 4))


def test_draw_hud_without_info_and_with_background() -> None:
    tiny = np.zeros((50, 40, 4), np.uint8)
    tiny[10:20, 10:20] = (0, 255, 0, 255)
    image = draw_hud(tiny, None, background="#FF00FF")
    layout = hud_layout(tiny.shape)
    assert layout.view[3] == 300 and layout.thumbnail is None  # enlarged to be visible
    assert tuple(image[2, 2]) == (255, 0, 255)  # BGR of magenta
    assert tuple(image[90, 90]) == (0, 255, 0)
    with pytest.raises(ValueError):
        draw_hud(tiny[..., :3], None)
    huge = np.zeros((1440, 1000, 4), np.uint8)
    assert hud_layout(huge.shape).view[3] == 720


def test_window_needs_a_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform != "linux":
        pytest.skip("the display check is Linux-specific")
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(PuppetError, match="desktop session.*DISPLAY is not set"):
        PreviewWindow(LiveControls())
    monkeypatch.setenv("DISPLAY", ":93")  # nobody there: must not let Qt abort the process
    with pytest.raises(PuppetError, match="no X server at :93"):
        PreviewWindow(LiveControls())


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from puppet.outputs.base import FrameInfo, LiveControls
    from puppet.outputs.window import PreviewWindow
    controls = LiveControls()
    window = PreviewWindow(controls, title="puppet-test-window")
    frame = np.zeros((200, 160, 4), np.uint8)
    frame[50:150, 40:120] = (255, 128, 0, 255)
    print("open", flush=True)
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "quit" not in seen:
        window.send(frame, FrameInfo(fps=30.0, tracking="idle"))
        seen += controls.take()
        time.sleep(0.01)
    window.close()
    window.close()
    print("actions", ",".join(seen), flush=True)
    """
)


def test_window_under_xvfb_turns_keys_into_requests(tmp_path: Path) -> None:
    xvfb, xdotool = shutil.which("Xvfb"), shutil.which("xdotool")
    if not xvfb or not xdotool:
        pytest.skip("needs Xvfb and xdotool: apt-get install -y xvfb xdotool")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    child = None
    try:
        with os.fdopen(read_fd) as displayfd:
            display = f":{displayfd.readline().strip()}"
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout.readline().strip() == "open"
        window_id = ""
        for _ in range(100):
            found = subprocess.run([xdotool, "search", "--name", "puppet-test-window"], env=env,
                                   capture_output=True, text=True)  # fmt: skip
            if found.stdout.strip():
                window_id = found.stdout.split()[-1]
                break
            time.sleep(0.1)
        assert window_id, "the window never appeared"
        for key in ("m", "1", "c", "q"):
            subprocess.run([xdotool, "windowfocus", "--sync", window_id], env=env, check=False,
                           capture_output=True)  # fmt: skip
            subprocess.run([xdotool, "key", key], env=env, check=True)
            time.sleep(0.2)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        actions = out.strip().rpartition("actions ")[2].split(",")
        assert actions == ["toggle_mirror", "expression:happy", "recalibrate", "quit"], err
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("mirror", [True, False])
def test_hud_landmarks_lie_on_the_face_in_both_mirror_states(mirror: bool) -> None:
    """Real mediapipe on the bench face, moved to the left of the frame so a mirrored mesh would
    land about 60 thumbnail pixels beside it. Where the face is in the thumbnail the user sees is
    found independently, by tracking that thumbnail itself; the drawn dots must be on it."""
    import cv2

    from puppet.app.bench import bench_camera_frame
    from puppet.tracking.tracker import FaceTracker, TrackerOptions

    full = bench_camera_frame()
    camera = np.zeros_like(full)
    camera[:, :480] = full[:, 80:560]  # the face at about x = 0.38 of the frame
    with FaceTracker(TrackerOptions(mode="full", mirror=mirror)) as tracker:
        observation = tracker.detect(camera, 0)
    assert observation is not None
    info = FrameInfo(
        camera_frame=camera, landmarks=observation.landmarks, mirrored=observation.mirrored
    )
    frame = character()
    layout = hud_layout(frame.shape, info)
    assert layout.thumbnail is not None
    tx, ty, tw, th = layout.thumbnail
    with_dots = draw_hud(frame, info)[ty : ty + th, tx : tx + tw]
    clean = draw_hud(frame, FrameInfo(camera_frame=camera, mirrored=observation.mirrored))
    clean = clean[ty : ty + th, tx : tx + tw]
    dots = (with_dots == LANDMARK).all(axis=2) & ~(clean == LANDMARK).all(axis=2)
    ys, xs = np.nonzero(dots)
    assert len(xs) > 200
    # The face where the user sees it: track the displayed thumbnail (enlarged), unmirrored.
    shown = cv2.resize(clean, (tw * 4, th * 4), interpolation=cv2.INTER_CUBIC)
    with FaceTracker(TrackerOptions(mode="full", mirror=False)) as tracker:
        seen = tracker.detect(shown, 0)
    assert seen is not None
    face_x, face_y = seen.landmarks[:, 0].mean() * tw, seen.landmarks[:, 1].mean() * th
    assert abs(xs.mean() - face_x) < 6 and abs(ys.mean() - face_y) < 6
    # And the mouth's dense cluster lies under the real mouth (landmarks 13/14: the lips).
    mouth_x = seen.landmarks[[13, 14], 0].mean() * tw
    drawn_mouth_x = observation.landmarks[[13, 14], 0].mean() * tw
    assert abs(drawn_mouth_x - mouth_x) < 6
