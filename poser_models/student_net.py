"""The student's training network: the same function as ``poser_models.student``'s numpy
runtime, as a differentiable torch module, and its export (used by ``puppet distill``; needs
the tha extra). See ``poser_models.student`` for the stages.

Maps are stored channels-last, as in the file. Differences from the runtime, below float
tolerance or second order: ``cv2.remap`` quantises sample positions to 1/32 px; the layer
fills are sampled at field resolution here instead of being upsampled to 512 first (bilinear
of bilinear). The face parts are the same arithmetic exactly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poser_models.student import (
    BODY_INDICES,
    HEAD_INDICES,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Box,
    StudentConfig,
    StudentManifest,
    check_tensors,
    monomial_exponents,
    tensor_shapes,
)
from puppet.pose import NUM_PARAMETERS


class PoseMLP(nn.Sequential):
    def __init__(self, inputs: int, hidden: int, outputs: int) -> None:
        super().__init__(
            nn.Linear(inputs, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, outputs),
        )


def pixel_grid(top: int, left: int, height: int, width: int) -> Tensor:
    """(height, width, 2) image-pixel (x, y) positions of a box."""
    ys, xs = torch.meshgrid(
        torch.arange(top, top + height, dtype=torch.float32),
        torch.arange(left, left + width, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)


def sample_image(image: Tensor, points: Tensor, padding: str) -> Tensor:
    """Bilinear samples of one image (C, H, W) at pixel points (B, h, w, 2) -> (B, C, h, w),
    pixel centres at integers as ``cv2.remap``. All grids go through one grid_sample call,
    so the gradient buffer has one image's size, not the batch's."""
    channels, height, width = image.shape
    batch, h, w, _ = points.shape
    grid = torch.stack(
        [points[..., 0] * (2.0 / (width - 1)) - 1.0, points[..., 1] * (2.0 / (height - 1)) - 1.0],
        dim=-1,
    )
    out = F.grid_sample(
        image[None],
        grid.reshape(1, batch * h, w, 2),
        mode="bilinear",
        padding_mode=padding,
        align_corners=True,
    )
    return out.reshape(channels, batch, h, w).transpose(0, 1)


class StudentNet(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = c = config
        shapes = tensor_shapes(config)
        self.part_basis = nn.ParameterList(
            [nn.Parameter(torch.zeros(shapes[f"part{i}.basis"])) for i in range(len(c.parts))]
        )
        self.part_mlp = nn.ModuleList(
            [
                PoseMLP(len(inputs) * (1 + 2 * len(c.fourier)), c.part_hidden, c.part_rank)
                for inputs in c.part_inputs
            ]
        )
        self.register_buffer("fourier", torch.tensor(c.fourier, dtype=torch.float32))
        for i, inputs in enumerate(c.part_inputs):
            self.register_buffer(f"part_inputs_{i}", torch.tensor(inputs, dtype=torch.long))
        self.head_basis = nn.Parameter(torch.zeros(shapes["head.basis"]))
        self.layer_logits = nn.Parameter(torch.zeros(shapes["layer.logits"]))
        self.layer_fill = nn.Parameter(torch.zeros(shapes["layer.fill"]))
        self.body_basis = nn.Parameter(torch.zeros(shapes["body.basis"]))
        self.residual_basis = nn.Parameter(torch.zeros(shapes["residual.basis"]))
        self.residual_mlp = PoseMLP(NUM_PARAMETERS, c.residual_hidden, c.residual_rank)
        # Fixed at initialisation (the teacher's neutral frame minus the image), not trained.
        self.base_delta = (
            nn.Parameter(torch.zeros(shapes["base.delta"]), requires_grad=False)
            if c.base_delta
            else None
        )
        self.register_buffer(
            "head_exponents", torch.tensor(monomial_exponents(3, c.head_degree)).float()
        )
        self.register_buffer(
            "body_exponents", torch.tensor(monomial_exponents(3, c.body_degree)).float()
        )

    # -- naming shared with the file format ---------------------------------------------------
    def file_parameters(self) -> dict[str, nn.Parameter]:
        out = {f"part{i}.basis": b for i, b in enumerate(self.part_basis)}
        out.update(
            {
                "head.basis": self.head_basis,
                "body.basis": self.body_basis,
                "residual.basis": self.residual_basis,
                "layer.logits": self.layer_logits,
                "layer.fill": self.layer_fill,
            }
        )
        if self.base_delta is not None:
            out["base.delta"] = self.base_delta
        mlps = [(f"part{i}.mlp", m) for i, m in enumerate(self.part_mlp)]
        for prefix, mlp in [*mlps, ("residual.mlp", self.residual_mlp)]:
            for i, layer in enumerate(m for m in mlp if isinstance(m, nn.Linear)):
                out[f"{prefix}.{i}.weight"] = layer.weight
                out[f"{prefix}.{i}.bias"] = layer.bias
        return out

    def export_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.file_parameters().items()}

    def import_tensors(self, tensors: dict[str, Tensor | np.ndarray]) -> None:
        check_tensors({k: np.asarray(v) for k, v in tensors.items()}, self.config, "checkpoint")
        with torch.no_grad():
            for name, parameter in self.file_parameters().items():
                parameter.copy_(torch.as_tensor(np.asarray(tensors[name], np.float32)))

    # -- stages ------------------------------------------------------------------------------
    @staticmethod
    def monomials(values: Tensor, exponents: Tensor) -> Tensor:
        """(B, 3) values, (T, 3) exponents -> (B, T) monomials."""
        return torch.prod(values[:, None, :] ** exponents[None], dim=-1)

    def part_coefficients(self, pose: Tensor, i: int) -> Tensor:
        """(B, 45) -> (B, part_rank) colour coefficients of part ``i``."""
        return self.part_mlp[i](self.features(pose[:, getattr(self, f"part_inputs_{i}")]))

    def features(self, x: Tensor) -> Tensor:
        """(B, n) -> (B, n (1 + 2F)): [x, sin(pi f x) (f-major), cos(pi f x)], as the runtime."""
        angles = torch.pi * self.fourier[None, :, None] * x[:, None, :]  # (B, F, n)
        return torch.cat([x, torch.sin(angles).flatten(1), torch.cos(angles).flatten(1)], 1)

    def face_delta(self, pose: Tensor) -> Tensor:
        """What the expression adds to the face box: (B, 4, h, w), premultiplied linear."""
        c = self.config
        top, left, height, width = c.face_box
        delta = pose.new_zeros(pose.shape[0], 4, height, width)
        for i, (pt, pl, ph, pw) in enumerate(c.parts):
            part = torch.einsum(
                "bk,khwc->bchw", self.part_coefficients(pose, i), self.part_basis[i]
            )
            delta = delta + F.pad(
                part, (pl - left, left + width - pl - pw, pt - top, top + height - pt - ph)
            )
        return delta

    def base(self, source: Tensor) -> Tensor:
        """What is warped: ``source`` (4, 512, 512, the character) plus ``base.delta``."""
        return source if self.base_delta is None else source + self.base_delta.permute(2, 0, 1)

    def face(self, pose: Tensor, source: Tensor) -> Tensor:
        """The expression-posed face box (B, 4, h, w); ``source`` (4, 512, 512)."""
        top, left, height, width = self.config.face_box
        base = self.base(source)
        return base[None, :, top : top + height, left : left + width] + self.face_delta(pose)

    def fields(self, pose: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        c = self.config
        head_terms = self.monomials(pose[:, list(HEAD_INDICES)], self.head_exponents)
        body_terms = self.monomials(pose[:, list(BODY_INDICES)], self.body_exponents)
        head = [
            self._field(head_terms, self.head_basis[k], c.head_box, c.field_size)
            for k in range(c.layers)
        ]
        body = [
            self._field(body_terms, self.body_basis[k], c.body_box, c.body_field_size)
            for k in range(c.layers)
        ]
        residual = self._field(
            self.residual_mlp(pose), self.residual_basis, c.residual_box, c.field_size
        )
        return head, body, residual

    @staticmethod
    def _field(coefficients: Tensor, basis: Tensor, box: Box, size: int) -> Tensor:
        mixed = torch.einsum("bk,khwc->bchw", coefficients, basis)
        top, left, height, width = box
        return F.pad(mixed, (left, size - left - width, top, size - top - height))

    def _sample_field(self, field_: Tensor, points: Tensor) -> Tensor:
        """Bilinear field value (B, C, h, w) at image-pixel points, as cv2.resize + remap."""
        size = field_.shape[-1]
        coords = (points + 0.5) * (size / self.config.image_size) - 0.5
        grid = coords * (2.0 / (size - 1)) - 1.0
        return F.grid_sample(
            field_, grid, mode="bilinear", padding_mode="border", align_corners=True
        )

    def forward(self, pose: Tensor, source: Tensor, points: Tensor) -> Tensor:
        """Posed premultiplied linear RGBA (B, 4, h, w) at image-pixel ``points`` (B, h, w, 2).

        ``source``: the character, premultiplied linear (4, 512, 512).
        """
        c = self.config
        top, left, height, width = c.face_box
        source = self.base(source)
        delta = self.face_delta(pose)
        masks = torch.softmax(self.layer_logits, dim=0)[:, None]  # (L, 1, H, W)
        ht, hl, hh, hw = c.head_box
        size = c.field_size
        fills = F.pad(self.layer_fill.permute(0, 3, 1, 2), (hl, size - hl - hw, ht, size - ht - hh))
        head, body, residual = self.fields(pose)
        batch = pose.shape[0]
        out = None
        for k in range(c.layers):
            q = points + self._sample_field(body[k], points).permute(0, 2, 3, 1)
            r = q + self._sample_field(head[k], q).permute(0, 2, 3, 1)
            image = sample_image(source * masks[k], r, "border")
            image = image + self._sample_field(fills[k : k + 1].expand(batch, -1, -1, -1), r)
            box_grid = torch.stack(
                [
                    (r[..., 0] - left) * (2.0 / (width - 1)) - 1.0,
                    (r[..., 1] - top) * (2.0 / (height - 1)) - 1.0,
                ],
                dim=-1,
            )
            box_mask = masks[k, :, top : top + height, left : left + width]
            image = image + F.grid_sample(
                delta * box_mask,
                box_grid,
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )
            out = image if out is None else image + (1.0 - image[:, 3:4]) * out
        assert out is not None
        return out + self._sample_field(residual, points)


def export(net: StudentNet, manifest: StudentManifest, folder: Path) -> Path:
    """Write ``student.safetensors`` (maps fp16, MLPs fp32) + ``manifest.json`` atomically."""
    from safetensors.numpy import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = export_arrays(net)
    manifest.config = net.config
    _atomic_write(folder / WEIGHTS_FILE, save(tensors))
    _atomic_write(folder / MANIFEST_FILE, manifest.to_json().encode())
    return folder


def export_arrays(net: StudentNet) -> dict[str, np.ndarray]:
    """The tensors as the runtime file holds them: maps fp16, MLP weights fp32."""
    return {
        name: value.cpu().numpy().astype(np.float32 if ".mlp." in name else np.float16)
        for name, value in net.export_tensors().items()
    }


def _atomic_write(path: Path, data: bytes) -> None:
    # poser_models imports nothing from puppet but the pose contract and the error type, so
    # this is the small same-folder temp file + rename here (a crash leaves the old file).
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
