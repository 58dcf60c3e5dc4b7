"""The fault suite (issue 12): every fault a streamer or a renderer can meet ends in one clear
line and intact files. Real subprocesses of the real CLI, real signals, a real full disk (a small
tmpfs when the test may mount one, else RLIMIT_FSIZE) and real read-only folders (a read-only
tmpfs: root ignores chmod). Each test asserts the exit code, the one line, and that no file under
a final name is corrupt or missing."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import wave
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.pose import PoseVector
from puppet.pose_track import (
    PoseFrame,
    SessionRecorder,
    TrackReader,
    read_track,
    write_track,
)

sys.path.insert(0, str(Path(__file__).parent))
from facevideo import make_face_video  # noqa: E402

PUPPET = Path(sys.executable).parent / "puppet"
FAST = ["--poser", "default"]  # the bundled student: ~20 ms a frame


# ------------------------------------------------------------------------------ helpers


# Wide lines: rich would wrap a long path across two lines.
ENV = {**os.environ, "COLUMNS": "1000"}


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", ENV)
    return subprocess.run(
        [str(PUPPET), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def start_cli(*args: str, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("env", ENV)
    return subprocess.Popen(
        [str(PUPPET), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The run ended with ``code`` and an ``error:`` line holding ``needles``, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, text
    return lines[0]


def make_track(path: Path, frames: int, fps: float = 30.0) -> Path:
    """A short moving pose track."""
    poses = []
    for i in range(frames):
        values = np.zeros(45)
        values[0:2] = 0.5 + 0.5 * math.sin(i / 3)  # eyebrows
        values[-6] = math.sin(i / 5)  # head
        poses.append(PoseFrame(i / fps, PoseVector(values).clamped()))
    write_track(path, fps, poses)
    return path


def video_frames(path: Path) -> int:
    """Decoded video frames of a file (fails on a corrupt or stream-less file)."""
    with av.open(str(path)) as container:
        assert container.streams.video, f"{path} has no video stream"
        return sum(1 for _ in container.decode(video=0))


def no_temporaries(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers


def _can_mount() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/puppet-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        )
        if ok.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


# PUPPET_TEST_NO_MOUNT=1 runs the fallbacks (file-size limit, chmod) as a non-root CI would.
CAN_MOUNT = not os.environ.get("PUPPET_TEST_NO_MOUNT") and _can_mount()


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, dict]]:
    """(a folder whose disk fills after a few KB, extra Popen kwargs). A 64 KiB tmpfs, filled
    to its last 8 KiB; where the test may not mount, a 4 KiB file-size limit on the child."""
    folder = tmp_path / "full"
    if CAN_MOUNT:
        with tmpfs(folder, "64k"):
            filler = folder / "filler"
            with contextlib.suppress(OSError), open(filler, "wb") as handle:
                handle.write(b"\0" * (56 << 10))
            yield folder, {}
        return
    folder.mkdir()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 10, 4 << 10))

    yield folder, {"preexec_fn": limit}


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write into, root included (a read-only tmpfs)."""
    folder = tmp_path / "ro"
    if CAN_MOUNT:
        with tmpfs(folder, "1m", read_only=True):
            yield folder
        return
    if os.geteuid() == 0:
        pytest.skip("root without a tmpfs mount: chmod cannot make a folder read-only for root")
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def wait_for(predicate, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the process ended early ({process.returncode}): {err}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def tiny_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring width x height RGBA (a few bytes of data): the kind of
    small file that would decode into gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


# ------------------------------------------------------------------------------ disk full


def test_disk_full_under_the_recording_keeps_the_video_and_valid_jsonl(tmp_path, full_disk):
    """The disk holding --record and a .mov fills mid-session: each is reported once and
    dropped, the session goes on, the video on the healthy disk is complete, the recording
    keeps its complete lines as valid JSONL."""
    folder, extra = full_disk
    if extra:
        pytest.skip("needs a small tmpfs: a file-size limit would stop the healthy video too")
    track = make_track(tmp_path / "drive.jsonl", 40, fps=60)
    video = tmp_path / "healthy.mp4"
    record = folder / "take.jsonl"
    result = run_cli(
        "live", "--source", str(track), "-o", str(video), "-o", str(folder / "big.mov"),
        "--record", str(record), *FAST, **extra,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    text = " ".join(result.stderr.split())
    assert text.count("take.jsonl stopped") == 1 and "big.mov failed" in text, text
    assert not (folder / "big.mov").exists()
    assert video_frames(video) == 40
    if record.exists():  # what it had, as a valid track
        assert len(read_track(record)) < 40
    no_temporaries(folder)


@pytest.mark.parametrize(("name", "frames"), [("out.mov", 30), ("out.mp4", 5)])
def test_disk_full_during_render_is_one_line_and_no_file(tmp_path, full_disk, name, frames):
    """Mid-write (ProRes frames are large) or at the close (mp4 buffers its first 32 KB)."""
    folder, extra = full_disk
    track = make_track(tmp_path / "drive.jsonl", frames)
    result = run_cli("render", str(track), str(folder / name), *FAST, **extra)
    one_line_error(result, 2, name)
    assert not (folder / name).exists()
    no_temporaries(folder)


def test_disk_full_during_track_is_one_line_and_no_file(tmp_path, full_disk):
    folder, extra = full_disk
    face = make_face_video(tmp_path / "face.mp4", frames=30)
    result = run_cli("track", str(face), str(folder / "face.jsonl"), "--tracker", "fast", **extra)
    one_line_error(result, 2, "face.jsonl")
    assert not (folder / "face.jsonl").exists()
    no_temporaries(folder)


def test_session_recorder_drops_a_failed_write_once(tmp_path, caplog):
    """In-process: a recorder whose writes fail keeps the lines it had, valid, and stays quiet
    after the first report."""
    path = tmp_path / "take.jsonl"
    recorder = SessionRecorder(path, 30.0)
    for i in range(5):
        recorder.write(i / 30, PoseVector())
    recorder._handle.flush()  # noqa: SLF001 - five complete lines on disk
    recorder._handle.close()  # noqa: SLF001 - the next write fails like a vanished disk
    recorder._handle = _FailingFile()  # noqa: SLF001
    with caplog.at_level("WARNING"):
        for i in range(5, 10):
            recorder.write(i / 30, PoseVector())
        recorder.close()
    assert recorder.failure and "disk is full" in recorder.failure
    assert len(read_track(path)) == 5
    assert sum("take.jsonl" in r.getMessage() for r in caplog.records) == 1


class _FailingFile:
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ read-only


@pytest.mark.parametrize("name", ["out.mp4", "frames/"])
def test_read_only_folder_for_render(tmp_path, read_only, name):
    track = make_track(tmp_path / "drive.jsonl", 3)
    result = run_cli("render", str(track), f"{read_only}/{name}", *FAST)
    one_line_error(result, 2, str(read_only), "read-only")


def test_read_only_folder_for_track_and_record_and_character_check(tmp_path, read_only):
    face = make_face_video(tmp_path / "face.mp4", frames=3)
    one_line_error(
        run_cli("track", str(face), str(read_only / "t.jsonl"), "--tracker", "fast"),
        2, "read-only",
    )  # fmt: skip
    track = make_track(tmp_path / "drive.jsonl", 3)
    one_line_error(
        run_cli("live", "--source", str(track), "-o", str(tmp_path / "ok.mp4"), "--record",
                str(read_only / "take.jsonl"), *FAST),
        2, "read-only",
    )  # fmt: skip
    assert not (tmp_path / "ok.mp4").exists()  # refused before the session started
    from puppet.paths import DEFAULT_CHARACTER_IMAGE

    one_line_error(
        run_cli("character", "check", str(DEFAULT_CHARACTER_IMAGE), "--out",
                str(read_only / "check.png")),
        2, "read-only",
    )  # fmt: skip


def test_read_only_profile_folder_for_calibrate(tmp_path, read_only):
    face = make_face_video(tmp_path / "face.mp4", frames=40, fps=20)
    env = {**ENV, "PUPPET_CONFIG_DIR": str(read_only / "config")}
    result = run_cli(
        "calibrate", "--source", str(face), "--quick", "--seconds", "0.5", "--tracker", "fast",
        env=env,
    )  # fmt: skip
    one_line_error(result, 2, "read-only")


# ------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_live_like_ctrl_c(tmp_path, signum):
    """The terminal closed or `kill`: the video, the PNG folder and the recording are all
    finished under their final names, as Ctrl+C would leave them."""
    track = make_track(tmp_path / "drive.jsonl", 3000)  # 100 s: the signal comes first
    video, pngs, record = tmp_path / "live.mp4", tmp_path / "frames", tmp_path / "take.jsonl"
    process = start_cli(
        "live", "--source", str(track), "-o", str(video), "-o", f"{pngs}/",
        "--record", str(record), *FAST,
    )  # fmt: skip
    try:
        wait_for(
            lambda: any(
                len(list(p.iterdir())) >= 5 for p in tmp_path.glob(".frames.*.tmp") if p.is_dir()
            ),
            process=process,
        )
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in out + err
    frames = video_frames(video)
    assert frames >= 5
    assert len(list(pngs.glob("*.png"))) == frames
    assert len(read_track(record)) == frames
    no_temporaries(tmp_path)


@pytest.mark.parametrize(("kind", "signum"), [("mov", signal.SIGINT), ("png", signal.SIGTERM)])
def test_ctrl_c_during_render_keeps_a_valid_partial_and_the_old_file(tmp_path, kind, signum):
    """Ctrl+C (or SIGTERM) during a long render: the finished frames are kept, valid, as
    out.partial.EXT (out.partial/ for PNGs); a complete out.EXT from before is left as it was."""
    track = make_track(tmp_path / "drive.jsonl", 3000)
    output = tmp_path / ("out.mov" if kind == "mov" else "out")
    spec = str(output) if kind == "mov" else f"{output}/"
    previous = make_track(tmp_path / "small.jsonl", 3)
    assert run_cli("render", str(previous), spec, *FAST).returncode == 0

    def snapshot() -> object:
        if kind == "mov":
            return output.read_bytes()
        return sorted((p.name, p.read_bytes()) for p in output.iterdir())

    def started() -> bool:
        # ProRes frames are large, so the temporary grows at once (mp4 buffers 32 KB first).
        if kind == "mov":
            return any(p.stat().st_size > 300_000 for p in tmp_path.glob(".out.mov.*.tmp"))
        return any(len(list(p.iterdir())) >= 5 for p in tmp_path.glob(".out.*.tmp"))

    before = snapshot()
    process = start_cli("render", str(track), spec, *FAST)
    try:
        wait_for(started, process=process)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in out + err
    assert snapshot() == before  # the complete render is untouched
    partial = tmp_path / ("out.partial.mov" if kind == "mov" else "out.partial")
    assert partial.name in " ".join(err.split())
    if kind == "mov":
        assert 0 < video_frames(partial) < 3000
    else:
        from PIL import Image

        names = sorted(p.name for p in partial.iterdir())
        assert 5 <= len(names) < 3000 and names[0] == "000000.png"
        for name in names:
            with Image.open(partial / name) as image:
                image.load()  # every kept frame decodes
    no_temporaries(tmp_path)


def test_a_stop_request_waits_for_the_end_of_the_frame():
    """The first Ctrl+C only asks to stop: nothing is raised inside the frame's work (where a
    KeyboardInterrupt in mediapipe's mp.Image printed a traceback); check() raises it. A
    second Ctrl+C aborts at once."""
    from puppet.interrupts import DeferredInterrupt

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or a background job
    with DeferredInterrupt().installed() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here: it must not raise
        assert interrupt.requested.is_set()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before  # put back as it was


def test_sigterm_during_track_keeps_the_existing_track(tmp_path):
    """`track` stopped over an existing complete track: the track stays; the lines done so far
    are kept, valid, as NAME.partial.jsonl."""
    face = make_face_video(tmp_path / "face.mp4", frames=200, fps=30)
    target = make_track(tmp_path / "face.jsonl", 7)
    before = target.read_bytes()
    process = start_cli("track", str(face), str(target), "--tracker", "fast")
    try:
        wait_for(
            lambda: any(p.stat().st_size > 10_000 for p in tmp_path.glob(".face.jsonl.*.tmp")),
            process=process,
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in out + err
    assert target.read_bytes() == before
    assert 0 < len(read_track(tmp_path / "face.partial.jsonl")) < 200
    no_temporaries(tmp_path)


# ------------------------------------------------------------------------------ writers


def test_two_renders_to_one_output_at_once(tmp_path):
    """Each writer has its own temporary: both succeed, and the file is a whole video."""
    track = make_track(tmp_path / "drive.jsonl", 12)
    output = tmp_path / "same.mp4"
    first = start_cli("render", str(track), str(output), *FAST)
    second = start_cli("render", str(track), str(output), *FAST)
    for process in (first, second):
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    assert video_frames(output) == 12
    no_temporaries(tmp_path)


def test_the_same_output_twice_and_the_input_as_output(tmp_path):
    track = make_track(tmp_path / "drive.jsonl", 3)
    one_line_error(
        run_cli("live", "--source", str(track), "-o", str(tmp_path / "a.mp4"), "-o",
                str(tmp_path / "a.mp4"), *FAST),
        2, "named twice",
    )  # fmt: skip
    assert not (tmp_path / "a.mp4").exists()
    face = make_face_video(tmp_path / "face.mp4", frames=3)
    before = face.read_bytes()
    one_line_error(run_cli("render", str(face), str(face), *FAST), 2, "also an input")
    assert face.read_bytes() == before
    one_line_error(
        run_cli("live", "--source", str(track), "-o", str(tmp_path / "b.mp4"), "--record",
                str(track), *FAST),
        2, "also an input",
    )  # fmt: skip
    assert read_track(track).fps == 30.0
    from puppet.atomic import claim

    release = claim(tmp_path / "c.mp4")
    try:
        with pytest.raises(PuppetError, match="named twice"):
            claim(tmp_path / "." / "c.mp4")
    finally:
        release()


def test_a_one_frame_video_is_one_frame(tmp_path):
    face = make_face_video(tmp_path / "one.mp4", frames=1)
    result = run_cli("render", str(face), str(tmp_path / "out.mp4"), "--tracker", "fast", *FAST)
    assert result.returncode == 0, result.stderr
    assert video_frames(tmp_path / "out.mp4") == 1


def test_stale_temporaries_of_a_killed_writer_are_cleaned(tmp_path):
    track = make_track(tmp_path / "drive.jsonl", 3)
    stale = tmp_path / ".out.mp4.abcd1234.tmp"
    stale.write_bytes(b"left by kill -9")
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".out.mp4.efgh5678.tmp"  # maybe another writer's, still running
    fresh.write_bytes(b"busy")
    assert run_cli("render", str(track), str(tmp_path / "out.mp4"), *FAST).returncode == 0
    assert not stale.exists() and fresh.exists()


# ------------------------------------------------------------------------------ bad values


def _bad_track(tmp_path: Path, header_fps: object = 30.0, lines: list[str] | None = None) -> Path:
    path = make_track(tmp_path / "bad.jsonl", 3)
    text = path.read_text().splitlines()
    header = json.loads(text[0])
    header["fps"] = header_fps
    body = text[1:] if lines is None else lines
    path.write_text("\n".join([json.dumps(header), *body]) + "\n")
    return path


def test_bad_tracks_are_one_line(tmp_path):
    zero = json.dumps([0.0] * 45)
    tiny = _bad_track(tmp_path, header_fps=1e-9)
    one_line_error(run_cli("render", str(tiny), str(tmp_path / "o.mp4"), *FAST), 2, "line 1",
                   '"fps" must be a number from 0.1 to 1000')  # fmt: skip
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(os.urandom(4096))
    one_line_error(run_cli("render", str(binary), str(tmp_path / "o.mp4"), *FAST), 2, "line 1")
    # A jump in t: refused at that line, so `live --seconds 5` does not wait for it.
    jump = _bad_track(
        tmp_path, lines=[f'{{"t": 0.0, "pose": {zero}}}', f'{{"t": 1e9, "pose": {zero}}}']
    )
    started = time.monotonic()
    result = run_cli("live", "--source", str(jump), "--seconds", "5", "-o",
                     str(tmp_path / "j.mp4"), *FAST)  # fmt: skip
    one_line_error(result, 2, "line 3", "jumps")
    assert time.monotonic() - started < 60
    assert video_frames(tmp_path / "j.mp4") == 1  # the frame before the bad line, kept
    assert not (tmp_path / "o.mp4").exists()


def test_bad_options_are_one_line(tmp_path):
    track = make_track(tmp_path / "drive.jsonl", 3)
    out = str(tmp_path / "o.mp4")
    for option in (["--seconds", "nan"], ["--seconds", "-1"], ["--fps", "inf"],
                   ["--port", "99999"], ["--port", "-1"], ["--frames", "0"],
                   ["--overlap", "1.5"], ["--overlap", "nan"]):  # fmt: skip
        one_line_error(
            run_cli("live", "--source", str(track), "-o", out, *option, *FAST),
            2, option[0],
        )  # fmt: skip
    one_line_error(
        run_cli("live", "--source", str(track), "-o", "browser:99999", *FAST), 2, "65535"
    )
    assert not Path(out).exists()


def test_port_in_use_names_the_real_option(tmp_path):
    track = make_track(tmp_path / "drive.jsonl", 3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("live", "--source", str(track), "-o", "browser", "--port", str(port),
                         *FAST)  # fmt: skip
    line = one_line_error(result, 2, "already in use", "--port")
    assert "--browser-port" not in line


@pytest.mark.parametrize(
    ("size", "needle"),
    [
        ((7000, 7000), "40 megapixels"),
        ((10000, 10000), "40 megapixels"),  # above PIL's warning threshold: no extra line
        ((20000, 20000), "character image"),  # PIL refuses at open: still one line
    ],
)
def test_huge_images_are_refused_before_decoding(tmp_path, size, needle):
    image = tiny_png(tmp_path / "huge.png", *size)
    track = make_track(tmp_path / "drive.jsonl", 3)
    started = time.monotonic()
    result = run_cli("render", str(track), str(tmp_path / "o.mp4"), "--character", str(image))
    one_line_error(result, 2, needle)
    assert "Warning" not in result.stderr, result.stderr
    assert time.monotonic() - started < 60


def test_student_manifest_that_is_a_list_and_nan_weights(tmp_path):
    from safetensors.numpy import load_file, save_file

    from puppet.paths import DEFAULT_STUDENT_DIR

    student = tmp_path / "student"
    shutil.copytree(DEFAULT_STUDENT_DIR, student)
    track = make_track(tmp_path / "drive.jsonl", 3)
    manifest = student / "manifest.json"
    good_manifest = manifest.read_text()
    manifest.write_text("[1, 2]")
    one_line_error(
        run_cli("render", str(track), str(tmp_path / "o.mp4"), "--poser", f"student:{student}"),
        2, "manifest.json",
    )  # fmt: skip
    manifest.write_text(good_manifest)
    weights = student / "student.safetensors"
    tensors = load_file(str(weights))
    save_file({k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
               for k, v in tensors.items()}, str(weights))  # fmt: skip
    one_line_error(
        run_cli("render", str(track), str(tmp_path / "o.mp4"), "--poser", f"student:{student}"),
        2, "NaN",
    )  # fmt: skip
    assert not (tmp_path / "o.mp4").exists()


def _write_wav(path: Path, rate: int, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def test_bad_wavs_are_one_line(tmp_path):
    from puppet.mapping.lipsync import LipSync

    empty = _write_wav(tmp_path / "empty.wav", 48000, np.zeros(0))
    with pytest.raises(PuppetError, match="no audio"):
        LipSync(empty)
    rate0 = _write_wav(tmp_path / "rate0.wav", 48000, np.zeros(4800))
    data = bytearray(rate0.read_bytes())
    data[24:28] = struct.pack("<I", 0)  # the fmt chunk's sample rate
    rate0.write_bytes(bytes(data))
    with pytest.raises(PuppetError, match="0 Hz"):
        LipSync(rate0)
    # Through the CLI: one line before the session starts, the output never created.
    face = make_face_video(tmp_path / "face.mp4", frames=3)
    result = run_cli("live", "--source", str(face), "--lipsync", str(empty), "-o",
                     str(tmp_path / "o.mp4"), "--tracker", "fast", *FAST)  # fmt: skip
    one_line_error(result, 2, "empty.wav", "no audio")
    assert not (tmp_path / "o.mp4").exists()


PROFILE_HEAD = 'version = 1\nname = "p"\n'


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("[idle]\nblink_min_s = -1.0\nblink_max_s = -1.0\n", ["blink_min_s", ">= 0.2"]),
        ("[idle]\nblink_min_s = 0.0\nblink_max_s = 0.0\nblink_duration_s = [0.0, 0.0]\n",
         ["blink_min_s"]),
        ('[idle]\nblink_duration_s = ["a", "b"]\n', ["blink_duration_s", "wrong type"]),
        ("[idle]\nhold_s = nan\n", ["hold_s"]),
        ("[idle]\nbreaths_per_minute = 0.0\n", ["breaths_per_minute"]),
        ("[mapper]\njaw_open_min = inf\n", ["mapper.jaw_open_min", "finite"]),
        ('[mapper]\ngeo_iris_range = ["x", 1]\n', ["mapper.geo_iris_range"]),
        ("[mapper]\njaw_open_min = 0.5\njaw_open_max = 0.5\n", ["jaw_open_min", "below"]),
        ("[mapper]\nhead_x_max_deg = 0.0\n", ["head_x_max_deg", "above 0"]),
        ("[geometry]\neye_left = [0.3, 0.3]\n", ["geometry.eye_left", "low below high"]),
        ("[gains]\nhead_x = nan\n", ["gains.head_x"]),
        ("[smoothing]\nEYE = [nan, 1.0]\n", ["EYE"]),
        ('neutral = "x"\n', ["[neutral] must be a table"]),
    ],
)  # fmt: skip
def test_bad_profiles_name_the_file_and_key(tmp_path, body, needles):
    from puppet.mapping.calibration import load_profile

    path = tmp_path / "bad.toml"
    path.write_text(PROFILE_HEAD + body)
    with pytest.raises(PuppetError) as info:
        load_profile(path)
    for needle in [str(path), *needles]:
        assert needle in str(info.value)


def test_bad_profile_through_the_cli(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(PROFILE_HEAD + "[idle]\nblink_min_s = -1.0\nblink_max_s = -1.0\n")
    face = make_face_video(tmp_path / "face.mp4", frames=3)
    result = run_cli("render", str(face), str(tmp_path / "o.mp4"), "--profile", str(path),
                     "--tracker", "fast", *FAST)  # fmt: skip
    one_line_error(result, 2, "bad.toml", "blink_min_s")


def test_auto_blink_never_hangs_on_unchecked_settings():
    """Settings built without the checks (blink interval and duration 0) still schedule a
    bounded number of blinks: the old loop never ended and grew memory by 50 MB/s."""
    from puppet.mapping.idle import AutoBlink, IdleSettings

    settings = IdleSettings(blink_min_s=-1.0, blink_max_s=-1.0, blink_duration_s=(0.0, 0.0))
    done = threading.Event()
    blink = AutoBlink(settings)

    def schedule() -> None:
        blink.schedule(30.0)
        done.set()

    threading.Thread(target=schedule, daemon=True).start()
    assert done.wait(10.0), "AutoBlink's schedule did not finish"
    assert len(blink.schedule(30.0)) < 1000


# ------------------------------------------------------------------------------ browser


@pytest.fixture
def browser():
    from puppet.outputs.browser import BrowserOutput

    output = BrowserOutput(port=0)
    output.send(np.zeros((8, 8, 4), np.uint8))
    yield output
    output.close()


def _get(port: int, path: str, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    connection.putheader("Host", host)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_browser_refuses_foreign_host_headers(browser):
    port = browser.port
    assert _get(port, "/latest.png", f"127.0.0.1:{port}") == 200
    assert _get(port, "/latest.png", f"localhost:{port}") == 200
    assert _get(port, "/latest.png", f"evil.example:{port}") == 421  # DNS rebinding
    assert _get(port, "/", "attacker.test") == 421


def test_browser_times_out_idle_connections_and_caps_viewers(monkeypatch):
    from puppet.outputs import browser as module

    monkeypatch.setattr(module._Handler, "timeout", 0.5)  # noqa: SLF001
    monkeypatch.setattr(module, "LONG_POLL_SECONDS", 1.0)
    output = module.BrowserOutput(port=0)
    output.send(np.zeros((8, 8, 4), np.uint8))
    port = output.port
    try:
        idle = socket.create_connection(("127.0.0.1", port))
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed by the server, not left open
        idle.close()
        viewers = []
        for _ in range(module.MAX_VIEWERS):  # pages waiting in the long poll
            viewer = socket.create_connection(("127.0.0.1", port))
            viewer.sendall(
                f"GET /frame?after=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            )
            viewers.append(viewer)
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(64).startswith(b"HTTP/1.1 503")
        extra.close()
        for viewer in viewers:
            viewer.close()
        time.sleep(1.5)  # their long polls end and free the slots
        assert _get(port, "/", f"127.0.0.1:{port}") == 200
    finally:
        output.close()


# ------------------------------------------------------------------------------ long tracks


def test_long_tracks_stream(tmp_path):
    """First frame at once and flat memory, whatever the length."""
    path = tmp_path / "long.jsonl"
    line = json.dumps({"t": 0.0, "pose": [0.123456] * 45})
    with open(path, "w") as handle:
        handle.write(make_track(tmp_path / "h.jsonl", 1).read_text().splitlines()[0] + "\n")
        for i in range(40_000):
            handle.write(line.replace('"t": 0.0', f'"t": {i / 30:.6f}', 1) + "\n")
    started = time.monotonic()
    tracemalloc.start()
    try:
        with TrackReader(path) as reader:
            next(reader)
            assert time.monotonic() - started < 1.0
            count = 1 + sum(1 for _ in reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 40_000
    assert peak < 5 << 20, peak  # the whole track would be ~100 MB of Python objects
