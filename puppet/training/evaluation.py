"""Distillation stage 4: the numpy/OpenCV runtime (what users run) against its teacher.

Metric: premultiplied linear RGBA on [0, 1] (the space THA posers compute in), per-pixel
weight ``max(alpha_teacher, alpha_student)`` dilated by one pixel (3x3 max), so background
that both leave transparent does not count and a missing or extra anti-aliased edge pixel
counts in full; ``MSE = sum_p w_p sum_c (s_pc - t_pc)^2 / (4 sum_p w_p)``,
``PSNR = 10 log10(1 / MSE)``. The head box (rows 64-192, cols 192-320, where THA expects the
head) is scored with the weight computed on the whole frame and pooled over the box only:
the face is what viewers watch, and whole-image figures hide its errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from poser_models.student import (
    StudentConfig,
    StudentPoser,
    rgba_to_premultiplied_linear,
    tensor_shapes,
)
from puppet.pose import INDEX, LOWER, UPPER

HEAD_BOX = (64, 192, 128, 128)  # (top, left, height, width)
Box = tuple[int, int, int, int]


def metric_weight(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Per-pixel weight: max(alpha_teacher, alpha_student), dilated by one pixel (3x3 max)."""
    alpha = np.maximum(np.clip(teacher[..., 3], 0, 1), np.clip(student[..., 3], 0, 1))
    return cv2.dilate(alpha.astype(np.float32), np.ones((3, 3), np.uint8))


def alpha_weighted_mse(
    teacher: np.ndarray, student: np.ndarray, box: Box | None = None
) -> tuple[float, float]:
    """(weighted squared error summed over pixels and the 4 channels, 4 * total weight),
    over the frame or one box of it. The student is clipped to [0, 1] first, as its output
    would be."""
    student = np.clip(student, 0.0, 1.0)
    weight = metric_weight(teacher, student)
    error = ((student - teacher) ** 2).sum(axis=-1)
    if box is not None:
        top, left, height, width = box
        weight = weight[top : top + height, left : left + width]
        error = error[top : top + height, left : left + width]
    return float((weight * error).sum()), float(4.0 * weight.sum())


def psnr_from_mse(mse: float) -> float:
    return float(10.0 * math.log10(1.0 / max(mse, 1e-12)))


def alpha_weighted_psnr(teacher: np.ndarray, student: np.ndarray, box: Box | None = None) -> float:
    """PSNR in dB (see the module docstring); premultiplied linear float (H, W, 4) inputs."""
    squared, total = alpha_weighted_mse(teacher, student, box)
    return psnr_from_mse(squared / max(total, 1e-12))


def alpha_weighted_ssim(teacher: np.ndarray, student: np.ndarray, box: Box | None = None) -> float:
    """SSIM (Gaussian window sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, data range 1) per
    premultiplied linear channel, averaged over channels and over pixels (of the box) with
    the :func:`metric_weight` weights."""
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
    value = ssim.mean(axis=-1)
    if box is not None:
        top, left, height, width = box
        value = value[top : top + height, left : left + width]
        weight = weight[top : top + height, left : left + width]
    return float((value * weight).sum() / max(weight.sum(), 1e-12))


def evaluate(
    pose_fn: Callable[[np.ndarray], np.ndarray],
    poses: np.ndarray,
    teacher: Sequence[np.ndarray] | np.ndarray,
) -> dict:
    """Whole-frame and head-box PSNR (pooled, per-frame mean and min, worst frame) and SSIM.

    ``pose_fn(values) -> premultiplied linear float (512, 512, 4)`` (the student);
    ``teacher[n]``: the teacher's RGBA uint8 frame for ``poses[n]`` (cached or rendered).
    """
    sums = {"whole": [0.0, 0.0], "head": [0.0, 0.0]}
    frames: dict[str, list[float]] = {"whole": [], "head": []}
    ssims: dict[str, list[float]] = {"whole": [], "head": []}
    for n, values in enumerate(poses):
        target = rgba_to_premultiplied_linear(np.asarray(teacher[n]))
        student = pose_fn(np.asarray(values, np.float32))
        for name, box in (("whole", None), ("head", HEAD_BOX)):
            squared, total = alpha_weighted_mse(target, student, box)
            sums[name][0] += squared
            sums[name][1] += total
            frames[name].append(psnr_from_mse(squared / max(total, 1e-12)))
            ssims[name].append(alpha_weighted_ssim(target, student, box))
    out: dict = {"frames": len(poses)}
    for name in ("whole", "head"):
        out[f"{name}_psnr_db"] = psnr_from_mse(sums[name][0] / max(sums[name][1], 1e-12))
        out[f"{name}_frame_mean_db"] = float(np.mean(frames[name]))
        out[f"{name}_frame_min_db"] = float(np.min(frames[name]))
        out[f"{name}_worst_frame"] = int(np.argmin(frames[name]))
        out[f"{name}_ssim"] = float(np.mean(ssims[name]))
    return out


