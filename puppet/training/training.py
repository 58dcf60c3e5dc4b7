"""Distillation stage 3: the whole student trained end to end on the teacher's frames.

Each step takes ``batch`` crops of full teacher frames through the whole network (every
other crop on the head box, rows 64-192 and cols 192-320, jittered; the rest centred where
edges are, favouring where misregistration costs) plus ``batch`` face-box crops through the
face stage alone, which keeps the face sharp where full-frame crops rarely land. Loss: MSE +
0.1 L1 on premultiplied linear RGBA, plus MSE of 4x and 8x average-pooled copies (they pull
an edge that is a few pixels off towards its place, where the sharp loss sees no slope).
Adam, cosine decay to 5 %.

Reproducible and resumable: the randomness of step ``s`` comes from ``(seed, 40, s)`` only, and
a checkpoint holds the weights, Adam's moments and the step, so a run resumed from any
checkpoint computes what the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from poser_models.student import StudentConfig, rgba_to_premultiplied_linear
from poser_models.student_net import StudentNet, pixel_grid
from puppet.training.teacher_frames import SIZE, FrameSets

Progress = Callable[[str, dict], None]


# ---------------------------------------------------------------------------------------------
# Checkpoints.


def save_checkpoint(
    path: Path, net: StudentNet, optimiser: torch.optim.Optimizer | None, step: int
) -> None:
    """Weights, Adam's state and the step, with the config in the metadata (atomic)."""
    from safetensors.torch import save_file

    tensors = {f"net.{k}": v.contiguous() for k, v in net.export_tensors().items()}
    if optimiser is not None:
        names = {id(p): n for n, p in net.named_parameters()}
        for parameter, state in optimiser.state.items():
            for key in ("exp_avg", "exp_avg_sq"):
                tensors[f"adam.{names[id(parameter)]}.{key}"] = state[key].contiguous()
            tensors[f"adam.{names[id(parameter)]}.step"] = torch.as_tensor(
                state["step"], dtype=torch.float32
            ).reshape(1)
    tensors["step"] = torch.tensor([step], dtype=torch.float32)
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata={"config": json.dumps(asdict(net.config))})
    temporary.replace(path)


def load_checkpoint(path: Path) -> tuple[StudentNet, dict[str, torch.Tensor], int]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        config = StudentConfig.from_dict(json.loads(handle.metadata()["config"]))
    tensors = load_file(str(path))
    net = StudentNet(config)
    net.import_tensors({k[4:]: v.numpy() for k, v in tensors.items() if k.startswith("net.")})
    return net, tensors, int(tensors["step"].item())


def restore_adam(net: StudentNet, optimiser: torch.optim.Optimizer, tensors: dict) -> None:
    for name, parameter in net.named_parameters():
        key = f"adam.{name}"
        if f"{key}.exp_avg" in tensors:
            optimiser.state[parameter] = {
                "step": tensors[f"{key}.step"].reshape(()).clone(),
                "exp_avg": tensors[f"{key}.exp_avg"].clone(),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].clone(),
            }


# ---------------------------------------------------------------------------------------------
# The loop.


def image_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss = F.mse_loss(output, target) + 0.1 * F.l1_loss(output, target)
    loss = loss + 0.5 * F.mse_loss(F.avg_pool2d(output, 4), F.avg_pool2d(target, 4))
    return loss + 0.5 * F.mse_loss(F.avg_pool2d(output, 8), F.avg_pool2d(target, 8))


