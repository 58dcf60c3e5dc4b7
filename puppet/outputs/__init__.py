"""Where frames go: each output is a class with ``send(frame, info=None)`` and ``close()``."""

from puppet.outputs.base import FrameInfo, LiveControls, Output

__all__ = ["FrameInfo", "LiveControls", "Output"]
