"""Calibration profiles: the user's neutral head pose, feature ranges and tuning, as TOML.

A profile lives at ``profiles_dir()/<name>.toml``.  Writes are atomic (temp file + rename);
an existing file that cannot be read is never overwritten unless asked, and then a ``.bak``
copy is kept.  :func:`calibrate` records a few seconds of guided steps (neutral face, eyes
closed, mouth open, looking left/right) and derives the profile with medians/percentiles.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from puppet.atomic import atomic_write_text
from puppet.errors import PuppetError
from puppet.interrupts import DeferredInterrupt
from puppet.mapping.converters import (
    FeatureRanges,
    MapperSettings,
    geometry_features,
    user_head_angles,
)
from puppet.mapping.idle import IdleSettings
from puppet.mapping.smoothing import filter_params
from puppet.paths import profiles_dir
from puppet.pose import INDEX
from puppet.tracking.tracker import FaceObservation

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w

PROFILE_VERSION = 1
DEFAULT_STEPS = ("neutral", "eyes_closed", "mouth_open", "look_left", "look_right")
STEP_PROMPTS = {
    "neutral": "Look straight at the camera with a relaxed, neutral face.",
    "eyes_closed": "Close both eyes gently and keep them closed.",
    "mouth_open": "Open your mouth wide (say 'aah') and hold it.",
    "look_left": "Keep your head still and look to your LEFT with your eyes only.",
    "look_right": "Keep your head still and look to your RIGHT with your eyes only.",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class CalibrationProfile:
    """Everything a user tunes.  Empty tables mean "defaults"."""

    name: str
    neutral_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # user-anatomical Euler angles
    geometry: FeatureRanges | None = None  # ranges for the landmark-geometry mapper
    blendshape: FeatureRanges | None = None  # ranges for the blendshape mapper
    gains: dict[str, float] = field(default_factory=dict)  # parameter -> multiplier
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # parameter -> clamp
    smoothing: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (mc, beta)
    mapper: dict[str, Any] = field(default_factory=dict)  # MapperSettings overrides
    idle: dict[str, Any] = field(default_factory=dict)  # IdleSettings overrides
    mirror: bool = True
    path: Path | None = field(default=None, compare=False)  # where it was loaded/saved

    def mapper_settings(self) -> MapperSettings:
        return MapperSettings.with_overrides(self.mapper)

    def idle_settings(self) -> IdleSettings:
        return IdleSettings.with_overrides(self.idle)


def profile_path(name: str) -> Path:
    if not _NAME.match(name):
        raise PuppetError(
            f"Invalid profile name {name!r}.",
            "Use letters, digits, '_', '-' or '.', starting with a letter or digit.",
        )
    return profiles_dir() / f"{name}.toml"


# ------------------------------------------------------------------------------- TOML


def _ranges_to_toml(r: FeatureRanges) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(r):
        value = getattr(r, f.name)
        if value is not None:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def profile_to_toml(profile: CalibrationProfile) -> str:
    doc: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "name": profile.name,
        "mirror": profile.mirror,
        "neutral": {"head_deg": [float(a) for a in profile.neutral_deg]},
    }
    if profile.geometry is not None:
        doc["geometry"] = _ranges_to_toml(profile.geometry)
    if profile.blendshape is not None:
        doc["blendshape"] = _ranges_to_toml(profile.blendshape)
    for key in ("gains", "ranges", "smoothing", "mapper", "idle"):
        table = getattr(profile, key)
        if table:
            doc[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in table.items()}
    return tomli_w.dumps(doc)


class _Invalid(Exception):
    pass


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid(f"{where} must be a number, got {value!r}")
    return float(value)


def _numbers(value: Any, n: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise _Invalid(f"{where} must be a list of {n} numbers, got {value!r}")
    return tuple(_number(v, where) for v in value)


def _table(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise _Invalid(f"[{key}] must be a table")
    return value


def _check_mapper_values(table: Mapping[str, Any]) -> None:
    """Every number of [mapper] finite, every lower/upper pair in order, every range positive
    (the mapper divides by these spans: zero or NaN would turn into NaN poses later)."""
    for key, value in table.items():
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not all(_plain_number(v) for v in items):
            raise _Invalid(f"mapper.{key} must be a list of numbers, got {value!r}")
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise _Invalid(f"mapper.{key} must be finite, got {value!r}")
    defaults = MapperSettings()

    def get(key: str) -> Any:
        return table.get(key, getattr(defaults, key))

    pairs = [
        ("smile_lower", "smile_upper"), ("cheek_squint_min", "cheek_squint_max"),
        ("jaw_open_min", "jaw_open_max"), ("mouth_funnel_min", "mouth_funnel_max"),
        ("link_snap", "link_wink"), ("geo_eye_closed", "geo_eye_open"),
        ("geo_mouth_closed", "geo_mouth_open"),
    ]  # fmt: skip
    for low, high in pairs:
        a, b = get(low), get(high)
        if _plain_number(a) and _plain_number(b) and not a < b:
            raise _Invalid(f"mapper.{low} ({a}) must be below mapper.{high} ({b})")
    positive = [
        "eye_surprised_max", "eye_wink_max", "eyebrow_down_max", "mouth_frown_max",
        "eye_rotation_factor", "head_x_max_deg", "head_y_max_deg", "neck_z_max_deg",
        "geo_mouth_width", "geo_mouth_spread_range", "geo_brow_range", "geo_iris_range",
    ]  # fmt: skip
    for key in positive:
        if key not in table:
            continue
        value = table[key]
        items = value if isinstance(value, list) else [value]
        if all(_plain_number(v) for v in items) and not all(v > 0 for v in items):
            raise _Invalid(f"mapper.{key} must be above 0, got {value!r}")


def _plain_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_ranges(table: dict[str, Any], key: str) -> FeatureRanges:
    known = {f.name for f in fields(FeatureRanges)}
    values: dict[str, Any] = {}
    for name, value in table.items():
        where = f"{key}.{name}"
        if name not in known:
            raise _Invalid(f"unknown field {where} (known: {', '.join(sorted(known))})")
        if name == "mouth_width":
            values[name] = _number(value, where)
            if not values[name] > 0:
                raise _Invalid(f"{where} must be above 0, got {value!r}")
        else:
            values[name] = _numbers(value, 2, where)
            if name == "iris_range" and not min(values[name]) > 0:
                raise _Invalid(f"{where} must hold two numbers above 0, got {value!r}")
            if name not in ("iris_center", "iris_range") and not value[0] < value[1]:
                raise _Invalid(f"{where} must be [low, high] with low below high, got {value!r}")
    return FeatureRanges(**values)


def profile_from_toml(text: str, source: str = "<profile>") -> CalibrationProfile:
    """Parse and validate; every problem is a PuppetError naming the file and line/field."""
    fix = "Fix the file, or recreate it with `puppet calibrate --profile NAME`."
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PuppetError(f"Profile {source} is not valid TOML: {e}.", fix) from None
    try:
        version = doc.get("version", PROFILE_VERSION)
        if version != PROFILE_VERSION:
            raise _Invalid(f"version is {version!r}; this puppet reads version {PROFILE_VERSION}")
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise _Invalid("name must be a non-empty string")
        mirror = doc.get("mirror", True)
        if not isinstance(mirror, bool):
            raise _Invalid(f"mirror must be true or false, got {mirror!r}")
        neutral = _table(doc, "neutral")
        head = _numbers(neutral.get("head_deg", [0.0, 0.0, 0.0]), 3, "neutral.head_deg")
        geometry = _parse_ranges(_table(doc, "geometry"), "geometry") if "geometry" in doc else None
        blend = (
            _parse_ranges(_table(doc, "blendshape"), "blendshape") if "blendshape" in doc else None
        )
        gains = {}
        for k, v in _table(doc, "gains").items():
            if k not in INDEX:
                raise _Invalid(f"gains.{k}: unknown pose parameter")
            gains[k] = _number(v, f"gains.{k}")
        ranges = {}
        for k, v in _table(doc, "ranges").items():
            if k not in INDEX:
                raise _Invalid(f"ranges.{k}: unknown pose parameter")
            lo, hi = _numbers(v, 2, f"ranges.{k}")
            if lo > hi:
                raise _Invalid(f"ranges.{k}: lower bound {lo} is above upper bound {hi}")
            ranges[k] = (lo, hi)
        smoothing = {
            k: _numbers(v, 2, f"smoothing.{k}") for k, v in _table(doc, "smoothing").items()
        }
        mapper = _table(doc, "mapper")
        _check_mapper_values(mapper)
        idle = _table(doc, "idle")
        unknown = set(doc) - {"version", "name", "mirror", "neutral", "geometry", "blendshape",
                              "gains", "ranges", "smoothing", "mapper", "idle"}  # fmt: skip
        if unknown:
            raise _Invalid(f"unknown key(s) {', '.join(sorted(unknown))}")
    except _Invalid as e:
        raise PuppetError(f"Profile {source}: {e}.", fix) from None
    profile = CalibrationProfile(
        name=name,
        neutral_deg=head,  # type: ignore[arg-type]
        geometry=geometry,
        blendshape=blend,
        gains=gains,
        ranges=ranges,
        smoothing=smoothing,  # type: ignore[arg-type]
        mapper=dict(mapper),
        idle=dict(idle),
        mirror=mirror,
    )
    # Validate the nested settings now (unknown names / wrong types), naming the file.
    for check in (profile.mapper_settings, profile.idle_settings, lambda: filter_params(smoothing)):
        try:
            check()
        except PuppetError as e:
            raise PuppetError(f"Profile {source}: {e.problem}", e.fix or fix) from None
    return profile


def load_profile(name_or_path: str | Path) -> CalibrationProfile:
    """A profile by name (``profiles_dir()/<name>.toml``) or by path."""
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith(".toml") or os.sep in text
    path = Path(text).expanduser() if is_path else profile_path(text)
    if not path.is_file():
        name = path.stem
        raise PuppetError(
            f"No calibration profile {text!r} (looked for {path}).",
            f"Run `puppet calibrate --profile {name}` to create it.",
        )
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PuppetError(f"Cannot read profile {path}: {e}.", "Check the file.") from None
    profile = profile_from_toml(content, str(path))
    profile.path = path
    return profile


def save_profile(
    profile: CalibrationProfile, path: Path | None = None, *, overwrite_corrupt: bool = False
) -> Path:
    """Write the profile atomically and return its path.

    An existing file that does not load is not replaced (PuppetError) unless
    ``overwrite_corrupt``; then it is kept next to it as ``<file>.bak``."""
    target = Path(path) if path is not None else profile_path(profile.name)
    if target.exists():
        try:
            load_profile(target)
        except PuppetError as e:
            if not overwrite_corrupt:
                raise PuppetError(
                    f"Not overwriting the unreadable profile {target} ({e.problem})",
                    "Fix or remove the file, or save with overwrite_corrupt=True "
                    "(the old file is kept as .bak).",
                ) from None
            shutil.copy2(target, target.with_name(target.name + ".bak"))
    atomic_write_text(target, profile_to_toml(profile))
    profile.path = target
    return target


def recalibrate_neutral(
    profile: CalibrationProfile | None, observation: FaceObservation
) -> CalibrationProfile:
    """A copy of ``profile`` (or a fresh one) whose neutral head pose is this observation's."""
    base = profile or CalibrationProfile(name="default")
    angles = tuple(float(a) for a in user_head_angles(observation))
    return replace(base, neutral_deg=angles)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- calibrate