def evaluate_student(
    poser: StudentPoser,
    poses: np.ndarray,
    teacher: Sequence[np.ndarray] | np.ndarray,
) -> dict:
    return evaluate(poser.pose_premultiplied, poses, teacher)


def evaluate_still(
    character: np.ndarray, poses: np.ndarray, teacher: Sequence[np.ndarray] | np.ndarray
) -> dict:
    """The same figures for the character image shown unchanged: what a student that has
    learned nothing gives (the baseline a distillation must beat)."""
    still = rgba_to_premultiplied_linear(character)
    return evaluate(lambda values: still, poses, teacher)


# ---------------------------------------------------------------------------------------------
# Real tracked poses.


def tracked_poses(track: Path | str, count: int = 24) -> np.ndarray:
    """``count`` evenly spaced poses of a ``puppet track`` JSONL pose track, clipped to range."""
    from puppet.pose_track import read_track

    frames = read_track(track).frames
    if not frames:
        return np.zeros((0, len(LOWER)), np.float32)
    poses = np.stack([frame.pose.values for frame in frames]).astype(np.float32)
    index = np.unique(np.linspace(0, len(poses) - 1, count).round().astype(int))
    return np.clip(poses[index], LOWER, UPPER)


def telling_frames(poses: np.ndarray) -> dict[str, int]:
    """The frames of a tracked clip that show the face stage's hard cases: a blink, half-closed
    eyes, an open mouth, a head turn (index of the strongest of each)."""

    def column(name: str) -> np.ndarray:
        return poses[:, INDEX[name]]

    blink = np.minimum(column("eye_wink_left"), column("eye_wink_right"))
    blink = np.maximum(
        blink, np.minimum(column("eye_happy_wink_left"), column("eye_happy_wink_right"))
    )
    half = -np.abs(np.maximum(column("eye_wink_left"), column("eye_happy_wink_left")) - 0.5)
    mouth = sum(column(f"mouth_{v}") for v in ("aaa", "ooo", "iii", "uuu"))
    turn = np.abs(column("head_y")) + np.abs(column("neck_z"))
    scores = {"blink": blink, "half-closed": half, "open mouth": mouth, "head turn": turn}
    return {label: int(np.argmax(score)) for label, score in scores.items()}


# ---------------------------------------------------------------------------------------------
# Speed and size.


def measure_fps(poser: StudentPoser, poses: Sequence[np.ndarray], seconds: float = 2.0) -> float:
    """Poser-only frames per second over ``poses`` in turn (after warm-up)."""
    for values in poses[:3]:
        poser.pose(values)
    frames = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or frames < 10:
        poser.pose(poses[frames % len(poses)])
        frames += 1
    return frames / (time.perf_counter() - start)


def flops_per_frame(config: StudentConfig) -> float:
    """Arithmetic per 512x512 frame (multiply-add = 2), counted from the runtime's steps."""
    flops = 0.0
    for name, shape in tensor_shapes(config).items():
        if name.endswith("basis"):
            flops += 2.0 * math.prod(shape)  # coefficient-weighted sum of the maps
        elif name.endswith("weight"):
            flops += 2.0 * math.prod(shape) + 4 * shape[0]  # + bias and SiLU
    pixels = config.image_size**2
    per_layer = pixels * (2 * 8 + 4 + 2 * 8 + 2 + 4 * 8 + 8)  # body up, head lookup, remap, over
    flops += config.layers * per_layer
    flops += pixels * 4 * 9  # residual upsampling + add
    flops += pixels * 12  # un-premultiply and colour conversion
    return flops
