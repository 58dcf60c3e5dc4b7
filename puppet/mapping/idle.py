"""Idle motion and face-lost handling.

* :class:`FaceLostEasing`: when the face disappears, hold the last pose for ``hold_s``, then
  ease to neutral over ``ease_s`` with a smoothstep (no visible jump either way).
* :class:`AutoBlink`: blinks at natural random intervals (log-normal, median ~3.5 s, clipped
  to 1.5-8 s), each ~150-250 ms (close over the first third, hold, open over the last third),
  with an occasional double blink; a seeded RNG makes it reproducible.
* :func:`breathing` / :class:`IdleAnimator`: the official breathing curve
  (1 - cos 2 pi phase) / 2 at a configurable rate (default 16 breaths/min).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from puppet.errors import PuppetError
from puppet.mapping.converters import breathing_value
from puppet.pose import INDEX


@dataclass
class IdleSettings:
    enabled: bool = True  # idle motion when no face is seen
    when_tracking: bool = False  # also blink/breathe while a face is tracked
    hold_s: float = 0.5  # face lost: hold the last pose this long...
    ease_s: float = 1.0  # ...then ease to neutral over this long
    breaths_per_minute: float = 16.0
    blink_median_s: float = 3.5  # median interval between blinks
    blink_sigma: float = 0.45  # log-normal spread of the intervals
    blink_min_s: float = 1.5
    blink_max_s: float = 8.0
    blink_duration_s: tuple[float, float] = (0.15, 0.25)
    double_blink_chance: float = 0.1

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, object] | None) -> IdleSettings:
        base = cls()
        if not overrides:
            return base
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in overrides.items():
            if key not in known:
                raise PuppetError(
                    f"Unknown idle setting {key!r}.", f"Known settings: {', '.join(sorted(known))}."
                )
            default = getattr(base, key)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):
                ok = _is_number(value)
                value = float(value) if ok else value
            else:
                ok = isinstance(value, list | tuple) and len(value) == 2
                ok = ok and all(_is_number(v) for v in value)
                value = tuple(float(v) for v in value) if ok else value
            if not ok:
                raise PuppetError(
                    f"Idle setting {key!r} has the wrong type or is not finite ({value!r}).",
                    f"Give a value like the default {default!r}.",
                )
            values[key] = value
        settings = cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **values})
        settings.check()
        return settings

    def check(self) -> None:
        """Ranges that keep the idle motion finite (a zero blink interval would schedule
        blinks forever): PuppetError naming the setting and the allowed range."""
        lo, hi = self.blink_duration_s
        rules = [
            ("hold_s", self.hold_s >= 0, ">= 0"),
            ("ease_s", self.ease_s >= 0, ">= 0"),
            ("breaths_per_minute", 0 < self.breaths_per_minute <= 120, "in (0, 120]"),
            ("blink_median_s", self.blink_median_s > 0, "> 0"),
            ("blink_sigma", 0 <= self.blink_sigma <= 5, "in [0, 5]"),
            ("blink_min_s", self.blink_min_s >= MIN_BLINK_INTERVAL_S,
             f">= {MIN_BLINK_INTERVAL_S}"),
            ("blink_max_s", self.blink_max_s >= self.blink_min_s, ">= blink_min_s"),
            ("blink_duration_s", 0 < lo <= hi <= 2.0, "[low, high] with 0 < low <= high <= 2"),
            ("double_blink_chance", 0 <= self.double_blink_chance <= 1, "in [0, 1]"),
        ]  # fmt: skip
        for key, ok, allowed in rules:
            if not ok:
                raise PuppetError(
                    f"Idle setting {key!r} is {getattr(self, key)!r}; it must be {allowed}.",
                    "Fix the [idle] table of the profile.",
                )


MIN_BLINK_INTERVAL_S = 0.2  # shortest time from the end of one blink to the next


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def smoothstep(x: float) -> float:
    x = 0.0 if x < 0 else 1.0 if x > 1 else x
    return x * x * (3.0 - 2.0 * x)


class FaceLostEasing:
    """Weight of the last tracked pose after the face was lost at ``lost_at``:
    1 during the hold, smoothstep down to 0 over the ease, 0 after."""

    def __init__(self, hold_s: float = 0.5, ease_s: float = 1.0) -> None:
        self.hold_s = hold_s
        self.ease_s = ease_s

    def weight(self, seconds_since_lost: float) -> float:
        if seconds_since_lost <= self.hold_s:
            return 1.0
        if self.ease_s <= 0:
            return 0.0
        return 1.0 - smoothstep((seconds_since_lost - self.hold_s) / self.ease_s)

    def done(self, seconds_since_lost: float) -> bool:
        return seconds_since_lost >= self.hold_s + self.ease_s


class AutoBlink:
    """Generates blink closure (0 open .. 1 closed) as a function of time."""

    def __init__(self, settings: IdleSettings | None = None, seed: int = 0) -> None:
        self.settings = settings or IdleSettings()
        self.rng = np.random.default_rng(seed)
        self._blinks: list[tuple[float, float]] = []  # (start, duration), sorted
        self._next_start: float | None = None

    def _interval(self) -> float:
        s = self.settings
        value = s.blink_median_s * math.exp(s.blink_sigma * float(self.rng.standard_normal()))
        value = min(max(value, s.blink_min_s), s.blink_max_s)
        # Settings built without check() still cannot stall the schedule loop.
        return value if value >= MIN_BLINK_INTERVAL_S else MIN_BLINK_INTERVAL_S

    def _duration(self) -> float:
        lo, hi = self.settings.blink_duration_s
        value = float(self.rng.uniform(lo, hi))
        return value if value > 0.01 else 0.01

    def _schedule_until(self, t: float) -> None:
        if self._next_start is None:
            self._next_start = t + self._interval()
        while self._next_start <= t + 1.0:
            start = self._next_start
            duration = self._duration()
            self._blinks.append((start, duration))
            end = start + duration
            if self.rng.random() < self.settings.double_blink_chance:
                second = end + float(self.rng.uniform(0.06, 0.12))
                duration2 = self._duration()
                self._blinks.append((second, duration2))
                end = second + duration2
            self._next_start = end + self._interval()
        # keep only blinks that can still matter (and a short history for schedule())
        while len(self._blinks) > 4 and self._blinks[0][0] + self._blinks[0][1] < t - 60.0:
            self._blinks.pop(0)

    def restart(self, t: float) -> None:
        """Start a fresh schedule at ``t`` (the first blink comes one interval later)."""
        self._blinks.clear()
        self._next_start = t + self._interval()

    def closure(self, t: float) -> float:
        self._schedule_until(t)
        for start, duration in reversed(self._blinks):
            if start > t:
                continue
            if t > start + duration:
                return 0.0
            x = (t - start) / duration
            if x < 1 / 3:  # closing
                return smoothstep(3 * x)
            if x <= 2 / 3:  # closed
                return 1.0
            return smoothstep(3 * (1 - x))  # opening
        return 0.0

    def schedule(self, t_end: float) -> list[tuple[float, float]]:
        """The (start, duration) of every blink scheduled up to ``t_end`` that is still kept."""
        self._schedule_until(t_end)
        return [b for b in self._blinks if b[0] <= t_end]


def breathing(t: float, breaths_per_minute: float = 16.0) -> float:
    return breathing_value(t, breaths_per_minute)


class IdleAnimator:
    """Adds idle motion to a pose's values in place: auto-blink on the eye_wink pair (max with
    what is there, so a tracked blink is never undone) and the breathing curve."""

    def __init__(self, settings: IdleSettings | None = None, seed: int = 0) -> None:
        self.settings = settings or IdleSettings()
        self.blink = AutoBlink(self.settings, seed)

    def apply(self, values: np.ndarray, t: float, *, blink: bool = True) -> None:
        if blink:
            c = self.blink.closure(t)
            for name in ("eye_wink_left", "eye_wink_right"):
                values[INDEX[name]] = max(values[INDEX[name]], c)
        values[INDEX["breathing"]] = breathing(t, self.settings.breaths_per_minute)
