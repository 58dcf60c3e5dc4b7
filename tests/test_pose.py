"""The 45-parameter pose contract (names, order, ranges, slices) per shared/specs/tha-pose.md."""

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.pose import (
    EYEBROW_SLICE,
    FACE_SLICE,
    GROUPS,
    LOWER,
    PARAMETER_NAMES,
    ROTATION_SLICE,
    UPPER,
    PoseVector,
    index_of,
)


def test_order_and_count_match_tha():
    assert len(PARAMETER_NAMES) == 45
    assert PARAMETER_NAMES[:2] == ("eyebrow_troubled_left", "eyebrow_troubled_right")
    assert PARAMETER_NAMES[12] == "eye_wink_left"
    assert PARAMETER_NAMES[24:27] == ("iris_small_left", "iris_small_right", "mouth_aaa")
    assert PARAMETER_NAMES[31] == "mouth_delta"
    assert PARAMETER_NAMES[36:39] == ("mouth_smirk", "iris_rotation_x", "iris_rotation_y")
    assert PARAMETER_NAMES[39:] == ("head_x", "head_y", "neck_z", "body_y", "body_z", "breathing")
    assert len(GROUPS) == 30


def test_ranges_and_slices():
    signed = {i for i in range(45) if LOWER[i] == -1}
    assert signed == {37, 38, 39, 40, 41, 42, 43}
    assert np.all(UPPER == 1)
    assert (EYEBROW_SLICE, FACE_SLICE, ROTATION_SLICE) == (
        slice(0, 12),
        slice(12, 39),
        slice(39, 45),
    )
    pose = PoseVector(np.arange(45))
    assert pose.eyebrow.shape == (12,) and pose.face.shape == (27,) and pose.rotation.shape == (6,)
    assert pose.rotation[0] == 39


def test_named_access_clamp_and_dict_round_trip():
    pose = PoseVector()
    pose["mouth_aaa"] = 1.5
    pose["head_y"] = -3.0
    assert pose["mouth_aaa"] == 1.5
    clamped = pose.clamped()
    assert clamped["mouth_aaa"] == 1.0 and clamped["head_y"] == -1.0
    assert pose["mouth_aaa"] == 1.5  # clamped() copies
    again = PoseVector.from_dict(clamped.to_dict())
    assert again == clamped
    assert clamped.to_dict(nonzero_only=True) == {"mouth_aaa": 1.0, "head_y": -1.0}
    assert PoseVector(clamped.to_list()) == clamped


def test_bad_values_give_clear_errors():
    with pytest.raises(PuppetError, match="45 values"):
        PoseVector([0.0] * 44)
    with pytest.raises(PuppetError, match="NaN"):
        PoseVector([float("nan")] * 45)
    with pytest.raises(PuppetError, match="Unknown pose parameter 'mouth_aa'"):
        index_of("mouth_aa")
