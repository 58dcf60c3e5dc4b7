"""Face observation -> 45-parameter THA pose.

Two mappers, picked per observation by :func:`map_observation`:

* :class:`BlendshapeMapper` reproduces the official THA4 mediapipe converter (same formulas and
  default thresholds as THA3's iFacialMocap converter, see ``shared/specs/tha-pose.md`` §2),
  including the bounded vowel decomposition of the open mouth, plus two additions that are off
  the official path only when asked for: per-user feature ranges from a calibration profile and
  wink/blink linking of the two eyes.
* :class:`GeometryMapper` works from the 478 landmarks alone (the fast tracker gives no
  blendshapes): eye openness from lid/corner distances, iris offset inside the eye, mouth opening
  and width, brow height, all divided by the face size so the distance to the camera cancels.

Left and right.  THA's ``*_left`` parameters are the *character's* left.  mediapipe names
blendshapes and landmark groups after the anatomy of the face *as it appears in the image it
was given* (``eyeBlinkLeft`` is the subject's left eye, which lies on the image's right in an
unmirrored frame).  When the frame was mirrored for a selfie view (``observation.mirrored``) the
face mediapipe saw is the mirror image of the user, so its "left eye" is the user's right eye,
its yaw and roll have the opposite sign and horizontal iris offsets are flipped.  Both mappers
first undo that ("un-mirror"), so the character's left eye always follows the user's left eye
and a head turn to the user's left turns the character to its left, whatever the preview shows.
For mirrored=False observations the result is exactly the official converter's.
``MapperSettings.mirror_character=True`` swaps sides at the very end for users who want the
character to behave like their reflection instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from puppet.errors import PuppetError
from puppet.pose import INDEX, LOWER, NUM_PARAMETERS, UPPER, PoseVector
from puppet.tracking.tracker import FaceObservation

EYEBROW_DOWN_MODES = ("angry", "troubled", "lowered", "serious")
WINK_MODES = ("normal", "relaxed")


@dataclass
class MapperSettings:
    """Thresholds of the official converter (defaults = ``IFacialMocapPoseConverter25Args``)
    and of the landmark-geometry mapper.  All fields can be overridden from a profile."""

    # --- official THA converter ---
    smile_lower: float = 0.4
    smile_upper: float = 0.6
    eyebrow_down_mode: str = "angry"
    wink_mode: str = "normal"
    eye_surprised_max: float = 0.5
    eye_wink_max: float = 0.8
    eyebrow_down_max: float = 0.4
    cheek_squint_min: float = 0.1
    cheek_squint_max: float = 0.7
    eye_rotation_factor: float = 1.0 / 0.75
    jaw_open_min: float = 0.1
    jaw_open_max: float = 0.4
    mouth_frown_max: float = 0.6
    mouth_funnel_min: float = 0.25
    mouth_funnel_max: float = 0.5
    iris_small_left: float = 0.0
    iris_small_right: float = 0.0
    head_x_max_deg: float = 15.0
    head_y_max_deg: float = 10.0
    neck_z_max_deg: float = 15.0
    # --- additions (both mappers) ---
    # Eye linking: closures closer than link_snap are replaced by their mean (a blink is
    # symmetric); closures further apart than link_wink stay apart (a wink stays a wink);
    # linear blend in between so there is no jump.  link_eyes=False gives the official output.
    link_eyes: bool = True
    link_snap: float = 0.25
    link_wink: float = 0.5
    mirror_character: bool = False
    # --- landmark-geometry mapper defaults, used when the profile has no geometry ranges ---
    # (measured with the official model on the two fixture face videos: open eyes 0.30-0.45,
    # closed 0.07-0.085; closed mouth 0.005-0.01, wide open ~0.5; neutral mouth width 0.76-0.82;
    # brow 0.39-0.45; iris at rest ~(0.0, 0.06), sideways looks reach about +-0.2 / 0.1)
    geo_eye_closed: float = 0.10
    geo_eye_open: float = 0.28
    geo_mouth_closed: float = 0.02
    geo_mouth_open: float = 0.40
    geo_mouth_width: float = 0.78  # neutral mouth width / inter-ocular distance
    geo_mouth_spread_range: float = 0.2  # relative width change that counts as fully wide
    geo_brow_neutral: float = 0.42  # brow-to-upper-lid distance / inter-ocular distance
    geo_brow_range: float = 0.08  # change that counts as a full raise (or lowering)
    geo_brow_deadzone: float = 0.3  # fraction of the range ignored around neutral
    geo_iris_center: tuple[float, float] = (0.0, 0.06)  # iris offset at rest (x, y)
    geo_iris_range: tuple[float, float] = (0.2, 0.1)  # offset that gives a full rotation

    def __post_init__(self) -> None:
        if self.eyebrow_down_mode not in EYEBROW_DOWN_MODES:
            raise PuppetError(
                f"Unknown eyebrow_down_mode {self.eyebrow_down_mode!r}.",
                f"Use one of: {', '.join(EYEBROW_DOWN_MODES)}.",
            )
        if self.wink_mode not in WINK_MODES:
            raise PuppetError(
                f"Unknown wink_mode {self.wink_mode!r}.", f"Use one of: {', '.join(WINK_MODES)}."
            )

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, object] | None) -> MapperSettings:
        """Defaults with ``overrides`` applied; unknown names or wrong types -> PuppetError."""
        settings = cls()
        if not overrides:
            return settings
        types = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in overrides.items():
            if key not in types:
                raise PuppetError(
                    f"Unknown mapper setting {key!r}.", f"Known settings: {', '.join(types)}."
                )
            default = getattr(settings, key)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif isinstance(default, tuple):
                ok = isinstance(value, list | tuple) and len(value) == len(default)
                value = tuple(float(v) for v in value) if ok else value
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise PuppetError(
                    f"Mapper setting {key!r} has the wrong type ({type(value).__name__}).",
                    f"Give a {type(default).__name__} like the default {default!r}.",
                )
            values[key] = value
        return cls(**{**{f.name: getattr(settings, f.name) for f in fields(cls)}, **values})


@dataclass
class FeatureRanges:
    """Per-user raw feature levels measured by calibration (None = use the mapper's default).

    Geometry mapper: eye openness ratios (closed, open) per eye, mouth opening ratio (closed,
    open), brow ratio (neutral, raised), the iris offset at rest and the iris offset that
    counts as fully turned.  Blendshape mapper: eyeBlink scores (open, closed) per eye and
    jawOpen (closed, open)."""

    eye_left: tuple[float, float] | None = None
    eye_right: tuple[float, float] | None = None
    mouth_open: tuple[float, float] | None = None
    brow: tuple[float, float] | None = None
    mouth_width: float | None = None
    iris_center: tuple[float, float] | None = None
    iris_range: tuple[float, float] | None = None


@dataclass
class HeadCalibration:
    """Neutral head angles (degrees, user-anatomical frame) subtracted before mapping."""

    offset_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------
# Small helpers


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


def _remap(x: float, lo: float, hi: float) -> float:
    """(clamp(x, lo, hi) - lo) / (hi - lo), guarding a zero or negative denominator."""
    if hi <= lo:
        return 1.0 if x >= hi else 0.0
    return _clamp((x - lo) / (hi - lo))


def _safe_div(x: float, d: float) -> float:
    return x / d if d > 0 else (1.0 if x > 0 else 0.0)


def link_eyes(
    left: float, right: float, snap: float = 0.25, wink: float = 0.5
) -> tuple[float, float]:
    """Make a blink symmetric and keep a wink a wink (values: eye closure 0..1).

    |left - right| <= snap: both become the mean; >= wink: unchanged; in between a linear
    blend between the two, so the output is continuous."""
    diff = abs(left - right)
    mean = 0.5 * (left + right)
    if diff <= snap:
        return mean, mean
    if diff >= wink or wink <= snap:
        return left, right
    keep = (diff - snap) / (wink - snap)
    return mean + keep * (left - mean), mean + keep * (right - mean)


def user_head_angles(observation: FaceObservation) -> tuple[float, float, float]:
    """The observation's Euler angles (degrees) in the user's anatomical frame.

    A horizontal mirror keeps pitch and negates yaw and roll (S R S with S = diag(-1,1,1)
    negates the y and z angles of an 'xyz' Euler decomposition)."""
    x, y, z = (float(a) for a in observation.euler_deg)
    return (x, -y, -z) if observation.mirrored else (x, y, z)


def head_parameters(
    angles_deg: tuple[float, float, float], settings: MapperSettings
) -> dict[str, float]:
    """The official head/body mapping from (already offset-corrected) Euler angles."""
    ex, ey, ez = angles_deg
    hx = _clamp(-ex, -settings.head_x_max_deg, settings.head_x_max_deg) / settings.head_x_max_deg
    hy = _clamp(-ey, -settings.head_y_max_deg, settings.head_y_max_deg) / settings.head_y_max_deg
    nz = _clamp(ez, -settings.neck_z_max_deg, settings.neck_z_max_deg) / settings.neck_z_max_deg
    return {"head_x": hx, "head_y": hy, "neck_z": nz, "body_y": hy, "body_z": nz}


_SWAP = {
    i: INDEX[n.replace("_left", "_right")]
    if n.endswith("_left")
    else INDEX[n.replace("_right", "_left")]
    for n, i in INDEX.items()
    if n.endswith("_left") or n.endswith("_right")
}
_MIRROR_PERMUTATION = np.array([_SWAP.get(i, i) for i in range(NUM_PARAMETERS)])
_MIRROR_SIGN = np.ones(NUM_PARAMETERS, dtype=np.float32)
for _name in ("iris_rotation_y", "head_y", "neck_z", "body_y", "body_z"):
    _MIRROR_SIGN[INDEX[_name]] = -1.0


def mirror_pose(pose: PoseVector) -> PoseVector:
    """The pose of the character's mirror image: left/right swapped, yaw and roll negated."""
    return PoseVector(pose.values[_MIRROR_PERMUTATION] * _MIRROR_SIGN)


# --------------------------------------------------------------------------------------------
# Vowel decomposition: min ||d M - p||_2 + 0.01 ||d||_1 over d in [0,1]^4 (official converter)

VOWEL_BASIS = np.array(
    [
        [1.0, 1.0, 0.0, 0.0],  # aaa
        [0.0, 1.0, 0.0, 0.0],  # iii
        [0.5, 0.3, 0.25, 0.75],  # uuu
        [1.0, 0.5, 0.5, 0.4],  # ooo
    ]
)
VOWEL_L1 = 0.01


def _build_box_qp_table(basis: np.ndarray):
    """Precompute, for every active-set pattern of the 4-variable box QP
    min 1/2 |d M - p|^2 + g.d, the affine maps g -> d and g -> gradient."""
    h = basis @ basis.T
    n = h.shape[0]
    solve_p, solve_c, grad_q, grad_e, patterns = [], [], [], [], []
    for pattern in itertools.product((0, 1, 2), repeat=n):  # 0: at 0, 1: at 1, 2: free
        free = [i for i in range(n) if pattern[i] == 2]
        ones = np.array([1.0 if pattern[i] == 1 else 0.0 for i in range(n)])
        p_mat = np.zeros((n, n))
        c_vec = ones.copy()
        if free:
            inv = np.linalg.inv(h[np.ix_(free, free)])
            p_mat[np.ix_(free, free)] = -inv
            c_vec[free] = -inv @ (h[free] @ ones)
        solve_p.append(p_mat)
        solve_c.append(c_vec)
        grad_q.append(h @ p_mat + np.eye(n))
        grad_e.append(h @ c_vec)
        patterns.append(pattern)
    pat = np.array(patterns)
    return (
        h,
        np.stack(solve_p),
        np.stack(solve_c),
        np.stack(grad_q),
        np.stack(grad_e),
        pat == 0,
        pat == 1,
        pat == 2,
    )


_QP = _build_box_qp_table(VOWEL_BASIS)


def _box_qp(linear: np.ndarray) -> np.ndarray:
    """min 1/2 d H d + linear.d over [0,1]^4 (H = M M^T), exactly, by checking the KKT
    conditions of all 81 active sets at once (a handful of small matrix products)."""
    h, sp, sc, gq, ge, at0, at1, free = _QP
    d = sp @ linear + sc  # (81, 4)
    g = gq @ linear + ge
    tol = 1e-9
    violation = (
        np.where(free, np.maximum(-d, 0.0) + np.maximum(d - 1.0, 0.0), 0.0)
        + np.where(at0, np.maximum(-g, 0.0), 0.0)
        + np.where(at1, np.maximum(g, 0.0), 0.0)
    ).sum(axis=1)
    best = int(np.argmin(violation))
    if violation[best] > tol:  # numerically borderline: take the best objective among near-valid
        near = np.flatnonzero(violation <= violation[best] + 1e-7)
        objective = 0.5 * np.einsum("ki,ij,kj->k", d[near], h, d[near]) + d[near] @ linear
        best = int(near[np.argmin(objective)])
    return np.clip(d[best], 0.0, 1.0)


def vowel_weights(point: np.ndarray | list[float], l1: float = VOWEL_L1) -> np.ndarray:
    """The official converter's decomposition of the mouth point
    ``[mouth_open, lowerDown, funnel, pucker]`` into (aaa, iii, uuu, ooo) weights.

    Solves min ||d M - p||_2 + l1 * sum(d) over d in [0,1]^4 exactly, instead of running
    scipy.optimize.minimize every frame: at the optimum with a nonzero residual r the KKT
    conditions equal those of the box QP min 1/2||d M - p||^2 + mu * sum(d) with mu = l1*|r|,
    so we iterate mu -> l1*|r(mu)| (a strong contraction since l1 is small) with an exact
    81-pattern QP solve each time.  A zero residual is optimal whenever it is feasible because
    ||l1 * M^-1 1|| = 0.013 < 1.
    """
    p = np.asarray(point, dtype=np.float64).reshape(4)
    basis_p = VOWEL_BASIS @ p
    mu = 0.0
    d = _box_qp(mu - basis_p)
    for _ in range(50):
        residual = float(np.linalg.norm(d @ VOWEL_BASIS - p))
        new_mu = l1 * residual
        if abs(new_mu - mu) < 1e-13:
            break
        mu = new_mu
        d = _box_qp(mu - basis_p)
    return d


def vowel_objective(d: np.ndarray, point: np.ndarray, l1: float = VOWEL_L1) -> float:
    """The official objective, for tests and diagnostics."""
    return float(
        np.linalg.norm(np.asarray(d) @ VOWEL_BASIS - np.asarray(point)) + l1 * np.abs(d).sum()
    )


# --------------------------------------------------------------------------------------------
# Blendshape mapper (official THA4 mediapipe converter)


def _unmirror_blendshapes(blendshapes: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for name, value in blendshapes.items():
        if name.endswith("Left"):
            name = name[:-4] + "Right"
        elif name.endswith("Right"):
            name = name[:-5] + "Left"
        out[name] = float(value)
    return out


class BlendshapeMapper:
    """The official THA4 mediapipe converter's formulas on mediapipe blendshapes."""

    def __init__(self, settings: MapperSettings | None = None) -> None:
        self.settings = settings or MapperSettings()

    def map_blendshapes(
        self,
        blendshapes: Mapping[str, float],
        head_angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
        ranges: FeatureRanges | None = None,
    ) -> PoseVector:
        """Map user-anatomical blendshape scores and offset-corrected head angles (degrees).

        With ``ranges`` None and ``settings.link_eyes`` False this is exactly the official
        converter."""
        s = self.settings
        b = blendshapes.get
        pose = PoseVector()
        out = pose.values
        idx = INDEX

        smile = (b("mouthSmileLeft", 0.0) + b("mouthSmileRight", 0.0)) / 2.0 + b(
            "mouthShrugUpper", 0.0
        )
        smile_degree = _remap(smile, s.smile_lower, s.smile_upper)

        # Eyebrows
        brow_inner = b("browInnerUp", 0.0)
        for side, Side in (("left", "Left"), ("right", "Right")):
            out[idx[f"eyebrow_raised_{side}"]] = _clamp(brow_inner + b(f"browOuterUp{Side}", 0.0))
            down = (1.0 - smile_degree) * _clamp(
                _safe_div(b(f"browDown{Side}", 0.0), s.eyebrow_down_max)
            )
            out[idx[f"eyebrow_{s.eyebrow_down_mode}_{side}"]] = down
            out[idx[f"eyebrow_happy_{side}"]] = _clamp(smile) * smile_degree

        # Eyes
        closure = {}
        for side, Side in (("left", "Left"), ("right", "Right")):
            blink = b(f"eyeBlink{Side}", 0.0)
            level = getattr(ranges, f"eye_{side}", None) if ranges is not None else None
            if level is not None:
                closure[side] = _remap(blink, level[0], level[1])
            else:
                closure[side] = _clamp(_safe_div(blink, s.eye_wink_max))
            out[idx[f"eye_surprised_{side}"]] = _clamp(
                _safe_div(b(f"eyeWide{Side}", 0.0), s.eye_surprised_max)
            )
            out[idx[f"eye_raised_lower_eyelid_{side}"]] = _remap(
                b(f"cheekSquint{Side}", 0.0), s.cheek_squint_min, s.cheek_squint_max
            )
        if s.link_eyes:
            closure["left"], closure["right"] = link_eyes(
                closure["left"], closure["right"], s.link_snap, s.link_wink
            )
        wink_group = "eye_wink" if s.wink_mode == "normal" else "eye_relaxed"
        for side in ("left", "right"):
            out[idx[f"{wink_group}_{side}"]] = (1.0 - smile_degree) * closure[side]
            out[idx[f"eye_happy_wink_{side}"]] = smile_degree * closure[side]

        # Iris
        f = s.eye_rotation_factor
        out[idx["iris_rotation_y"]] = _clamp(
            (
                b("eyeLookInLeft", 0.0)
                - b("eyeLookOutLeft", 0.0)
                - b("eyeLookInRight", 0.0)
                + b("eyeLookOutRight", 0.0)
            )
            / 2.0
            * f,
            -1.0,
            1.0,
        )
        out[idx["iris_rotation_x"]] = _clamp(
            (
                b("eyeLookUpLeft", 0.0)
                + b("eyeLookUpRight", 0.0)
                - b("eyeLookDownLeft", 0.0)
                - b("eyeLookDownRight", 0.0)
            )
            / 2.0
            * f,
            -1.0,
            1.0,
        )
        out[idx["iris_small_left"]] = _clamp(s.iris_small_left)
        out[idx["iris_small_right"]] = _clamp(s.iris_small_right)

        # Head and body
        for name, value in head_parameters(head_angles_deg, s).items():
            out[idx[name]] = value

        # Mouth
        jaw = b("jawOpen", 0.0)
        if ranges is not None and ranges.mouth_open is not None:
            mouth_open = _remap(jaw, ranges.mouth_open[0], ranges.mouth_open[1])
        else:
            mouth_open = _remap(jaw, s.jaw_open_min, s.jaw_open_max)
        out[idx["mouth_aaa"]] = mouth_open
        out[idx["mouth_raised_corner_left"]] = _clamp(smile)
        out[idx["mouth_raised_corner_right"]] = _clamp(smile)
        if mouth_open == 0.0:
            frown = _clamp(
                _safe_div(b("mouthFrownLeft", 0.0) + b("mouthFrownRight", 0.0), s.mouth_frown_max)
            )
            out[idx["mouth_lowered_corner_left"]] = frown
            out[idx["mouth_lowered_corner_right"]] = frown
        else:
            funnel = b("mouthFunnel", 0.0)
            point = [
                mouth_open,
                _clamp(b("mouthLowerDownLeft", 0.0) + b("mouthLowerDownRight", 0.0)),
                funnel,
                b("mouthPucker", 0.0),
            ]
            d = vowel_weights(point)
            out[idx["mouth_aaa"]] = d[0]
            out[idx["mouth_iii"]] = d[1]
            ooo_alpha = _remap(funnel, s.mouth_funnel_min, s.mouth_funnel_max)
            uo = _clamp(float(d[2] + d[3]))
            out[idx["mouth_uuu"]] = uo * (1.0 - ooo_alpha)
            out[idx["mouth_ooo"]] = uo * ooo_alpha
        return pose

    def map(
        self,
        observation: FaceObservation,
        head: HeadCalibration | None = None,
        ranges: FeatureRanges | None = None,
    ) -> PoseVector:
        if observation.blendshapes is None:
            raise PuppetError(
                "This face observation has no blendshapes.",
                "Use the full tracker mode, or the landmark-geometry mapper.",
            )
        shapes = observation.blendshapes
        if observation.mirrored:
            shapes = _unmirror_blendshapes(shapes)
        pose = self.map_blendshapes(shapes, _offset_angles(observation, head), ranges)
        return mirror_pose(pose) if self.settings.mirror_character else pose


def _offset_angles(
    observation: FaceObservation, head: HeadCalibration | None
) -> tuple[float, float, float]:
    angles = user_head_angles(observation)
    if head is None:
        return angles
    return tuple(a - o for a, o in zip(angles, head.offset_deg, strict=True))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Landmark-geometry mapper


# Standard mediapipe face-mesh indices.  "mesh_right" is the eye mediapipe calls the subject's
# right eye (outer corner 33, on the image's left in an unmirrored frame).
@dataclass(frozen=True)
class _EyeIndices:
    outer: int
    inner: int
    upper: tuple[int, int, int]
    lower: tuple[int, int, int]
    iris: int  # iris centre
    brow: tuple[int, int]  # brow points above the eye


MESH_RIGHT_EYE = _EyeIndices(33, 133, (160, 159, 158), (144, 145, 153), 468, (105, 66))
MESH_LEFT_EYE = _EyeIndices(263, 362, (387, 386, 385), (373, 374, 380), 473, (334, 296))
LIP_UPPER_INNER = 13
LIP_LOWER_INNER = 14
MOUTH_CORNER_RIGHT = 61  # outer lip corners (mesh right / left)
MOUTH_CORNER_LEFT = 291


@dataclass
class GeometryFeatures:
    """Raw, scale-free measurements in the user's anatomical frame.

    eye_*: lid opening / eye width (0 closed, ~0.25 open); mouth_open: inner-lip gap /
    inter-ocular distance; mouth_width: corner distance / inter-ocular distance; brow_*: brow
    height above the upper lid / inter-ocular distance; iris_x: iris offset towards the user's
    right / eye width; iris_y: iris offset upwards / eye width (both averaged over the eyes)."""

    eye_left: float
    eye_right: float
    mouth_open: float
    mouth_width: float
    brow_left: float
    brow_right: float
    iris_x: float
    iris_y: float
    face_size_px: float = field(default=0.0)


def _eye_measures(p: np.ndarray, eye: _EyeIndices, axis_from: int, axis_to: int):
    width = float(np.linalg.norm(p[eye.outer] - p[eye.inner]))
    lids = [float(np.linalg.norm(p[u] - p[lo])) for u, lo in zip(eye.upper, eye.lower, strict=True)]
    openness = _safe_div(sum(lids) / 3.0, width)
    # iris offset in the eye's own 2-D frame: u along the corner axis (towards the image's
    # right for an upright face), v perpendicular pointing down the image.
    u = p[axis_to, :2] - p[axis_from, :2]
    u = u / max(float(np.linalg.norm(u)), 1e-9)
    v = np.array([-u[1], u[0]])
    centre = 0.5 * (p[eye.outer, :2] + p[eye.inner, :2])
    rel = p[eye.iris, :2] - centre
    w2 = max(float(np.linalg.norm(p[axis_to, :2] - p[axis_from, :2])), 1e-9)
    brow_pt = p[list(eye.brow)].mean(axis=0)
    brow = float(np.linalg.norm(brow_pt - p[eye.upper[1]]))
    return openness, float(rel @ u) / w2, float(rel @ v) / w2, brow


def geometry_features(observation: FaceObservation) -> GeometryFeatures:
    """Measure the face from its landmarks (pixels, z in the scale of x: 3-D distances so yaw
    foreshortening affects numerator and denominator alike)."""
    p = observation.landmarks_px.astype(np.float64)
    if p.shape[0] < 478:
        raise PuppetError(
            f"The geometry mapper needs 478 landmarks with irises, got {p.shape[0]}.",
            "Use a tracker model with iris refinement (both puppet tracker modes have it).",
        )
    r_open, r_ix, r_iy, r_brow = _eye_measures(p, MESH_RIGHT_EYE, 33, 133)
    l_open, l_ix, l_iy, l_brow = _eye_measures(p, MESH_LEFT_EYE, 362, 263)
    centre_r = 0.5 * (p[33] + p[133])
    centre_l = 0.5 * (p[263] + p[362])
    face = max(float(np.linalg.norm(centre_l - centre_r)), 1e-9)
    mouth_open = float(np.linalg.norm(p[LIP_UPPER_INNER] - p[LIP_LOWER_INNER])) / face
    mouth_width = float(np.linalg.norm(p[MOUTH_CORNER_LEFT] - p[MOUTH_CORNER_RIGHT])) / face
    ix_img = 0.5 * (r_ix + l_ix)  # + = towards the image's right
    iy_down = 0.5 * (r_iy + l_iy)
    if observation.mirrored:
        # mirrored: image right is the user's right; mesh "right" eye is the user's left eye
        return GeometryFeatures(
            r_open,
            l_open,
            mouth_open,
            mouth_width,
            r_brow / face,
            l_brow / face,
            ix_img,
            -iy_down,
            face,
        )
    return GeometryFeatures(
        l_open,
        r_open,
        mouth_open,
        mouth_width,
        l_brow / face,
        r_brow / face,
        -ix_img,
        -iy_down,
        face,
    )


class GeometryMapper:
    """Landmark geometry -> pose (for observations without blendshapes)."""

    def __init__(self, settings: MapperSettings | None = None) -> None:
        self.settings = settings or MapperSettings()

    def map_features(
        self,
        f: GeometryFeatures,
        head_angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
        ranges: FeatureRanges | None = None,
    ) -> PoseVector:
        s = self.settings
        r = ranges or FeatureRanges()
        pose = PoseVector()
        out = pose.values
        idx = INDEX
        closure = {}
        for side in ("left", "right"):
            lo, hi = getattr(r, f"eye_{side}") or (s.geo_eye_closed, s.geo_eye_open)
            closure[side] = 1.0 - _remap(getattr(f, f"eye_{side}"), lo, hi)
        if s.link_eyes:
            closure["left"], closure["right"] = link_eyes(
                closure["left"], closure["right"], s.link_snap, s.link_wink
            )
        wink_group = "eye_wink" if s.wink_mode == "normal" else "eye_relaxed"
        for side in ("left", "right"):
            out[idx[f"{wink_group}_{side}"]] = closure[side]

        cx, cy = r.iris_center or s.geo_iris_center
        rx, ry = r.iris_range or s.geo_iris_range
        out[idx["iris_rotation_y"]] = _clamp((f.iris_x - cx) / max(rx, 1e-6), -1.0, 1.0)
        out[idx["iris_rotation_x"]] = _clamp((f.iris_y - cy) / max(ry, 1e-6), -1.0, 1.0)
        out[idx["iris_small_left"]] = _clamp(s.iris_small_left)
        out[idx["iris_small_right"]] = _clamp(s.iris_small_right)

        brow_neutral, brow_raised = r.brow or (
            s.geo_brow_neutral,
            s.geo_brow_neutral + s.geo_brow_range,
        )
        brow_range = max(brow_raised - brow_neutral, 1e-6)
        for side in ("left", "right"):
            delta = (getattr(f, f"brow_{side}") - brow_neutral) / brow_range
            dead = s.geo_brow_deadzone
            out[idx[f"eyebrow_raised_{side}"]] = _clamp((delta - dead) / (1.0 - dead))
            out[idx[f"eyebrow_{s.eyebrow_down_mode}_{side}"]] = _clamp(
                (-delta - dead) / (1.0 - dead)
            )

        lo, hi = r.mouth_open or (s.geo_mouth_closed, s.geo_mouth_open)
        opening = _remap(f.mouth_open, lo, hi)
        width0 = r.mouth_width or s.geo_mouth_width
        spread = _clamp((f.mouth_width / width0 - 1.0) / s.geo_mouth_spread_range, -1.0, 1.0)
        wide, narrow = max(spread, 0.0), max(-spread, 0.0)
        gate = _clamp(opening * 2.5)  # vowel shapes need at least a slightly open mouth
        out[idx["mouth_aaa"]] = opening * (1.0 - 0.8 * max(wide, narrow))
        out[idx["mouth_iii"]] = gate * wide * (1.0 - opening)
        out[idx["mouth_eee"]] = gate * wide * opening
        out[idx["mouth_uuu"]] = gate * narrow * (1.0 - opening)
        out[idx["mouth_ooo"]] = gate * narrow * opening

        for name, value in head_parameters(head_angles_deg, s).items():
            out[idx[name]] = value
        return pose

    def map(
        self,
        observation: FaceObservation,
        head: HeadCalibration | None = None,
        ranges: FeatureRanges | None = None,
    ) -> PoseVector:
        pose = self.map_features(
            geometry_features(observation), _offset_angles(observation, head), ranges
        )
        return mirror_pose(pose) if self.settings.mirror_character else pose


def map_observation(
    observation: FaceObservation,
    settings: MapperSettings | None = None,
    head: HeadCalibration | None = None,
    geometry_ranges: FeatureRanges | None = None,
    blendshape_ranges: FeatureRanges | None = None,
) -> PoseVector:
    """Blendshapes present -> official blendshape mapper, else the landmark-geometry mapper.
    The result is clamped to every parameter's range."""
    if observation.blendshapes is not None:
        pose = BlendshapeMapper(settings).map(observation, head, blendshape_ranges)
    else:
        pose = GeometryMapper(settings).map(observation, head, geometry_ranges)
    np.clip(pose.values, LOWER, UPPER, out=pose.values)
    return pose


def breathing_value(t: float, breaths_per_minute: float, t0: float = 0.0) -> float:
    """The official breathing curve (1 - cos 2*pi*phase) / 2; 0 when the rate is 0."""
    if breaths_per_minute <= 0:
        return 0.0
    phase = ((t - t0) * breaths_per_minute / 60.0) % 1.0
    return 0.5 * (1.0 - math.cos(2.0 * math.pi * phase))
