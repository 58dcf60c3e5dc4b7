"""``puppet distill``: train a CPU student poser (``poser_models/student.py``) from a teacher.

Teachers: ``rig`` / ``rig:NAME`` (the bundled character's code-drawn rig), ``tha3[:variant]``
(official THA3 weights, default variant ``separable_float``) and ``tha4-student:DIR``.

Steps, each checkpointed in ``OUT/checkpoints/`` so an interrupted run resumes where it
stopped:

1. **probe**: render each face parameter at its extreme to find the face box (the pixels the
   face morphs change in the un-rotated frame).
2. **render**: teacher frames for four pose sets, cached as uint8 memory maps: ``face``
   (expressions, no rotation; only the face box is kept), ``head`` and ``body`` (rotation of
   one group, neutral face), ``joint`` (everything at once) and ``heldout`` (joint poses from
   another random stream, never trained on).
3. **init**: face basis by PCA of the teacher's face patches and the face MLP regressed onto
   the PCA coefficients; head/body flow bases by least squares on optical flow
   (DIS) between each teacher frame and the neutral image.
4. **train**: everything end to end on image loss (squared error on premultiplied linear
   RGBA crops of the teacher frames, plus face-patch loss), Adam with cosine decay.
5. **evaluate**: the numpy/OpenCV runtime (what users run) against the held-out teacher
   frames: alpha-weighted PSNR and SSIM (:func:`alpha_weighted_psnr`, :func:`alpha_weighted_ssim`),
   and poser-only fps on this machine.

The student (``student.safetensors`` + ``manifest.json``) is written atomically at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from poser_models.image import load_character
from poser_models.student import (
    BODY_INDICES,
    FACE_INPUTS,
    HEAD_INDICES,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    StudentConfig,
    StudentManifest,
    StudentPoser,
    image_sha256,
    monomial_exponents,
    rgba_to_premultiplied_linear,
    tensor_shapes,
)
from poser_models.student_net import StudentNet, pixel_grid
from puppet.atomic import atomic_write_bytes
from puppet.errors import PuppetError
from puppet.pose import INDEX, LOWER, NUM_PARAMETERS, UPPER, PoseVector

SIZE = 512


# ---------------------------------------------------------------------------------------------
# Metrics. Both compare premultiplied linear RGBA on [0, 1] (the space THA posers compute in),
# over the character only: background pixels that both images leave transparent do not count.


def metric_weight(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Per-pixel weight: max(alpha_teacher, alpha_student), dilated by one pixel (3x3 max).

    Both arguments are premultiplied linear (H, W, 4). The dilation makes a missing or extra
    anti-aliased edge pixel count in full.
    """
    alpha = np.maximum(np.clip(teacher[..., 3], 0, 1), np.clip(student[..., 3], 0, 1))
    return cv2.dilate(alpha.astype(np.float32), np.ones((3, 3), np.uint8))


def alpha_weighted_mse(teacher: np.ndarray, student: np.ndarray) -> tuple[float, float]:
    """(weighted squared error summed over pixels and the 4 channels, 4 * total weight)."""
    student = np.clip(student, 0.0, 1.0)
    weight = metric_weight(teacher, student)
    error = ((student - teacher) ** 2).sum(axis=-1)
    return float((weight * error).sum()), float(4.0 * weight.sum())


def alpha_weighted_psnr(teacher: np.ndarray, student: np.ndarray) -> float:
    """PSNR in dB over the 4 premultiplied linear channels on [0, 1], alpha-weighted.

    ``MSE = sum_p w_p sum_c (s_pc - t_pc)^2 / (4 sum_p w_p)`` with ``w`` from
    :func:`metric_weight`; ``PSNR = 10 log10(1 / MSE)``. Inputs are premultiplied linear
    float (H, W, 4); the student is clipped to [0, 1] first, as its output would be.
    """
    squared, total = alpha_weighted_mse(teacher, student)
    return psnr_from_mse(squared / max(total, 1e-12))


def psnr_from_mse(mse: float) -> float:
    return float(10.0 * math.log10(1.0 / max(mse, 1e-12)))


def alpha_weighted_ssim(teacher: np.ndarray, student: np.ndarray) -> float:
    """SSIM (Gaussian window sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, data range 1) per
    premultiplied linear channel, averaged over channels and over pixels with the
    :func:`metric_weight` weights."""
    student = np.clip(student, 0.0, 1.0).astype(np.float32)
    teacher = teacher.astype(np.float32)
    weight = metric_weight(teacher, student)

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    c1, c2 = 0.01**2, 0.03**2
    mu_t, mu_s = blur(teacher), blur(student)
    var_t = blur(teacher * teacher) - mu_t**2
    var_s = blur(student * student) - mu_s**2
    cov = blur(teacher * student) - mu_t * mu_s
    ssim = ((2 * mu_t * mu_s + c1) * (2 * cov + c2)) / (
        (mu_t**2 + mu_s**2 + c1) * (var_t + var_s + c2)
    )
    return float((ssim.mean(axis=-1) * weight).sum() / max(weight.sum(), 1e-12))


# ---------------------------------------------------------------------------------------------
# Qualities.


@dataclass(frozen=True)
class Quality:
    face_frames: int
    head_frames: int
    body_frames: int
    joint_frames: int
    heldout_frames: int
    face_rank: int
    face_hidden: int
    residual_rank: int
    residual_hidden: int
    regress_steps: int  # face MLP onto PCA coefficients
    train_steps: int  # end to end
    batch: int
    crop: int
    minutes: float  # time budget of the whole run (rendering included)
    layers: int = 3  # depth layers of the student


