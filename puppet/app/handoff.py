"""A one-slot handoff between two pipeline threads of the live loop.

Each stage of the live loop (tracking, poser, outputs) runs on its own thread and passes its
result to the next through a ``Handoff``, which holds one item only, so no queue can grow and
items come out in the order they went in:

- ``lossless=False`` (camera sources): ``put`` replaces an item the consumer has not taken yet
  (counted in ``dropped``). A slow stage therefore always works on the newest frame, and stale
  frames are dropped, never queued.
- ``lossless=True`` (pose tracks): ``put`` waits until the consumer took the previous item,
  so every line of a track reaches the outputs (the producer slows down instead).
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """Raised by ``put``/``take`` once the handoff is closed and, for ``take``, drained."""


class Handoff(Generic[T]):
    def __init__(self, *, lossless: bool = False) -> None:
        self.lossless = lossless
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0
        self.put_count = 0
        self.taken_at = 0.0  # time.perf_counter() of the last take

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Hand ``item`` over. Lossless: wait (up to ``timeout``) for the slot to empty and
        return False when it did not; otherwise always True. Raises Closed once closed."""
        with self._cond:
            if self.lossless:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._full and not self._closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            if self._closed:
                raise Closed
            if self._full:
                self.dropped += 1
            self._item = item
            self._full = True
            self.put_count += 1
            self._cond.notify_all()
            return True

    def take(self, timeout: float | None = None) -> T | None:
        """The item handed over since the last ``take``; None on timeout. Raises Closed when
        the handoff is closed and empty (the producer has finished)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._full:
                if self._closed:
                    raise Closed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, self._item, self._full = self._item, None, False
            self.taken_at = time.perf_counter()
            self._cond.notify_all()
            return item

    def wait_empty(self, timeout: float) -> bool:
        """Wait until the consumer has taken the item in the slot (True) or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._full or self._closed, timeout)

    @property
    def full(self) -> bool:
        with self._cond:
            return self._full

    def close(self) -> None:
        """No more items: a waiting ``take`` returns what is left, then raises Closed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
