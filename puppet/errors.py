"""The one exception the library raises for problems a user can fix."""

from __future__ import annotations

import importlib
from types import ModuleType


class PuppetError(Exception):
    """A problem with the user's input or environment, with the fix.

    The CLI prints ``str(error)`` on one line and exits with code 2; library code raises
    this instead of letting a traceback reach the user.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}" if fix else problem)


# Optional parts of puppet and the extra that installs each (pyproject's optional-dependencies).
EXTRAS = {
    "tha": "the THA3/THA4 posers, distillation and ONNX export (torch, onnxruntime, onnx)",
    "rig": "hana's code-drawn rig, the student's teacher (skia-python)",
}


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise one PuppetError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != module.split(".")[0]:
            raise
        raise PuppetError(
            f"{module} is not installed: it is part of the {extra!r} extra ({EXTRAS[extra]}).",
            f"Install it with: pip install 'puppet[{extra}]' (see README, 'Installing').",
        ) from None