def _frames_from(source: Any) -> tuple[Iterator[tuple[float, np.ndarray]], Callable[[], None]]:
    """(timestamp_s, frame_bgr) pairs from an iterable, a video path or a camera index."""
    if not isinstance(source, str | int | Path):
        return iter(source), lambda: None
    from puppet.capture.sources import FrameSource, parse_source

    parsed = parse_source(str(source)) if not isinstance(source, Path) else source
    if isinstance(parsed, Path):
        import cv2

        if not parsed.is_file():
            raise PuppetError(f"Video {parsed} not found.", "Give an existing video file.")
        capture = cv2.VideoCapture(str(parsed))
        if not capture.isOpened():
            raise PuppetError(f"Cannot open video {parsed}.", "Use an mp4/mov/avi file.")
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and 0 < fps < 1000 else 30.0

        def video() -> Iterator[tuple[float, np.ndarray]]:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield index / fps, frame
                index += 1

        return video(), capture.release

    camera = FrameSource(parsed, realtime=True)

    def live() -> Iterator[tuple[float, np.ndarray]]:
        while True:
            frame = camera.read(timeout=2.0)
            if frame is None:
                raise PuppetError(
                    f"Camera {parsed} stopped delivering frames.",
                    "Check the camera connection and that no other app is using it.",
                )
            yield frame.timestamp, frame.image

    return live(), camera.close


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values)))


