"""Distillation stage 1: the poses the student learns from and the teacher's frames for them.

Teachers are posers from the registry (``rig:NAME``, ``tha3:<variant>``,
``tha4-student:DIR``), loaded with the character. Frames are cached as uint8 memory maps in
the run's checkpoint folder, so an interrupted render resumes at the frame it stopped at.

Pose sets (all clipped to the parameter ranges):

- ``face``: expressions only (no rotation), of which only the face box is kept. With the
  ``broad`` sampler (a cheap teacher: the rig) 40 % the marginals a live face produces
  (linked blinks, one-eye winks, single vowels, brow groups, gaze; :func:`sample_face`),
  60 % dense expressions as a tracked face gives them (brows raised, smiles with half-closed
  eyes, mixed vowels; :func:`dense_face`). With the ``tracked`` sampler (a slow teacher,
  whose few frames must lie where a webcam drives the character) 75 % are random
  blendshape scores through the default mapping (:func:`tracked_face`), 25 % broad.
- ``head`` / ``body``: rotation of one group, neutral face (what the warps are fitted on).
- ``joint``: everything at once, half of them with the body following the head as the
  tracker maps it (``body_y = head_y``, ``body_z = neck_z``).
- ``heldout``: joint poses from another random stream, never trained on.

A THA3 teacher's ``face`` crops are made the cheap way (:class:`ApproximateFaces`): its
neutral frame plus what its face stages alone change; every other set, the probe and every
evaluation use the full teacher.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from poser_models.student import (
    BODY_INDICES,
    FACE_INPUTS,
    HEAD_INDICES,
    premultiplied_linear_to_rgba,
    rgba_to_premultiplied_linear,
)
from puppet.errors import PuppetError
from puppet.pose import INDEX, LOWER, NUM_PARAMETERS, PARAMETER_NAMES, UPPER, PoseVector

SIZE = 512
Box = tuple[int, int, int, int]  # (top, left, height, width)
Progress = Callable[[str, dict], None]


class Teacher(Protocol):
    def pose(self, pose: PoseVector) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# Pose sampling.


def _value(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.3 else float(rng.random())


def _pair(v: np.ndarray, group: str, rng: np.random.Generator, linked: float) -> None:
    u = _value(rng)
    left, right = INDEX[f"{group}_left"], INDEX[f"{group}_right"]
    mode = rng.random()
    if mode < linked:
        v[left] = v[right] = u
    elif mode < linked + (1 - linked) * 0.7:
        v[left if rng.random() < 0.5 else right] = u
    else:
        v[left], v[right] = u, _value(rng)


def sample_face(rng: np.random.Generator) -> np.ndarray:
    """An expression (eyebrows, eyes, iris, mouth) with one or two groups active; rotation
    and breathing at zero."""
    v = np.zeros(NUM_PARAMETERS, np.float32)
    blink = rng.random()
    if blink < 0.35:
        v[INDEX["eye_wink_left"]] = v[INDEX["eye_wink_right"]] = _value(rng)
    elif blink < 0.6:
        _pair(v, "eye_wink", rng, linked=0.0)
    for group in (
        "eye_happy_wink",
        "eye_surprised",
        "eye_relaxed",
        "eye_unimpressed",
        "eye_raised_lower_eyelid",
        "iris_small",
    ):
        if rng.random() < 0.12:
            _pair(v, group, rng, linked=0.7)
    vowels = ["mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo"]
    mouth = rng.random()
    if mouth < 0.6:
        v[INDEX[vowels[rng.integers(5)]]] = _value(rng)
    elif mouth < 0.75:
        for name in rng.choice(vowels, 2, replace=False):
            v[INDEX[name]] = rng.random()
    if rng.random() < 0.1:
        v[INDEX["mouth_delta"]] = _value(rng)
    for group in ("mouth_lowered_corner", "mouth_raised_corner"):
        if rng.random() < 0.15:
            _pair(v, group, rng, linked=0.6)
    if rng.random() < 0.1:
        v[INDEX["mouth_smirk"]] = _value(rng)
    for group in (
        "eyebrow_troubled",
        "eyebrow_angry",
        "eyebrow_lowered",
        "eyebrow_raised",
        "eyebrow_happy",
        "eyebrow_serious",
    ):
        if rng.random() < 0.12:
            _pair(v, group, rng, linked=0.7)
    for name in ("iris_rotation_x", "iris_rotation_y"):
        if rng.random() < 0.5:
            v[INDEX[name]] = rng.uniform(-1, 1)
    return v


def dense_face(rng: np.random.Generator) -> np.ndarray:
    """An expression with many groups active at once, as a tracked face gives (brows raised
    all the time, smiles with half-closed eyes, vowels mixed, gaze everywhere)."""
    v = np.zeros(NUM_PARAMETERS, np.float32)

    def pair(group: str, p: float, linked: float = 0.8) -> None:
        if rng.random() >= p:
            return
        value = rng.random() if rng.random() < 0.8 else 1.0
        left, right = INDEX[f"{group}_left"], INDEX[f"{group}_right"]
        if rng.random() < linked:
            v[left] = v[right] = value
        else:
            v[left], v[right] = value, rng.random() * (rng.random() < 0.7)

    for group, p in (
        ("eyebrow_raised", 0.6),
        ("eyebrow_happy", 0.35),
        ("eyebrow_angry", 0.15),
        ("eyebrow_troubled", 0.1),
        ("eyebrow_lowered", 0.1),
        ("eyebrow_serious", 0.1),
        ("eye_wink", 0.5),
        ("eye_happy_wink", 0.3),
        ("eye_surprised", 0.35),
        ("eye_relaxed", 0.1),
        ("eye_unimpressed", 0.08),
        ("eye_raised_lower_eyelid", 0.2),
        ("iris_small", 0.1),
        ("mouth_raised_corner", 0.5),
        ("mouth_lowered_corner", 0.15),
    ):
        pair(group, p)
    for name, p in (
        ("mouth_aaa", 0.5),
        ("mouth_iii", 0.25),
        ("mouth_uuu", 0.35),
        ("mouth_eee", 0.1),
        ("mouth_ooo", 0.25),
        ("mouth_delta", 0.05),
        ("mouth_smirk", 0.05),
    ):
        if rng.random() < p:
            v[INDEX[name]] = rng.random()
    for name in ("iris_rotation_x", "iris_rotation_y"):
        if rng.random() < 0.8:
            v[INDEX[name]] = rng.uniform(-1, 1)
    return v


def _score(rng: np.random.Generator, active: float, top: float = 1.0) -> float:
    """A blendshape score: mostly a resting value under 0.1, else anywhere up to ``top``."""
    return float(rng.random() * (top if rng.random() < active else 0.1))


# Share of tracked expressions whose gaze drops as the eyes close, as MediaPipe's does.
BLINK_LOOKS_DOWN = 0.8
# Share of tracked expressions with the eyes (nearly) shut. A part's lid crossing its iris is
# the hardest thing it learns (too few closed eyes and a blink is a cross-fade: the iris shows
# through the lid), and a smile turns a blink into THA's happy wink, a second shape to learn.
CLOSING_EYES = 0.25


def tracked_face(rng: np.random.Generator) -> np.ndarray:
    """An expression as the default mapping makes it from a webcam: random mediapipe
    blendshape scores (the ones the mapping reads, left and right mostly alike) through
    :class:`puppet.mapping.converters.BlendshapeMapper` with its default settings. Only the
    values a tracked face drives are set, with the couplings the mapping has (a smile raises
    the mouth corners and the brows' happy value and turns a blink into a happy wink, jaw
    and lips become a vowel mix), so a few hundred teacher frames cover what viewers see."""
    from puppet.mapping.converters import BlendshapeMapper

    scores: dict[str, float] = {}

    def pair(name: str, active: float, linked: float = 0.8, top: float = 1.0) -> None:
        value = _score(rng, active, top)
        scores[f"{name}Left"] = value
        scores[f"{name}Right"] = value if rng.random() < linked else _score(rng, active, top)

    pair("mouthSmile", 0.5)
    scores["mouthShrugUpper"] = _score(rng, 0.2, 0.5)
    scores["browInnerUp"] = _score(rng, 0.7)
    pair("browOuterUp", 0.7)
    pair("browDown", 0.3, top=0.6)
    pair("eyeBlink", 0.6, linked=0.85)
    if rng.random() < CLOSING_EYES:  # closed and closing eyes, with and without a smile
        closing = float(rng.uniform(0.6, 1.0))
        scores["eyeBlinkLeft"] = closing
        scores["eyeBlinkRight"] = closing if rng.random() < 0.85 else float(rng.uniform(0.6, 1.0))
    pair("eyeWide", 0.4, top=0.6)
    pair("cheekSquint", 0.3)
    for direction in ("In", "Out", "Up", "Down"):
        pair(f"eyeLook{direction}", 0.4, linked=0.0)
    # MediaPipe reports a closing eye as one looking down (d12/d14 tracked: eyes closed past
    # 0.8 come with iris_rotation_x -0.93 on average), so blinks are drawn with that gaze:
    # a closed lid over a lowered iris is what a webcam sends, and what must not ghost.
    for side in ("Left", "Right"):
        blink = scores[f"eyeBlink{side}"]
        if rng.random() < BLINK_LOOKS_DOWN:
            scores[f"eyeLookDown{side}"] = max(
                scores[f"eyeLookDown{side}"], blink * float(rng.uniform(0.6, 1.0))
            )
            scores[f"eyeLookUp{side}"] *= 1.0 - blink
    scores["jawOpen"] = _score(rng, 0.75, 0.6)
    pair("mouthFrown", 0.2)
    scores["mouthFunnel"] = _score(rng, 0.4, 0.8)
    pair("mouthLowerDown", 0.4, top=0.7)
    scores["mouthPucker"] = _score(rng, 0.4)
    v = BlendshapeMapper().map_blendshapes(scores).values.astype(np.float32)
    v[FACE_INPUTS:] = 0.0  # expression only
    return v


def sample_rotation(rng: np.random.Generator, head: bool, body: bool) -> np.ndarray:
    """Head and/or body rotation values (everything else zero)."""
    v = np.zeros(NUM_PARAMETERS, np.float32)
    groups = ([HEAD_INDICES] if head else []) + ([BODY_INDICES] if body else [])
    for indices in groups:
        if rng.random() < 0.15:  # one axis alone, often at its extreme: a pure turn or tilt
            i = indices[rng.integers(3)]
            v[i] = (
                rng.choice([LOWER[i], UPPER[i]])
                if rng.random() < 0.5
                else rng.uniform(LOWER[i], UPPER[i])
            )
            continue
        for i in indices:
            if rng.random() < 0.75:
                v[i] = rng.uniform(LOWER[i], UPPER[i])
    return v


SAMPLERS = ("broad", "tracked")
# Under the ``tracked`` sampler, runs of this many face poses share their eyebrow values: THA3
# then runs its eyebrow combiner once a run (a face crop costs 0.11 s instead of 0.16 s).
EYEBROW_RUN = 3


def _broad_face(rng: np.random.Generator) -> np.ndarray:
    return sample_face(rng) if rng.random() < 0.4 else dense_face(rng)


def _face(rng: np.random.Generator, sampler: str) -> np.ndarray:
    if sampler == "tracked" and rng.random() < 0.75:
        return tracked_face(rng)
    return _broad_face(rng)


def face_poses(count: int, seed: int, sampler: str = "broad") -> np.ndarray:
    """Expression-only poses of one sampler (see the module docstring)."""
    rng = np.random.default_rng([seed, 101])
    out = [_face(rng, sampler) for _ in range(count)]
    if sampler == "tracked":
        for n in range(count):
            if n % EYEBROW_RUN:
                out[n][:12] = out[n - n % EYEBROW_RUN][:12]
    return np.clip(np.stack(out) if out else np.zeros((0, NUM_PARAMETERS)), LOWER, UPPER).astype(
        np.float32
    )


def joint_poses(count: int, seed: int, stream: int = 102, sampler: str = "broad") -> np.ndarray:
    """Expression + head/body: half (``tracked``: 85 %) with the body following the head as
    the tracker maps it, the rest independent; one in ten with a neutral face."""
    rng = np.random.default_rng([seed, stream])
    out = np.zeros((count, NUM_PARAMETERS), np.float32)
    for n in range(count):
        face = _face(rng, sampler) if sampler == "tracked" else _broad_face_joint(rng)
        if rng.random() < 0.1:
            face[:] = 0.0
        rotation = sample_rotation(rng, head=True, body=rng.random() < 0.7)
        if rng.random() < (0.85 if sampler == "tracked" else 0.5):
            rotation[INDEX["body_y"]] = rotation[INDEX["head_y"]]
            rotation[INDEX["body_z"]] = rotation[INDEX["neck_z"]]
            rotation[INDEX["breathing"]] = rng.random()
        out[n] = face + rotation
    return np.clip(out, LOWER, UPPER).astype(np.float32)


def _broad_face_joint(rng: np.random.Generator) -> np.ndarray:
    return dense_face(rng) if rng.random() < 0.6 else sample_face(rng)


def sample_poses(kind: str, count: int, seed: int, sampler: str = "broad") -> np.ndarray:
    """``count`` poses (count, 45) of one set: face, head, body, joint or heldout. The
    sampler shapes the expressions of the face and joint sets; held-out poses are always
    broad (the tracked evaluation has real tracked poses)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown pose sampler {sampler!r}")
    if kind == "face":
        return face_poses(count, seed, sampler)
    if kind == "joint":
        return joint_poses(count, seed, stream=102, sampler=sampler)
    if kind == "heldout":
        return joint_poses(count, seed, stream=103)
    if kind not in ("head", "body"):
        raise ValueError(f"unknown pose set {kind!r}")
    rng = np.random.default_rng([seed, 2 if kind == "head" else 3])
    out = [sample_rotation(rng, head=kind == "head", body=kind == "body") for _ in range(count)]
    return np.clip(np.stack(out) if out else np.zeros((0, NUM_PARAMETERS)), LOWER, UPPER).astype(
        np.float32
    )


