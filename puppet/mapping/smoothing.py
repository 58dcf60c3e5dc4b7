"""One Euro filter (Casiez, Roussel, Vogel, CHI 2012) over the 45 pose values at once.

Per value: the derivative is low-passed at ``d_cutoff``; the value's cutoff is
``min_cutoff + beta * |smoothed derivative|``, so a still face is smoothed hard (low jitter)
and a fast movement raises the cutoff (low lag).  Each value gets its own min_cutoff/beta:
eyes and mouth fast, iris medium, head and body smooth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from puppet.errors import PuppetError
from puppet.pose import GROUPS, INDEX, NUM_PARAMETERS, PARAMETERS


@dataclass(frozen=True)
class FilterParams:
    min_cutoff: float  # Hz: cutoff when still (lower = smoother, more lag)
    beta: float  # cutoff increase per unit/s of speed (higher = less lag on fast moves)


# Defaults per THA category (values are in pose units: 0..1 or -1..1; 1 head unit = 15 deg).
CATEGORY_DEFAULTS: dict[str, FilterParams] = {
    "EYEBROW": FilterParams(2.0, 1.0),
    "EYE": FilterParams(4.0, 3.0),  # blinks take ~100 ms: must not be smeared
    "IRIS_MORPH": FilterParams(1.0, 0.0),
    "MOUTH": FilterParams(3.0, 2.0),
    "IRIS_ROTATION": FilterParams(1.5, 0.8),
    "FACE_ROTATION": FilterParams(0.8, 1.0),
    "BODY_ROTATION": FilterParams(0.8, 1.0),
    "BREATHING": FilterParams(30.0, 0.0),  # generated, not tracked: effectively unfiltered
}
D_CUTOFF = 1.0


def filter_params(
    overrides: Mapping[str, tuple[float, float] | list[float] | FilterParams] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(min_cutoff, beta) arrays of length 45: category defaults, then overrides keyed by a
    category ("EYE"), a group ("eye_wink") or a parameter name ("eye_wink_left"), applied in
    that order of precedence (the more specific wins)."""
    min_cutoff = np.array([CATEGORY_DEFAULTS[p.category].min_cutoff for p in PARAMETERS])
    beta = np.array([CATEGORY_DEFAULTS[p.category].beta for p in PARAMETERS])
    if not overrides:
        return min_cutoff, beta

    def indices(key: str) -> list[int]:
        if key in CATEGORY_DEFAULTS:
            return [p.index for p in PARAMETERS if p.category == key]
        if key in GROUPS:
            return [INDEX[n] for n in GROUPS[key]]
        if key in INDEX:
            return [INDEX[key]]
        raise PuppetError(
            f"Unknown smoothing key {key!r}.",
            "Use a category (EYE, MOUTH, FACE_ROTATION, ...), a group or a parameter name.",
        )

    def rank(key: str) -> int:
        return 0 if key in CATEGORY_DEFAULTS else 1 if key in GROUPS and key not in INDEX else 2

    for key in sorted(overrides, key=rank):
        value = overrides[key]
        if isinstance(value, FilterParams):
            mc, b = value.min_cutoff, value.beta
        else:
            try:
                mc, b = (float(v) for v in value)
            except (TypeError, ValueError):
                raise PuppetError(
                    f"Smoothing for {key!r} must be [min_cutoff, beta], got {value!r}.",
                    "Write two numbers, e.g. [1.0, 0.5].",
                ) from None
        if not (mc > 0 and b >= 0 and math.isfinite(mc) and math.isfinite(b)):
            raise PuppetError(
                f"Smoothing for {key!r} needs min_cutoff > 0 and beta >= 0, got {mc}, {b}.",
                "Fix the profile's [smoothing] table.",
            )
        for i in indices(key):
            min_cutoff[i], beta[i] = mc, b
    return min_cutoff, beta


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Vectorised One Euro filter.  ``filter(values, t)`` with t in seconds (monotonic)."""

    def __init__(
        self,
        min_cutoff: np.ndarray | float = 1.0,
        beta: np.ndarray | float = 0.0,
        d_cutoff: float = D_CUTOFF,
        size: int = NUM_PARAMETERS,
    ) -> None:
        self.min_cutoff = np.broadcast_to(np.asarray(min_cutoff, dtype=np.float64), (size,)).copy()
        self.beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (size,)).copy()
        self.d_cutoff = float(d_cutoff)
        self.size = size
        self._x: np.ndarray | None = None
        self._dx = np.zeros(size)
        self._t: float | None = None

    @classmethod
    def for_pose(cls, overrides=None) -> OneEuroFilter:
        """A 45-value filter with the per-group defaults and the profile's overrides."""
        min_cutoff, beta = filter_params(overrides)
        return cls(min_cutoff, beta)

    def reset(self, values: np.ndarray | None = None, t: float | None = None) -> None:
        """Forget the history; optionally start from ``values`` at time ``t``."""
        self._x = None if values is None else np.asarray(values, dtype=np.float64).copy()
        self._dx = np.zeros(self.size)
        self._t = t

    def filter(self, values: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if self._x is None or self._t is None:
            self._x, self._t = x.copy(), float(t)
            return x.copy()
        dt = float(t) - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: assume a 60 fps step
            dt = 1.0 / 60.0
        a_d = _alpha(self.d_cutoff, dt)
        dx = (x - self._x) / dt
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = self._t + dt
        return self._x.copy()
