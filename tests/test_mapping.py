"""Mapping formulas against hand-computed values (pure numpy, no tracker)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from puppet.errors import PuppetError
from puppet.mapping.converters import (
    VOWEL_BASIS,
    BlendshapeMapper,
    FeatureRanges,
    GeometryMapper,
    HeadCalibration,
    MapperSettings,
    geometry_features,
    link_eyes,
    map_observation,
    mirror_pose,
    vowel_objective,
    vowel_weights,
)
from puppet.pose import PoseVector
from puppet.tracking.tracker import FaceObservation

OFFICIAL = MapperSettings(link_eyes=False)


def observation(blendshapes=None, euler=(0.0, 0.0, 0.0), landmarks=None, mirrored=False):
    if landmarks is None:
        landmarks = synthetic_landmarks()
    return FaceObservation(
        landmarks=landmarks,
        image_size=(640, 480),
        timestamp_ms=0,
        rotation=None,
        euler_deg=euler,
        blendshapes=blendshapes,
        presence=1.0,
        mirrored=mirrored,
    )


def synthetic_landmarks(
    open_mesh_right=0.3,
    open_mesh_left=0.3,
    iris_dx=0.0,
    iris_dy=0.0,
    mouth_gap=2.0,
    mouth_width=78.0,
    brow_height=42.0,
):
    """A 640x480 unmirrored frontal face with the landmarks the geometry mapper reads.

    Eye width 60 px, eye centres 100 px apart (mesh-right eye 33/133 on the image's left),
    iris offsets in eye widths (+x = image right, +y = image down)."""
    p = np.zeros((478, 3), dtype=np.float64)

    def eye(outer, inner, upper, lower, iris, brows, cx, sign, openness):
        h = openness * 60.0
        p[outer] = (cx - sign * 30, 200, 0)
        p[inner] = (cx + sign * 30, 200, 0)
        for k, (u, lo) in enumerate(zip(upper, lower, strict=True)):
            x = cx + sign * (-15 + 15 * k)
            p[u] = (x, 200 - h / 2, 0)
            p[lo] = (x, 200 + h / 2, 0)
        p[iris] = (cx + iris_dx * 60, 200 + iris_dy * 60, 0)
        for b in brows:
            p[b] = (cx, 200 - h / 2 - brow_height, 0)

    eye(33, 133, (160, 159, 158), (144, 145, 153), 468, (105, 66), 280, +1, open_mesh_right)
    eye(263, 362, (387, 386, 385), (373, 374, 380), 473, (334, 296), 380, -1, open_mesh_left)
    p[13] = (330, 300 - mouth_gap / 2, 0)
    p[14] = (330, 300 + mouth_gap / 2, 0)
    p[61] = (330 - mouth_width / 2, 300, 0)
    p[291] = (330 + mouth_width / 2, 300, 0)
    return (p / np.array([640.0, 480.0, 640.0])).astype(np.float32)


# Left/right pairs among the landmarks above: mirroring the image swaps mediapipe's labels.
_PAIRS = [(33, 263), (133, 362), (160, 387), (159, 386), (158, 385), (144, 373), (145, 374),
          (153, 380), (468, 473), (105, 334), (66, 296), (61, 291)]  # fmt: skip


def mirror_landmarks(landmarks: np.ndarray) -> np.ndarray:
    out = landmarks.copy()
    out[:, 0] = 1.0 - out[:, 0]
    for a, b in _PAIRS:
        out[[a, b]] = out[[b, a]]
    return out


def swap_blendshapes(shapes: dict[str, float]) -> dict[str, float]:
    out = {}
    for k, v in shapes.items():
        if k.endswith("Left"):
            k = k[:-4] + "Right"
        elif k.endswith("Right"):
            k = k[:-5] + "Left"
        out[k] = v
    return out


# ---------------------------------------------------------------- blendshape mapper (official)


def test_official_formulas_closed_mouth():
    shapes = {
        "mouthSmileLeft": 0.5,
        "mouthSmileRight": 0.3,
        "mouthShrugUpper": 0.1,  # smile = 0.5 -> smile_degree = 0.5
        "browInnerUp": 0.2,
        "browOuterUpLeft": 0.3,
        "browOuterUpRight": 0.9,
        "browDownLeft": 0.2,
        "eyeWideLeft": 0.25,
        "eyeBlinkLeft": 0.4,
        "eyeBlinkRight": 0.8,
        "cheekSquintLeft": 0.4,
        "eyeLookInLeft": 0.3,
        "eyeLookOutRight": 0.3,
        "eyeLookUpLeft": 0.15,
        "eyeLookUpRight": 0.15,
        "jawOpen": 0.05,
        "mouthFrownLeft": 0.15,
        "mouthFrownRight": 0.15,
    }
    pose = BlendshapeMapper(OFFICIAL).map(observation(shapes, euler=(-6.0, 5.0, 3.0)))
    expected = {
        "eyebrow_raised_left": 0.5,
        "eyebrow_raised_right": 1.0,  # clamp(1.1)
        "eyebrow_angry_left": 0.25,  # (1 - 0.5) * 0.2 / 0.4
        "eyebrow_happy_left": 0.25,  # clamp(0.5) * 0.5
        "eyebrow_happy_right": 0.25,
        "eye_surprised_left": 0.5,  # 0.25 / 0.5
        "eye_wink_left": 0.25,  # (1 - 0.5) * 0.4 / 0.8
        "eye_happy_wink_left": 0.25,
        "eye_wink_right": 0.5,
        "eye_happy_wink_right": 0.5,
        "eye_raised_lower_eyelid_left": 0.5,  # (0.4 - 0.1) / 0.6
        "iris_rotation_y": 0.4,  # (0.3 + 0.3) / 2 / 0.75
        "iris_rotation_x": 0.2,  # 0.3 / 2 / 0.75
        "head_x": 0.4,  # 6 / 15
        "head_y": -0.5,  # -5 / 10
        "neck_z": 0.2,  # 3 / 15
        "body_y": -0.5,
        "body_z": 0.2,
        "mouth_aaa": 0.0,
        "mouth_raised_corner_left": 0.5,
        "mouth_raised_corner_right": 0.5,
        "mouth_lowered_corner_left": 0.5,  # (0.15 + 0.15) / 0.6
        "mouth_lowered_corner_right": 0.5,
    }
    got = pose.to_dict()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
    others = set(got) - set(expected)
    assert all(got[n] == 0.0 for n in others), {n: got[n] for n in others if got[n]}


def test_head_angles_clamp_and_calibration_offset():
    pose = BlendshapeMapper(OFFICIAL).map(observation({}, euler=(40.0, -30.0, -20.0)))
    assert (pose["head_x"], pose["head_y"], pose["neck_z"]) == (-1.0, 1.0, -1.0)
    calibrated = BlendshapeMapper(OFFICIAL).map(
        observation({}, euler=(10.0, 4.0, 5.0)), HeadCalibration((10.0, 9.0, 5.0))
    )
    assert calibrated["head_x"] == pytest.approx(0.0)
    assert calibrated["head_y"] == pytest.approx(0.5)  # -(4 - 9) / 10
    assert calibrated["neck_z"] == pytest.approx(0.0)


def test_open_mouth_pure_aaa():
    shapes = {"jawOpen": 0.4, "mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5}
    pose = BlendshapeMapper(OFFICIAL).map(observation(shapes))
    # p = [1, 1, 0, 0] is exactly the aaa row: d = (1, 0, 0, 0)
    assert pose["mouth_aaa"] == pytest.approx(1.0, abs=1e-9)
    assert pose["mouth_iii"] == pytest.approx(0.0, abs=1e-9)
    assert pose["mouth_uuu"] == pose["mouth_ooo"] == 0.0
    # an open mouth does not drive the lowered corners even with a frown
    shapes["mouthFrownLeft"] = 0.6
    assert BlendshapeMapper(OFFICIAL).map(observation(shapes))["mouth_lowered_corner_left"] == 0


def test_open_mouth_funnel_splits_uuu_and_ooo():
    shapes = {"jawOpen": 0.25, "mouthFunnel": 0.375, "mouthPucker": 0.6}
    pose = BlendshapeMapper(OFFICIAL).map(observation(shapes))
    d = vowel_weights([0.5, 0.0, 0.375, 0.6])
    uo = min(1.0, d[2] + d[3])
    assert uo > 0.2
    assert pose["mouth_aaa"] == pytest.approx(d[0], abs=1e-6)
    assert pose["mouth_iii"] == pytest.approx(d[1], abs=1e-6)
    assert pose["mouth_uuu"] == pytest.approx(0.5 * uo, abs=1e-6)  # ooo_alpha = 0.5
    assert pose["mouth_ooo"] == pytest.approx(0.5 * uo, abs=1e-6)


def _scipy_vowels(p):
    def f(d):
        return np.linalg.norm(d @ VOWEL_BASIS - p) + 0.01 * np.abs(d).sum()

    return scipy.optimize.minimize(f, np.zeros(4), bounds=[(0, 1)] * 4).x


def test_vowel_decomposition_matches_scipy_minimize():
    rng = np.random.default_rng(7)
    points = rng.random((120, 4)) * np.array([1.0, 1.0, 0.8, 0.8])
    close = 0
    for p in points:
        ours, ref = vowel_weights(p), _scipy_vowels(p)
        assert np.all((ours >= 0) & (ours <= 1))
        # never worse than scipy on the official objective...
        assert vowel_objective(ours, p) <= vowel_objective(ref, p) + 1e-9
        close += bool(np.abs(ours - ref).max() < 1e-3)
    # ...and the same answer wherever scipy's L-BFGS-B (finite differences on a non-smooth
    # objective) converged; in the few other cases it stopped early at a worse objective.
    assert close >= 0.85 * len(points)


def test_vowel_decomposition_known_points():
    assert np.allclose(vowel_weights([1, 1, 0, 0]), [1, 0, 0, 0], atol=1e-9)
    assert np.allclose(vowel_weights([0, 1, 0, 0]), [0, 1, 0, 0], atol=1e-9)
    assert np.allclose(vowel_weights([1, 0.5, 0.5, 0.4]), [0, 0, 0, 1], atol=1e-9)
    assert np.allclose(vowel_weights([0, 0, 0, 0]), [0, 0, 0, 0], atol=1e-12)


def test_eyebrow_down_and_wink_modes():
    shapes = {"browDownRight": 0.4, "eyeBlinkLeft": 0.8}
    s = MapperSettings(link_eyes=False, eyebrow_down_mode="troubled", wink_mode="relaxed")
    pose = BlendshapeMapper(s).map(observation(shapes))
    assert pose["eyebrow_troubled_right"] == 1.0 and pose["eyebrow_angry_right"] == 0.0
    assert pose["eye_relaxed_left"] == 1.0 and pose["eye_wink_left"] == 0.0
    with pytest.raises(PuppetError):
        MapperSettings(eyebrow_down_mode="grumpy")
    with pytest.raises(PuppetError, match="wrong type"):
        MapperSettings.with_overrides({"smile_lower": "low"})
    with pytest.raises(PuppetError, match="Unknown mapper setting"):
        MapperSettings.with_overrides({"smile_lowest": 0.1})
    assert MapperSettings.with_overrides({"smile_lower": 0.3}).smile_lower == 0.3


def test_blendshape_calibrated_eye_range_reaches_full_closure():
    ranges = FeatureRanges(eye_left=(0.05, 0.6), eye_right=(0.05, 0.6))
    m = BlendshapeMapper(OFFICIAL)
    closed = m.map(observation({"eyeBlinkLeft": 0.6, "eyeBlinkRight": 0.6}), ranges=ranges)
    opened = m.map(observation({"eyeBlinkLeft": 0.05, "eyeBlinkRight": 0.05}), ranges=ranges)
    assert closed["eye_wink_left"] == closed["eye_wink_right"] == 1.0
    assert opened["eye_wink_left"] == opened["eye_wink_right"] == 0.0
    # the official threshold alone (0.8) would leave this user's blink at 0.75
    assert m.map(observation({"eyeBlinkLeft": 0.6}))["eye_wink_left"] == pytest.approx(0.75)


# ---------------------------------------------------------------- wink / blink


def test_link_eyes():
    assert link_eyes(0.9, 0.75) == pytest.approx((0.825, 0.825))  # blink -> symmetric
    assert link_eyes(1.0, 0.1) == (1.0, 0.1)  # wink stays a wink
    a, b = link_eyes(0.7, 0.325)  # in between: continuous blend
    assert 0.325 < b < a < 0.7
    assert link_eyes(0.75, 0.5) == pytest.approx((0.625, 0.625))  # exactly at the snap margin


def test_blink_is_symmetric_and_wink_stays_wink_both_mappers():
    bm = BlendshapeMapper()
    blink = bm.map(observation({"eyeBlinkLeft": 0.7, "eyeBlinkRight": 0.8}))
    assert blink["eye_wink_left"] == blink["eye_wink_right"] > 0.9
    wink = bm.map(observation({"eyeBlinkLeft": 0.8, "eyeBlinkRight": 0.05}))
    assert wink["eye_wink_left"] == 1.0 and wink["eye_wink_right"] < 0.1

    gm = GeometryMapper()
    blink = gm.map(observation(landmarks=synthetic_landmarks(0.08, 0.12)))
    assert blink["eye_wink_left"] == blink["eye_wink_right"] > 0.9
    wink = gm.map(observation(landmarks=synthetic_landmarks(0.3, 0.05)))  # mesh-left closed
    assert wink["eye_wink_left"] == 1.0 and wink["eye_wink_right"] == 0.0


# ---------------------------------------------------------------- mirroring


def test_character_left_eye_follows_users_left_eye():
    """Unmirrored frame: mediapipe's "Left" is the user's left.  Mirrored (selfie) frame: the
    user's left eye is on the image's left, which mediapipe labels as the subject's right."""
    m = BlendshapeMapper()
    assert m.map(observation({"eyeBlinkLeft": 0.8}))["eye_wink_left"] == 1.0
    selfie = m.map(observation({"eyeBlinkRight": 0.8}, mirrored=True))
    assert selfie["eye_wink_left"] == 1.0 and selfie["eye_wink_right"] == 0.0

    g = GeometryMapper()
    # mesh-left eye (263/362, image right when unmirrored) closed = user's left eye
    assert g.map(observation(landmarks=synthetic_landmarks(0.3, 0.05)))["eye_wink_left"] == 1.0
    # mirrored frame: the user's left eye lies on the image's left, labelled mesh-right
    mirrored = observation(landmarks=synthetic_landmarks(0.05, 0.3), mirrored=True)
    assert g.map(mirrored)["eye_wink_left"] == 1.0


def test_mirrored_frame_gives_the_same_pose_as_unmirrored():
    shapes = {"eyeBlinkLeft": 0.7, "eyeLookInLeft": 0.4, "eyeLookOutRight": 0.3,
              "browOuterUpLeft": 0.6, "cheekSquintRight": 0.5, "jawOpen": 0.3}  # fmt: skip
    plain = BlendshapeMapper().map(observation(shapes, euler=(3.0, 7.0, -4.0)))
    mirrored = BlendshapeMapper().map(
        observation(swap_blendshapes(shapes), euler=(3.0, -7.0, 4.0), mirrored=True)
    )
    assert np.allclose(plain.values, mirrored.values)
    assert plain["head_y"] != 0 and plain["iris_rotation_y"] != 0

    lm = synthetic_landmarks(0.3, 0.12, iris_dx=-0.1, iris_dy=-0.16, mouth_gap=15)
    plain = GeometryMapper().map(observation(landmarks=lm, euler=(3.0, 7.0, -4.0)))
    mirrored = GeometryMapper().map(
        observation(landmarks=mirror_landmarks(lm), euler=(3.0, -7.0, 4.0), mirrored=True)
    )
    assert np.allclose(plain.values, mirrored.values, atol=1e-5)
    # the user looks to their right (iris towards image left when unmirrored): positive, like
    # the official eyeLookIn/Out formula; looking up (iris 0.1 above its rest height) is +1
    assert plain["iris_rotation_y"] > 0.4 and plain["iris_rotation_x"] > 0.9


def test_mirror_character_option():
    pose = BlendshapeMapper().map(observation({"eyeBlinkLeft": 0.8}, euler=(0, 5.0, 3.0)))
    flipped = BlendshapeMapper(MapperSettings(mirror_character=True)).map(
        observation({"eyeBlinkLeft": 0.8}, euler=(0, 5.0, 3.0))
    )
    assert flipped == mirror_pose(pose)
    assert flipped["eye_wink_right"] == 1.0 and flipped["head_y"] == -pose["head_y"]


# ---------------------------------------------------------------- geometry mapper


def test_geometry_features_hand_computed():
    f = geometry_features(observation(landmarks=synthetic_landmarks(0.2, 0.2, mouth_gap=20.0)))
    assert f.eye_left == pytest.approx(0.2, abs=1e-5)
    assert f.mouth_open == pytest.approx(0.2, abs=1e-5)  # 20 px / 100 px inter-ocular
    assert f.mouth_width == pytest.approx(0.78, abs=1e-5)
    assert f.brow_left == pytest.approx(0.42, abs=1e-5)
    assert f.face_size_px == pytest.approx(100.0, abs=1e-3)


def test_geometry_mapper_hand_computed():
    lm = synthetic_landmarks(0.2, 0.2, mouth_gap=20.0, mouth_width=60.0, brow_height=50.0)
    pose = GeometryMapper().map(observation(landmarks=lm, euler=(0.0, 0.0, 7.5)))
    closure = 1 - (0.2 - 0.10) / (0.28 - 0.10)
    assert pose["eye_wink_left"] == pytest.approx(closure, abs=1e-5)
    opening = (0.2 - 0.02) / (0.40 - 0.02)
    # width 0.6 vs neutral 0.78 is narrower than the full 20 %: spread = -1
    assert pose["mouth_aaa"] == pytest.approx(opening * 0.2, abs=1e-5)
    assert pose["mouth_uuu"] == pytest.approx(1 - opening, abs=1e-5)
    assert pose["mouth_ooo"] == pytest.approx(opening, abs=1e-5)
    assert pose["mouth_iii"] == pose["mouth_eee"] == 0.0
    # brow 0.5: delta = (0.5 - 0.42) / 0.08 = 1 -> (1 - 0.3) / 0.7 = 1
    assert pose["eyebrow_raised_left"] == pytest.approx(1.0, abs=1e-5)
    assert pose["neck_z"] == pytest.approx(0.5) and pose["body_z"] == pytest.approx(0.5)
    # iris at rest sits at the default centre height 0.06 above the corner line
    rest = GeometryMapper().map(observation(landmarks=synthetic_landmarks(iris_dy=-0.06)))
    assert rest["iris_rotation_x"] == pytest.approx(0.0, abs=1e-5)
    assert rest["iris_rotation_y"] == pytest.approx(0.0, abs=1e-5)


def test_geometry_mapper_is_scale_invariant():
    lm = synthetic_landmarks(0.22, 0.18, iris_dx=0.05, iris_dy=-0.08, mouth_gap=12, mouth_width=90)
    small = GeometryMapper().map(observation(landmarks=lm))
    centre = np.array([0.5, 0.5, 0.0], dtype=np.float32)
    big = GeometryMapper().map(observation(landmarks=(lm - centre) * 2 + centre))
    shifted = GeometryMapper().map(observation(landmarks=lm * 0.5 + np.float32([0.1, 0.2, 0])))
    assert np.allclose(small.values, big.values, atol=1e-5)
    assert np.allclose(small.values, shifted.values, atol=1e-5)
    assert small["mouth_aaa"] > 0 and small["iris_rotation_y"] != 0


def test_geometry_blink_reaches_zero_and_one_with_calibration():
    ranges = FeatureRanges(eye_left=(0.04, 0.36), eye_right=(0.05, 0.33))
    g = GeometryMapper()
    closed = g.map(observation(landmarks=synthetic_landmarks(0.045, 0.035)), ranges=ranges)
    opened = g.map(observation(landmarks=synthetic_landmarks(0.335, 0.365)), ranges=ranges)
    assert closed["eye_wink_left"] == closed["eye_wink_right"] == 1.0
    assert opened["eye_wink_left"] == opened["eye_wink_right"] == 0.0
    # without the calibration this user's open eye (0.36 vs default 0.28) is also fully open,
    # but a lazy half-closed 0.2 is only partly closed
    half = g.map(observation(landmarks=synthetic_landmarks(0.2, 0.2)), ranges=ranges)
    assert 0.3 < half["eye_wink_left"] < 0.8


def test_map_observation_picks_the_mapper():
    lm = synthetic_landmarks(0.05, 0.05)
    with_shapes = map_observation(observation({"eyeBlinkLeft": 0.0}, landmarks=lm))
    without = map_observation(observation(None, landmarks=lm))
    assert with_shapes["eye_wink_left"] == 0.0  # the blendshapes say open
    assert without["eye_wink_left"] == 1.0  # the geometry says closed
    assert isinstance(without, PoseVector)
    with pytest.raises(PuppetError, match="no blendshapes"):
        BlendshapeMapper().map(observation(None))
