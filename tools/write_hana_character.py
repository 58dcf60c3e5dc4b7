"""Regenerate hana's ``character.png`` from her rig (the neutral pose), atomically.

python tools/write_hana_character.py [PNG]
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

from poser_models.rig import render_rig
from puppet.atomic import atomic_write_bytes
from puppet.paths import DEFAULT_CHARACTER_IMAGE
from puppet.pose import PoseVector


def write_character(path: Path) -> Path:
    """Render the neutral pose to ``path`` (atomically) and return it."""
    buffer = io.BytesIO()
    Image.fromarray(render_rig(PoseVector.neutral()), "RGBA").save(buffer, "PNG", optimize=True)
    return atomic_write_bytes(path, buffer.getvalue())


if __name__ == "__main__":
    print(write_character(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CHARACTER_IMAGE))