QUALITIES: dict[str, Quality] = {
    "test": Quality(
        face_frames=160,
        head_frames=60,
        body_frames=60,
        joint_frames=100,
        heldout_frames=8,
        face_rank=12,
        face_hidden=48,
        residual_rank=6,
        residual_hidden=32,
        regress_steps=200,
        train_steps=60,
        batch=4,
        crop=96,
        minutes=3.0,
    ),
    "fast": Quality(
        face_frames=1000,
        head_frames=300,
        body_frames=300,
        joint_frames=800,
        heldout_frames=24,
        face_rank=32,
        face_hidden=96,
        residual_rank=16,
        residual_hidden=64,
        regress_steps=1500,
        train_steps=1500,
        batch=6,
        crop=128,
        minutes=15.0,
    ),
    "default": Quality(
        face_frames=4000,
        head_frames=1000,
        body_frames=1000,
        joint_frames=3000,
        heldout_frames=64,
        face_rank=64,
        face_hidden=128,
        residual_rank=16,
        residual_hidden=64,
        regress_steps=3000,
        train_steps=16000,
        batch=8,
        crop=128,
        minutes=58.0,
        layers=3,
    ),
}


# Adam step sizes at the start of training (cosine decay to 5 %): flows in pixels, maps in
# premultiplied [0, 1] units, mask logits, MLP weights.
LEARNING_RATES = {"flow": 0.02, "maps": 1e-3, "masks": 0.02, "mlp": 1e-3}


# ---------------------------------------------------------------------------------------------
# Pose sampling: uniform where it is cheap to be, plus the marginals a live face produces
# (linked blinks, one-eye winks, single vowels, head turns, brow groups, gaze).


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
    """An expression (eyebrows, eyes, iris, mouth), rotation and breathing at zero."""
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


def sample_poses(kind: str, count: int, seed: int) -> np.ndarray:
    """``count`` poses (count, 45) of one set: face, head, body, joint or heldout."""
    stream = {"face": 1, "head": 2, "body": 3, "joint": 4, "heldout": 5}[kind]
    rng = np.random.default_rng([seed, stream])
    out = np.zeros((count, NUM_PARAMETERS), np.float32)
    for n in range(count):
        if kind == "face":
            out[n] = sample_face(rng)
        elif kind == "head":
            out[n] = sample_rotation(rng, head=True, body=False)
        elif kind == "body":
            out[n] = sample_rotation(rng, head=False, body=True)
        else:
            face = sample_face(rng) if rng.random() < 0.8 else np.zeros(NUM_PARAMETERS)
            out[n] = face + sample_rotation(rng, head=True, body=rng.random() < 0.7)
    return np.clip(out, LOWER, UPPER)


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


def make_teacher(teacher: str, character: Path | np.ndarray, device: str = "cpu"):
    """The teacher poser (anything with ``pose(PoseVector) -> RGBA uint8``), loaded."""
    from poser_models.registry import create_poser
    from puppet.paths import models_dir

    return create_poser(parse_teacher(teacher), character, device=device, models_dir=models_dir())


def render_frames(teacher, poses: np.ndarray) -> np.ndarray:
    """Teacher frames for ``poses`` (N, 45): straight sRGB RGBA uint8 (N, 512, 512, 4)."""
    frames = np.empty((len(poses), SIZE, SIZE, 4), np.uint8)
    for n, values in enumerate(poses):
        frames[n] = _check_frame(teacher.pose(PoseVector(values)))
    return frames


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if frame.shape != (SIZE, SIZE, 4) or frame.dtype != np.uint8:
        raise PuppetError(
            f"The teacher returned a {frame.dtype} frame of shape {frame.shape};"
            " expected (512, 512, 4) uint8.",
            "Use a teacher that poses 512x512 RGBA images.",
        )
    return frame


# ---------------------------------------------------------------------------------------------
# Files.


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    from safetensors.torch import save

    data = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@dataclass
class DistillReport:
    out_dir: Path
    teacher: str
    quality: str
    seed: int
    psnr_db: float  # alpha-weighted, pooled over the held-out set
    psnr_frame_mean_db: float
    psnr_frame_min_db: float
    ssim: float
    untrained_psnr_db: float  # the same set, student before training (the neutral image)
    fps: float  # poser-only, numpy/OpenCV runtime, this machine, torch/cv2 threads as set
    gflop_per_frame: float
    heldout_frames: int
    train_minutes: float
    face_box: tuple[int, int, int, int] = (0, 0, 0, 0)
    weights_bytes: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


# ---------------------------------------------------------------------------------------------
# The run.


