"""PoseMapper: the per-frame pipeline (smoothing, face lost, idle, lip sync, expressions)."""

from __future__ import annotations

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.mapping.calibration import CalibrationProfile
from puppet.mapping.lipsync import LipSync
from puppet.mapping.pose_mapper import PoseMapper
from puppet.tracking.tracker import FaceObservation

FPS = 30.0


def obs(euler=(0.0, 0.0, 0.0), **shapes) -> FaceObservation:
    return FaceObservation(np.zeros((478, 3), np.float32), (640, 480), 0, None, euler,
                           dict(shapes), 1.0, False)  # fmt: skip


def run(mapper, observations, t0=0.0):
    return [mapper.update(o, t0 + i / FPS) for i, o in enumerate(observations)]


def test_face_lost_holds_then_eases_to_neutral():
    m = PoseMapper(idle_enabled=False)
    tracked = run(m, [obs((0.0, -5.0, 0.0), jawOpen=0.4, mouthLowerDownLeft=0.5,
                          mouthLowerDownRight=0.5)] * 45)  # fmt: skip
    assert m.state == "tracking"
    last = tracked[-1]
    assert last["head_y"] == pytest.approx(0.5, abs=0.01) and last["mouth_aaa"] > 0.95
    lost = run(m, [None] * 60, t0=45 / FPS)
    hold = [p["head_y"] for p in lost[:15]]  # 0.5 s hold
    assert all(h == pytest.approx(last["head_y"]) for h in hold)
    assert m.state == "lost" or m.state == "idle"
    t_half = 15 + 15  # 0.5 s hold + half of the 1 s ease
    assert lost[t_half]["head_y"] == pytest.approx(0.5 * last["head_y"], abs=0.03)
    assert lost[-1]["head_y"] == 0.0 and lost[-1]["mouth_aaa"] == 0.0
    assert m.state == "idle"
    heads = np.array([p["head_y"] for p in lost])
    assert np.all(np.diff(heads) <= 1e-7)  # monotone ease, no jump
    # the face comes back: smoothed from neutral, not a jump
    back = run(m, [obs((0.0, -5.0, 0.0))] * 20, t0=105 / FPS)
    assert m.state == "tracking"
    assert 0.0 < back[0]["head_y"] < 0.4 and back[-1]["head_y"] > 0.45


def test_idle_motion_when_lost_and_optional_while_tracking():
    m = PoseMapper(seed=1)
    poses = run(m, [None] * int(12 * FPS))
    assert m.state == "idle"
    breathing = np.array([p["breathing"] for p in poses])
    blinks = np.array([p["eye_wink_left"] for p in poses])
    assert breathing.max() > 0.95 and breathing.min() == 0.0
    assert blinks.max() > 0.9  # auto-blink happened within 12 s
    assert np.array_equal(blinks, [p["eye_wink_right"] for p in poses])  # symmetric

    tracking = PoseMapper(seed=1)
    tracked = run(tracking, [obs()] * 60)
    assert max(p["breathing"] for p in tracked) == 0.0
    assert tracking.toggle_idle() is True
    tracked = run(tracking, [obs()] * 60, t0=2.0)
    assert max(p["breathing"] for p in tracked) > 0.1


def test_lipsync_is_combined_by_max(tmp_path):
    import wave

    rate = 16000
    t = np.arange(2 * rate) / rate
    tone = np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 300 * t), 0.0)
    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((tone * 32767).astype("<i2").tobytes())
    m = PoseMapper(lipsync=LipSync(path), idle_enabled=False)
    poses = run(m, [obs()] * 60)  # tracked mouth closed the whole time
    assert max(p["mouth_aaa"] for p in poses[:28]) == 0.0
    assert min(p["mouth_aaa"] for p in poses[36:]) > 0.8


def test_expressions_override_and_toggle():
    m = PoseMapper(idle_enabled=False)
    m.set_expression("happy", True)
    pose = m.update(obs(eyeBlinkLeft=0.0), 0.0)
    assert pose["eye_happy_wink_left"] == 1.0 and pose["mouth_raised_corner_right"] == 1.0
    assert m.toggle_expression("happy") is False
    assert m.update(obs(), 0.1)["eye_happy_wink_left"] < 0.5
    assert m.toggle_expression("surprised") is True and m.expressions == ("surprised",)
    with pytest.raises(PuppetError, match="Unknown expression"):
        m.set_expression("smug", True)


def test_recalibrate_neutral_and_profile_gains_ranges():
    m = PoseMapper(idle_enabled=False)
    tilted = obs((0.0, -4.0, 0.0))
    assert m.update(tilted, 0.0)["head_y"] == pytest.approx(0.4)
    m.recalibrate_neutral(tilted)
    poses = run(m, [tilted] * 30, t0=0.1)
    assert poses[-1]["head_y"] == pytest.approx(0.0, abs=0.01)

    profile = CalibrationProfile(name="p", gains={"head_y": 2.0}, ranges={"neck_z": (-0.2, 0.2)})
    m = PoseMapper(profile, idle_enabled=False)
    pose = m.update(obs((0.0, -2.0, 9.0)), 0.0)
    assert pose["head_y"] == pytest.approx(0.4)  # 0.2 * gain 2
    assert pose["neck_z"] == pytest.approx(0.2)  # 0.6 clamped by the profile's range


def test_selfie_view_moves_the_character_like_a_reflection():
    """Mirrored frame (selfie view): the user's right eye appears on the screen's right, where
    the character's left eye is; with mirror_character the same on-screen eye closes."""
    wink = FaceObservation(np.zeros((478, 3), np.float32), (640, 480), 0, None, (0.0, 8.0, 0.0),
                           {"eyeBlinkLeft": 1.0}, 1.0, True)  # fmt: skip
    reflection = PoseMapper(idle_enabled=False)
    reflection.mirror_character = True
    pose = run(reflection, [wink] * 5)[-1]
    assert pose["eye_wink_left"] > 0.9 and pose["eye_wink_right"] < 0.1
    anatomical = PoseMapper(idle_enabled=False)
    anatomical.mirror_character = False
    other = run(anatomical, [wink] * 5)[-1]
    assert other["eye_wink_right"] > 0.9 and other["eye_wink_left"] < 0.1
    assert np.sign(pose["head_y"]) == -np.sign(other["head_y"]) != 0
