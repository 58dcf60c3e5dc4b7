"""`puppet doctor`: what this machine offers puppet, and how to fix what is missing."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from dataclasses import dataclass

from puppet.atomic import sha256_file
from puppet.paths import ASSETS_DIR


@dataclass
class Check:
    name: str
    ok: bool | None  # True fine, False missing/broken, None informational
    detail: str
    fix: str = ""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


def run_checks() -> list[Check]:
    checks = [
        Check("python", None, f"{platform.python_version()} ({sys.executable})"),
        Check("platform", None, f"{platform.system()} {platform.release()} {platform.machine()}"),
    ]
    try:
        import torch

        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [
                f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                for i in range(torch.cuda.device_count())
            ]
        checks.append(
            Check(
                "torch",
                True,
                f"{torch.__version__}, {torch.get_num_threads()} threads, "
                f"devices: {', '.join(devices)}",
            )
        )
    except ImportError as error:
        checks.append(Check("torch", False, str(error), "pip install torch==2.13.0"))

    checks.append(
        Check(
            "mediapipe",
            _version("mediapipe") != "not installed",
            _version("mediapipe"),
            "pip install mediapipe==0.10.31",
        )
    )
    model = ASSETS_DIR / "mediapipe" / "face_landmarker.task"
    if model.is_file():
        good = sha256_file(model) == FACE_LANDMARKER_SHA256
        checks.append(
            Check(
                "face model",
                good,
                f"{model} ({'sha256 ok' if good else 'HASH MISMATCH'})",
                "" if good else "python tools/fetch_face_landmarker.py",
            )
        )
    else:
        checks.append(
            Check("face model", False, f"{model} missing", "python tools/fetch_face_landmarker.py")
        )
    fast = ASSETS_DIR / "mediapipe" / "face_landmarker_fast.task"
    checks.append(
        Check(
            "fast face model",
            fast.is_file(),
            str(fast) if fast.is_file() else "missing (--tracker fast unavailable)",
            "" if fast.is_file() else "python tools/build_fast_tracker.py",
        )
    )

    from puppet.capture import list_cameras

    cameras = list_cameras()
    checks.append(
        Check(
            "cameras",
            bool(cameras),
            ", ".join(f"index {i}" for i in cameras) or "none found",
            "" if cameras else "Plug in a webcam, or use --source VIDEO_FILE.",
        )
    )
    try:
        from puppet.outputs.vcam import vcam_status

        ok, detail = vcam_status()
        checks.append(Check("virtual camera", ok, detail))
    except ImportError:
        checks.append(Check("virtual camera", False, "vcam output not available yet"))

    try:
        from puppet.models import list_models

        models = list_models()
        text = ", ".join(["rig:hana", *(m.name for m in models)])
        checks.append(Check("posers", True, f"installed: {text}"))
    except ImportError:
        from puppet.posers import DEFAULT_STUDENT_DIR

        checks.append(
            Check("posers", DEFAULT_STUDENT_DIR.is_dir(), f"default student: {DEFAULT_STUDENT_DIR}")
        )
    return checks
