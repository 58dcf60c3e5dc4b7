"""``python -m puppet`` and the ``puppet`` console script: the typer app in ``cli.py``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path


def load_app():
    """The typer app. The wheel ships the repository's ``cli.py`` as ``puppet/cli.py`` (so no
    generic top-level ``cli`` module is installed); a source checkout keeps it at the root."""
    try:
        cli = importlib.import_module("puppet.cli")
    except ModuleNotFoundError as error:
        if error.name != "puppet.cli":
            raise
        path = Path(__file__).resolve().parent.parent / "cli.py"
        spec = importlib.util.spec_from_file_location("puppet.cli", path)
        assert spec is not None and spec.loader is not None
        cli = importlib.util.module_from_spec(spec)
        sys.modules["puppet.cli"] = cli
        spec.loader.exec_module(cli)
    return cli.app


def main() -> None:
    load_app()(prog_name="puppet")


if __name__ == "__main__":
    main()
