"""Face-lost easing curve, auto-blink timing statistics (seeded), breathing."""

from __future__ import annotations

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.mapping.idle import (
    AutoBlink,
    FaceLostEasing,
    IdleAnimator,
    IdleSettings,
    breathing,
    smoothstep,
)
from puppet.pose import INDEX


def test_face_lost_easing_curve():
    easing = FaceLostEasing(hold_s=0.5, ease_s=1.0)
    assert easing.weight(0.0) == easing.weight(0.5) == 1.0  # hold
    assert easing.weight(1.0) == pytest.approx(0.5)  # half way: smoothstep(0.5) = 0.5
    assert easing.weight(0.75) == pytest.approx(1 - smoothstep(0.25))
    assert easing.weight(1.5) == 0.0 and easing.weight(10.0) == 0.0
    ts = np.linspace(0, 2, 201)
    w = np.array([easing.weight(t) for t in ts])
    assert np.all(np.diff(w) <= 1e-12)  # monotone
    assert np.abs(np.diff(w)).max() < 0.02  # no jump (smooth start and end)
    assert not easing.done(1.2) and easing.done(1.5)


def _blink_onsets(blink: AutoBlink, seconds: float, rate: float = 100.0):
    ts = np.arange(0, seconds, 1 / rate)
    c = np.array([blink.closure(t) for t in ts])
    closed = c >= 0.5
    onsets = ts[1:][closed[1:] & ~closed[:-1]]
    # duration of each blink above 0 closure
    active = c > 0
    starts = np.flatnonzero(active[1:] & ~active[:-1]) + 1
    ends = np.flatnonzero(~active[1:] & active[:-1]) + 1
    n = min(len(starts), len(ends))
    durations = (ends[:n] - starts[:n]) / rate
    return onsets, durations, c


def test_auto_blink_timing_statistics():
    onsets, durations, c = _blink_onsets(AutoBlink(seed=3), 400.0)
    intervals = np.diff(onsets)
    assert 80 <= len(onsets) <= 160  # ~ one blink every 2.5-5 s
    # most gaps are natural (1.5-8 s); the short ones are the occasional double blinks
    doubles = intervals < 0.6
    assert 0.02 <= doubles.mean() <= 0.25
    natural = intervals[~doubles]
    assert natural.min() >= 1.5 - 0.3 and natural.max() <= 8.0 + 0.5
    assert 2.5 <= np.median(natural) <= 4.5
    assert natural.std() > 0.5  # random, not periodic
    assert np.all((durations > 0.1) & (durations < 0.3))
    assert c.max() == 1.0 and c.min() == 0.0  # blinks close fully and open fully


def test_auto_blink_is_reproducible_with_a_seed():
    a, _, _ = _blink_onsets(AutoBlink(seed=11), 60.0)
    b, _, _ = _blink_onsets(AutoBlink(seed=11), 60.0)
    other, _, _ = _blink_onsets(AutoBlink(seed=12), 60.0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[: len(other)], other[: len(a)])


def test_breathing_curve():
    assert breathing(0.0, 15.0) == 0.0
    assert breathing(2.0, 15.0) == pytest.approx(1.0)  # period 4 s: peak at half period
    assert breathing(1.0, 15.0) == pytest.approx(0.5)
    assert breathing(4.0, 15.0) == pytest.approx(0.0, abs=1e-12)
    assert breathing(3.0, 0.0) == 0.0


def test_idle_animator_keeps_tracked_blink_and_adds_breathing():
    anim = IdleAnimator(IdleSettings(breaths_per_minute=20.0), seed=0)
    values = np.zeros(45, dtype=np.float32)
    values[INDEX["eye_wink_left"]] = 0.8
    anim.apply(values, 0.75, blink=True)
    assert values[INDEX["eye_wink_left"]] >= 0.8
    assert values[INDEX["breathing"]] == pytest.approx(breathing(0.75, 20.0))


def test_idle_settings_overrides():
    s = IdleSettings.with_overrides({"breaths_per_minute": 18, "when_tracking": True})
    assert s.breaths_per_minute == 18.0 and s.when_tracking is True
    with pytest.raises(PuppetError, match="Unknown idle setting"):
        IdleSettings.with_overrides({"snore": True})
    with pytest.raises(PuppetError, match="wrong type"):
        IdleSettings.with_overrides({"enabled": "yes"})
