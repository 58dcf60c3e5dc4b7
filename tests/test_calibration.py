"""Calibration profiles: TOML round trip, corrupt files, and calibrate() on a real face video."""

from __future__ import annotations

import pytest

from puppet.errors import PuppetError
from puppet.mapping.calibration import (
    CalibrationProfile,
    calibrate,
    load_profile,
    profile_path,
    recalibrate_neutral,
    save_profile,
)
from puppet.mapping.converters import FeatureRanges
from puppet.paths import profiles_dir
from puppet.tracking.tracker import FaceObservation


def full_profile() -> CalibrationProfile:
    return CalibrationProfile(
        name="alice",
        neutral_deg=(1.5, -2.0, 0.25),
        geometry=FeatureRanges(
            eye_left=(0.1, 0.3),
            eye_right=(0.11, 0.31),
            mouth_open=(0.03, 0.4),
            brow=(0.4, 0.48),
            mouth_width=0.8,
            iris_center=(0.01, 0.05),
            iris_range=(0.2, 0.1),
        ),  # fmt: skip
        blendshape=FeatureRanges(eye_left=(0.1, 0.6), mouth_open=(0.08, 0.5)),
        gains={"head_y": 1.2},
        ranges={"head_y": (-0.5, 0.5)},
        smoothing={"FACE_ROTATION": (0.5, 0.7), "eye_wink_left": (5.0, 2.0)},
        mapper={"smile_lower": 0.3, "eyebrow_down_mode": "troubled", "link_eyes": False},
        idle={"breaths_per_minute": 18.0, "when_tracking": True},
        mirror=False,
    )


def test_round_trip():
    profile = full_profile()
    path = save_profile(profile)
    assert path == profiles_dir() / "alice.toml" and path.is_file()
    loaded = load_profile("alice")
    assert loaded == profile and loaded.path == path
    assert load_profile(path) == profile  # by path too
    assert loaded.mapper_settings().eyebrow_down_mode == "troubled"
    assert loaded.idle_settings().breaths_per_minute == 18.0
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temp file


def test_missing_profile_says_how_to_create_it():
    with pytest.raises(PuppetError, match=r"puppet calibrate --profile bob"):
        load_profile("bob")
    with pytest.raises(PuppetError, match="Invalid profile name"):
        profile_path("../evil")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('name = "x"\n[neutral\nhead_deg = [0, 0, 0]\n', r"not valid TOML.*line 2"),
        ('name = "x"\n[neutral]\nhead_deg = [0, "a", 0]\n', r"neutral\.head_deg"),
        ('name = "x"\n[geometry]\neye_left = [0.1]\n', r"geometry\.eye_left"),
        ('name = "x"\n[gains]\nnose = 2.0\n', r"gains\.nose"),
        ('name = "x"\n[mapper]\nsmile_lower = "high"\n', r"smile_lower"),
        ('name = "x"\n[smoothing]\nEYE = [0, 1]\n', r"min_cutoff > 0"),
        ("name = 3\n", r"name must be"),
    ],
)
def test_corrupt_or_invalid_profile_names_file_and_field(content, match):
    path = profiles_dir() / "broken.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(PuppetError, match=match) as info:
        load_profile("broken")
    assert str(path) in str(info.value)


def test_corrupt_profile_is_never_overwritten_silently():
    path = profiles_dir() / "alice.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = "this is = = not toml\n"
    path.write_text(garbage)
    with pytest.raises(PuppetError, match="Not overwriting"):
        save_profile(full_profile())
    assert path.read_text() == garbage
    save_profile(full_profile(), overwrite_corrupt=True)
    assert path.with_name("alice.toml.bak").read_text() == garbage
    assert load_profile("alice") == full_profile()


def test_recalibrate_neutral_uses_user_frame():
    import numpy as np

    obs = FaceObservation(np.zeros((478, 3), np.float32), (640, 480), 0, None, (3.0, 8.0, -2.0),
                          None, 1.0, True)  # fmt: skip
    updated = recalibrate_neutral(full_profile(), obs)
    assert updated.neutral_deg == (3.0, -8.0, 2.0)  # mirrored: yaw and roll negated
    assert updated.gains == full_profile().gains
    assert recalibrate_neutral(None, obs).name == "default"


def _video_frames(path, start_s=0.0):
    import cv2

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index / fps >= start_s:
            yield index / fps, frame
        index += 1
    capture.release()


def test_calibrate_on_a_real_face_video(fixtures_dir):
    """Real mediapipe on the d14 clip (woman facing the camera, blinking often): the video
    does not follow the prompts, so only the neutral-derived values are checked closely."""
    video = fixtures_dir / "faces" / "d14.mp4"
    prompts: list[str] = []
    profile = calibrate(
        video, "clip", steps=("neutral", "eyes_closed"), seconds_per_step=1.0,
        settle_seconds=0.2, prompt=prompts.append, mirror=False,
    )  # fmt: skip
    assert any("neutral" in p for p in prompts) and any("Close both eyes" in p for p in prompts)
    loaded = load_profile("clip")
    assert loaded == profile
    # facing the camera: small neutral angles (official model: |yaw|,|pitch| < ~10 deg here)
    assert all(abs(a) < 15 for a in profile.neutral_deg)
    g = profile.geometry
    assert g is not None and g.eye_left is not None and g.mouth_open is not None
    assert 0.0 < g.eye_left[0] < g.eye_left[1] < 0.6
    assert 0.0 < g.mouth_open[0] < g.mouth_open[1]
    assert 0.5 < g.mouth_width < 1.2
    assert profile.blendshape is not None  # the full model gives blendshapes
    assert profile.mirror is False
    # the clip's eyes are open during the "eyes closed" step: detected and reported
    assert any("did not look closed" in p for p in prompts)

    # a source that ends too early gives one clear error
    with pytest.raises(PuppetError, match="ended before"):
        calibrate(_video_frames(video, start_s=17.0), "late", steps=("neutral", "mouth_open"),
                  seconds_per_step=1.0, settle_seconds=0.2, prompt=lambda s: None)  # fmt: skip
