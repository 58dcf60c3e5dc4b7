"""Where frames go: each output is a class with ``send(frame, info=None)`` and ``close()``.

``open_output(spec, ...)`` / ``open_outputs(specs, ...)`` build them from ``--output`` specs;
``OutputSet`` fans frames out and drops an output that fails.
"""

from puppet.outputs.base import FrameInfo, LiveControls, Output
from puppet.outputs.factory import OutputSet, open_output, open_outputs

__all__ = ["FrameInfo", "LiveControls", "Output", "OutputSet", "open_output", "open_outputs"]
