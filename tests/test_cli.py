"""The CLI's error paths through real subprocess runs: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from puppet.pose import PoseVector
from puppet.pose_track import PoseFrame, write_track

PUPPET = Path(sys.executable).parent / "puppet"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PUPPET), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, text


@pytest.fixture
def good_track(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    write_track(path, 30.0, [PoseFrame(i / 30, PoseVector()) for i in range(3)])
    return path


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("live", "render", "calibrate", "track", "models", "distill", "bench", "doctor"):
        assert command in result.stdout


def test_missing_driver(tmp_path):
    assert_clean_error(
        run_cli("render", str(tmp_path / "nope.jsonl"), str(tmp_path / "o.mp4")), "not found"
    )


def test_malformed_track_names_the_line(tmp_path, good_track):
    good_track.write_text(good_track.read_text() + '{"t": 1.0, "pose": [1, 2]}\n')
    result = run_cli("live", "--source", str(good_track), "--output", str(tmp_path / "o.mp4"))
    assert_clean_error(result, "line 5", "45 numbers")


def test_unknown_poser_spec(tmp_path, good_track):
    result = run_cli("render", str(good_track), str(tmp_path / "o.mp4"), "--poser", "tha9:x")
    assert_clean_error(result, "Unknown poser 'tha9:x'", "default, student:PATH")
    assert not (tmp_path / "o.mp4").exists()


def test_camera_that_does_not_open(tmp_path):
    """No webcam exists on CI machines: index 7 never opens, which is the path under test."""
    result = run_cli("live", "--source", "7", "--frames", "1", "--output", str(tmp_path / "o.mp4"))
    assert_clean_error(result, "Camera 7 could not be opened")


def test_source_that_is_neither(tmp_path):
    result = run_cli("live", "--source", str(tmp_path / "nothing.mp4"), "--frames", "1")
    assert_clean_error(result, "neither a camera index nor an existing video file")


def test_bad_tracker_option(tmp_path, good_track):
    result = run_cli("render", str(good_track), str(tmp_path / "o.mp4"), "--tracker", "turbo")
    assert_clean_error(result, "Unknown tracker 'turbo'")


def test_character_errors(tmp_path, good_track, fixtures_dir):
    """A THA4-student poser (official fixture weights) with bad character images."""
    student = fixtures_dir / "tha4_student" / "lambda_00"
    spec = f"tha4-student:{student}"
    missing = run_cli(
        "render",
        str(good_track),
        str(tmp_path / "o.mp4"),
        "--poser",
        spec,
        "--character",
        str(tmp_path / "missing.png"),
    )
    assert_clean_error(missing, "missing.png")
    rgb = tmp_path / "photo.jpg"
    Image.fromarray(np.full((512, 512, 3), 128, np.uint8)).save(rgb)
    result = run_cli(
        "render", str(good_track), str(tmp_path / "o.mp4"), "--poser", spec, "--character", str(rgb)
    )
    assert_clean_error(result, "photo.jpg", "RGBA")