class _Run:
    """State of one distillation: caches, checkpoints and phases."""

    def __init__(
        self,
        character_path: Path,
        teacher_spec: str,
        out_dir: Path,
        quality: str,
        seed: int,
        device: str,
        max_minutes: float | None,
        log: Callable[[str], None],
    ) -> None:
        if quality not in QUALITIES:
            raise PuppetError(
                f"Unknown quality {quality!r}.", f"Use one of: {', '.join(QUALITIES)}."
            )
        self.character_path = Path(character_path)
        self.rgba = load_character(self.character_path)
        self.teacher_spec = parse_teacher(teacher_spec)
        self.out_dir = Path(out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.quality_name = quality
        self.q = QUALITIES[quality]
        self.seed = seed
        self.device = torch.device(device)
        self.budget_s = 60.0 * (max_minutes if max_minutes is not None else self.q.minutes)
        self.log = log
        self.state_path = self.checkpoints / "state.json"
        self.state: dict = {}
        self._teacher = None
        self.started = time.monotonic()

    # -- state ---------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.state.get("elapsed_s", 0.0) + time.monotonic() - self.started

    def save_state(self) -> None:
        self.state["elapsed_s"] = self.elapsed()
        self.started = time.monotonic()
        atomic_write_bytes(self.state_path, json.dumps(self.state, indent=1).encode())

    def load_state(self, resume: bool) -> None:
        key = {
            "teacher": self.teacher_spec,
            "quality": self.quality_name,
            "seed": self.seed,
            "character_sha256": image_sha256(self.rgba),
        }
        if resume and self.state_path.is_file():
            state = json.loads(self.state_path.read_text())
            if all(state.get(k) == v for k, v in key.items()):
                self.state = state
                self.log(f"resuming at phase {state.get('phase')}")
                return
            self.log("checkpoints are from another run: starting over")
        self.state = {**key, "phase": "probe", "rendered": {}}
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.save_state()

    @property
    def teacher(self):
        if self._teacher is None:
            self._teacher = make_teacher(self.teacher_spec, self.character_path, str(self.device))
        return self._teacher

    # -- caches --------------------------------------------------------------------------------
    def _cache(self, kind: str, count: int, shape: tuple[int, ...], mode: str) -> np.ndarray:
        path = self.checkpoints / f"{kind}.u8"
        if mode == "w+" and path.exists() and path.stat().st_size == count * math.prod(shape):
            mode = "r+"
        return np.memmap(path, np.uint8, mode, shape=(count, *shape))

    def set_sizes(self) -> dict[str, int]:
        q = self.q
        return {
            "face": q.face_frames,
            "head": q.head_frames,
            "body": q.body_frames,
            "joint": q.joint_frames,
            "heldout": q.heldout_frames,
        }

    def face_box(self) -> tuple[int, int, int, int]:
        return tuple(self.state["face_box"])  # type: ignore[return-value]

    def frames(self, kind: str) -> np.ndarray:
        count = self.set_sizes()[kind]
        if kind == "face":
            _, _, h, w = self.face_box()
            return self._cache(kind, count, (h, w, 4), "r")
        return self._cache(kind, count, (SIZE, SIZE, 4), "r")

    # -- phases --------------------------------------------------------------------------------
    def probe(self) -> None:
        """Find the face box: where the face parameters change the un-rotated frame."""
        neutral = _check_frame(self.teacher.pose(PoseVector()))
        changed = np.zeros((SIZE, SIZE), bool)
        for i in range(FACE_INPUTS):
            for value in {float(UPPER[i]), float(LOWER[i])} - {0.0}:
                v = np.zeros(NUM_PARAMETERS, np.float32)
                v[i] = value
                frame = _check_frame(self.teacher.pose(PoseVector(v)))
                changed |= np.abs(frame.astype(np.int16) - neutral).max(axis=-1) > 2
        if not changed.any():
            raise PuppetError(
                "The teacher's face parameters change nothing in the image.",
                "Check the teacher and the character image.",
            )
        ys, xs = np.nonzero(changed)
        pad = 6
        top, bottom = max(0, ys.min() - pad), min(SIZE, ys.max() + 1 + pad)
        left, right = max(0, xs.min() - pad), min(SIZE, xs.max() + 1 + pad)
        top, left = top // 8 * 8, left // 8 * 8
        bottom, right = min(SIZE, -(-bottom // 8) * 8), min(SIZE, -(-right // 8) * 8)
        self.state["face_box"] = [int(top), int(left), int(bottom - top), int(right - left)]
        student_neutral = rgba_to_premultiplied_linear(self.rgba)
        teacher_neutral = rgba_to_premultiplied_linear(neutral)
        self.state["neutral_psnr_db"] = alpha_weighted_psnr(teacher_neutral, student_neutral)
        self.log(
            f"face box (top, left, height, width) = {self.state['face_box']};"
            f" teacher neutral vs image {self.state['neutral_psnr_db']:.1f} dB"
        )

    def render(self, progress) -> None:
        top, left, height, width = self.face_box()
        sizes = self.set_sizes()
        total = sum(sizes.values())
        done_all = sum(self.state["rendered"].get(k, 0) for k in sizes)
        task = progress.add_task("render teacher", total=total, completed=done_all)
        for kind, count in sizes.items():
            shape = (height, width, 4) if kind == "face" else (SIZE, SIZE, 4)
            cache = self._cache(kind, count, shape, "w+")
            poses = sample_poses(kind, count, self.seed)
            done = self.state["rendered"].get(kind, 0)
            last_save = time.monotonic()
            for n in range(done, count):
                frame = _check_frame(self.teacher.pose(PoseVector(poses[n])))
                cache[n] = (
                    frame[top : top + height, left : left + width] if kind == "face" else frame
                )
                progress.advance(task)
                if time.monotonic() - last_save > 20 or n == count - 1:
                    cache.flush()
                    self.state["rendered"][kind] = n + 1
                    self.save_state()
                    last_save = time.monotonic()
            del cache

    def new_net(self) -> StudentNet:
        q = self.q
        return StudentNet(self._config(q)).to(self.device)

    def _config(self, q: Quality) -> StudentConfig:
        boxes = self.state.get("boxes", {})
        full = (0, 0, 256, 256)
        return StudentConfig(
            face_box=self.face_box(),
            face_rank=q.face_rank,
            face_hidden=q.face_hidden,
            head_box=tuple(boxes.get("head", full)),
            body_box=tuple(boxes.get("body", (0, 0, 128, 128))),
            residual_box=tuple(boxes.get("residual", full)),
            residual_rank=q.residual_rank,
            residual_hidden=q.residual_hidden,
            layers=q.layers,
        )

    def initialise(self, progress) -> StudentNet:
        """PCA face basis + regressed MLP; least-squares flow bases from optical flow."""
        q = self.q
        torch.manual_seed(self.seed)
        top, left, height, width = self.face_box()
        source = rgba_to_premultiplied_linear(self.rgba)
        neutral_patch = source[top : top + height, left : left + width]
        task = progress.add_task("initialise", total=4)
        # Face: PCA of the patch changes.
        patches = self.frames("face")
        poses_face = sample_poses("face", q.face_frames, self.seed)
        pca_count = min(len(patches), 1500)
        delta = np.stack(
            [rgba_to_premultiplied_linear(patches[n]) - neutral_patch for n in range(pca_count)]
        ).reshape(pca_count, -1)
        delta_t = torch.from_numpy(delta)
        _, _, v = torch.svd_lowrank(delta_t, q=q.face_rank + 8, niter=3, M=None)
        basis = v[:, : q.face_rank].T.contiguous()  # (K, h*w*4), orthonormal rows
        progress.advance(task)
        # Flows first, so the boxes (and the config) are known before the net is built.
        head_w, head_box, head_data = self._fit_flow("head", HEAD_INDICES)
        progress.advance(task)
        body_w, body_box, body_data = self._fit_flow("body", BODY_INDICES)
        progress.advance(task)
        labels, logits = self._layer_labels(head_w, head_box)
        layer_w = self._fit_layers(head_w, head_box, *head_data, labels)
        body_layers = self._fit_layers(body_w, body_box, *body_data, labels)
        body_w, body_box = _coarser(body_layers, body_box, StudentConfig.body_field_size)
        self.state["boxes"] = {"head": head_box, "body": body_box, "residual": head_box}
        net = self.new_net()
        with torch.no_grad():
            net.face_basis.copy_(basis.reshape(q.face_rank, height, width, 4))
            net.head_basis.copy_(torch.from_numpy(layer_w))
            net.layer_logits.copy_(torch.from_numpy(logits))
            net.body_basis.copy_(torch.from_numpy(body_w))
            net.residual_basis.zero_()
        # Face MLP onto the PCA coefficients (all face frames).
        coefficients = []
        for start in range(0, len(patches), 500):
            chunk = np.stack(
                [
                    rgba_to_premultiplied_linear(p) - neutral_patch
                    for p in patches[start : start + 500]
                ]
            ).reshape(-1, basis.shape[1])
            coefficients.append(torch.from_numpy(chunk) @ basis.T)
        targets = torch.cat(coefficients).to(self.device)
        inputs = torch.from_numpy(poses_face[:, :FACE_INPUTS]).to(self.device)
        optimiser = torch.optim.Adam(net.face_mlp.parameters(), lr=3e-3)
        rng = np.random.default_rng([self.seed, 10])
        for step in range(q.regress_steps):
            index = torch.from_numpy(rng.integers(0, len(targets), 256))
            loss = F.mse_loss(net.face_mlp(inputs[index]), targets[index])
            optimiser.zero_grad()
            loss.backward()
            for group in optimiser.param_groups:
                group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / q.regress_steps))
            optimiser.step()
        progress.advance(task)
        return net

    def _fit_flow(
        self, kind: str, indices: tuple[int, int, int]
    ) -> tuple[np.ndarray, list[int], tuple[np.ndarray, np.ndarray]]:
        """Least-squares basis (T, h, w, 2) over its support box from DIS optical flow,
        the box (field pixels) and the data (features (N, T), flows (N, S, S, 2))."""
        frames = self.frames(kind)
        poses = sample_poses(kind, len(frames), self.seed)
        neutral_gray = _flow_gray(self.rgba)
        source_alpha = self.rgba[..., 3] > 0
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        field = 256
        flows = np.empty((len(frames), field, field, 2), np.float32)
        kernel = np.ones((25, 25), np.uint8)
        for n in range(len(frames)):
            frame = np.asarray(frames[n])
            flow = dis.calc(_flow_gray(frame), neutral_gray, None)
            near = cv2.dilate(((frame[..., 3] > 0) | source_alpha).astype(np.uint8), kernel) > 0
            # Far from the character, and where the estimate is implausibly large (flat
            # regions, the frame edge), there is nothing to learn from the optical flow.
            flow[~near | (np.abs(flow).max(axis=-1) > 80.0)] = 0.0
            flows[n] = cv2.resize(flow, (field, field), interpolation=cv2.INTER_AREA)
        exponents = np.array(monomial_exponents(3, 3), np.float64)
        features = np.prod(
            poses[:, list(indices)][:, None, :].astype(np.float64) ** exponents, axis=-1
        ).astype(np.float32)
        gram = features.T @ features + 1e-3 * np.eye(features.shape[1])
        weights = (
            np.linalg.solve(gram, features.T @ flows.reshape(len(frames), -1))
            .astype(np.float32)
            .reshape(-1, field, field, 2)
        )
        predicted = np.abs(np.einsum("nt,thwc->nhwc", features[:200], weights)).max(axis=(0, 3))
        ys, xs = np.nonzero(predicted > 0.2)
        if len(ys) == 0:
            box = [0, 0, 8, 8]
        else:
            pad = 6
            t, b = max(0, ys.min() - pad), min(field, ys.max() + 1 + pad)
            lft, r = max(0, xs.min() - pad), min(field, xs.max() + 1 + pad)
            box = [int(t), int(lft), int(b - t), int(r - lft)]
        t, lft, h, w = box
        self.log(f"{kind} flow: box {box}, max |flow| {np.abs(flows).max():.1f} px")
        return (np.ascontiguousarray(weights[:, t : t + h, lft : lft + w]), box, (features, flows))

    def _layer_labels(self, head_w: np.ndarray, box: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Initial depth layers: cluster the pixels by how far they follow a head turn and a
        nod at rest (first-order terms of the head flow; parallax sets them apart), ordered
        back to front. Returns per-field-pixel layer indices (S, S) and mask logits."""
        layers = self.q.layers
        size, field = SIZE, 256
        t, lft, h, w = box
        if layers == 1:
            return np.zeros((field, field), np.int64), np.zeros((1, size, size), np.float32)
        # Backward flows: minus sign for how far a pixel moves with head_y (x) and head_x (y).
        follow_xy = -np.stack([head_w[2, ..., 0], head_w[1, ..., 1]], axis=-1)  # (h, w, 2)
        alpha = cv2.resize(
            self.rgba[..., 3].astype(np.float32) / 255, (field, field), interpolation=cv2.INTER_AREA
        )[t : t + h, lft : lft + w]
        opaque = alpha > 0.5
        points = follow_xy[opaque]
        order = np.argsort(points[:, 0])
        centres = points[order[((np.arange(layers) + 0.5) / layers * len(order)).astype(int)]]
        for _ in range(25):
            labels = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
            for k in range(layers):
                if (labels == k).any():
                    centres[k] = points[labels == k].mean(0)
        labels = ((follow_xy[..., None, :] - centres) ** 2).sum(-1).argmin(-1)  # (h, w)
        keys = centres[:, 0].copy()
        static = int(np.linalg.norm(centres, axis=1).argmin())
        # What does not follow the head (neck, body) lies behind the face but in front of
        # anything that turns the other way (back hair).
        others = [keys[k] for k in range(layers) if k != static and keys[k] >= -1.0]
        if others:
            keys[static] = min(others) - 0.01
        rank = np.empty(layers, np.int64)
        rank[np.argsort(keys)] = np.arange(layers)
        full = np.full((field, field), rank[static], np.int64)
        full[t : t + h, lft : lft + w] = rank[labels]
        full_image = cv2.resize(
            full.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST
        )
        logits = np.where(np.arange(layers)[:, None, None] == full_image[None], 8.0, 0.0)
        sizes = np.bincount(full[t : t + h, lft : lft + w][opaque], minlength=layers)
        self.log(
            f"layers back to front: {sizes.tolist()} opaque field pixels, following a"
            f" head turn by {np.round(np.sort(keys), 1).tolist()} px"
        )
        return full, logits.astype(np.float32)

    def _fit_layers(
        self,
        joint_w: np.ndarray,
        box: list[int],
        features: np.ndarray,
        flows: np.ndarray,
        labels: np.ndarray,
    ) -> np.ndarray:
        """Per-layer flow bases (L, T, h, w, 2): least squares weighted by which layer each
        output pixel shows (the layer under the source pixel it reads), pulled towards the
        joint fit where a layer is rarely seen."""
        layers = self.q.layers
        if layers == 1:
            return joint_w[None]
        size, field = SIZE, 256
        t, lft, h, w = box
        terms, count = features.shape[1], len(features)
        onehot = (labels[None] == np.arange(layers)[:, None, None]).astype(np.float32)
        gy, gx = np.mgrid[0:field, 0:field].astype(np.float32)
        shown = np.empty((layers, count, h, w), np.float32)
        for n in range(count):
            mx = gx + flows[n, ..., 0] * field / size
            my = gy + flows[n, ..., 1] * field / size
            for k in range(layers):
                shown[k, n] = cv2.remap(
                    onehot[k], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )[t : t + h, lft : lft + w]
        box_flows = flows[:, t : t + h, lft : lft + w].reshape(count, -1, 2)
        outer = (features[:, :, None] * features[:, None, :]).reshape(count, -1)
        joint = joint_w.reshape(terms, -1, 2).transpose(1, 0, 2)  # (P, T, 2)
        prior = 2.0
        out = np.empty((layers, terms, h, w, 2), np.float32)
        for k in range(layers):
            weight = shown[k].reshape(count, -1)  # (N, P)
            gram = (weight.T @ outer).reshape(-1, terms, terms) + prior * np.eye(terms)
            rhs = np.stack([(weight * box_flows[..., c]).T @ features for c in range(2)], -1)
            out[k] = (
                np.linalg.solve(gram, rhs + prior * joint)
                .transpose(1, 0, 2)
                .reshape(terms, h, w, 2)
            )
        return out

    def train(self, net: StudentNet, progress) -> None:
        """End to end on image loss, with checkpoints; stops at the step or time budget."""
        q = self.q
        source = torch.from_numpy(rgba_to_premultiplied_linear(self.rgba)).permute(2, 0, 1)
        source = source.contiguous().to(self.device)
        top, left, height, width = self.face_box()
        neutral_patch = source[:, top : top + height, left : left + width].permute(1, 2, 0)
        sets = {k: self.frames(k) for k in ("head", "body", "joint")}
        poses = {k: torch.from_numpy(sample_poses(k, len(v), self.seed)) for k, v in sets.items()}
        face_frames = self.frames("face")
        face_poses = torch.from_numpy(sample_poses("face", len(face_frames), self.seed))
        centres = {k: _crop_centres(v) for k, v in sets.items()}
        groups = [
            {"params": [net.head_basis, net.body_basis], "lr": LEARNING_RATES["flow"]},
            {
                "params": [net.face_basis, net.residual_basis, net.layer_fill],
                "lr": LEARNING_RATES["maps"],
            },
            {"params": [net.layer_logits], "lr": LEARNING_RATES["masks"]},
            {
                "params": [*net.face_mlp.parameters(), *net.residual_mlp.parameters()],
                "lr": LEARNING_RATES["mlp"],
            },
        ]
        base_lrs = [g["lr"] for g in groups]
        optimiser = torch.optim.Adam(groups)
        step = int(self.state.get("step", 0))
        checkpoint = self.checkpoints / "train.safetensors"
        if step > 0 and checkpoint.is_file():
            _restore(net, optimiser, _load_tensors(checkpoint))
        total = q.train_steps
        task = progress.add_task("train", total=total, completed=step)
        kinds = ["joint", "head", "body"]
        weights = np.array([0.6, 0.2, 0.2])
        last_save = time.monotonic()
        crop = q.crop
        running = 0.0
        # The schedule follows the step count (reproducible); on a machine too slow to finish
        # the steps in the time budget it follows the clock instead and ends on time.
        start = self.state.setdefault("train_start_s", self.elapsed())
        # A slow teacher (THA3 on a CPU) may spend the whole budget rendering: training then
        # still gets half of the budget.
        deadline = max(self.budget_s - max(60.0, 0.06 * self.budget_s), start + 0.5 * self.budget_s)
        while step < total:
            by_time = (self.elapsed() - start) / max(deadline - start, 1.0)
            fraction = max(step / total, by_time)
            if fraction >= 1.0:
                self.log(f"time budget reached at step {step}/{total}")
                break
            rng = np.random.default_rng([self.seed, 20, step])
            lr_scale = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * fraction))
            for group, base in zip(optimiser.param_groups, base_lrs, strict=True):
                group["lr"] = base * lr_scale
            batch_poses, targets, points = [], [], []
            for _ in range(q.batch):
                kind = kinds[rng.choice(3, p=weights)]
                n = int(rng.integers(len(sets[kind])))
                ys, xs, cdf = centres[kind][n % len(centres[kind])]
                j = min(int(np.searchsorted(cdf, rng.random())), len(ys) - 1)
                cy = int(np.clip(ys[j] - crop // 2 + rng.integers(-16, 17), 0, SIZE - crop))
                cx = int(np.clip(xs[j] - crop // 2 + rng.integers(-16, 17), 0, SIZE - crop))
                frame = np.asarray(sets[kind][n, cy : cy + crop, cx : cx + crop])
                targets.append(torch.from_numpy(rgba_to_premultiplied_linear(frame)))
                batch_poses.append(poses[kind][n])
                points.append(pixel_grid(cy, cx, crop, crop))
            pose_t = torch.stack(batch_poses).to(self.device)
            target = torch.stack(targets).permute(0, 3, 1, 2).to(self.device)
            output = net(pose_t, source, torch.stack(points).to(self.device))
            loss = F.mse_loss(output, target) + 0.1 * F.l1_loss(output, target)
            # A blurred copy of the loss reaches further: it pulls edges that are several
            # pixels off towards their place, where the sharp loss alone sees no slope.
            loss = loss + F.mse_loss(F.avg_pool2d(output, 8), F.avg_pool2d(target, 8))
            # The face stage alone on expression patches keeps it sharp where crops rarely land.
            index = rng.integers(0, len(face_frames), q.batch)
            patch = torch.from_numpy(
                np.stack([rgba_to_premultiplied_linear(face_frames[i]) for i in index])
            ).to(self.device)
            face = neutral_patch[None] + net.face_delta(face_poses[index].to(self.device))
            loss = loss + F.mse_loss(face, patch) + 0.1 * F.l1_loss(face, patch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            running = loss.item() if step == 1 else 0.99 * running + 0.01 * loss.item()
            if step % 500 == 0:
                self.state.setdefault("loss_log", []).append([step, running])
            progress.update(task, completed=step, description=f"train (loss {loss.item():.2e})")
            if time.monotonic() - last_save > 60 or step == total:
                self._checkpoint(net, optimiser, step)
                last_save = time.monotonic()
        self._checkpoint(net, optimiser, step)

    def _checkpoint(self, net: StudentNet, optimiser: torch.optim.Optimizer, step: int) -> None:
        tensors = dict(net.export_tensors())
        names = {id(p): n for n, p in net.named_parameters()}
        for parameter, state in optimiser.state.items():
            for key in ("exp_avg", "exp_avg_sq", "step"):
                value = state[key]
                tensors[f"adam.{names[id(parameter)]}.{key}"] = (
                    (value if torch.is_tensor(value) else torch.tensor(value)).reshape(-1)
                    if key == "step"
                    else value
                )
        _save_tensors(self.checkpoints / "train.safetensors", tensors, torch.float32)
        self.state["step"] = step
        self.save_state()


def _restore(net: StudentNet, optimiser: torch.optim.Optimizer, tensors: dict) -> None:
    net.import_tensors({k: v for k, v in tensors.items() if not k.startswith("adam.")})
    for name, parameter in net.named_parameters():
        key = f"adam.{name}"
        if f"{key}.exp_avg" in tensors:
            optimiser.state[parameter] = {
                "step": tensors[f"{key}.step"].reshape(()).clone(),
                "exp_avg": tensors[f"{key}.exp_avg"].clone(),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].clone(),
            }


def _flow_gray(rgba: np.ndarray) -> np.ndarray:
    """8-bit luminance over a mid-grey backdrop: what optical flow is computed on."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 110.0 * (1.0 - alpha)
    return np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32), 0, 255).astype(np.uint8)


