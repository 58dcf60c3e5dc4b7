"""The CLI is thin: each option reaches its library call (typer's CliRunner, the heavy call
replaced by a recorder). The error paths run as real subprocesses in test_cli.py."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import puppet
from puppet.__main__ import load_app

app = load_app()
runner = CliRunner()


class Recorder:
    def __init__(self, result: object = None) -> None:
        self.calls: list[tuple[tuple, dict]] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


class _Report:
    def summary(self) -> str:
        return "0 frames"


def test_live_options_reach_the_live_config(monkeypatch, tmp_path):
    import puppet.app.live as live

    recorder = Recorder(_Report())
    monkeypatch.setattr(live, "run_live", recorder)
    result = runner.invoke(
        app,
        ["live", "--source", "clip.mp4", "--output", "vcam", "--output", "out.mp4",
         "--poser", "rig:hana", "--tracker", "fast", "--no-mirror", "--fps", "24",
         "--port", "9000", "--seconds", "5", "--record", str(tmp_path / "r.jsonl")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (config,), _ = recorder.calls[0]
    assert config.source == "clip.mp4" and config.outputs == ["vcam", "out.mp4"]
    assert config.poser == "rig:hana" and config.tracker == "fast" and config.mirror is False
    assert config.fps == 24 and config.browser_port == 9000 and config.seconds == 5
    assert config.record == tmp_path / "r.jsonl"


def test_render_options_reach_the_render_config(monkeypatch, tmp_path):
    import puppet.app.live as live

    recorder = Recorder(_Report())
    monkeypatch.setattr(live, "render", recorder)
    result = runner.invoke(
        app,
        ["render", "face.jsonl", "out/frames/", "--background", "#ffffff", "--poser", "default"],
    )
    assert result.exit_code == 0, result.output
    (config,), kwargs = recorder.calls[0]
    assert config.driver == Path("face.jsonl") and config.output == "out/frames/"
    assert config.background == "#ffffff" and callable(kwargs["progress"])


def test_demo_reaches_run_demo(monkeypatch, tmp_path):
    import puppet.app.demo as demo

    recorder = Recorder(_Report())
    monkeypatch.setattr(demo, "run_demo", recorder)
    result = runner.invoke(app, ["demo", "--output", str(tmp_path / "d.mp4"), "--seconds", "2"])
    assert result.exit_code == 0, result.output
    (output,), kwargs = recorder.calls[0]
    assert output == tmp_path / "d.mp4" and kwargs == {"seconds": 2.0}


def test_a_library_error_is_one_line_and_exit_2(monkeypatch):
    import puppet.app.demo as demo
    from puppet.errors import PuppetError

    def broken(*args, **kwargs):
        raise PuppetError("Something is off.", "Do this instead.")

    monkeypatch.setattr(demo, "run_demo", broken)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 2
    assert "Something is off. Do this instead." in " ".join(result.output.split())


def test_version_and_python_dash_m():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and puppet.__version__ in result.output
    module = subprocess.run([sys.executable, "-m", "puppet", "--version"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert module.returncode == 0 and f"puppet {puppet.__version__}" in module.stdout


def test_doctor_fails_when_a_bundled_asset_is_missing(monkeypatch, tmp_path):
    """A missing face model is a failure with a non-zero exit and a fix that exists."""
    import puppet.app.doctor as doctor

    monkeypatch.setattr(doctor, "FACE_LANDMARKER", tmp_path / "gone.task")
    monkeypatch.setattr("puppet.capture.sources.list_cameras", lambda: [])
    checks = doctor.run_checks()
    face = next(c for c in checks if c.name == "face model")
    assert face.ok is False and "missing" in face.detail and "pip install" in face.fix
    assert all("tools/" not in c.fix for c in checks)  # no script an installed copy lacks
    assert any(c.name == "data folder" for c in checks)
    assert any(c.name == "config folder" for c in checks)


def test_doctor_passes_on_this_install(monkeypatch):

    monkeypatch.setattr("puppet.capture.sources.list_cameras", lambda: [])
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "default poser" in result.output


def test_core_modules_import_without_the_extras():
    """The main job's modules import with torch, skia, scipy, scikit-image and onnx hidden."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'skia', 'scipy', 'skimage', 'onnx',"
        " 'onnxruntime'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import puppet.app.live, puppet.app.bench, puppet.app.doctor, puppet.app.demo\n"
        "import puppet.mapping.calibration, puppet.tracking.tracker, puppet.model_store\n"
        "from puppet.app.live import load_poser\n"
        "from puppet.pose import PoseVector\n"
        "poser = load_poser('default', None, 'cpu')\n"
        "assert poser.pose(PoseVector()).shape == (512, 512, 4)\n"
        "from puppet.errors import PuppetError\n"
        "for spec in ('rig:hana', 'tha3:separable_float'):\n"
        "    try:\n"
        "        load_poser(spec, None, 'cpu')\n"
        "    except PuppetError as error:\n"
        "        print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "puppet[rig]" in lines[0] and "puppet[tha]" in lines[1], lines


@pytest.mark.skipif(importlib.util.find_spec("uv") is None, reason="uv is in the test extra")
def test_no_generic_top_level_module_in_the_wheel(tmp_path):
    """The wheel holds puppet/ (with cli.py and assets/ inside) and poser_models/, no `cli`."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    shutil.rmtree(root / "build", ignore_errors=True)  # setuptools keeps stale files there
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(root)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    shutil.rmtree(root / "build", ignore_errors=True)
    names = zipfile.ZipFile(next(tmp_path.glob("puppet-*.whl"))).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"puppet", "poser_models"}
    for asset in ("puppet/cli.py", "puppet/assets/mediapipe/face_landmarker.task",
                  "puppet/assets/characters/hana/student/student.safetensors",
                  "puppet/assets/driving/demo.jsonl"):  # fmt: skip
        assert asset in names