# ---------------------------------------------------------------------------------------------
# Teachers.


def parse_teacher(teacher: str) -> str:
    """Normalise a teacher spec to a poser spec: rig -> rig:hana, tha3 -> tha3:separable_float."""
    from poser_models.registry import DEFAULT_CHARACTER_NAME

    kind, _, argument = teacher.strip().partition(":")
    if kind == "rig":
        return f"rig:{argument or DEFAULT_CHARACTER_NAME}"
    if kind == "tha3":
        return f"tha3:{argument or 'separable_float'}"
    if kind == "tha4-student":
        if not argument:
            raise PuppetError(
                "The teacher tha4-student needs its folder.", "Write --teacher tha4-student:DIR."
            )
        return f"tha4-student:{argument}"
    raise PuppetError(
        f"Unknown teacher {teacher!r}.",
        "Use --teacher rig, tha3[:variant] or tha4-student:DIR.",
    )


def make_teacher(teacher: str, character: Path | np.ndarray, device: str = "cpu") -> Teacher:
    """The teacher poser (``pose(PoseVector) -> RGBA uint8``), loaded with ``character``."""
    from poser_models.registry import create_poser
    from puppet.paths import models_dir

    return create_poser(parse_teacher(teacher), character, device, models_dir=models_dir())


def check_frame(frame: np.ndarray) -> np.ndarray:
    if frame.shape != (SIZE, SIZE, 4) or frame.dtype != np.uint8:
        raise PuppetError(
            f"The teacher returned a {frame.dtype} frame of shape {frame.shape};"
            " expected (512, 512, 4) uint8.",
            "Use a teacher that poses 512x512 RGBA images.",
        )
    return frame


