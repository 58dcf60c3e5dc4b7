"""`make demo`: the bundled character and student, driven by the bundled pose track."""

from __future__ import annotations

from pathlib import Path

from puppet.app.live import LiveConfig, RunReport, run_live
from puppet.paths import DEMO_TRACK


def run_demo(output: Path = Path("out/demo.mp4"), *, seconds: float | None = None) -> RunReport:
    """Play the demo track through the live loop into ``output`` and, when a virtual-camera
    backend exists on this machine, into the virtual camera too. Exits at the track's end."""
    output.parent.mkdir(parents=True, exist_ok=True)
    config = LiveConfig(
        source=str(DEMO_TRACK),
        poser="default",
        # The virtual camera joins when a backend exists; otherwise it is reported once.
        outputs=[str(output), "vcam"],
        seconds=seconds,
    )
    return run_live(config)
