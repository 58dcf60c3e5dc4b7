"""Distillation stage 2: the student network before end-to-end training.

- **Warps, layers, residual**: either copied from an existing student of the same character
  (``init_from``: its head/body flows, layer masks and fills and residual are already
  trained; format 1 or 2, only those tensors are read), or fitted to the teacher: head and
  body flow bases by least squares on DIS optical flow between each ``head`` / ``body``
  teacher frame and the character, depth layers by clustering how far pixels follow a head
  turn (parallax), per-layer flows by least squares weighted by the layer each pixel shows.
- **Face parts**: per part, PCA of what the expressions add to the neutral character in the
  part box (``svd_lowrank``), scaled so the coefficients have unit variance, then the part
  MLP (Fourier input features) regressed onto the coefficients with the loss weighted by
  each coefficient's variance, which is the image MSE.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from poser_models.student import (
    BODY_INDICES,
    HEAD_INDICES,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    StudentConfig,
    monomial_exponents,
    rgba_to_premultiplied_linear,
)
from poser_models.student_net import StudentNet
from puppet.errors import PuppetError
from puppet.training.teacher_frames import SIZE, Box, FrameSets, union_box

Progress = Callable[[str, dict], None]
FIELD = 256  # the flow fields' resolution before boxing (StudentConfig.field_size)
# What is read from an ``init_from`` student: the stages that do not depend on the face.
WARP_TENSORS = ("head.basis", "body.basis", "layer.logits", "layer.fill", "residual.basis")
WARP_CONFIG = (
    "field_size",
    "head_box",
    "body_box",
    "body_field_size",
    "head_degree",
    "body_degree",
    "residual_box",
    "residual_rank",
    "residual_hidden",
    "layers",
)


# ---------------------------------------------------------------------------------------------
# Warps from another student.


def warps_from_student(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config values, tensors) of the warp/layer/residual stages of a student folder."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        config = {k: manifest["config"][k] for k in WARP_CONFIG}
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise PuppetError(
            f"Cannot read the student to start from in {folder} ({error}).",
            "Give --init-from a folder made by `puppet distill` for the same character.",
        ) from None
    names = [*WARP_TENSORS] + [
        f"residual.mlp.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    ]
    missing = [n for n in names if n not in tensors]
    if missing:
        raise PuppetError(
            f"The student in {folder} has no {missing[0]!r}.",
            "Give --init-from a folder made by `puppet distill`.",
        )
    return config, {n: tensors[n].astype(np.float32) for n in names}


# ---------------------------------------------------------------------------------------------
# Warps fitted to the teacher.


def flow_gray(rgba: np.ndarray) -> np.ndarray:
    """8-bit luminance over a mid-grey backdrop: what optical flow is computed on."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 110.0 * (1.0 - alpha)
    return np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32), 0, 255).astype(np.uint8)