def render_frames(teacher: Teacher, poses: np.ndarray) -> np.ndarray:
    """Teacher frames for ``poses`` (N, 45): straight sRGB RGBA uint8 (N, 512, 512, 4)."""
    frames = np.empty((len(poses), SIZE, SIZE, 4), np.uint8)
    for n, values in enumerate(poses):
        frames[n] = check_frame(teacher.pose(PoseVector(values)))
    return frames


# ---------------------------------------------------------------------------------------------
# Face parts, found by probing the teacher.


def part_groups() -> dict[str, list[int]]:
    """The face values each part reads, by THA's naming: the character's right eye + brow,
    left eye + brow, mouth. The iris rotation drives both eyes."""
    groups: dict[str, list[int]] = {"right": [], "left": [], "mouth": []}
    for i, name in enumerate(PARAMETER_NAMES[:FACE_INPUTS]):
        if name.startswith("mouth_"):
            groups["mouth"].append(i)
        elif name.startswith("iris_rotation"):
            groups["right"].append(i)
            groups["left"].append(i)
        else:
            groups["left" if name.endswith("_left") else "right"].append(i)
    return groups


# Where THA's face morpher works (rows 32-224, cols 160-352 of the 512 frame): expression
# changes outside it are the editor's re-synthesis, not the face.
FACE_REGION = (32, 160, 192, 192)