def _profile_from_steps(
    name: str,
    recorded: dict[str, list[FaceObservation]],
    mirror: bool,
    warnings: list[str] | None = None,
) -> CalibrationProfile:
    """Derive a profile from the recorded steps; steps the user evidently did not perform
    (eyes not closed, mouth not opened) are ignored with a message in ``warnings``."""
    warnings = warnings if warnings is not None else []
    neutral = recorded["neutral"]
    geo = {step: [geometry_features(o) for o in obs] for step, obs in recorded.items()}
    angles = np.array([user_head_angles(o) for o in neutral])
    g = geo["neutral"]
    open_l = _median([f.eye_left for f in g])
    open_r = _median([f.eye_right for f in g])
    closed_l, closed_r = 0.25 * open_l, 0.25 * open_r  # typical ratio measured on real faces
    eyes_closed_ok = False
    if "eyes_closed" in geo:
        cl = _median([f.eye_left for f in geo["eyes_closed"]])
        cr = _median([f.eye_right for f in geo["eyes_closed"]])
        if cl < 0.6 * open_l and cr < 0.6 * open_r:
            closed_l, closed_r, eyes_closed_ok = cl, cr, True
        else:
            warnings.append(
                "Your eyes did not look closed during the 'eyes closed' step; using typical "
                "values instead (run the calibration again to measure them)."
            )

    def eye_range(closed: float, opened: float) -> tuple[float, float]:
        span = max(opened - closed, 1e-3)
        # margins so that a blink reaches fully closed and a relaxed open eye fully open
        return closed + 0.1 * span, opened - 0.15 * span

    mouth_closed = _median([f.mouth_open for f in g])
    defaults = MapperSettings()
    mouth_wide = defaults.geo_mouth_open
    mouth_open_ok = False
    if "mouth_open" in geo:
        wide = float(np.percentile([f.mouth_open for f in geo["mouth_open"]], 90))
        if wide > mouth_closed + 0.1:
            mouth_wide, mouth_open_ok = wide, True
        else:
            warnings.append(
                "Your mouth did not open much during the 'mouth open' step; using typical "
                "values instead."
            )
    mouth_lo = mouth_closed + 0.02
    mouth_hi = max(mouth_wide * 0.9, mouth_lo + 0.05)
    brow = _median([0.5 * (f.brow_left + f.brow_right) for f in g])
    iris_center = (_median([f.iris_x for f in g]), _median([f.iris_y for f in g]))
    reach = []
    if "look_left" in geo:
        reach.append(
            iris_center[0] - float(np.percentile([f.iris_x for f in geo["look_left"]], 10))
        )
    if "look_right" in geo:
        reach.append(
            float(np.percentile([f.iris_x for f in geo["look_right"]], 90)) - iris_center[0]
        )
    reach = [r for r in reach if r > 0.03]  # a user who did not move their eyes: keep default
    iris_range = (0.9 * float(np.mean(reach)), defaults.geo_iris_range[1]) if reach else None
    geometry = FeatureRanges(
        eye_left=eye_range(closed_l, open_l),
        eye_right=eye_range(closed_r, open_r),
        mouth_open=(mouth_lo, mouth_hi),
        brow=(brow, brow + defaults.geo_brow_range),
        mouth_width=_median([f.mouth_width for f in g]),
        iris_center=iris_center,
        iris_range=iris_range,
    )

    blendshape = None
    if all(o.blendshapes is not None for obs in recorded.values() for o in obs):

        def shape(o: FaceObservation, name: str) -> float:
            assert o.blendshapes is not None
            if o.mirrored:  # user-anatomical side, as the mapper uses it
                name = name.replace("Left", "#").replace("Right", "Left").replace("#", "Right")
            return float(o.blendshapes.get(name, 0.0))

        blendshape = FeatureRanges()
        if eyes_closed_ok:
            ranges = []
            for side in ("Left", "Right"):
                lo = _median([shape(o, f"eyeBlink{side}") for o in neutral])
                hi = _median([shape(o, f"eyeBlink{side}") for o in recorded["eyes_closed"]])
                span = hi - lo
                ranges.append((lo + 0.15 * span, hi - 0.1 * span) if span > 0.2 else None)
            blendshape.eye_left, blendshape.eye_right = ranges
        if mouth_open_ok:
            jaw_closed = _median([shape(o, "jawOpen") for o in neutral])
            jaw_open = float(
                np.percentile([shape(o, "jawOpen") for o in recorded["mouth_open"]], 90)
            )
            if jaw_open - jaw_closed > 0.15:
                blendshape.mouth_open = (jaw_closed + 0.05, 0.9 * jaw_open)
    return CalibrationProfile(
        name=name,
        neutral_deg=tuple(float(a) for a in np.median(angles, axis=0)),  # type: ignore[arg-type]
        geometry=geometry,
        blendshape=blendshape,
        mirror=mirror,
    )


