"""The rig teacher: the bundled character "hana", drawn with skia at any 45-parameter pose.

Every part of the bust is a vector path built from control points given in the neutral
512x512 image. A frame moves those points (expression morphs first, then the 2.5D head and
body motion) and draws the paths anti-aliased, back to front. Because every step is a smooth
function of the pose, a small pose change gives a small image change, and the same pose
always gives the same pixels.

Conventions (THA semantics, checked against the official THA4 student's outputs):
    * ``*_left`` is the CHARACTER's left: it appears on the image's RIGHT side.
    * ``head_y > 0`` turns the face toward the image's right (the character's left); the
      face features shift right by up to ~14 px at 1.0 while the back hair shifts left.
    * ``head_x > 0`` tilts the face up (features move up, up to ~10 px); ``< 0`` looks down.
    * ``neck_z > 0`` rolls the head counter-clockwise on screen (its top toward the image's
      left) about the base of the neck, 12 degrees at 1.0.
    * ``body_y > 0`` turns the chest toward the image's right; ``body_z > 0`` leans the body
      counter-clockwise (4 degrees at 1.0, about a pivot below the image); the head rides on it.
    * ``breathing`` lifts the shoulders and chest by up to 3 px.
    * ``iris_rotation_x > 0`` moves the irises up; ``iris_rotation_y > 0`` moves them toward
      the image's left (the character's right), as the THA trackers drive them.
    * ``eye_wink_*`` (blink) closes that eye fully at 1.0 (the iris is hidden);
      ``eye_happy_wink_*`` closes it into an upward arch.

``python tools/write_hana_character.py`` regenerates ``assets/characters/hana/character.png``
(the neutral render). The drawing and this rig are the project's own work, CC0-1.0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import skia

from poser_models.image import load_character
from poser_models.registry import DEFAULT_CHARACTER_NAME
from puppet.errors import PuppetError
from puppet.pose import INDEX, PoseVector

SIZE = 512
CHARACTER_NAMES = (DEFAULT_CHARACTER_NAME,)

# --- motion constants (pixels / degrees), chosen to keep parallax moderate for the student ---
HEAD_CENTER = (256.0, 130.0)  # yaw/pitch centre of the head
NECK_PIVOT = (256.0, 196.0)  # roll (neck_z) pivot
HIP_PIVOT = (256.0, 560.0)  # body_z pivot (below the image)
BODY_CENTER = (256.0, 360.0)
HEAD_YAW_DEG = 20.0
HEAD_PITCH_DEG = 15.0
NECK_ROLL_DEG = 12.0
BODY_YAW_DEG = 10.0
BODY_ROLL_DEG = 4.0
BREATH_PX = 3.0
HEAD_BREATH_PX = 1.0
# head "surface" depth: a smooth bump, so the face centre moves more than its outline
FACE_DEPTH, FACE_SIGMA_X, FACE_SIGMA_Y, FACE_SIGMA_UP = 42.0, 58.0, 90.0, 62.0
BODY_DEPTH, BODY_SIGMA_X, BODY_SIGMA_Y = 50.0, 110.0, 150.0

# layer depth offsets (added to the surface depth)
Z_HAIR_BACK = -12.0
Z_FACE = 0.0
Z_FEATURE = 6.0
Z_NOSE = 12.0
Z_HAIR_FRONT = 5.0
Z_SIDE_LOCK = 2.0


def _rgba(r: int, g: int, b: int, a: int = 255) -> int:
    return skia.ColorSetARGB(a, r, g, b)


# --- palette ---
SKIN = _rgba(255, 238, 228)
SKIN_SHADE = _rgba(246, 206, 196)
SKIN_DEEP = _rgba(236, 186, 178)
BLUSH = _rgba(255, 140, 160, 90)
HAIR = _rgba(238, 152, 176)
HAIR_LIGHT = _rgba(255, 196, 210)
HAIR_SHADE = _rgba(214, 118, 152)
HAIR_DARK = _rgba(160, 70, 110)
HAIR_LINE = _rgba(150, 64, 100)
LASH = _rgba(70, 36, 52)
BROW = _rgba(170, 82, 112)
EYE_WHITE = _rgba(255, 255, 255)
EYE_WHITE_SHADE = _rgba(214, 220, 238)
IRIS_TOP = _rgba(28, 70, 96)
IRIS_MID = _rgba(44, 132, 150)
IRIS_BOTTOM = _rgba(120, 214, 196)
PUPIL = _rgba(20, 40, 60)
MOUTH_LINE = _rgba(140, 62, 70)
MOUTH_IN = _rgba(128, 40, 56)
TONGUE = _rgba(238, 120, 132)
TEETH = _rgba(255, 255, 255)
BLOUSE = _rgba(252, 252, 255)
BLOUSE_SHADE = _rgba(214, 220, 238)
COLLAR = _rgba(46, 58, 104)
COLLAR_DARK = _rgba(32, 40, 78)
STRIPE = _rgba(250, 250, 255)
BOW = _rgba(226, 66, 92)
BOW_DARK = _rgba(176, 40, 66)
PETAL = _rgba(255, 246, 250)
PETAL_SHADE = _rgba(255, 190, 210)
FLOWER_CENTER = _rgba(255, 206, 84)


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------
def _spline(points: np.ndarray, closed: bool = True, sharp: np.ndarray | None = None) -> skia.Path:
    """A smooth Catmull-Rom curve through ``points`` (N,2) as cubic Beziers.

    ``sharp`` marks vertices whose tangent is zero, giving a pointed tip (hair strands).
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    nxt = np.arange(1, n + 1) % n
    if closed:
        tangent = (p[nxt] - p[np.arange(-1, n - 1)]) / 6.0
    else:
        tangent = np.empty_like(p)
        tangent[1:-1] = (p[2:] - p[:-2]) / 6.0
        tangent[0] = (p[1] - p[0]) / 3.0
        tangent[-1] = (p[-1] - p[-2]) / 3.0
    if sharp is not None:
        tangent = tangent * (~sharp)[:, None]
    segments = n if closed else n - 1
    c1 = (p + tangent)[:segments]
    c2 = (p[nxt] - tangent[nxt])[:segments]
    end = p[nxt][:segments]
    path = skia.Path()
    path.moveTo(float(p[0, 0]), float(p[0, 1]))
    for a, b, e in zip(c1.tolist(), c2.tolist(), end.tolist(), strict=True):
        path.cubicTo(a[0], a[1], b[0], b[1], e[0], e[1])
    if closed:
        path.close()
    return path


