"""Poser spec resolution: the registry maps spec strings to poser factories."""

import numpy as np
import pytest

from poser_models.registry import create_poser, parse_spec, register_poser
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_STUDENT_DIR
from puppet.pose import PoseVector


def test_parse_known_specs():
    assert parse_spec("default", DEFAULT_STUDENT_DIR) == ("student", str(DEFAULT_STUDENT_DIR))
    assert parse_spec("tha3:separable_float") == ("tha3", "separable_float")
    assert parse_spec("tha3:standard_half@/models/tha3") == ("tha3", "standard_half@/models/tha3")
    assert parse_spec("tha4-student:/x/lambda_00") == ("tha4-student", "/x/lambda_00")
    assert parse_spec("student:out/student") == ("student", "out/student")


@pytest.mark.parametrize("spec", ["nope", "tha5:x", "", "default2"])
def test_unknown_spec_lists_the_known_ones(spec):
    with pytest.raises(PuppetError, match="Use one of: default, student:PATH"):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["tha3", "tha3:", "student:", "tha4-student"])
def test_missing_argument(spec):
    with pytest.raises(PuppetError, match="missing its argument"):
        parse_spec(spec)


class _SolidPoser:
    device = "cpu"
    dtype = "float32"

    def __init__(self, size):
        self.size = size
        self.loaded = None

    def load(self, character):
        self.loaded = character

    def pose(self, pose):
        out = np.zeros((self.size, self.size, 4), np.uint8)
        out[..., 3] = int(255 * pose["mouth_aaa"])
        return out


def test_registered_factory_is_built_and_loaded(tmp_path):
    def factory(argument, device, models_dir):
        return _SolidPoser(int(argument)), tmp_path

    register_poser("solid", factory)
    poser = create_poser("solid:8")
    assert poser.loaded == tmp_path
    pose = PoseVector()
    pose["mouth_aaa"] = 1.0
    assert poser.pose(pose).shape == (8, 8, 4)
    register_poser("solid2", lambda argument, device, models_dir: (_SolidPoser(4), None))
    with pytest.raises(PuppetError, match="needs a character image"):
        create_poser("solid2:x")
