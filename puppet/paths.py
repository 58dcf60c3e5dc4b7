"""Where puppet's files are: the bundled assets (package data) and the user's folders.

The bundled assets live in the repository's ``assets/`` folder; the wheel carries the same
folder inside the package as ``puppet/assets`` (setup.py puts it there), so an installed copy
and a source checkout find them the same way, through :func:`assets_dir`. Tests redirect the
user folders with PUPPET_DATA_DIR / PUPPET_CONFIG_DIR (and the download cache with
PUPPET_CACHE_DIR).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import platformdirs


def assets_dir() -> Path:
    """The bundled assets: ``puppet/assets`` in an installed wheel, ``assets/`` in a checkout."""
    packaged = resources.files("puppet") / "assets"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "assets"


ASSETS_DIR = assets_dir()
MEDIAPIPE_DIR = ASSETS_DIR / "mediapipe"
FACE_LANDMARKER = MEDIAPIPE_DIR / "face_landmarker.task"
FACE_LANDMARKER_FAST = MEDIAPIPE_DIR / "face_landmarker_fast.task"
DEFAULT_CHARACTER_DIR = ASSETS_DIR / "characters" / "hana"
DEFAULT_CHARACTER_IMAGE = DEFAULT_CHARACTER_DIR / "character.png"
DEFAULT_STUDENT_DIR = DEFAULT_CHARACTER_DIR / "student"
DEMO_TRACK = ASSETS_DIR / "driving" / "demo.jsonl"
BENCH_FACE = ASSETS_DIR / "driving" / "astronaut.jpg"  # public domain (NASA)


def data_dir() -> Path:
    """Installed models, students and other large user data (platformdirs user data dir)."""
    override = os.environ.get("PUPPET_DATA_DIR")
    return Path(override) if override else platformdirs.user_data_path("puppet", appauthor=False)


def config_dir() -> Path:
    """Calibration profiles and settings (platformdirs user config dir)."""
    override = os.environ.get("PUPPET_CONFIG_DIR")
    return Path(override) if override else platformdirs.user_config_path("puppet", appauthor=False)


def models_dir() -> Path:
    """Installed official weights: ``models/tha3/<variant>/<network>.pt`` + ``manifest.json``."""
    return data_dir() / "models"


def students_dir() -> Path:
    """Distilled students, one folder per character image: ``students/<sha256>/``."""
    return data_dir() / "students"


def cache_dir() -> Path:
    """Downloads that can be fetched again (the vendored web packages of ``export-web``):
    ``$PUPPET_CACHE_DIR``, else the platformdirs user cache dir."""
    override = os.environ.get("PUPPET_CACHE_DIR")
    return Path(override) if override else platformdirs.user_cache_path("puppet", appauthor=False)


def profiles_dir() -> Path:
    """Calibration profiles: ``profiles/<name>.toml``."""
    return config_dir() / "profiles"
