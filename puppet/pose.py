"""The 45-parameter Talking Head Anime pose: the one contract between tracking and posers.

Names, order, ranges and network slices follow THA3's ``pose_parameters.py`` (also used by
THA4): 12 eyebrow, 27 face (eyes, iris, mouth, iris rotation) and 6 rotation/breathing values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from puppet.errors import PuppetError


@dataclass(frozen=True)
class PoseParameter:
    name: str
    index: int
    group: str  # e.g. "eyebrow_troubled" (the left/right pair share a group)
    category: str  # EYEBROW, EYE, IRIS_MORPH, MOUTH, IRIS_ROTATION, FACE_ROTATION, ...
    lower: float
    upper: float


# (group, category, arity, lower, upper) in THA order.
_GROUPS: list[tuple[str, str, int, float, float]] = [
    ("eyebrow_troubled", "EYEBROW", 2, 0.0, 1.0),
    ("eyebrow_angry", "EYEBROW", 2, 0.0, 1.0),
    ("eyebrow_lowered", "EYEBROW", 2, 0.0, 1.0),
    ("eyebrow_raised", "EYEBROW", 2, 0.0, 1.0),
    ("eyebrow_happy", "EYEBROW", 2, 0.0, 1.0),
    ("eyebrow_serious", "EYEBROW", 2, 0.0, 1.0),
    ("eye_wink", "EYE", 2, 0.0, 1.0),
    ("eye_happy_wink", "EYE", 2, 0.0, 1.0),
    ("eye_surprised", "EYE", 2, 0.0, 1.0),
    ("eye_relaxed", "EYE", 2, 0.0, 1.0),
    ("eye_unimpressed", "EYE", 2, 0.0, 1.0),
    ("eye_raised_lower_eyelid", "EYE", 2, 0.0, 1.0),
    ("iris_small", "IRIS_MORPH", 2, 0.0, 1.0),
    ("mouth_aaa", "MOUTH", 1, 0.0, 1.0),
    ("mouth_iii", "MOUTH", 1, 0.0, 1.0),
    ("mouth_uuu", "MOUTH", 1, 0.0, 1.0),
    ("mouth_eee", "MOUTH", 1, 0.0, 1.0),
    ("mouth_ooo", "MOUTH", 1, 0.0, 1.0),
    ("mouth_delta", "MOUTH", 1, 0.0, 1.0),
    ("mouth_lowered_corner", "MOUTH", 2, 0.0, 1.0),
    ("mouth_raised_corner", "MOUTH", 2, 0.0, 1.0),
    ("mouth_smirk", "MOUTH", 1, 0.0, 1.0),
    ("iris_rotation_x", "IRIS_ROTATION", 1, -1.0, 1.0),
    ("iris_rotation_y", "IRIS_ROTATION", 1, -1.0, 1.0),
    ("head_x", "FACE_ROTATION", 1, -1.0, 1.0),
    ("head_y", "FACE_ROTATION", 1, -1.0, 1.0),
    ("neck_z", "FACE_ROTATION", 1, -1.0, 1.0),
    ("body_y", "BODY_ROTATION", 1, -1.0, 1.0),
    ("body_z", "BODY_ROTATION", 1, -1.0, 1.0),
    ("breathing", "BREATHING", 1, 0.0, 1.0),
]


def _build_parameters() -> tuple[PoseParameter, ...]:
    out: list[PoseParameter] = []
    for group, category, arity, lower, upper in _GROUPS:
        names = [group] if arity == 1 else [f"{group}_left", f"{group}_right"]
        for name in names:
            out.append(PoseParameter(name, len(out), group, category, lower, upper))
    return tuple(out)


PARAMETERS: tuple[PoseParameter, ...] = _build_parameters()
PARAMETER_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)
NUM_PARAMETERS = len(PARAMETERS)
assert NUM_PARAMETERS == 45
INDEX: dict[str, int] = {p.name: p.index for p in PARAMETERS}
LOWER = np.array([p.lower for p in PARAMETERS], dtype=np.float32)
UPPER = np.array([p.upper for p in PARAMETERS], dtype=np.float32)

# The slices each THA network reads.
EYEBROW_SLICE = slice(0, 12)
FACE_SLICE = slice(12, 39)  # eyes, iris morphs, mouth, iris rotation
ROTATION_SLICE = slice(39, 45)  # head_x, head_y, neck_z, body_y, body_z, breathing
NUM_EYEBROW_PARAMS = 12
NUM_FACE_PARAMS = 27
NUM_ROTATION_PARAMS = 6

CATEGORIES: dict[str, tuple[str, ...]] = {}
for _p in PARAMETERS:
    CATEGORIES.setdefault(_p.category, ())
    CATEGORIES[_p.category] = CATEGORIES[_p.category] + (_p.name,)
GROUPS: dict[str, tuple[str, ...]] = {}
for _p in PARAMETERS:
    GROUPS[_p.group] = GROUPS.get(_p.group, ()) + (_p.name,)


def index_of(name: str) -> int:
    """The position of a parameter, with a helpful error for unknown names."""
    try:
        return INDEX[name]
    except KeyError:
        raise PuppetError(
            f"Unknown pose parameter {name!r}.",
            f"Known parameters: {', '.join(PARAMETER_NAMES)}.",
        ) from None


class PoseVector:
    """45 float32 values in THA order, with named access.

    ``pose["mouth_aaa"] = 1.0`` sets by name, ``pose.values`` is the float32 array (shared,
    not copied), ``pose.clamped()`` returns a copy inside every parameter's range.
    """

    __slots__ = ("values",)

    def __init__(self, values: Sequence[float] | np.ndarray | None = None) -> None:
        if values is None:
            self.values = np.zeros(NUM_PARAMETERS, dtype=np.float32)
            return
        array = np.asarray(values, dtype=np.float32).reshape(-1)
        if array.shape != (NUM_PARAMETERS,):
            raise PuppetError(
                f"A pose needs {NUM_PARAMETERS} values, got {array.size}.",
                "Give one value per THA parameter (see `puppet.pose.PARAMETER_NAMES`).",
            )
        if not np.all(np.isfinite(array)):
            raise PuppetError("A pose value is NaN or infinite.", "Give finite numbers.")
        self.values = array.copy()

    @classmethod
    def neutral(cls) -> PoseVector:
        return cls()

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> PoseVector:
        pose = cls()
        for name, value in values.items():
            pose[name] = float(value)
        return pose

    def to_dict(self, *, nonzero_only: bool = False) -> dict[str, float]:
        pairs = zip(PARAMETER_NAMES, self.values, strict=True)
        return {n: float(v) for n, v in pairs if not nonzero_only or v != 0.0}

    def to_list(self) -> list[float]:
        return [float(v) for v in self.values]

    def __getitem__(self, name: str) -> float:
        return float(self.values[index_of(name)])

    def __setitem__(self, name: str, value: float) -> None:
        self.values[index_of(name)] = value

    def __iter__(self) -> Iterable[float]:
        return iter(self.to_list())

    def __len__(self) -> int:
        return NUM_PARAMETERS

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoseVector) and bool(np.array_equal(self.values, other.values))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.3g}" for k, v in self.to_dict(nonzero_only=True).items())
        return f"PoseVector({inner})"

    def copy(self) -> PoseVector:
        return PoseVector(self.values)

    def clamped(self) -> PoseVector:
        out = PoseVector()
        np.clip(self.values, LOWER, UPPER, out=out.values)
        return out

    @property
    def eyebrow(self) -> np.ndarray:
        return self.values[EYEBROW_SLICE]

    @property
    def face(self) -> np.ndarray:
        return self.values[FACE_SLICE]

    @property
    def rotation(self) -> np.ndarray:
        return self.values[ROTATION_SLICE]
