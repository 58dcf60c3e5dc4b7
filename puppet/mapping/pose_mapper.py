"""``PoseMapper``: the one object the live loop calls per frame.

observation -> map (blendshape or geometry mapper, calibrated) -> profile gains -> One Euro
smoothing -> face lost: hold then ease to neutral / idle motion -> lip sync (max) ->
expression overrides -> profile ranges -> clamp.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from puppet.errors import PuppetError
from puppet.mapping.calibration import CalibrationProfile, recalibrate_neutral
from puppet.mapping.converters import BlendshapeMapper, GeometryMapper, HeadCalibration
from puppet.mapping.idle import FaceLostEasing, IdleAnimator
from puppet.mapping.lipsync import LipSync
from puppet.mapping.smoothing import OneEuroFilter
from puppet.pose import INDEX, LOWER, NUM_PARAMETERS, UPPER, PoseVector
from puppet.tracking.tracker import FaceObservation


def _both(group: str, value: float) -> dict[str, float]:
    return {f"{group}_left": value, f"{group}_right": value}


# Named expressions: parameter values that replace the tracked ones while switched on.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "happy": {
        **_both("eye_happy_wink", 1.0),
        **_both("eye_wink", 0.0),
        **_both("eyebrow_happy", 1.0),
        **_both("mouth_raised_corner", 1.0),
    },
    "angry": {
        **_both("eyebrow_angry", 1.0),
        **_both("eye_unimpressed", 0.4),
        **_both("mouth_lowered_corner", 0.6),
    },
    "surprised": {
        **_both("eye_surprised", 1.0),
        **_both("eyebrow_raised", 1.0),
        "mouth_ooo": 0.6,
    },
    "sad": {
        **_both("eyebrow_troubled", 1.0),
        **_both("mouth_lowered_corner", 1.0),
        **_both("eye_relaxed", 0.3),
    },
}
EXPRESSIONS["troubled"] = EXPRESSIONS["sad"]


class PoseMapper:
    """Stateful per-frame mapping.  ``update(observation or None, t_seconds) -> PoseVector``."""

    def __init__(
        self,
        profile: CalibrationProfile | None = None,
        *,
        idle_when_tracking: bool = False,
        idle_enabled: bool = True,
        lipsync: LipSync | None = None,
        seed: int = 0,
    ) -> None:
        self.profile = profile
        settings = profile.mapper_settings() if profile else None
        self._blendshape = BlendshapeMapper(settings)
        self._geometry = GeometryMapper(settings)
        idle_settings = profile.idle_settings() if profile else None
        self.idle = IdleAnimator(idle_settings, seed=seed)
        self.idle_enabled = idle_enabled and self.idle.settings.enabled
        self.idle_when_tracking = idle_when_tracking or self.idle.settings.when_tracking
        self.easing = FaceLostEasing(self.idle.settings.hold_s, self.idle.settings.ease_s)
        self.filter = OneEuroFilter.for_pose(profile.smoothing if profile else None)
        self.lipsync = lipsync
        self._gains = np.ones(NUM_PARAMETERS)
        self._lower, self._upper = LOWER.astype(np.float64), UPPER.astype(np.float64)
        if profile:
            for name, gain in profile.gains.items():
                self._gains[INDEX[name]] = gain
            for name, (lo, hi) in profile.ranges.items():
                i = INDEX[name]
                self._lower[i], self._upper[i] = max(lo, LOWER[i]), min(hi, UPPER[i])
        self._head = HeadCalibration(profile.neutral_deg) if profile else None
        self._expressions: list[str] = []
        self._t0: float | None = None
        self._last_t: float | None = None
        self._tracked = np.zeros(NUM_PARAMETERS)  # last smoothed tracked pose
        self._base = np.zeros(NUM_PARAMETERS)  # last output before idle/lipsync/expressions
        self._lost_at: float | None = None
        self._ever_tracked = False
        self._state = "idle"

    # ------------------------------------------------------------------ per frame
    def map_raw(self, observation: FaceObservation) -> np.ndarray:
        """Calibrated mapping of one observation, before gains and smoothing."""
        if observation.blendshapes is not None:
            ranges = self.profile.blendshape if self.profile else None
            pose = self._blendshape.map(observation, self._head, ranges)
        else:
            ranges = self.profile.geometry if self.profile else None
            pose = self._geometry.map(observation, self._head, ranges)
        return pose.values.astype(np.float64)

    def update(self, observation: FaceObservation | None, t: float) -> PoseVector:
        if self._t0 is None:
            self._t0 = t
        since_start = t - self._t0
        if observation is not None:
            raw = np.clip(self.map_raw(observation) * self._gains, LOWER, UPPER)
            if self._last_t is None:
                self.filter.reset()  # very first frame: nothing shown yet, take it as is
            elif self._state != "tracking":
                # start the filter from what is on screen, so the return is smoothed, not a jump
                self.filter.reset(self._base, self._last_t)
            self._tracked = self.filter.filter(raw, t)
            values = self._tracked.copy()
            self._lost_at = None
            self._ever_tracked = True
            self._state = "tracking"
            idle_on = self.idle_enabled and self.idle_when_tracking
        else:
            if self._lost_at is None:
                self._lost_at = t
            lost_for = t - self._lost_at
            weight = self.easing.weight(lost_for) if self._ever_tracked else 0.0
            values = self._tracked * weight  # neutral is all zeros
            if self._ever_tracked and not self.easing.done(lost_for):
                self._state = "lost"
            else:
                self._state = "idle"
            idle_on = self.idle_enabled
        self._base = values.copy()
        if idle_on:
            self.idle.apply(values, since_start, blink=True)
        if self.lipsync is not None:
            for name, value in self.lipsync.values(since_start).items():
                i = INDEX[name]
                values[i] = max(values[i], value)
        for name in self._expressions:
            for param, value in EXPRESSIONS[name].items():
                values[INDEX[param]] = value
        np.clip(values, self._lower, self._upper, out=values)
        self._last_t = t
        return PoseVector(values)

    # ------------------------------------------------------------------ controls
    @property
    def state(self) -> str:
        """ "tracking" (face seen), "lost" (holding / easing to neutral) or "idle"."""
        return self._state

    def recalibrate_neutral(self, observation: FaceObservation) -> CalibrationProfile:
        """Make this observation's head pose the neutral one (live hotkey).  The profile file
        is not rewritten; save ``mapper.profile`` with ``save_profile`` to keep it."""
        self.profile = recalibrate_neutral(self.profile, observation)
        self._head = HeadCalibration(self.profile.neutral_deg)
        return self.profile

    @property
    def mirror_character(self) -> bool:
        """True: the character moves like the user's reflection (selfie view, the default of
        `puppet live`); False: the character's left follows the user's left."""
        return self._blendshape.settings.mirror_character

    @mirror_character.setter
    def mirror_character(self, value: bool) -> None:
        for mapper in (self._blendshape, self._geometry):
            mapper.settings = dataclasses.replace(mapper.settings, mirror_character=bool(value))

    def toggle_idle(self) -> bool:
        """Switch idle motion (auto-blink, breathing) while tracking on/off; returns the new
        setting.  Idle motion when no face is seen stays as configured."""
        self.idle_when_tracking = not self.idle_when_tracking
        return self.idle_when_tracking

    @property
    def expressions(self) -> tuple[str, ...]:
        return tuple(self._expressions)

    def set_expression(self, name: str, on: bool) -> None:
        if name not in EXPRESSIONS:
            raise PuppetError(
                f"Unknown expression {name!r}.", f"Known expressions: {', '.join(EXPRESSIONS)}."
            )
        if on and name not in self._expressions:
            self._expressions.append(name)
        elif not on and name in self._expressions:
            self._expressions.remove(name)

    def toggle_expression(self, name: str) -> bool:
        on = name not in self._expressions
        self.set_expression(name, on)
        return on
