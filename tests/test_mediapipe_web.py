"""The vendored @mediapipe/tasks-vision package in puppet's download cache: unpacked only from
the pinned tarball, re-checked on every use, and one clear error (with the fix) otherwise. No
test downloads: the real tarball is the one ``tools/fetch_test_assets.py`` left in the cache."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

import puppet.mediapipe_web as mediapipe_web
from puppet.errors import PuppetError
from puppet.mediapipe_web import (
    FILES,
    cached_tarball,
    cached_tasks_vision,
    fetch_tasks_vision,
    tasks_vision_dir,
)


@pytest.fixture
def real_tarball(tmp_path: Path) -> Path:
    found = cached_tarball()
    if not found.is_file():
        pytest.skip(f"no cached tarball at {found} (make test fetches it before pytest)")
    return shutil.copy(found, tmp_path / found.name)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PUPPET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_pinned_tarball_is_unpacked_and_checked(real_tarball: Path, empty_cache: Path):
    folder = fetch_tasks_vision(real_tarball)
    assert folder == tasks_vision_dir() and folder.is_relative_to(empty_cache)
    assert all((folder / name).is_file() for name in FILES)
    assert '"version": "0.10.32"' in (folder / "package.json").read_text()
    assert cached_tasks_vision() == folder
    assert not list(folder.parent.glob(".*.tmp"))  # no staging folder left
    # A changed file is noticed on the next use.
    (folder / "vision_bundle.mjs").write_text("// changed")
    with pytest.raises(PuppetError, match="missing or changed") as caught:
        cached_tasks_vision()
    assert "export-web --fetch" in caught.value.fix
    assert fetch_tasks_vision(real_tarball) == folder  # fetched again, whole
    assert cached_tasks_vision() == folder


def test_other_bytes_are_refused_before_unpacking(tmp_path: Path, empty_cache: Path):
    fake = tmp_path / "mediapipe-tasks-vision-0.10.32.tgz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"export const FaceLandmarker = null;"
        info = tarfile.TarInfo("package/vision_bundle.mjs")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    fake.write_bytes(buffer.getvalue())
    with pytest.raises(PuppetError, match="not the pinned"):
        fetch_tasks_vision(fake)
    assert not tasks_vision_dir().exists()


def test_without_npm_the_error_says_what_to_do(empty_cache: Path, monkeypatch):
    monkeypatch.setattr(mediapipe_web.shutil, "which", lambda name: None)
    with pytest.raises(PuppetError, match="npm is not installed") as caught:
        fetch_tasks_vision()
    assert "--tarball" in caught.value.fix
    assert not tasks_vision_dir().exists()
