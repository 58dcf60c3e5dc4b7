"""Shared test fixtures. Reference data lives in ../shared/fixtures (test-only, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures, or skip with a clear message when this checkout has no shared/."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {SHARED_FIXTURES} (../shared/fixtures)")
    return SHARED_FIXTURES


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the real user's profiles or models from a test."""
    base = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("PUPPET_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("PUPPET_CONFIG_DIR", str(base / "config"))