# A THA teacher's box holds the parts' strong changes (more than this, of 255), in the
# connected pieces that carry at least STRONG_SHARE of them: the faint redrawing of the other
# eye, the chin line and the rest of the face that every value causes stays out.
STRONG_CHANGE = 32
STRONG_SHARE = 0.1


def find_parts(
    teacher: Teacher, pad: int = 4, robust: bool = False
) -> tuple[tuple[Box, ...], tuple[tuple[int, ...], ...]]:
    """Each part's box is where its own values change the un-rotated frame inside
    :data:`FACE_REGION`, padded; returns (boxes, inputs).

    An exact teacher (the rig) changes only what it redraws: the box holds every pixel that
    changes by more than 2/255. THA's networks re-synthesise the whole face a little with
    every value (``robust``): the box then holds the strong changes only (see
    :data:`STRONG_CHANGE`) of the pixels it changes more than the other parts do, and boxes
    that still overlap are cut apart in the middle of their overlap (a pixel belongs to one
    part: parts add their changes)."""
    neutral = check_frame(teacher.pose(PoseVector())).astype(np.int16)
    shared = {i for i, n in enumerate(PARAMETER_NAMES) if n.startswith("iris_rotation")}
    rt, rl, rh, rw = FACE_REGION
    changes = {}
    for name, indices in part_groups().items():
        change = np.zeros((SIZE, SIZE), np.int16)
        # The box comes from the part's own values: the shared iris rotation moves both
        # irises, inside the openings the eye values already mark (counting it would make
        # both eye boxes span both eyes).
        for i in [i for i in indices if i not in shared]:
            for value in {float(UPPER[i]), float(LOWER[i]), 0.5 * float(UPPER[i])} - {0.0}:
                v = np.zeros(NUM_PARAMETERS, np.float32)
                v[i] = value
                frame = check_frame(teacher.pose(PoseVector(v)))
                change = np.maximum(change, np.abs(frame.astype(np.int16) - neutral).max(axis=-1))
        changes[name] = change[rt : rt + rh, rl : rl + rw]
    most = np.max(np.stack(list(changes.values())), axis=0)
    boxes, inputs = [], []
    for (name, indices), region in zip(part_groups().items(), changes.values(), strict=True):
        # Robust: a pixel belongs to the part that changes it most (THA's eye values move the
        # other eye's iris a little too).
        mask = _strong_pieces(np.where(region >= most, region, 0)) if robust else region > 2
        if not mask.any():
            raise PuppetError(
                f"The teacher's {name} face values change nothing in the image.",
                "Check the teacher and the character image (the face must be where THA"
                " expects it: `puppet character check IMAGE`).",
            )
        ys, xs = np.nonzero(mask)
        (y0, y1), (x0, x1) = (ys.min(), ys.max()), (xs.min(), xs.max())
        top, bottom = max(0, rt + y0 - pad), min(SIZE, rt + y1 + 1 + pad)
        left, right = max(0, rl + x0 - pad), min(SIZE, rl + x1 + 1 + pad)
        boxes.append((int(top), int(left), int(bottom - top), int(right - left)))
        inputs.append(tuple(indices))
    if robust:
        boxes = _separate(boxes)
    return tuple(boxes), tuple(inputs)