def fit_flow(
    rgba: np.ndarray, poses: np.ndarray, frames: np.ndarray, indices: tuple[int, int, int]
) -> tuple[np.ndarray, list[int], tuple[np.ndarray, np.ndarray]]:
    """Least-squares basis (T, h, w, 2) over its support box from DIS optical flow,
    the box (field pixels) and the data (features (N, T), flows (N, S, S, 2))."""
    neutral_gray = flow_gray(rgba)
    source_alpha = rgba[..., 3] > 0
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flows = np.empty((len(frames), FIELD, FIELD, 2), np.float32)
    kernel = np.ones((25, 25), np.uint8)
    for n in range(len(frames)):
        frame = np.asarray(frames[n])
        flow = dis.calc(flow_gray(frame), neutral_gray, None)
        near = cv2.dilate(((frame[..., 3] > 0) | source_alpha).astype(np.uint8), kernel) > 0
        # Far from the character, and where the estimate is implausibly large (flat regions,
        # the frame edge), there is nothing to learn from the optical flow.
        flow[~near | (np.abs(flow).max(axis=-1) > 80.0)] = 0.0
        flows[n] = cv2.resize(flow, (FIELD, FIELD), interpolation=cv2.INTER_AREA)
    exponents = np.array(monomial_exponents(3, 3), np.float64)
    features = np.prod(
        poses[:, list(indices)][:, None, :].astype(np.float64) ** exponents, axis=-1
    ).astype(np.float32)
    gram = features.T @ features + 1e-3 * np.eye(features.shape[1])
    weights = (
        np.linalg.solve(gram, features.T @ flows.reshape(len(frames), -1))
        .astype(np.float32)
        .reshape(-1, FIELD, FIELD, 2)
    )
    predicted = np.abs(np.einsum("nt,thwc->nhwc", features[:200], weights)).max(axis=(0, 3))
    ys, xs = np.nonzero(predicted > 0.2)
    if len(ys) == 0:
        box = [0, 0, 8, 8]
    else:
        pad = 6
        t, b = max(0, ys.min() - pad), min(FIELD, ys.max() + 1 + pad)
        lft, r = max(0, xs.min() - pad), min(FIELD, xs.max() + 1 + pad)
        box = [int(t), int(lft), int(b - t), int(r - lft)]
    t, lft, h, w = box
    return np.ascontiguousarray(weights[:, t : t + h, lft : lft + w]), box, (features, flows)