def _crop_centres(
    frames: np.ndarray, count: int = 64
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Where training crops are centred, from a few frames: pixel positions (ys, xs) with a
    cumulative probability that favours edges (where misregistration costs), with a floor
    over the whole character so flat regions are still seen."""
    out = []
    for n in range(0, len(frames), max(1, len(frames) // count)):
        small = (
            cv2.resize(
                np.asarray(frames[n]), (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_AREA
            ).astype(np.float32)
            / 255.0
        )
        alpha = small[..., 3]
        luma = (small[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)) * alpha
        edges = sum(
            np.abs(cv2.Sobel(channel, cv2.CV_32F, dx, dy))
            for channel in (luma, alpha)
            for dx, dy in ((1, 0), (0, 1))
        )
        inside = (alpha > 0) | (edges > 0)
        weight = np.where(inside, edges + 0.25 * edges[inside].mean(), 0.0).ravel()
        order = np.nonzero(weight)[0]
        cdf = np.cumsum(weight[order])
        ys, xs = np.divmod(order, SIZE // 4)
        out.append((ys * 4 + 2, xs * 4 + 2, cdf / cdf[-1]))
    return out


def _coarser(weights: np.ndarray, box: list[int], size: int) -> tuple[np.ndarray, list[int]]:
    """Flow bases (L, T, h, w, 2) boxed in a 256 field -> the same in a ``size`` field."""
    field = 256
    factor = field // size
    t, lft, h, w = box
    full = np.zeros((*weights.shape[:2], field, field, 2), np.float32)
    full[:, :, t : t + h, lft : lft + w] = weights
    top, left = t // factor, lft // factor
    bottom, right = -(-(t + h) // factor), -(-(lft + w) // factor)
    coarse = full.reshape(*weights.shape[:2], size, factor, size, factor, 2).mean(axis=(3, 5))
    return (
        np.ascontiguousarray(coarse[:, :, top:bottom, left:right]),
        [top, left, bottom - top, right - left],
    )


# ---------------------------------------------------------------------------------------------
# Evaluation of the runtime the user gets.


def evaluate_student(
    poser: StudentPoser, poses: np.ndarray, frames: np.ndarray
) -> dict[str, float]:
    """Alpha-weighted PSNR (pooled, per-frame mean and min) and SSIM vs teacher frames."""
    squared = total = 0.0
    per_frame, ssims = [], []
    for values, frame in zip(poses, frames, strict=True):
        teacher = rgba_to_premultiplied_linear(np.asarray(frame))
        student = poser.pose_premultiplied(PoseVector(values))
        s, t = alpha_weighted_mse(teacher, student)
        squared += s
        total += t
        per_frame.append(psnr_from_mse(s / max(t, 1e-12)))
        ssims.append(alpha_weighted_ssim(teacher, student))
    return {
        "psnr_db": psnr_from_mse(squared / max(total, 1e-12)),
        "psnr_frame_mean_db": float(np.mean(per_frame)),
        "psnr_frame_min_db": float(np.min(per_frame)),
        "ssim": float(np.mean(ssims)),
    }


def measure_fps(poser: StudentPoser, seconds: float = 2.0, seed: int = 0) -> float:
    """Poser-only frames per second over varied poses (after warm-up)."""
    poses = sample_poses("joint", 32, seed + 99)
    for values in poses[:3]:
        poser.pose(PoseVector(values))
    frames = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or frames < 10:
        poser.pose(PoseVector(poses[frames % len(poses)]))
        frames += 1
    return frames / (time.perf_counter() - start)


def flops_per_frame(config: StudentConfig) -> float:
    """Arithmetic per 512x512 frame (multiply-add = 2), counted from the runtime's steps."""
    shapes = tensor_shapes(config)
    flops = 0.0
    for name, shape in shapes.items():
        if name.endswith("basis"):
            flops += 2.0 * math.prod(shape)  # coefficient-weighted sum of the maps
        elif name.endswith("weight"):
            flops += 2.0 * math.prod(shape) + 4 * shape[0]  # + bias and SiLU
    pixels = config.image_size**2
    flops += pixels * 2 * 8  # body flow upsampling (2 channels, bilinear)
    flops += pixels * (4 + 2 * 8 + 2)  # head flow lookup + composition
    flops += pixels * 4 * 8  # image remap (4 channels, bilinear)
    flops += pixels * 4 * 9  # residual upsampling + add
    flops += pixels * 12  # un-premultiply and colour conversion
    return flops


# ---------------------------------------------------------------------------------------------


def distill(
    character: Path,
    teacher: str,
    out_dir: Path,
    *,
    quality: str = "default",
    seed: int = 0,
    resume: bool = True,
    device: str = "cpu",
    max_minutes: float | None = None,
    progress: bool = True,
) -> DistillReport:
    """Distill a student for ``character`` from ``teacher`` into ``out_dir``.

    ``teacher``: ``rig`` / ``rig:NAME``, ``tha3[:variant]`` or ``tha4-student:DIR``.
    ``quality``: ``default`` (about 9,000 teacher frames; <= 60 min on 2 CPU cores with the
    rig teacher), ``fast`` (about 2,400 frames, ~15 min) or ``test`` (for tests, < 1 min).
    With THA3 or a THA4 student as the teacher, rendering dominates on a CPU (~1.9 s per
    frame: about 5 h for ``default``, 1.3 h for ``fast``); training then gets at least half
    of the time budget. ``max_minutes`` overrides the quality's time budget; training stops
    early to honour it. With ``resume``, a run continues from ``out_dir/checkpoints``.
    Writes ``out_dir/student.safetensors`` and ``out_dir/manifest.json`` atomically and
    returns the held-out report (also stored in the manifest's ``metrics``).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True, quiet=not progress)
    run = _Run(
        Path(character),
        teacher,
        Path(out_dir),
        quality,
        seed,
        device,
        max_minutes,
        log=lambda text: console.print(f"[dim]distill:[/dim] {text}"),
    )
    run.load_state(resume)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not progress) as bar:
        if run.state["phase"] == "probe":
            run.probe()
            run.state["phase"] = "render"
            run.save_state()
        if run.state["phase"] == "render":
            run.render(bar)
            run.state["phase"] = "init"
            run.save_state()
        if run.state["phase"] == "init":
            net = run.initialise(bar)
            run._checkpoint(net, torch.optim.Adam(net.parameters()), 0)
            run.state["phase"] = "train"
            run.save_state()
        net = run.new_net()
        checkpoint = _load_tensors(run.checkpoints / "train.safetensors")
        net.import_tensors({k: v for k, v in checkpoint.items() if not k.startswith("adam.")})
        if run.state["phase"] == "train":
            run.train(net, bar)
            run.state["phase"] = "evaluate"
            run.save_state()
        report = _finish(run, net, bar)
    console.print(
        f"[bold]student[/bold] {report.out_dir}: held-out PSNR {report.psnr_db:.2f} dB"
        f" (untrained {report.untrained_psnr_db:.2f}), SSIM {report.ssim:.4f},"
        f" {report.fps:.0f} fps, {report.gflop_per_frame:.3f} GFLOP/frame,"
        f" {report.train_minutes:.1f} min"
    )
    return report


def _relative_or_absolute(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (so the pair can move together), else absolute."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def _finish(run: _Run, net: StudentNet, bar) -> DistillReport:
    from safetensors.numpy import save

    q = run.q
    task = bar.add_task("evaluate", total=3)
    config = net.config
    tensors = {k: v.cpu().numpy().astype(np.float16) for k, v in net.export_tensors().items()}
    # MLP weights stay fp32 (tiny); the maps are fp16.
    for name, value in net.export_tensors().items():
        if ".mlp." in name:
            tensors[name] = value.cpu().numpy().astype(np.float32)
    manifest = StudentManifest(
        config=config,
        character_sha256=image_sha256(run.rgba),
        character_image=_relative_or_absolute(run.character_path, run.out_dir),
        teacher=run.teacher_spec,
        seed=run.seed,
    )
    poser = StudentPoser(tensors, manifest)
    poser.load(run.rgba)
    poses = sample_poses("heldout", q.heldout_frames, run.seed)
    frames = run.frames("heldout")
    metrics = evaluate_student(poser, poses, frames)
    bar.advance(task)
    untrained = StudentNet(config)
    untrained_poser = StudentPoser(
        {k: v.numpy() for k, v in untrained.export_tensors().items()}, manifest
    )
    untrained_poser.load(run.rgba)
    baseline = evaluate_student(untrained_poser, poses, frames)
    bar.advance(task)
    fps = measure_fps(poser, seed=run.seed)
    bar.advance(task)
    weights_bytes = len(save(tensors))
    report = DistillReport(
        out_dir=run.out_dir,
        teacher=run.teacher_spec,
        quality=run.quality_name,
        seed=run.seed,
        psnr_db=metrics["psnr_db"],
        psnr_frame_mean_db=metrics["psnr_frame_mean_db"],
        psnr_frame_min_db=metrics["psnr_frame_min_db"],
        ssim=metrics["ssim"],
        untrained_psnr_db=baseline["psnr_db"],
        fps=fps,
        gflop_per_frame=flops_per_frame(config) / 1e9,
        heldout_frames=q.heldout_frames,
        train_minutes=run.elapsed() / 60.0,
        face_box=tuple(config.face_box),
        weights_bytes=weights_bytes,
        extra={
            "train_steps": int(run.state.get("step", 0)),
            "neutral_psnr_db": run.state.get("neutral_psnr_db"),
            "torch_threads": torch.get_num_threads(),
        },
    )
    metrics_out = report.to_dict()
    metrics_out.pop("out_dir")
    manifest.metrics = metrics_out
    manifest.extra = {
        "metric": "alpha-weighted PSNR over premultiplied linear RGBA on [0,1];"
        " see puppet.training.distill.alpha_weighted_psnr"
    }
    atomic_write_bytes(run.out_dir / WEIGHTS_FILE, save(tensors))
    atomic_write_bytes(run.out_dir / MANIFEST_FILE, manifest.to_json().encode())
    run.state["phase"] = "done"
    run.save_state()
    return report