def _strong_pieces(change: np.ndarray) -> np.ndarray:
    """The pixels changed by more than :data:`STRONG_CHANGE` in pieces (8-connected) holding
    at least :data:`STRONG_SHARE` of them; a part that changes nothing that much keeps every
    change above 8."""
    strong = change > STRONG_CHANGE
    if not strong.any():
        return change > 8
    count, labels, stats, _ = cv2.connectedComponentsWithStats(strong.astype(np.uint8), 8)
    areas = stats[1:count, cv2.CC_STAT_AREA]
    keep = 1 + np.nonzero(areas >= STRONG_SHARE * areas.sum())[0]
    return np.isin(labels, keep)


def _separate(boxes: list[Box]) -> list[Box]:
    """Boxes that overlap cut apart along the axis where they overlap least, in its middle."""
    out = [list(b) for b in boxes]
    for i in range(len(out)):
        for j in range(i + 1, len(out)):
            a, b = out[i], out[j]
            dy = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
            dx = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
            if dy <= 0 or dx <= 0:
                continue
            axis = 0 if dy < dx else 1  # 0: rows (top, height), 1: cols (left, width)
            first, second = (
                (a, b) if a[axis] + a[axis + 2] / 2 <= b[axis] + b[axis + 2] / 2 else (b, a)
            )
            cut = max(first[axis], second[axis]) + (dy if axis == 0 else dx) // 2
            first[axis + 2] = cut - first[axis]
            second[axis + 2] = second[axis] + second[axis + 2] - cut
            second[axis] = cut
    return [tuple(int(x) for x in b) for b in out]  # type: ignore[misc]


