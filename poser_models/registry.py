"""The poser contract and the registry that turns a spec string into a poser.

Spec strings:
    ``default``                 the bundled character's own student (the caller says where it is)
    ``student:PATH``            a puppet student folder (safetensors + manifest.json)
    ``tha3:<variant>[@DIR]``    official THA3 weights (installed with ``puppet models``, or DIR)
    ``tha4-student:DIR``        an official THA4 student folder (character_model.yaml)
    ``rig:NAME``                the bundled character's code-drawn rig (the student's teacher)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from puppet.errors import PuppetError, require_extra
from puppet.pose import PoseVector

DEFAULT_CHARACTER_NAME = "hana"  # the bundled character (rig:hana, and the default student)


@runtime_checkable
class Poser(Protocol):
    """Animates one character image.

    ``pose`` returns straight (not premultiplied) alpha, sRGB, uint8, shape (H, W, 4).
    """

    device: str  # "cpu" or "cuda[:n]"
    dtype: str  # "float32", "float16", ...

    def load(self, character: Path | np.ndarray) -> None: ...

    def pose(self, pose: PoseVector) -> np.ndarray: ...


# kind -> "module:function"; the function takes (argument, device, models_dir) and returns an
# unloaded Poser plus the character it was made for (or None when the user must give one).
PoserFactory = Callable[[str, str, "Path | None"], "tuple[Poser, Path | np.ndarray | None]"]
_REGISTRY: dict[str, str | PoserFactory] = {
    "rig": "poser_models.rig:create_poser",  # needs the rig extra (skia)
    "student": "poser_models.student:create_poser",
    "tha3": "poser_models.tha3:create_poser",
    "tha4-student": "poser_models.tha4_student:create_poser",
}


def register_poser(kind: str, factory: str | PoserFactory) -> None:
    """Add a poser kind; ``factory`` is a callable or a lazy ``"module:function"`` path."""
    _REGISTRY[kind] = factory


# The extra each kind's module needs (torch for the THA posers, skia for the rig).
_EXTRA_OF_MODULE = {"torch": "tha", "onnxruntime": "tha", "skia": "rig"}


def parse_spec(spec: str, default_student: Path | None = None) -> tuple[str, str]:
    """Split a spec: 'tha3:separable_float@/x' -> ('tha3', 'separable_float@/x').

    'default' resolves to ``default_student`` (the bundled character's student).
    """
    spec = spec.strip()
    if spec == "default":
        if default_student is None:
            raise PuppetError("No default student is known here.", "Pass --poser student:DIR.")
        return "student", str(default_student)
    kind, sep, argument = spec.partition(":")
    if kind not in _REGISTRY:
        raise PuppetError(
            f"Unknown poser {spec!r}.",
            "Use one of: default, student:PATH, tha3:<variant>[@DIR], tha4-student:DIR.",
        )
    if not sep or not argument:
        raise PuppetError(
            f"Poser spec {spec!r} is missing its argument.",
            {
                "student": "Write student:PATH (a folder made by `puppet distill`).",
                "tha3": "Write tha3:<variant>[@DIR], e.g. tha3:separable_float.",
                "tha4-student": "Write tha4-student:DIR (the folder with character_model.yaml).",
                "rig": f"Write rig:{DEFAULT_CHARACTER_NAME}.",
            }.get(kind, "See `puppet models list`."),
        )
    return kind, argument


def _factory(kind: str) -> PoserFactory:
    factory = _REGISTRY[kind]
    if callable(factory):
        return factory
    module_name, _, function_name = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        top = (error.name or "").split(".")[0]
        if top in _EXTRA_OF_MODULE:
            require_extra(top, _EXTRA_OF_MODULE[top])  # raises the one-line "install the extra"
        raise
    return getattr(module, function_name)


def create_poser(
    spec: str,
    character: Path | np.ndarray | None = None,
    device: str = "cpu",
    *,
    default_student: Path | None = None,
    models_dir: Path | None = None,
) -> Poser:
    """Resolve ``spec``, build the poser on ``device`` and load the character into it.

    ``character`` overrides the one the poser was made for (students carry their own).
    ``default_student`` is what ``default`` means; ``models_dir`` holds installed official
    weights (``tha3/<variant>/``) for specs without ``@DIR``.
    """
    kind, argument = parse_spec(spec, default_student)
    poser, own_character = _factory(kind)(argument, device, models_dir)
    chosen = character if character is not None else own_character
    if chosen is None:
        raise PuppetError(
            f"The poser {spec!r} needs a character image.",
            "Pass --character PATH (a 512x512 RGBA PNG with a transparent background).",
        )
    poser.load(chosen)
    return poser
