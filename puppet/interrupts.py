"""Ctrl+C (and SIGTERM/SIGHUP, which the CLI routes to the SIGINT handler) as a request to stop.

A KeyboardInterrupt raised at an arbitrary point can land inside mediapipe or PyAV; a
half-built ``mp.Image`` then prints a traceback from its ``__del__``. So the first signal only
asks to stop, and the loops stop where a frame is complete; a second signal aborts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl+C asks the loop to stop cleanly (files are finished); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class DeferredInterrupt:
    """Ctrl+C (and SIGTERM/SIGHUP, routed to it by the CLI) stops a batch job between frames.

    A KeyboardInterrupt raised at an arbitrary point can land inside mediapipe or PyAV (a
    half-built ``mp.Image`` then prints a traceback from its ``__del__``); here the first signal
    only sets a flag and ``check()`` raises it where a frame is complete. A second signal still
    aborts at once."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def check(self) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[DeferredInterrupt]:
        with stop_on_sigint(self.requested):
            yield self