class FaceStages:
    """A THA3 teacher seen through its face stages only (:meth:`THA3Poser.face_morphed`):
    what the part boxes are probed on. The editor redraws the whole frame a little with
    every value; the face stages change only what they move."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    def pose(self, pose: PoseVector) -> np.ndarray:
        return self.teacher.face_morphed(pose)  # type: ignore[attr-defined]


def union_box(boxes: tuple[Box, ...] | list[Box]) -> Box:
    top = min(b[0] for b in boxes)
    left = min(b[1] for b in boxes)
    bottom = max(b[0] + b[2] for b in boxes)
    right = max(b[1] + b[3] for b in boxes)
    return top, left, bottom - top, right - left


# ---------------------------------------------------------------------------------------------
# Cached frames.

FrameSets = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (poses (N, 45), uint8 frames)


def set_shape(kind: str, face_box: Box) -> tuple[int, int, int]:
    return (face_box[2], face_box[3], 4) if kind == "face" else (SIZE, SIZE, 4)


def open_cache(folder: Path, kind: str, count: int, shape: tuple[int, ...]) -> np.ndarray:
    path = folder / f"{kind}.u8"
    size = count * math.prod(shape)
    if count == 0:
        return np.zeros((0, *shape), np.uint8)
    mode = "r+" if path.is_file() and path.stat().st_size == size else "w+"
    return np.memmap(path, np.uint8, mode, shape=(count, *shape))


class ApproximateFaces:
    """Expression-only face crops from a teacher with separate face stages (THA3) at about a
    third of a frame's cost: T(0) + F(e) - F(0) in premultiplied linear RGBA, where T is the
    teacher's frame and F the character with only its face stages applied (the rotator and
    the editor skipped). At zero rotation those two stages change little of what the face
    stages drew: on the sample lambda_00 this is 33-39 dB from the full teacher's frame over
    the head box (the full frame against its own neutral: 20-28 dB), so many more expressions
    fit in a time budget; the student is still scored against full teacher frames."""

    def __init__(self, teacher: Teacher, face_box: Box, neutral: np.ndarray | None = None) -> None:
        """``neutral``: the teacher's frame at the neutral pose, when the caller has it."""
        top, left, height, width = face_box
        self.teacher = teacher
        self.box = (slice(top, top + height), slice(left, left + width))
        if neutral is None:
            neutral = teacher.pose(PoseVector())
        self.base = rgba_to_premultiplied_linear(check_frame(neutral)[self.box])
        self.base -= self._face(PoseVector())

    def _face(self, pose: PoseVector) -> np.ndarray:
        frame = check_frame(self.teacher.face_morphed(pose))  # type: ignore[attr-defined]
        return rgba_to_premultiplied_linear(frame[self.box])

    def crop(self, pose: PoseVector) -> np.ndarray:
        """The face box of the approximate frame, straight sRGB RGBA uint8."""
        return premultiplied_linear_to_rgba(self.base + self._face(pose))  # clips to range


