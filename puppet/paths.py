"""Where puppet keeps user files. Tests redirect them with PUPPET_DATA_DIR / PUPPET_CONFIG_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"


def data_dir() -> Path:
    """Installed models and other large user data (platformdirs user data dir)."""
    override = os.environ.get("PUPPET_DATA_DIR")
    return Path(override) if override else platformdirs.user_data_path("puppet", appauthor=False)


def config_dir() -> Path:
    """Calibration profiles and settings (platformdirs user config dir)."""
    override = os.environ.get("PUPPET_CONFIG_DIR")
    return Path(override) if override else platformdirs.user_config_path("puppet", appauthor=False)


def models_dir() -> Path:
    """Installed official weights: ``models/tha3/<variant>/<network>.pt`` + ``manifest.json``."""
    return data_dir() / "models"


def profiles_dir() -> Path:
    """Calibration profiles: ``profiles/<name>.toml``."""
    return config_dir() / "profiles"