def calibrate(
    source: Iterable[tuple[float, np.ndarray]] | str | int | Path,
    profile_name: str = "default",
    *,
    steps: Iterable[str] | None = DEFAULT_STEPS,
    seconds_per_step: float = 3.0,
    settle_seconds: float = 1.0,
    prompt: Callable[[str], None] = print,
    tracker: str = "full",
    mirror: bool = True,
    tracker_options: Any = None,
    save: bool = True,
    overwrite_corrupt: bool = False,
) -> CalibrationProfile:
    """Guide the user through ``steps`` and build (and save) their profile.

    source: (timestamp_s, frame_bgr) pairs, a video file path, or a camera index ("0").
    Each step: ``prompt(instruction)``, ``settle_seconds`` to react (frames ignored), then
    ``seconds_per_step`` of frames recorded.  The neutral step is required and first.
    tracker_options: a ``puppet.tracking.tracker.TrackerOptions`` (overrides tracker/mirror).
    An existing profile of the same name keeps its gains/ranges/smoothing/mapper/idle tables.
    """
    from puppet.tracking.tracker import FaceTracker, TrackerOptions

    steps = tuple(steps) if steps is not None else DEFAULT_STEPS
    unknown = [s for s in steps if s not in STEP_PROMPTS]
    if unknown:
        raise PuppetError(
            f"Unknown calibration step(s): {', '.join(unknown)}.",
            f"Known steps: {', '.join(STEP_PROMPTS)}.",
        )
    if "neutral" not in steps:
        raise PuppetError("Calibration needs the 'neutral' step.", "Add 'neutral' to the steps.")
    steps = ("neutral",) + tuple(s for s in steps if s != "neutral")
    target = profile_path(profile_name)
    options = tracker_options or TrackerOptions(mode=tracker, mirror=mirror)  # type: ignore[arg-type]

    frames, close_source = _frames_from(source)
    recorded: dict[str, list[FaceObservation]] = {}
    try:
        with DeferredInterrupt().installed() as interrupt, FaceTracker(options) as face_tracker:
            step_index = 0
            phase_start: float | None = None
            prompt(f"Calibration for profile {profile_name!r}: {len(steps)} step(s).")
            prompt(STEP_PROMPTS[steps[0]])
            seen = {s: 0 for s in steps}
            for ts, frame in frames:
                if phase_start is None:
                    phase_start = ts
                elapsed = ts - phase_start
                if elapsed >= settle_seconds + seconds_per_step:
                    step_index += 1
                    if step_index >= len(steps):
                        break
                    prompt(STEP_PROMPTS[steps[step_index]])
                    phase_start, elapsed = ts, 0.0
                obs = face_tracker.detect(frame, int(round(ts * 1000)))
                interrupt.check()  # a stop request ends here, never inside mediapipe
                if elapsed < settle_seconds:
                    continue
                seen[steps[step_index]] += 1
                if obs is not None:
                    recorded.setdefault(steps[step_index], []).append(obs)
    finally:
        close_source()

    for step in steps:
        count = len(recorded.get(step, []))
        if seen[step] == 0:
            raise PuppetError(
                f"The source ended before the calibration step {step!r}.",
                "Use a longer video, or fewer/shorter steps (--quick / --seconds).",
            )
        if count < max(3, seen[step] // 3):
            raise PuppetError(
                f"No face was found in most frames of the {step!r} step ({count}/{seen[step]}).",
                "Face the camera in even light, fully in the frame, and run calibration again.",
            )
    warnings: list[str] = []
    profile = _profile_from_steps(profile_name, recorded, options.mirror, warnings)
    for warning in warnings:
        prompt(warning)
    if target.is_file():
        try:
            old = load_profile(target)
            profile = replace(profile, gains=old.gains, ranges=old.ranges, smoothing=old.smoothing,
                              mapper=old.mapper, idle=old.idle)  # fmt: skip
        except PuppetError:
            pass  # save_profile below refuses to overwrite it unless overwrite_corrupt
    if save:
        save_profile(profile, target, overwrite_corrupt=overwrite_corrupt)
    prompt(f"Calibration done ({time.strftime('%H:%M:%S')}).")
    return profile