def layer_labels(
    rgba: np.ndarray, head_w: np.ndarray, box: list[int], layers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Initial depth layers: cluster the pixels by how far they follow a head turn and a nod
    at rest (first-order terms of the head flow; parallax sets them apart), ordered back to
    front. Returns per-field-pixel layer indices (S, S) and mask logits (L, 512, 512)."""
    t, lft, h, w = box
    if layers == 1:
        return np.zeros((FIELD, FIELD), np.int64), np.zeros((1, SIZE, SIZE), np.float32)
    # Backward flows: minus sign for how far a pixel moves with head_y (x) and head_x (y).
    follow_xy = -np.stack([head_w[2, ..., 0], head_w[1, ..., 1]], axis=-1)  # (h, w, 2)
    alpha = cv2.resize(
        rgba[..., 3].astype(np.float32) / 255, (FIELD, FIELD), interpolation=cv2.INTER_AREA
    )[t : t + h, lft : lft + w]
    opaque = alpha > 0.5
    points = follow_xy[opaque]
    if len(points) < layers:
        raise PuppetError(
            "The character covers almost nothing where the head moves.",
            "Check the character image (`puppet character check IMAGE`).",
        )
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
    full = np.full((FIELD, FIELD), rank[static], np.int64)
    full[t : t + h, lft : lft + w] = rank[labels]
    full_image = cv2.resize(full.astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    logits = np.where(np.arange(layers)[:, None, None] == full_image[None], 8.0, 0.0)
    return full, logits.astype(np.float32)


def fit_layers(
    joint_w: np.ndarray,
    box: list[int],
    features: np.ndarray,
    flows: np.ndarray,
    labels: np.ndarray,
    layers: int,
) -> np.ndarray:
    """Per-layer flow bases (L, T, h, w, 2): least squares weighted by which layer each
    output pixel shows (the layer under the source pixel it reads), pulled towards the joint
    fit where a layer is rarely seen."""
    if layers == 1:
        return joint_w[None]
    t, lft, h, w = box
    terms, count = features.shape[1], len(features)
    onehot = (labels[None] == np.arange(layers)[:, None, None]).astype(np.float32)
    gy, gx = np.mgrid[0:FIELD, 0:FIELD].astype(np.float32)
    shown = np.empty((layers, count, h, w), np.float32)
    for n in range(count):
        mx = gx + flows[n, ..., 0] * FIELD / SIZE
        my = gy + flows[n, ..., 1] * FIELD / SIZE
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
            np.linalg.solve(gram, rhs + prior * joint).transpose(1, 0, 2).reshape(terms, h, w, 2)
        )
    return out


def coarser(weights: np.ndarray, box: list[int], size: int) -> tuple[np.ndarray, list[int]]:
    """Flow bases (L, T, h, w, 2) boxed in a 256 field -> the same in a ``size`` field."""
    factor = FIELD // size
    t, lft, h, w = box
    full = np.zeros((*weights.shape[:2], FIELD, FIELD, 2), np.float32)
    full[:, :, t : t + h, lft : lft + w] = weights
    top, left = t // factor, lft // factor
    bottom, right = -(-(t + h) // factor), -(-(lft + w) // factor)
    coarse = full.reshape(*weights.shape[:2], size, factor, size, factor, 2).mean(axis=(3, 5))
    return (
        np.ascontiguousarray(coarse[:, :, top:bottom, left:right]),
        [top, left, bottom - top, right - left],
    )


def warps_from_teacher(
    rgba: np.ndarray, frames: FrameSets, layers: int, residual_rank: int, residual_hidden: int
) -> tuple[dict, dict[str, np.ndarray], dict]:
    """(config values, tensors, report) of the warp stages fitted to the head/body frames."""
    head_w, head_box, head_data = fit_flow(rgba, *frames["head"], HEAD_INDICES)
    body_w, body_box, body_data = fit_flow(rgba, *frames["body"], BODY_INDICES)
    labels, logits = layer_labels(rgba, head_w, head_box, layers)
    layer_w = fit_layers(head_w, head_box, *head_data, labels, layers)
    body_layers = fit_layers(body_w, body_box, *body_data, labels, layers)
    body_field = StudentConfig.body_field_size
    body_w, body_box = coarser(body_layers, body_box, body_field)
    config = {
        "field_size": FIELD,
        "head_box": tuple(head_box),
        "body_box": tuple(body_box),
        "body_field_size": body_field,
        "head_degree": 3,
        "body_degree": 3,
        "residual_box": tuple(head_box),
        "residual_rank": residual_rank,
        "residual_hidden": residual_hidden,
        "layers": layers,
    }
    t, lft, h, w = head_box
    tensors = {
        "head.basis": layer_w,
        "body.basis": body_w,
        "layer.logits": logits,
        "layer.fill": np.zeros((layers, h, w, 4), np.float32),
        "residual.basis": np.zeros((residual_rank, h, w, 4), np.float32),
    }
    report = {
        "head_box": head_box,
        "body_box": body_box,
        "max_head_flow_px": float(np.abs(head_data[1]).max()) if len(head_data[1]) else 0.0,
    }
    return config, tensors, report


# ---------------------------------------------------------------------------------------------
# The whole initialisation.


def build_net(
    parts: tuple[Box, ...],
    part_inputs: tuple[tuple[int, ...], ...],
    part_rank: int,
    part_hidden: int,
    fourier: tuple[float, ...],
    warp_config: dict,
) -> StudentNet:
    config = StudentConfig(
        face_box=union_box(parts),
        parts=tuple(tuple(b) for b in parts),
        part_inputs=tuple(tuple(i) for i in part_inputs),
        part_rank=part_rank,
        part_hidden=part_hidden,
        fourier=tuple(fourier),
        **{k: tuple(v) if isinstance(v, list) else v for k, v in warp_config.items()},
    )
    return StudentNet(config)


def set_warps(net: StudentNet, tensors: dict[str, np.ndarray]) -> None:
    """Copy warp/layer/residual tensors (and the residual MLP when given) into ``net``."""
    with torch.no_grad():
        parameters = net.file_parameters()
        for name, value in tensors.items():
            parameters[name].copy_(torch.from_numpy(np.asarray(value, np.float32)))


def fit_parts(
    net: StudentNet,
    character: np.ndarray,
    frames: FrameSets,
    seed: int,
    pca_frames: int,
    regress_steps: int,
    regress_batch: int = 256,
    validation: int = 1000,
    progress: Progress | None = None,
) -> dict:
    """Per-part PCA basis + MLP regressed onto its coefficients (see the module docstring).

    The last ``validation`` face frames (at most a fifth) are held out for the report."""
    c = net.config
    poses, crops = frames["face"]
    count = len(poses)
    train_count = count - min(validation, count // 5)
    top, left = c.face_box[:2]
    with torch.no_grad():  # the image, plus the teacher's neutral redraw where the net has it
        neutral = net.base(
            torch.from_numpy(rgba_to_premultiplied_linear(character)).permute(2, 0, 1)
        )
    neutral = neutral.permute(1, 2, 0).numpy()
    inputs_all = torch.from_numpy(np.asarray(poses, np.float32))
    report = {}
    rank = c.part_rank
    for i, (pt, pl, ph, pw) in enumerate(c.parts):
        t0 = time.monotonic()
        rows = slice(pt - top, pt - top + ph)
        cols = slice(pl - left, pl - left + pw)
        base = neutral[pt : pt + ph, pl : pl + pw]
        delta = torch.empty(count, ph * pw * 4)
        for start in range(0, count, 1000):
            chunk = np.asarray(crops[start : start + 1000, rows, cols])
            delta[start : start + len(chunk)] = torch.from_numpy(
                (rgba_to_premultiplied_linear(chunk) - base).reshape(len(chunk), -1)
            )
        pca = delta[: min(pca_frames, train_count)]
        q = min(rank + 10, *pca.shape)
        _, _, v = torch.svd_lowrank(pca, q=q, niter=4)
        basis = torch.zeros(rank, delta.shape[1])
        used = min(rank, v.shape[1])
        basis[:used] = v[:, :used].T  # (K, P), orthonormal rows (zero past the data's rank)
        coef = delta @ basis.T  # (N, K)
        std = coef[:train_count].std(0) + 1e-5
        # Unit-variance coefficients; the loss weights them by std^2, which is the image MSE.
        coef = coef / std
        weight = (std**2 / (std**2).sum())[None]
        with torch.no_grad():
            net.part_basis[i].copy_((basis * std[:, None]).reshape(rank, ph, pw, 4))
        mlp = net.part_mlp[i]
        x = net.features(inputs_all[:, list(c.part_inputs[i])])
        optimiser = torch.optim.Adam(mlp.parameters(), lr=2e-3)
        rng = np.random.default_rng([seed, 10, i])
        for step in range(regress_steps):
            index = torch.from_numpy(rng.integers(0, train_count, regress_batch))
            loss = ((mlp(x[index]) - coef[index]) ** 2 * weight).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            for group in optimiser.param_groups:
                group["lr"] = 2e-3 * (
                    0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / regress_steps))
                )
            optimiser.step()
            if progress is not None and (step + 1) % 200 == 0:
                progress("init", {"part": i, "step": step + 1, "total": regress_steps})
        held = slice(train_count, count) if train_count < count else slice(0, count)
        with torch.no_grad():
            err = ((mlp(x[held]) - coef[held]) ** 2 * weight).sum(1).mean()
            total = float((delta[held] ** 2).sum(1).mean())
            floor = float(((delta[held] - (delta[held] @ basis.T) @ basis) ** 2).sum(1).mean())
        pixels = ph * pw * 4  # per-pixel-channel MSE over the part box

        report[f"part{i}"] = {
            "box": [pt, pl, ph, pw],
            "inputs": len(c.part_inputs[i]),
            "val_psnr_projection_db": _db(floor / pixels),
            "val_psnr_db": _db((floor + float(err) * float((std**2).sum())) / pixels),
            "neutral_psnr_db": _db(total / pixels),
            "s": time.monotonic() - t0,
        }
    return report


def _db(mse: float) -> float:
    return -10 * math.log10(max(mse, 1e-12))
