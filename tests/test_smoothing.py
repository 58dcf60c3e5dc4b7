"""One Euro filter behaviour: jitter reduction, bounded lag, per-group parameters."""

from __future__ import annotations

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.mapping.smoothing import CATEGORY_DEFAULTS, OneEuroFilter, filter_params
from puppet.pose import INDEX

FPS = 30.0


def _run(filt: OneEuroFilter, signal: np.ndarray) -> np.ndarray:
    return np.array([filt.filter(row, i / FPS) for i, row in enumerate(signal)])


def test_noisy_constant_gets_much_less_jitter():
    rng = np.random.default_rng(0)
    signal = 0.5 + 0.02 * rng.standard_normal((300, 45))
    out = _run(OneEuroFilter.for_pose(), signal)[30:]
    jitter_in = np.diff(signal[30:], axis=0).std(axis=0)
    jitter_out = np.diff(out, axis=0).std(axis=0)
    head = INDEX["head_y"]
    eye = INDEX["eye_wink_left"]
    assert jitter_out[head] < 0.15 * jitter_in[head]  # head: smoothed hard
    assert jitter_out[eye] < 0.6 * jitter_in[eye]  # eyes: lighter, but still smoothed
    assert np.abs(out.mean(axis=0) - 0.5).max() < 0.01  # no bias


def test_step_is_followed_within_bounded_lag():
    signal = np.zeros((60, 45))
    signal[10:] = 1.0
    out = _run(OneEuroFilter.for_pose(), signal)
    eye, head = INDEX["eye_wink_left"], INDEX["head_x"]
    # frames after the step until 90 % of it is reached
    eye_lag = int(np.argmax(out[10:, eye] >= 0.9))
    head_lag = int(np.argmax(out[10:, head] >= 0.9))
    assert out[10:, eye].max() >= 0.9 and out[10:, head].max() >= 0.9
    assert eye_lag <= 2  # a blink is not smeared
    assert head_lag <= 8  # head smooth but still responsive (< 0.3 s at 30 fps)
    assert eye_lag < head_lag
    assert np.all(out <= 1.0 + 1e-9)  # no overshoot


def test_fast_motion_has_less_lag_than_slow_filter_of_same_min_cutoff():
    t = np.arange(90) / FPS
    ramp = np.clip((t - 1.0) * 4.0, 0, 1)[:, None]  # 0 -> 1 in 0.25 s
    adaptive = _run(OneEuroFilter(1.0, 2.0, size=1), ramp)[:, 0]
    fixed = _run(OneEuroFilter(1.0, 0.0, size=1), ramp)[:, 0]
    assert np.abs(adaptive - ramp[:, 0]).max() < 0.6 * np.abs(fixed - ramp[:, 0]).max()


def test_reset_and_irregular_timestamps():
    f = OneEuroFilter(1.0, 0.0, size=2)
    assert np.allclose(f.filter(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])  # first value passes
    y = f.filter(np.array([0.0, 0.0]), 0.0)  # repeated timestamp does not divide by zero
    assert np.all(np.isfinite(y)) and np.all(y > 0)
    f.reset(np.array([5.0, 5.0]), 1.0)
    assert np.all(f.filter(np.array([5.0, 5.0]), 1.1) == 5.0)


def test_filter_params_overrides_and_errors():
    mc, beta = filter_params()
    assert mc[INDEX["head_x"]] == CATEGORY_DEFAULTS["FACE_ROTATION"].min_cutoff
    mc, beta = filter_params({"FACE_ROTATION": [0.5, 0.1], "head_y": (3.0, 0.2)})
    assert (
        mc[INDEX["head_x"]] == 0.5 and mc[INDEX["head_y"]] == 3.0 and beta[INDEX["neck_z"]] == 0.1
    )
    mc, _ = filter_params({"eye_wink": [9.0, 1.0]})
    assert mc[INDEX["eye_wink_left"]] == mc[INDEX["eye_wink_right"]] == 9.0
    with pytest.raises(PuppetError, match="Unknown smoothing key"):
        filter_params({"nose": [1.0, 1.0]})
    with pytest.raises(PuppetError, match="min_cutoff > 0"):
        filter_params({"EYE": [0.0, 1.0]})
    with pytest.raises(PuppetError, match="two numbers"):
        filter_params({"EYE": "fast"})
