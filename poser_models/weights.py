"""Safe loading of official ``torch.save`` weight files: tensors only, every key and shape checked.

Only tensors are unpickled (``weights_only=True``), so a file that would run code is refused
and never executed.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from puppet.errors import PuppetError


def load_state_dict_checked(
    path: Path,
    expected: dict[str, tuple[int, ...]],
    what: str = "weight file",
    *,
    upcast: bool = True,
) -> dict[str, torch.Tensor]:
    """Load a ``torch.save`` state dict safely and check every key and shape.

    Only tensors are unpickled (``weights_only=True``): a file that would run code is refused.
    With ``upcast`` floating tensors of another precision become float32.
    """
    return _check_state(_load_tensors(Path(path), what), expected, Path(path), what, upcast)


_WEIGHTS_FIX = "Use the unmodified file from the model's official distribution."


def _load_tensors(path: Path, what: str) -> dict:
    if not path.is_file():
        raise PuppetError(f"The {what} {str(path)!r} does not exist.", _WEIGHTS_FIX)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: (GLOBAL \S+)", str(error))
        detail = f" (pickled code {found.group(1)}, never run)" if found else ""
        raise PuppetError(
            f"Refusing {what} {str(path)!r}: it holds Python objects other than tensors, and"
            f" loading it could run code{detail}.",
            _WEIGHTS_FIX,
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        TypeError,
        ImportError,
    ) as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise PuppetError(
            f"Refusing {what} {str(path)!r}: it is not a readable torch state dict "
            f"({error.__class__.__name__}: {first_line}).",
            _WEIGHTS_FIX,
        ) from None
    if not isinstance(state, dict):
        raise PuppetError(
            f"The {what} {str(path)!r} holds a {type(state).__name__}, not a state dict.",
            _WEIGHTS_FIX,
        )
    return state


def _check_state(
    state: dict, expected: dict[str, tuple[int, ...]], path: Path, what: str, upcast: bool
) -> dict[str, torch.Tensor]:
    fix = _WEIGHTS_FIX
    missing = [key for key in expected if key not in state]
    if missing:
        key = missing[0]
        # The first mismatched shape usually says more (e.g. the wrong variant's file).
        reshaped = next(
            (k for k in expected
             if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k])),
            None,
        )  # fmt: skip
        also = (
            f"; {reshaped!r} has shape {tuple(state[reshaped].shape)}, expected"
            f" {tuple(expected[reshaped])}"
            if reshaped
            else ""
        )
        raise PuppetError(
            f"The {what} {str(path)!r} lacks {len(missing)} tensor(s), e.g. {key!r} "
            f"(expected shape {tuple(expected[key])}){also}.",
            fix,
        )
    extra = [key for key in state if key not in expected]
    if extra:
        raise PuppetError(
            f"The {what} {str(path)!r} has {len(extra)} unexpected tensor(s), e.g. {extra[0]!r}: "
            "it is not the architecture this loader expects.",
            fix,
        )
    checked: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise PuppetError(f"The {what} {str(path)!r}: {key!r} is not a float tensor.", fix)
        if tuple(tensor.shape) != tuple(shape):
            raise PuppetError(
                f"The {what} {str(path)!r}: {key!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(shape)}.",
                fix,
            )
        checked[key] = tensor.float() if upcast else tensor
    return checked
