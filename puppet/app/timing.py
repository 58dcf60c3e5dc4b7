"""Per-stage timing for the live loop, render and bench."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


@dataclass
class StageStats:
    mean_ms: float
    p95_ms: float
    count: int


class StageTimer:
    """Collects the duration of named stages; keeps the last ``window`` samples per stage."""

    def __init__(self, window: int = 10_000) -> None:
        self._samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self.last_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1000.0)

    def add(self, name: str, ms: float) -> None:
        self._samples[name].append(ms)
        self.last_ms[name] = ms

    def stats(self) -> dict[str, StageStats]:
        out = {}
        for name, samples in self._samples.items():
            values = np.fromiter(samples, dtype=np.float64)
            out[name] = StageStats(
                float(values.mean()), float(np.percentile(values, 95)), len(values)
            )
        return out


class RateMeter:
    """Frames per second over a sliding window of recent frame times."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self._times.append(time.perf_counter())
        return self.fps

    @property
    def fps(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class LatencyMeter:
    """Capture-to-output latencies (ms) over the last ``window`` frames: p50/p95 for the HUD,
    the end-of-run line and ``puppet bench``. Thread-safe enough for one writer (a deque append
    is atomic; readers copy it)."""

    def __init__(self, window: int = 10_000) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, ms: float) -> None:
        self._samples.append(ms)
        self.count += 1

    def percentiles(self, recent: int | None = None) -> tuple[float, float] | None:
        """(p50, p95) over all samples kept, or over the ``recent`` last; None before any."""
        samples = list(self._samples)
        if recent is not None:
            samples = samples[-recent:]
        if not samples:
            return None
        p50, p95 = np.percentile(np.asarray(samples, np.float64), (50, 95))
        return float(p50), float(p95)
