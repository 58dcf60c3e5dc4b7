"""The student's training network: the same function as ``poser_models.student``'s numpy
runtime, as a differentiable torch module (used by ``puppet distill``; needs the tha extra)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poser_models.student import (
    BODY_INDICES,
    FACE_INPUTS,
    HEAD_INDICES,
    Box,
    StudentConfig,
    check_shapes,
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


class StudentNet(nn.Module):
    """The student as a differentiable torch module (used by ``puppet distill``)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        shapes = tensor_shapes(config)
        self.face_basis = nn.Parameter(torch.zeros(shapes["face.basis"]))
        self.face_mlp = PoseMLP(FACE_INPUTS, config.face_hidden, config.face_rank)
        self.head_basis = nn.Parameter(torch.zeros(shapes["head.basis"]))
        self.layer_logits = nn.Parameter(torch.zeros(shapes["layer.logits"]))
        self.layer_fill = nn.Parameter(torch.zeros(shapes["layer.fill"]))
        self.body_basis = nn.Parameter(torch.zeros(shapes["body.basis"]))
        self.residual_basis = nn.Parameter(torch.zeros(shapes["residual.basis"]))
        self.residual_mlp = PoseMLP(NUM_PARAMETERS, config.residual_hidden, config.residual_rank)
        self.register_buffer(
            "head_exponents", torch.tensor(monomial_exponents(3, config.head_degree)).float()
        )
        self.register_buffer(
            "body_exponents", torch.tensor(monomial_exponents(3, config.body_degree)).float()
        )

    # -- naming shared with the file format ---------------------------------------------------
    def file_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters under their file names."""
        out = {
            "face.basis": self.face_basis,
            "head.basis": self.head_basis,
            "body.basis": self.body_basis,
            "residual.basis": self.residual_basis,
            "layer.logits": self.layer_logits,
            "layer.fill": self.layer_fill,
        }
        for prefix, mlp in (("face.mlp", self.face_mlp), ("residual.mlp", self.residual_mlp)):
            for i, layer in enumerate(m for m in mlp if isinstance(m, nn.Linear)):
                out[f"{prefix}.{i}.weight"] = layer.weight
                out[f"{prefix}.{i}.bias"] = layer.bias
        return out

    def export_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self.file_parameters().items()}

    def import_tensors(self, tensors: dict[str, Tensor]) -> None:
        own = self.file_parameters()
        check_shapes(tensors, self.config, "checkpoint")
        with torch.no_grad():
            for name, parameter in own.items():
                parameter.copy_(tensors[name].float())

    # -- pieces ------------------------------------------------------------------------------
    @staticmethod
    def monomials(values: Tensor, exponents: Tensor) -> Tensor:
        """(B, 3) values, (T, 3) exponents -> (B, T) monomials."""
        return torch.prod(values[:, None, :] ** exponents[None], dim=-1)

    def face_delta(self, pose: Tensor) -> Tensor:
        """(B, 45) -> (B, h, w, 4): what the face stage adds to the neutral face box."""
        coefficients = self.face_mlp(pose[:, :FACE_INPUTS])
        return torch.einsum("bk,khwc->bhwc", coefficients, self.face_basis)

    def _field(self, coefficients: Tensor, basis: Tensor, box: Box, size: int) -> Tensor:
        """Mix a boxed basis and paste it into a zero (B, C, size, size) field."""
        mixed = torch.einsum("bk,khwc->bchw", coefficients, basis)
        top, left, height, width = box
        return F.pad(mixed, (left, size - left - width, top, size - top - height))

    def fields(self, pose: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Per-layer head flows and the body flow (B, 2, S, S) in pixels; residual (B, 4, S, S)."""
        c = self.config
        head_terms = self.monomials(pose[:, list(HEAD_INDICES)], self.head_exponents)
        head = [
            self._field(head_terms, self.head_basis[layer], c.head_box, c.field_size)
            for layer in range(c.layers)
        ]
        body_terms = self.monomials(pose[:, list(BODY_INDICES)], self.body_exponents)
        body = [
            self._field(body_terms, self.body_basis[layer], c.body_box, c.body_field_size)
            for layer in range(c.layers)
        ]
        residual = self._field(
            self.residual_mlp(pose), self.residual_basis, c.residual_box, c.field_size
        )
        return head, body, residual

    def _sample_field(self, field_: Tensor, points: Tensor) -> Tensor:
        """Bilinear field value at image-pixel points (B, H, W, 2), as cv2.resize+remap do."""
        size = field_.shape[-1]
        scale = size / self.config.image_size
        coords = (points + 0.5) * scale - 0.5
        grid = coords * (2.0 / (size - 1)) - 1.0
        return F.grid_sample(
            field_, grid, mode="bilinear", padding_mode="border", align_corners=True
        )

    def layer_sources(self, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Masks (L, 1, H, W), the character split by them (L, 4, H, W), and each layer's
        fill field (L, 4, S, S): what the layer shows where a layer in front of it covered
        it in the character image."""
        c = self.config
        masks = torch.softmax(self.layer_logits, dim=0)[:, None]
        top, left, height, width = c.head_box
        size = c.field_size
        fill = F.pad(
            self.layer_fill.permute(0, 3, 1, 2),
            (left, size - left - width, top, size - top - height),
        )
        return masks, source[None] * masks, fill

    def forward(self, pose: Tensor, source: Tensor, points: Tensor) -> Tensor:
        """Posed premultiplied linear RGBA (B, 4, H, W) at image-pixel ``points`` (B, H, W, 2).

        ``source`` is the character, premultiplied linear (4, 512, 512). ``points`` are the
        output pixel positions (x, y) to compute: the whole grid or a crop of it.
        """
        c = self.config
        batch = pose.shape[0]
        top, left, height, width = c.face_box
        size = c.image_size
        delta = self.face_delta(pose).permute(0, 3, 1, 2)
        masks, layers, fills = self.layer_sources(source)
        head, body, residual = self.fields(pose)
        out = None
        for layer in range(c.layers):
            q = points + self._sample_field(body[layer], points).permute(0, 2, 3, 1)
            r = q + self._sample_field(head[layer], q).permute(0, 2, 3, 1)
            grid = r * (2.0 / (size - 1)) - 1.0
            # Replicating the border continues a character cut off by the frame (the chest at
            # the bottom) when the body moves; THA images are transparent at every other edge.
            # All crops in one grid: the gradient then has one image's size, not the batch's.
            height_out, width_out = grid.shape[1:3]
            image = F.grid_sample(
                layers[layer : layer + 1],
                grid.reshape(1, batch * height_out, width_out, 2),
                mode="bilinear",
                padding_mode="border",
                align_corners=True,
            )
            image = image.reshape(4, batch, height_out, width_out).transpose(0, 1)
            # The runtime adds the fill upsampled to 512 before warping; sampling the coarse
            # fill directly is the same up to second-order smoothing and much cheaper here.
            image = image + self._sample_field(
                fills[layer : layer + 1].expand(batch, -1, -1, -1), r
            )
            # The face change lives in the face box only: sample it there (bilinear sampling
            # is linear, so this equals sampling the pasted image).
            box_grid = torch.stack(
                [
                    (r[..., 0] - left) * (2.0 / (width - 1)) - 1.0,
                    (r[..., 1] - top) * (2.0 / (height - 1)) - 1.0,
                ],
                dim=-1,
            )
            box_mask = masks[layer, :, top : top + height, left : left + width]
            image = image + F.grid_sample(
                delta * box_mask,
                box_grid,
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )
            # Back to front, "over" in premultiplied alpha.
            out = image if out is None else image + (1.0 - image[:, 3:4]) * out
        assert out is not None
        return out + self._sample_field(residual, points)


def pixel_grid(top: int, left: int, height: int, width: int) -> Tensor:
    """(height, width, 2) image-pixel (x, y) positions of a box."""
    ys, xs = torch.meshgrid(
        torch.arange(top, top + height, dtype=torch.float32),
        torch.arange(left, left + width, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)
