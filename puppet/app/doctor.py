"""`puppet doctor`: what this machine offers puppet, what is missing, and the command that fixes it.

A missing or damaged bundled asset is a failure (``ok=False``): the CLI then exits non-zero.
Optional parts (the THA extra, the rig extra, a camera, a virtual camera) are reported with
the command that adds them, but their absence is not a failure of the core install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass

import puppet
from puppet.atomic import sha256_file
from puppet.paths import (
    DEFAULT_CHARACTER_IMAGE,
    DEFAULT_STUDENT_DIR,
    DEMO_TRACK,
    FACE_LANDMARKER,
    FACE_LANDMARKER_FAST,
    config_dir,
    data_dir,
)

FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
REINSTALL = "pip install --force-reinstall puppet (or reinstall from your checkout: pip install .)"


@dataclass
class Check:
    name: str
    ok: bool | None  # True fine, False missing/broken (a failure), None optional or informational
    detail: str
    fix: str = ""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _asset(name: str, path, sha256: str | None = None) -> Check:
    if not path.is_file():
        return Check(name, False, f"{path} is missing", REINSTALL)
    if sha256 is not None and sha256_file(path) != sha256:
        return Check(name, False, f"{path} is damaged (sha256 mismatch)", REINSTALL)
    return Check(name, True, str(path))


def _default_student() -> Check:
    from poser_models.student import StudentPoser
    from puppet.errors import PuppetError

    try:
        poser = StudentPoser.from_folder(DEFAULT_STUDENT_DIR)
        poser.load(DEFAULT_CHARACTER_IMAGE)
    except PuppetError as error:
        return Check("default poser", False, str(error), REINSTALL)
    return Check("default poser", True, f"hana's student ({DEFAULT_STUDENT_DIR})")


def run_checks() -> list[Check]:
    """Every check, in the order a user reads them; failures have ``ok=False``."""
    checks = [
        Check("puppet", None, f"{puppet.__version__} ({puppet.__file__})"),
        Check("python", None, f"{platform.python_version()} ({sys.executable})"),
        Check("platform", None, f"{platform.system()} {platform.release()} {platform.machine()}"),
        Check("config folder", None, f"{config_dir()} (calibration profiles)"),
        Check("data folder", None, f"{data_dir()} (installed models and distilled students)"),
    ]
    mediapipe = _version("mediapipe")
    checks.append(
        Check(
            "mediapipe",
            mediapipe is not None,
            mediapipe or "not installed",
            "pip install mediapipe==0.10.31",
        )
    )
    checks.append(_asset("face model", FACE_LANDMARKER, FACE_LANDMARKER_SHA256))
    checks.append(_asset("fast face model", FACE_LANDMARKER_FAST))
    checks.append(_asset("character", DEFAULT_CHARACTER_IMAGE))
    checks.append(_asset("demo track", DEMO_TRACK))
    checks.append(_default_student())

    if importlib.util.find_spec("torch") is None:
        checks.append(
            Check(
                "tha extra",
                None,
                "not installed: THA3/THA4 posers and distillation are unavailable",
                "pip install 'puppet[tha]'",
            )
        )
    else:
        import torch

        devices = ["cpu"] + [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]
        checks.append(
            Check("tha extra", True, f"torch {torch.__version__}, devices: {', '.join(devices)}")
        )
        from puppet.model_store import list_models

        installed = [m.name for m in list_models() if m.name != "default"]
        checks.append(
            Check(
                "official weights",
                None,
                ", ".join(installed) or "none installed",
                "" if installed else "puppet models fetch tha3:separable_float",
            )
        )
    rig = importlib.util.find_spec("skia") is not None
    checks.append(
        Check(
            "rig extra",
            True if rig else None,
            "skia-python installed: rig:hana works"
            if rig
            else "not installed: rig:hana (the student's teacher) is unavailable",
            "" if rig else "pip install 'puppet[rig]'",
        )
    )

    from puppet.capture.sources import list_cameras

    cameras = list_cameras()
    checks.append(
        Check(
            "cameras",
            True if cameras else None,
            ", ".join(f"index {i}" for i in cameras) or "none found",
            "" if cameras else "Plug in a webcam, or use --source VIDEO_FILE.",
        )
    )
    from puppet.outputs.vcam import vcam_status

    ok, detail = vcam_status()
    checks.append(Check("virtual camera", True if ok else None, detail))
    return checks