def _poly(points: np.ndarray, closed: bool = True) -> skia.Path:
    path = skia.Path()
    pts = np.asarray(points, dtype=np.float64).tolist()
    path.moveTo(*pts[0])
    for q in pts[1:]:
        path.lineTo(*q)
    if closed:
        path.close()
    return path


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _mirror(points: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64)
    out[:, 0] = SIZE - out[:, 0]
    return out


def _arr(points: list[tuple[float, float]]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


def _sharp(n: int, indices: list[int]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[indices] = True
    return mask


# --------------------------------------------------------------------------------------------
# Neutral geometry (image coordinates, the character's right side = image left)
# --------------------------------------------------------------------------------------------
FACE = _arr(
    [
        (208, 96),
        (207, 122),
        (209, 146),
        (215, 164),
        (226, 178),
        (241, 188),
        (256, 192),
        (271, 188),
        (286, 178),
        (297, 164),
        (303, 146),
        (305, 122),
        (304, 96),
        (290, 74),
        (256, 64),
        (222, 74),
    ]
)
EAR_R = _arr([(212, 136), (203, 132), (200, 142), (204, 156), (212, 160)])

HAIR_BACK = _arr(
    [
        (256, 62),
        (214, 64),
        (190, 88),
        (180, 124),
        (178, 170),
        (176, 220),
        (172, 262),
        (182, 300),
        (196, 286),
        (206, 304),
        (222, 282),
        (226, 240),
        (286, 240),
        (290, 282),
        (306, 304),
        (316, 286),
        (330, 300),
        (340, 262),
        (336, 220),
        (334, 170),
        (332, 124),
        (322, 88),
        (298, 64),
    ]
)
HAIR_BACK_SHARP = _sharp(len(HAIR_BACK), [7, 9, 13, 15])

# hair cap with bangs: (x, y, pointed?) from the crown over the right temple, along the bangs'
# lower edge (pointed strand tips, rounded notches) and back over the left temple
_CAP = [
    (256, 49, 0),
    (297, 54, 0),
    (323, 76, 0),
    (333, 106, 0),
    (331, 134, 1),
    (322, 133, 1),
    (316, 112, 0),
    (307, 126, 1),
    (299, 107, 0),
    (290, 123, 1),
    (281, 105, 0),
    (272, 121, 1),
    (264, 104, 0),
    (257, 123, 1),
    (249, 104, 0),
    (240, 121, 1),
    (231, 105, 0),
    (222, 123, 1),
    (213, 107, 0),
    (205, 126, 1),
    (196, 112, 0),
    (190, 133, 1),
    (181, 134, 1),
    (179, 106, 0),
    (189, 76, 0),
    (215, 54, 0),
]
HAIR_CAP = _arr([(x, y) for x, y, _ in _CAP])
HAIR_CAP_SHARP = np.array([bool(k) for _, _, k in _CAP])
SIDE_LOCK_R = _arr(
    [
        (200, 104),
        (214, 116),
        (219, 150),
        (216, 186),
        (210, 214),
        (204, 232),
        (200, 208),
        (194, 170),
        (192, 132),
    ]
)
SIDE_LOCK_R_SHARP = _sharp(len(SIDE_LOCK_R), [5])
AHOGE = _arr([(254, 54), (250, 36), (262, 22), (276, 26), (266, 30), (258, 40), (262, 54)])
AHOGE_SHARP = _sharp(len(AHOGE), [3])
HAIR_SHINE = _arr(
    [
        (222, 72),
        (240, 64),
        (262, 62),
        (284, 66),
        (300, 76),
        (296, 82),
        (280, 74),
        (260, 71),
        (242, 73),
        (226, 80),
    ]
)
HAIR_STRANDS = [
    _arr([(252, 58), (245, 80), (248, 100)]),
    _arr([(238, 62), (226, 82), (230, 101)]),
    _arr([(224, 68), (208, 88), (212, 104)]),
    _arr([(210, 74), (194, 98), (196, 110)]),
]
FLOWER_CENTER_XY = (306.0, 86.0)

BROW_R = _arr([(214, 123), (222, 118.5), (233, 117.5), (243, 119.5)])  # outer -> inner
BROW_THICK = np.array([1.0, 2.0, 2.6, 2.8])

# eye (character's right, image left), sampled outer -> inner at the same x positions
EYE_X = np.array([214.0, 218.0, 224.0, 231.0, 238.0, 244.0, 248.0])
EYE_UPPER_Y = np.array([143.0, 134.0, 129.0, 127.0, 128.0, 131.0, 139.0])
EYE_LOWER_Y = np.array([143.0, 151.0, 155.0, 156.5, 156.0, 152.0, 139.0])
EYE_T = np.linspace(0.0, 1.0, len(EYE_X))  # 0 outer corner, 1 inner corner
EYE_BUMP = np.sin(np.pi * EYE_T)
EYE_CORNER_Y = EYE_UPPER_Y[0] + (EYE_UPPER_Y[-1] - EYE_UPPER_Y[0]) * EYE_T
IRIS_C = (232.0, 143.0)
IRIS_R = (12.0, 15.0)
LASH_THICK = 1.8 + 3.0 * (1.0 - EYE_T) ** 1.3

NOSE = _arr([(258, 160), (260, 165), (256, 167)])
MOUTH_C = (256.0, 178.0)

TORSO = _arr(
    [
        (238, 222),
        (204, 232),
        (166, 244),
        (140, 260),
        (126, 288),
        (120, 340),
        (116, 420),
        (112, 580),
        (400, 580),
        (396, 420),
        (392, 340),
        (386, 288),
        (372, 260),
        (346, 244),
        (308, 232),
        (274, 222),
    ]
)
NECK = _arr([(241, 160), (241, 200), (237, 224), (256, 286), (275, 224), (271, 200), (271, 160)])
NECK_SHARP = _sharp(len(NECK), [3])
COLLAR_PTS = _arr(
    [
        (234, 216),
        (184, 232),
        (146, 252),
        (128, 280),
        (136, 292),
        (162, 294),
        (204, 304),
        (244, 326),
        (256, 334),
        (268, 326),
        (308, 304),
        (350, 294),
        (376, 292),
        (384, 280),
        (366, 252),
        (328, 232),
        (278, 216),
        (274, 232),
        (256, 290),
        (238, 232),
    ]
)
COLLAR_SHARP = _sharp(len(COLLAR_PTS), [0, 8, 16, 17, 18, 19])
STRIPE_R = _arr([(136, 282), (152, 258), (186, 242), (230, 228)])
STRIPE_R_FRONT = _arr([(138, 284), (166, 287), (206, 297), (247, 318)])
BOW_KNOT = (256.0, 318.0)
ARM_R = _arr(
    [
        (150, 250),
        (134, 268),
        (126, 300),
        (122, 360),
        (119, 440),
        (117, 580),
        (152, 580),
        (154, 440),
        (156, 360),
        (156, 310),
    ]
)


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------
def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _Motion:
    """The smooth point maps of one pose: head (2.5D yaw/pitch, roll) riding on the body."""

    def __init__(self, v: np.ndarray) -> None:
        yaw = math.radians(HEAD_YAW_DEG * float(v[INDEX["head_y"]]))
        pitch = math.radians(HEAD_PITCH_DEG * float(v[INDEX["head_x"]]))
        roll = math.radians(NECK_ROLL_DEG * float(v[INDEX["neck_z"]]))
        self.cy, self.sy = math.cos(yaw), math.sin(yaw)
        self.cp, self.sp = math.cos(pitch), math.sin(pitch)
        self.cr, self.sr = math.cos(roll), math.sin(roll)
        byaw = math.radians(BODY_YAW_DEG * float(v[INDEX["body_y"]]))
        broll = math.radians(BODY_ROLL_DEG * float(v[INDEX["body_z"]]))
        self.cby, self.sby = math.cos(byaw), math.sin(byaw)
        self.cbr, self.sbr = math.cos(broll), math.sin(broll)
        self.breath = float(v[INDEX["breathing"]])
        neck_base = np.array([[256.0, 222.0]])
        self.head_shift = self._body_nonrigid(neck_base, 0.0)[0] - neck_base[0]
        self.head_shift[1] += BREATH_PX - HEAD_BREATH_PX  # the head rises less than the chest

    # body: yaw parallax + breathing (non-rigid), then the roll about the hip (rigid)
    def _body_nonrigid(self, p: np.ndarray, z_offset: float) -> np.ndarray:
        bx, by = BODY_CENTER
        dx, dy = p[:, 0] - bx, p[:, 1] - by
        z = BODY_DEPTH * np.exp(-((dx / BODY_SIGMA_X) ** 2 + (dy / BODY_SIGMA_Y) ** 2)) + z_offset
        x = bx + dx * self.cby + z * self.sby
        y = p[:, 1] - BREATH_PX * self.breath * (1.0 - _smoothstep(250.0, 430.0, p[:, 1]))
        return np.stack([x, y], axis=1)

    def _body_roll(self, p: np.ndarray) -> np.ndarray:
        px, py = HIP_PIVOT
        dx, dy = p[:, 0] - px, p[:, 1] - py
        return np.stack(
            [px + self.cbr * dx + self.sbr * dy, py - self.sbr * dx + self.cbr * dy], axis=1
        )

    def body(self, p: np.ndarray, z_offset: float = 0.0) -> np.ndarray:
        return self._body_roll(self._body_nonrigid(p, z_offset))

    def _head_local(self, p: np.ndarray, z_offset: float | np.ndarray) -> np.ndarray:
        hx, hy = HEAD_CENTER
        dx, dy = p[:, 0] - hx, p[:, 1] - hy
        # the bump falls off faster above the eyes: the top of the skull is nearly silhouette
        sigma_y = FACE_SIGMA_UP + (FACE_SIGMA_Y - FACE_SIGMA_UP) * _smoothstep(70.0, 150.0, p[:, 1])
        z = FACE_DEPTH * np.exp(-((dx / FACE_SIGMA_X) ** 2 + (dy / sigma_y) ** 2)) + z_offset
        x1 = dx * self.cy + z * self.sy  # yaw: positive turns toward the image's right
        z1 = -dx * self.sy + z * self.cy
        y1 = dy * self.cp - z1 * self.sp  # pitch: positive looks up
        # roll about the neck pivot: positive is counter-clockwise on screen
        nx, ny = NECK_PIVOT
        rx, ry = hx + x1 - nx, hy + y1 - ny
        x2 = nx + self.cr * rx + self.sr * ry
        y2 = ny - self.sr * rx + self.cr * ry
        return np.stack([x2, y2], axis=1)

    def head(self, p: np.ndarray, z_offset: float | np.ndarray = 0.0) -> np.ndarray:
        return self._body_roll(self._head_local(p, z_offset) + self.head_shift)

    def back_hair(self, p: np.ndarray) -> np.ndarray:
        """Back hair: level with the crown at the top, behind the head below the temples."""
        return self.head(p, Z_HAIR_BACK * _smoothstep(60.0, 140.0, p[:, 1]))

    def neck(self, p: np.ndarray) -> np.ndarray:
        """Blend from the head motion (top of the neck) to the body motion (its base)."""
        w = _smoothstep(222.0, 180.0, p[:, 1])[:, None]
        return w * self.head(p, Z_FACE) + (1.0 - w) * self.body(p, 0.0)


# --------------------------------------------------------------------------------------------
# Expression morphs (neutral coordinates)
# --------------------------------------------------------------------------------------------
def _brow_points(v: np.ndarray, side: str) -> np.ndarray:
    """Brow centre line, outer -> inner, for the character's ``side`` (drawn as image left)."""
    g = {
        name: float(v[INDEX[f"eyebrow_{name}_{side}"]])
        for name in ("troubled", "angry", "lowered", "raised", "happy", "serious")
    }
    dy = np.zeros(4)
    dx = np.zeros(4)
    dy += g["troubled"] * np.array([2.0, 0.0, -2.5, -5.0])
    dy += g["angry"] * np.array([-2.0, 0.0, 2.5, 5.0])
    dx += g["angry"] * np.array([0.0, 0.0, 0.5, 1.5])
    dy += g["lowered"] * np.array([3.5, 4.0, 4.0, 4.0])
    dy += g["raised"] * np.array([-4.5, -6.0, -6.0, -5.0])
    dy += g["happy"] * np.array([1.5, -2.5, -2.5, 0.5])
    dy += g["serious"] * np.array([1.0, 2.0, 3.0, 3.5])
    out = BROW_R.copy()
    out[:, 0] += dx
    out[:, 1] += dy
    return out


def _brow_shape(center: np.ndarray) -> np.ndarray:
    top = center - np.stack([np.zeros(4), BROW_THICK * 0.5], axis=1)
    bottom = center + np.stack([np.zeros(4), BROW_THICK * 0.5], axis=1)
    return np.concatenate([top, bottom[::-1]], axis=0)


class _Eye:
    """Lid curves and iris of one eye in neutral image-left coordinates."""

    def __init__(self, v: np.ndarray, side: str) -> None:
        def g(name: str) -> float:
            return float(v[INDEX[f"{name}_{side}"]])

        upper = EYE_UPPER_Y.copy()
        lower = EYE_LOWER_Y.copy()
        opening = EYE_LOWER_Y - EYE_UPPER_Y
        surprised = g("eye_surprised")
        upper -= 3.0 * surprised * EYE_BUMP
        lower += 1.5 * surprised * EYE_BUMP
        relaxed = g("eye_relaxed")
        upper += 0.38 * relaxed * opening
        unimpressed = g("eye_unimpressed")
        flat = np.full_like(upper, float(np.mean(EYE_UPPER_Y + 0.42 * opening)))
        flat = np.minimum(flat, EYE_LOWER_Y - 1.0)
        upper += 0.85 * unimpressed * (flat - upper) * EYE_BUMP**0.5
        raised_lower = g("eye_raised_lower_eyelid")
        lower -= 0.33 * raised_lower * opening
        # closures last, so a full blink always closes whatever the other morphs did
        blink_line = EYE_CORNER_Y + 5.0 + 3.5 * EYE_BUMP
        happy_line = EYE_CORNER_Y + 6.0 - 9.0 * EYE_BUMP
        wink = g("eye_wink")
        upper += wink * (blink_line - upper)
        lower += wink * (blink_line - lower)
        happy = g("eye_happy_wink")
        upper += happy * (happy_line - upper)
        lower += happy * (happy_line - lower)
        lower = np.maximum(lower, upper)
        self.upper = np.stack([EYE_X, upper], axis=1)
        self.lower = np.stack([EYE_X, lower], axis=1)
        scale = (1.0 - 0.32 * g("iris_small")) * (1.0 - 0.16 * surprised)
        ix = IRIS_C[0] - 5.5 * float(v[INDEX["iris_rotation_y"]])
        iy = IRIS_C[1] - 6.0 * float(v[INDEX["iris_rotation_x"]]) + 1.5 * relaxed
        self.iris_center = (ix, iy)
        self.iris_scale = scale

    def mirrored(self) -> None:
        """Move this eye to the image's right side (the character's left eye)."""
        self.upper = _mirror(self.upper)
        self.lower = _mirror(self.lower)
        # keep the iris motion direction in image space: mirror only its rest position
        ix, iy = self.iris_center
        self.iris_center = (ix - IRIS_C[0] + (SIZE - IRIS_C[0]), iy)


def _mouth_points(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Upper and lower lip curves (image left -> right) and the teeth amount."""
    a, i, u, e, o, d = (
        float(v[INDEX[f"mouth_{n}"]]) for n in ("aaa", "iii", "uuu", "eee", "ooo", "delta")
    )
    half_width = 8.0 + 3.0 * a + 6.0 * i - 3.5 * u + 5.0 * e - 1.5 * o + 2.0 * d
    half_width = max(half_width, 3.5)
    opening = 0.8 + 14.0 * a + 4.0 * i + 6.5 * u + 8.0 * e + 12.0 * o + 6.0 * d
    opening = min(opening, 18.0)
    lift = 0.0 + 2.0 * a + 0.5 * i + 1.5 * u + 1.0 * e + 3.0 * o + 5.5 * d
    roundness = min(1.0, 0.8 * u + 0.8 * o)
    pointy = min(1.0, d)
    teeth = min(1.0, i + 0.8 * e)
    # corners: image-left corner is the character's right
    raise_l = float(v[INDEX["mouth_raised_corner_left"]])
    raise_r = float(v[INDEX["mouth_raised_corner_right"]])
    lower_l = float(v[INDEX["mouth_lowered_corner_left"]])
    lower_r = float(v[INDEX["mouth_lowered_corner_right"]])
    smirk = float(v[INDEX["mouth_smirk"]])
    corner_img_left = -1.0 - 4.0 * raise_r + 4.0 * lower_r + 1.0 * smirk
    corner_img_right = -1.0 - 4.0 * raise_l + 4.0 * lower_l - 3.5 * smirk
    width_l = half_width + 1.0 * raise_r
    width_r = half_width + 1.0 * raise_l + 1.0 * smirk
    cx = MOUTH_C[0] + 1.5 * smirk
    cy = MOUTH_C[1]
    t = np.linspace(0.0, 1.0, 9)
    x = cx - width_l + (width_l + width_r) * t
    corner_y = cy + corner_img_left + (corner_img_right - corner_img_left) * t
    bump = np.sin(np.pi * t)
    upper_shape = (1.0 - pointy) * bump ** (1.0 - 0.5 * roundness) + pointy * bump**2.2
    lower_shape = bump ** max(0.3, 1.0 - 0.55 * roundness - 0.5 * pointy)
    # a closed smile dips slightly in the middle
    upper_y = cy - lift * upper_shape + 1.2 * bump * max(0.0, 1.0 - opening / 6.0)
    lower_y = corner_y * 0 + cy + opening * lower_shape
    corner_weight = 1.0 - bump**2
    upper_y = upper_y + (corner_y - cy) * corner_weight
    lower_y = lower_y + (corner_y - cy) * corner_weight
    lower_y = np.maximum(lower_y, upper_y)
    return np.stack([x, upper_y], axis=1), np.stack([x, lower_y], axis=1), teeth


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------
def _fill(color: int) -> skia.Paint:
    return skia.Paint(AntiAlias=True, Color=color)


def _stroke(color: int, width: float) -> skia.Paint:
    return skia.Paint(
        AntiAlias=True,
        Color=color,
        Style=skia.Paint.kStroke_Style,
        StrokeWidth=width,
        StrokeCap=skia.Paint.kRound_Cap,
        StrokeJoin=skia.Paint.kRound_Join,
    )


def _linear(
    p0: np.ndarray, p1: np.ndarray, colors: list[int], positions: list[float] | None = None
) -> skia.Paint:
    shader = skia.GradientShader.MakeLinear(
        [skia.Point(float(p0[0]), float(p0[1])), skia.Point(float(p1[0]), float(p1[1]))],
        colors,
        positions,
    )
    return skia.Paint(AntiAlias=True, Shader=shader)


def _radial(
    center: np.ndarray, radius: float, colors: list[int], positions: list[float] | None = None
) -> skia.Paint:
    shader = skia.GradientShader.MakeRadial(
        skia.Point(float(center[0]), float(center[1])), float(radius), colors, positions
    )
    return skia.Paint(AntiAlias=True, Shader=shader)


def _pt(x: float, y: float) -> np.ndarray:
    return np.array([[x, y]], dtype=np.float64)


class _Renderer:
    def __init__(self) -> None:
        self.surface = skia.Surface(SIZE, SIZE)
        self.info = skia.ImageInfo.Make(
            SIZE, SIZE, skia.kRGBA_8888_ColorType, skia.kUnpremul_AlphaType
        )

    def render(self, pose: PoseVector) -> np.ndarray:
        v = pose.clamped().values.astype(np.float64)
        m = _Motion(v)
        canvas = self.surface.getCanvas()
        canvas.clear(skia.ColorTRANSPARENT)
        self._hair_back(canvas, m)
        self._body(canvas, m)
        face_path = self._face(canvas, m)
        self._eyes(canvas, m, v)
        self._brows(canvas, m, v)
        self._mouth(canvas, m, v)
        self._hair_front(canvas, m, face_path)
        out = np.empty((SIZE, SIZE, 4), dtype=np.uint8)
        canvas.readPixels(self.info, out, SIZE * 4, 0, 0)
        return out

    # ---- layers ----
    def _hair_back(self, c: skia.Canvas, m: _Motion) -> None:
        pts = m.back_hair(HAIR_BACK)
        top, bottom = m.back_hair(_pt(256, 60))[0], m.back_hair(_pt(256, 300))[0]
        c.drawPath(
            _spline(pts, sharp=HAIR_BACK_SHARP), _linear(top, bottom, [HAIR_DARK, HAIR_SHADE])
        )

    def _body(self, c: skia.Canvas, m: _Motion) -> None:
        torso = m.body(TORSO)
        left, right = m.body(_pt(112, 300))[0], m.body(_pt(400, 300))[0]
        c.drawPath(
            _spline(torso, sharp=_sharp(len(TORSO), [0, 7, 8, 15])),
            _linear(
                left, right, [BLOUSE_SHADE, BLOUSE, BLOUSE, BLOUSE_SHADE], [0.0, 0.3, 0.7, 1.0]
            ),
        )
        # neck + neckline skin, then the shadow the jaw casts on it
        neck = m.neck(NECK)
        neck_path = _spline(neck, sharp=NECK_SHARP)
        top, bottom = m.neck(_pt(256, 170))[0], m.neck(_pt(256, 280))[0]
        c.drawPath(neck_path, _linear(top, bottom, [SKIN_SHADE, SKIN], [0.35, 0.7]))
        c.save()
        c.clipPath(neck_path, doAntiAlias=True)
        jaw = m.head(FACE + np.array([0.0, 7.0]), Z_FACE)
        c.drawPath(_spline(jaw), _fill(SKIN_DEEP))
        c.restore()
        # the arms (sleeves) hang at the sides, a shade darker than the chest
        for arm_pts in (ARM_R, _mirror(ARM_R)):
            arm = m.body(arm_pts, -6.0)
            outer, inner = m.body(arm_pts[2:3], -6.0)[0], m.body(arm_pts[9:10], -6.0)[0]
            c.drawPath(
                _spline(arm, sharp=_sharp(len(arm_pts), [5, 6])),
                _linear(outer, inner, [BLOUSE_SHADE, _rgba(236, 239, 248)]),
            )
            c.drawPath(
                _spline(arm[6:], closed=False), _stroke(skia.ColorSetA(BLOUSE_SHADE, 255), 1.4)
            )
        # sailor collar (with its shadow on the blouse), its stripes, the bow
        shadow = m.body(COLLAR_PTS + np.array([0.0, 5.0]), 3.0)
        c.drawPath(_spline(shadow, sharp=COLLAR_SHARP), _fill(skia.ColorSetA(BLOUSE_SHADE, 200)))
        collar = m.body(COLLAR_PTS, 4.0)
        c.drawPath(
            _spline(collar, sharp=COLLAR_SHARP),
            _linear(m.body(_pt(256, 216))[0], m.body(_pt(256, 334))[0], [COLLAR_DARK, COLLAR]),
        )
        stripe = _stroke(STRIPE, 2.2)
        for line in (STRIPE_R, STRIPE_R_FRONT):
            c.drawPath(_spline(m.body(line, 5.0), closed=False), stripe)
            c.drawPath(_spline(m.body(_mirror(line), 5.0), closed=False), stripe)
        self._bow(c, m)

    def _bow(self, c: skia.Canvas, m: _Motion) -> None:
        kx, ky = BOW_KNOT
        loop = _arr(
            [
                (kx - 2, ky - 2),
                (kx - 16, ky - 13),
                (kx - 27, ky - 9),
                (kx - 26, ky + 6),
                (kx - 15, ky + 7),
                (kx - 2, ky + 3),
            ]
        )
        tail = _arr(
            [
                (kx - 3, ky + 3),
                (kx - 11, ky + 20),
                (kx - 15, ky + 36),
                (kx - 6, ky + 32),
                (kx - 1, ky + 34),
                (kx + 1, ky + 6),
            ]
        )
        paint_dark = _fill(BOW_DARK)
        for shape, sharp_idx in ((tail, [2, 4]), (loop, [0, 5])):
            for pts in (shape, _mirror(shape)):
                moved = m.body(pts, 10.0)
                c.drawPath(
                    _spline(moved, sharp=_sharp(len(pts), sharp_idx)),
                    _linear(
                        m.body(_pt(kx, ky - 12), 10.0)[0],
                        m.body(_pt(kx, ky + 30), 10.0)[0],
                        [BOW, BOW_DARK],
                    ),
                )
        fold = _arr([(kx - 6, ky - 3), (kx - 18, ky - 6), (kx - 20, ky + 2), (kx - 8, ky + 1)])
        for pts in (fold, _mirror(fold)):
            c.drawPath(_spline(m.body(pts, 11.0)), _fill(skia.ColorSetA(BOW_DARK, 120)))
        knot = m.body(_ellipse_points(kx, ky, 5.5, 6.0, 10), 12.0)
        c.drawPath(_spline(knot), paint_dark)

    def _face(self, c: skia.Canvas, m: _Motion) -> skia.Path:
        for ear in (EAR_R, _mirror(EAR_R)):
            c.drawPath(_spline(m.head(ear, Z_FACE - 8.0), closed=True), _fill(SKIN_SHADE))
        face = m.head(FACE, Z_FACE)
        face_path = _spline(face)
        c.drawPath(face_path, _fill(SKIN))
        c.save()
        c.clipPath(face_path, doAntiAlias=True)
        # soft blush on the cheeks
        for bx in (226.0, 286.0):
            center = m.head(_pt(bx, 163), Z_FEATURE)[0]
            c.drawPath(
                _spline(m.head(_ellipse_points(bx, 163, 13, 6.5, 12), Z_FEATURE)),
                _radial(center, 13.0, [BLUSH, skia.ColorSetA(BLUSH, 0)]),
            )
        # the shadow the bangs cast on the forehead
        shadow = m.head(HAIR_CAP + np.array([0.0, 6.0]), Z_HAIR_FRONT - 3.0)
        c.drawPath(_spline(shadow, sharp=HAIR_CAP_SHARP), _fill(SKIN_SHADE))
        c.restore()
        # nose hint
        c.drawPath(_spline(m.head(NOSE, Z_NOSE), closed=False), _stroke(SKIN_DEEP, 1.4))
        return face_path

    def _eyes(self, c: skia.Canvas, m: _Motion, v: np.ndarray) -> None:
        for side in ("right", "left"):  # character's right eye is on the image's left
            eye = _Eye(v, side)
            if side == "left":
                eye.mirrored()
            self._eye(c, m, eye, mirrored=side == "left")

    def _eye(self, c: skia.Canvas, m: _Motion, eye: _Eye, mirrored: bool) -> None:
        upper = m.head(eye.upper, Z_FEATURE)
        lower = m.head(eye.lower, Z_FEATURE)
        opening = np.concatenate([upper, lower[::-1][1:-1]], axis=0)
        n_up = len(upper)
        sharp = _sharp(len(opening), [0, n_up - 1])
        eye_path = _spline(opening, sharp=sharp)
        top = m.head(_pt(eye.upper[3, 0], 127), Z_FEATURE)[0]
        bottom = m.head(_pt(eye.upper[3, 0], 157), Z_FEATURE)[0]
        c.save()
        c.clipPath(eye_path, doAntiAlias=True)
        c.drawPath(eye_path, _linear(top, bottom, [EYE_WHITE_SHADE, EYE_WHITE], [0.15, 0.5]))
        ix, iy = eye.iris_center
        s = eye.iris_scale
        rx, ry = IRIS_R[0] * s, IRIS_R[1] * s
        iris = m.head(_ellipse_points(ix, iy, rx, ry, 16), Z_FEATURE + 1.0)
        itop = m.head(_pt(ix, iy - ry), Z_FEATURE + 1.0)[0]
        ibot = m.head(_pt(ix, iy + ry), Z_FEATURE + 1.0)[0]
        c.drawPath(
            _spline(iris), _linear(itop, ibot, [IRIS_TOP, IRIS_MID, IRIS_BOTTOM], [0.1, 0.55, 1.0])
        )
        c.drawPath(_spline(iris), _stroke(IRIS_TOP, 1.2))
        pupil = m.head(_ellipse_points(ix, iy + 1.0, rx * 0.45, ry * 0.5, 12), Z_FEATURE + 1.0)
        c.drawPath(_spline(pupil), _fill(skia.ColorSetA(PUPIL, 200)))
        # iris glow and highlights
        glow = m.head(_ellipse_points(ix, iy + ry * 0.55, rx * 0.7, ry * 0.28, 12), Z_FEATURE + 1)
        c.drawPath(_spline(glow), _fill(skia.ColorSetA(_rgba(190, 255, 230), 110)))
        hl_dx = 1.0 if mirrored else -1.0
        hl = m.head(
            _ellipse_points(ix + hl_dx * rx * 0.35, iy - ry * 0.4, rx * 0.34, ry * 0.26, 12),
            Z_FEATURE + 2.0,
        )
        c.drawPath(_spline(hl), _fill(_rgba(255, 255, 255, 245)))
        hl2 = m.head(
            _ellipse_points(ix - hl_dx * rx * 0.4, iy + ry * 0.35, rx * 0.14, rx * 0.14, 8),
            Z_FEATURE + 2.0,
        )
        c.drawPath(_spline(hl2), _fill(_rgba(255, 255, 255, 220)))
        # shadow of the upper lid on the eye
        c.drawPath(_spline(upper, closed=False), _stroke(skia.ColorSetA(IRIS_TOP, 70), 5.0))
        c.restore()
        # upper lashes: a tapered band above the lid line, with a flick at the outer corner
        lash_top = upper - np.stack([np.zeros(n_up), LASH_THICK], axis=1)
        flick_dir = 1.0 if mirrored else -1.0
        outer = upper[0]
        flick = np.array([[outer[0] + flick_dir * 4.5, outer[1] - 4.0]])
        lash = np.concatenate([upper, lash_top[::-1], flick], axis=0)
        c.drawPath(
            _spline(lash, sharp=_sharp(len(lash), [0, n_up - 1, n_up, len(lash) - 1])), _fill(LASH)
        )
        # the eyelid crease above the lashes
        crease = upper[1:5] - np.array([0.0, 1.0]) * (LASH_THICK[1:5, None] + 3.5)
        c.drawPath(_spline(crease, closed=False), _stroke(skia.ColorSetA(SKIN_DEEP, 200), 1.0))
        # a light lower lash on the outer half
        c.drawPath(_spline(lower[:4], closed=False), _stroke(skia.ColorSetA(LASH, 150), 1.1))

    def _brows(self, c: skia.Canvas, m: _Motion, v: np.ndarray) -> None:
        for side in ("right", "left"):
            center = _brow_points(v, side)
            if side == "left":
                center = _mirror(center)
            shape = m.head(_brow_shape(center), Z_FEATURE)
            c.drawPath(_spline(shape, sharp=_sharp(8, [0, 3, 4, 7])), _fill(BROW))

    def _mouth(self, c: skia.Canvas, m: _Motion, v: np.ndarray) -> None:
        upper, lower, teeth = _mouth_points(v)
        up = m.head(upper, Z_FEATURE)
        lo = m.head(lower, Z_FEATURE)
        inside = np.concatenate([up, lo[::-1][1:-1]], axis=0)
        path = _spline(inside, sharp=_sharp(len(inside), [0, len(up) - 1]))
        c.drawPath(path, _fill(MOUTH_IN))
        c.save()
        c.clipPath(path, doAntiAlias=True)
        cx = float(np.mean(upper[:, 0]))
        bottom_y = float(lower[4, 1])
        tongue = m.head(_ellipse_points(cx, bottom_y + 1.5, 7.0, 5.0, 12), Z_FEATURE)
        c.drawPath(_spline(tongue), _fill(TONGUE))
        if teeth > 0.0:
            band = upper.copy()
            band[:, 1] += 3.2 * teeth
            teeth_pts = m.head(np.concatenate([upper, band[::-1]], axis=0), Z_FEATURE)
            c.drawPath(_poly(teeth_pts), _fill(TEETH))
        c.restore()
        c.drawPath(_spline(up, closed=False), _stroke(MOUTH_LINE, 1.5))

    def _hair_front(self, c: skia.Canvas, m: _Motion, face_path: skia.Path) -> None:
        cap = m.head(HAIR_CAP, Z_HAIR_FRONT)
        top = m.head(_pt(256, 50), Z_HAIR_FRONT)[0]
        bottom = m.head(_pt(256, 128), Z_HAIR_FRONT)[0]
        hair_paint = _linear(top, bottom, [HAIR_LIGHT, HAIR, HAIR_SHADE], [0.0, 0.45, 1.0])
        for lock in (SIDE_LOCK_R, _mirror(SIDE_LOCK_R)):
            pts = m.head(lock, Z_SIDE_LOCK)
            lt = m.head(_pt(float(lock[0, 0]), 110), Z_SIDE_LOCK)[0]
            lb = m.head(_pt(float(lock[0, 0]), 232), Z_SIDE_LOCK)[0]
            c.drawPath(_spline(pts, sharp=SIDE_LOCK_R_SHARP), _linear(lt, lb, [HAIR, HAIR_SHADE]))
        ahoge = m.head(AHOGE, Z_HAIR_FRONT)
        c.drawPath(_spline(ahoge, sharp=AHOGE_SHARP), _fill(HAIR))
        cap_path = _spline(cap, sharp=HAIR_CAP_SHARP)
        c.drawPath(cap_path, hair_paint)
        c.save()
        c.clipPath(cap_path, doAntiAlias=True)
        c.drawPath(
            _spline(m.head(HAIR_SHINE, Z_HAIR_FRONT + 1.0)), _fill(skia.ColorSetA(HAIR_LIGHT, 200))
        )
        line = _stroke(skia.ColorSetA(HAIR_LINE, 70), 1.0)
        for strand in HAIR_STRANDS:
            c.drawPath(_spline(m.head(strand, Z_HAIR_FRONT + 1.0), closed=False), line)
            c.drawPath(_spline(m.head(_mirror(strand), Z_HAIR_FRONT + 1.0), closed=False), line)
        c.restore()
        self._flower(c, m)

    def _flower(self, c: skia.Canvas, m: _Motion) -> None:
        fx, fy = FLOWER_CENTER_XY
        z = Z_HAIR_FRONT + 3.0
        for k in range(5):
            angle = -math.pi / 2 + k * 2.0 * math.pi / 5
            ux, uy = math.cos(angle), math.sin(angle)
            petal = _arr(
                [
                    (fx, fy),
                    (fx + 9 * ux - 5 * uy, fy + 9 * uy + 5 * ux),
                    (fx + 14 * ux - 2 * uy, fy + 14 * uy + 2 * ux),
                    (fx + 12.5 * ux, fy + 12.5 * uy),
                    (fx + 14 * ux + 2 * uy, fy + 14 * uy - 2 * ux),
                    (fx + 9 * ux + 5 * uy, fy + 9 * uy - 5 * ux),
                ]
            )
            pts = m.head(petal, z)
            center = m.head(_pt(fx, fy), z)[0]
            c.drawPath(
                _spline(pts, sharp=_sharp(6, [0, 3])),
                _radial(center, 14.0, [PETAL_SHADE, PETAL], [0.2, 0.8]),
            )
        dot = m.head(_ellipse_points(fx, fy, 3.6, 3.6, 8), z + 1.0)
        c.drawPath(_spline(dot), _fill(FLOWER_CENTER))


_RENDERER: _Renderer | None = None


def render_rig(pose: PoseVector) -> np.ndarray:
    """The bundled character at ``pose``: (512, 512, 4) uint8 RGBA, straight alpha, sRGB."""
    global _RENDERER
    if _RENDERER is None:
        _RENDERER = _Renderer()
    return _RENDERER.render(pose)


# --------------------------------------------------------------------------------------------
# Poser
# --------------------------------------------------------------------------------------------
class RigPoser:
    """The code-drawn rig of the bundled character, as a Poser (CPU only, deterministic)."""

    def __init__(self, character_name: str = DEFAULT_CHARACTER_NAME) -> None:
        self.device = "cpu"
        self.dtype = "float32"
        self.character_name = character_name
        self._renderer = _Renderer()
        self._loaded = False

    def load(self, character: Path | np.ndarray | str) -> None:
        """Accept only the bundled character: its name, or an image with its pixels."""
        if isinstance(character, str) and character in CHARACTER_NAMES:
            self._loaded = True
            return
        rgba = load_character(character)
        own = self._renderer.render(PoseVector.neutral())
        # A re-encoded copy of the rig's own neutral frame may differ by rounding only.
        difference = np.abs(rgba.astype(np.int16) - own.astype(np.int16))
        if difference.mean() > 1.0:
            raise PuppetError(
                f"The rig poser only draws its own character {DEFAULT_CHARACTER_NAME!r}.",
                f"Use rig:{DEFAULT_CHARACTER_NAME} without --character, or a neural poser "
                "(tha3:..., student:...) for your own art.",
            )
        self._loaded = True

    def pose(self, pose: PoseVector) -> np.ndarray:
        return self._renderer.render(pose)


def create_poser(
    argument: str, device: str, models_dir: Path | None = None
) -> tuple[RigPoser, str]:
    """Registry factory for ``rig:NAME``: an unloaded RigPoser and its character's name."""
    name = argument.strip()
    if name not in CHARACTER_NAMES:
        raise PuppetError(
            f"Unknown rig character {name!r}.",
            f"Known rig characters: {', '.join(CHARACTER_NAMES)}.",
        )
    # the rig draws on the CPU whatever device was asked for (it is fast there)
    del models_dir  # the rig has no weights
    return RigPoser(name), name
