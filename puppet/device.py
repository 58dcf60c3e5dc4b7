"""The ``--device`` option: one check so a missing GPU is one clear line, not a traceback."""

from __future__ import annotations

import re

from puppet.errors import PuppetError, require_extra

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``device`` if it is "cpu" or a CUDA device torch can use; PuppetError otherwise.

    Only a CUDA device imports torch (the ``tha`` extra): "cpu" is always accepted.
    """
    device = device.strip().lower()
    if not _DEVICE.match(device):
        raise PuppetError(f"Unknown device {device!r}.", "Use --device cpu or --device cuda[:N].")
    if device == "cpu":
        return device
    torch = require_extra("torch", "tha")
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no usable GPU"
        raise PuppetError(
            f"--device {device} was asked for, but torch sees no CUDA GPU ({build}).",
            "Use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU.",
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise PuppetError(
            f"--device {device}: torch sees only {torch.cuda.device_count()} CUDA GPU(s).",
            "Use --device cuda:0 (see `puppet doctor`).",
        )
    return device