def crop_centres(
    frames: np.ndarray, count: int = 32
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Where training crops are centred, from a few frames: pixel positions (ys, xs) with a
    cumulative probability that favours edges, with a floor over the whole character so flat
    regions are still seen."""
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


def make_optimiser(
    net: StudentNet, lr_warp: float, lr_part: float = 2e-4, lr_maps: float = 1e-3,
    lr_masks: float = 0.004, lr_mlp: float = 1e-3,
) -> tuple[torch.optim.Optimizer, list[float]]:  # fmt: skip
    groups = [
        {"params": list(net.part_basis), "lr": lr_part},
        {"params": [net.head_basis, net.body_basis], "lr": lr_warp},
        {"params": [net.residual_basis, net.layer_fill], "lr": lr_maps},
        {"params": [net.layer_logits], "lr": lr_masks},
        {"params": list(net.part_mlp.parameters()), "lr": lr_mlp * 0.3},
        {"params": list(net.residual_mlp.parameters()), "lr": lr_mlp * 0.5},
    ]
    return torch.optim.Adam(groups), [g["lr"] for g in groups]


def train(
    net: StudentNet,
    character: np.ndarray,
    frames: FrameSets,
    *,
    steps: int,
    batch: int,
    crop: int,
    seed: int,
    lr_warp: float,
    checkpoint: Path,
    time_fraction: Callable[[], float] = lambda: 0.0,
    checkpoint_every: int = 0,
    checkpoint_seconds: float = 60.0,
    progress: Progress | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> tuple[StudentNet, int]:
    """Train from ``checkpoint`` if it exists (else from ``net``); returns (net, steps done).

    ``time_fraction()`` is how much of the training time budget is spent (0..1): the cosine
    schedule follows max(step fraction, time fraction), so a machine too slow to finish the
    steps in time ends on time with a decayed rate (and that run is no longer reproducible
    step for step). A checkpoint is written every ``checkpoint_every`` steps (0: never by
    count), every ``checkpoint_seconds`` and at the end; ``on_checkpoint(step)`` follows
    each (the run saves its state then: the time spent so far counts after a crash)."""
    source = torch.from_numpy(rgba_to_premultiplied_linear(character)).permute(2, 0, 1)
    source = source.contiguous()
    kinds = [k for k in ("joint", "head", "body") if len(frames.get(k, ((), ()))[0])]
    mix = np.array([{"joint": 0.6, "head": 0.2, "body": 0.2}[k] for k in kinds])
    mix = mix / mix.sum()
    poses_t = {k: torch.from_numpy(np.asarray(frames[k][0], np.float32)) for k in kinds}
    face_p, face_crops = frames["face"]
    face_t = torch.from_numpy(np.asarray(face_p, np.float32))
    centres = {k: crop_centres(frames[k][1]) for k in kinds}
    optimiser, base = make_optimiser(net, lr_warp)
    step = 0
    if checkpoint.is_file():
        net, tensors, step = load_checkpoint(checkpoint)
        optimiser, base = make_optimiser(net, lr_warp)
        restore_adam(net, optimiser, tensors)
    last = t0 = time.monotonic()
    running = None
    while step < steps:
        fraction = max(step / steps, time_fraction())
        if fraction >= 1.0:
            if progress is not None:
                progress("log", {"text": f"time budget reached at step {step}/{steps}"})
            break
        rng = np.random.default_rng([seed, 40, step])
        scale = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * fraction))
        for group, lr in zip(optimiser.param_groups, base, strict=True):
            group["lr"] = lr * scale
        chosen, targets, points = [], [], []
        for b in range(batch):
            # One set alone draws no set choice: the random stream is then the same as
            # training on joint frames only (how the shipped hana student was refined).
            kind = kinds[0] if len(kinds) == 1 else kinds[int(rng.choice(len(kinds), p=mix))]
            images = frames[kind][1]
            n = int(rng.integers(len(images)))
            if b % 2 == 0:  # the head box (rows 64-192, cols 192-320), jittered
                cy = int(np.clip(64 + rng.integers(-16, 17), 0, SIZE - crop))
                cx = int(np.clip(192 + rng.integers(-16, 17), 0, SIZE - crop))
            else:
                ys, xs, cdf = centres[kind][n % len(centres[kind])]
                j = min(int(np.searchsorted(cdf, rng.random())), len(ys) - 1)
                cy = int(np.clip(ys[j] - crop // 2 + rng.integers(-16, 17), 0, SIZE - crop))
                cx = int(np.clip(xs[j] - crop // 2 + rng.integers(-16, 17), 0, SIZE - crop))
            targets.append(
                rgba_to_premultiplied_linear(np.asarray(images[n, cy : cy + crop, cx : cx + crop]))
            )
            chosen.append(poses_t[kind][n])
            points.append(pixel_grid(cy, cx, crop, crop))
        target = torch.from_numpy(np.stack(targets)).permute(0, 3, 1, 2)
        output = net(torch.stack(chosen), source, torch.stack(points))
        loss = image_loss(output, target)
        index = np.sort(rng.integers(0, len(face_p), batch))
        face_target = torch.from_numpy(
            np.stack([rgba_to_premultiplied_linear(np.asarray(face_crops[i])) for i in index])
        ).permute(0, 3, 1, 2)
        loss = loss + 0.5 * image_loss(net.face(face_t[index], source), face_target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if progress is not None:
            progress(
                "train",
                {"step": step, "total": steps, "loss": running, "s": time.monotonic() - t0},
            )
        if (
            (checkpoint_every and step % checkpoint_every == 0)
            or time.monotonic() - last > checkpoint_seconds
            or step == steps
        ):
            save_checkpoint(checkpoint, net, optimiser, step)
            if on_checkpoint is not None:
                on_checkpoint(step)
            last = time.monotonic()
    save_checkpoint(checkpoint, net, optimiser, step)
    if on_checkpoint is not None:
        on_checkpoint(step)
    return net, step