def has_face_stages(teacher: Teacher) -> bool:
    return callable(getattr(teacher, "face_morphed", None))


def render_sets(
    folder: Path,
    teacher: Callable[[], Teacher],
    sizes: dict[str, int],
    seed: int,
    face_box: Box,
    rendered: dict[str, int],
    save: Callable[[], None],
    progress: Progress,
    save_every_s: float = 20.0,
    approximate_faces: bool = False,
    sampler: str = "broad",
    faces: ApproximateFaces | None = None,
) -> FrameSets:
    """Render (or finish rendering) every set into ``folder``; ``rendered`` counts the frames
    done per set and is updated in place, ``save()`` persists it (the run state).

    ``teacher`` is called only when a frame is missing (a resumed, finished render needs no
    teacher: THA3 takes a while to load). ``approximate_faces``: the ``face`` crops come from
    :class:`ApproximateFaces` (a THA3 teacher; ``faces``, when the caller made it already);
    ``sampler`` shapes the expressions."""
    top, left, height, width = face_box
    total = sum(sizes.values())
    done_all = sum(min(rendered.get(k, 0), n) for k, n in sizes.items())
    out: FrameSets = {}
    start = time.monotonic()
    fresh = 0
    for kind, count in sizes.items():
        cache = open_cache(folder, kind, count, set_shape(kind, face_box))
        poses = sample_poses(kind, count, seed, sampler)
        last_save = time.monotonic()
        for n in range(rendered.get(kind, 0), count):
            if kind == "face" and approximate_faces:
                if faces is None:
                    faces = ApproximateFaces(teacher(), face_box)
                cache[n] = faces.crop(PoseVector(poses[n]))
            else:
                frame = check_frame(teacher().pose(PoseVector(poses[n])))
                cache[n] = (
                    frame[top : top + height, left : left + width] if kind == "face" else frame
                )
            done_all += 1
            fresh += 1
            if time.monotonic() - last_save > save_every_s or n == count - 1:
                cache.flush()
                rendered[kind] = n + 1
                save()
                last_save = time.monotonic()
            elapsed = time.monotonic() - start
            progress(
                "render",
                {
                    "set": kind,
                    "done": done_all,
                    "total": total,
                    "seconds_per_frame": elapsed / fresh,
                },
            )
        out[kind] = (poses, cache)
    return out
