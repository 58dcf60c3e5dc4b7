"""Build hook: the wheel carries the repository's ``cli.py`` and ``assets/`` inside ``puppet/``.

The design card keeps ``cli.py`` and ``assets/`` at the repository root; installed, they become
``puppet/cli.py`` and ``puppet/assets/`` (no generic top-level ``cli`` module in site-packages),
found through ``puppet.paths`` and ``puppet.__main__``. An editable install reads them in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        package = Path(self.build_lib) / "puppet"
        shutil.copy2(ROOT / "cli.py", package / "cli.py")
        shutil.copytree(
            ROOT / "assets",
            package / "assets",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", ".*", "*.tmp"),
        )


setup(cmdclass={"build_py": BuildPyWithAssets})
