"""Talking Head Anime 3: the five networks, the posing sequence and the official-weight loader.

An independent implementation written from the facts in ``shared/specs/tha3.md``. Module and
parameter names reproduce the official state-dict layout exactly, so the official ``.pt`` files
(``<variant>/<network>.pt``) load with ``load_state_dict`` after per-key shape checks.

Two conv styles: *standard* (plain k x k convs) and *separable* (depthwise k x k, then 1 x 1).
``*_half`` variants hold fp16 weights; on CPU they are upcast to fp32 because fp16 convolutions
have no fast CPU path, on CUDA they run in fp16 like the official code.

Pipeline for one frame (``THA3Poser.pose_outputs``), on a [-1,1] linear-RGB straight-alpha image:
eyebrow decomposer (head crop, once per character) -> eyebrow morphing combiner -> face morpher
(face crop with the combined eyebrows pasted in) -> paste back -> 256^2 rotator -> 512^2 editor.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from puppet.errors import PuppetError
from puppet.pose import EYEBROW_SLICE, FACE_SLICE, ROTATION_SLICE, PoseVector

log = logging.getLogger(__name__)

NETWORKS = (
    "eyebrow_decomposer",
    "eyebrow_morphing_combiner",
    "face_morpher",
    "two_algo_face_body_rotator",
    "editor",
)
IMAGE_SIZE = 512
HEAD_CROP = (slice(64, 192), slice(192, 320))  # (rows, cols) of the eyebrow networks' input
FACE_CROP = (slice(32, 224), slice(160, 352))  # (rows, cols) of the face morpher's input
EYEBROWS_IN_FACE = (slice(32, 160), slice(32, 160))  # where the head crop lies inside FACE_CROP


@dataclass(frozen=True)
class THA3Config:
    """One variant family: conv style and the dtype the weight files hold."""

    name: str
    separable: bool
    half: bool


VARIANTS: dict[str, THA3Config] = {
    name: THA3Config(name, separable=name.startswith("separable"), half=name.endswith("half"))
    for name in ("standard_float", "standard_half", "separable_float", "separable_half")
}


def variant_config(variant: str) -> THA3Config:
    if variant not in VARIANTS:
        raise PuppetError(
            f"Unknown THA3 variant {variant!r}.",
            f"Use one of: {', '.join(VARIANTS)}.",
        )
    return VARIANTS[variant]


# ---------------------------------------------------------------------------------------------
# Building blocks. Sequential indices count parameter-free layers, as in the official layout.


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


def _conv_layers(
    c_in: int, c_out: int, kernel: int, stride: int, padding: int, separable: bool
) -> list[nn.Module]:
    """A bias-free conv as one layer (standard) or depthwise + pointwise layers (separable)."""
    if not separable:
        return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)]
    return [
        nn.Conv2d(c_in, c_in, kernel, stride, padding, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
    ]


def conv_block(
    c_in: int,
    c_out: int,
    separable: bool,
    activation: Callable[[], nn.Module],
    kernel: int = 3,
    stride: int = 1,
) -> nn.Sequential:
    """conv -> InstanceNorm -> activation; kernel 4 stride 2 is the downsampling block."""
    padding = 1 if stride == 2 else kernel // 2
    layers = _conv_layers(c_in, c_out, kernel, stride, padding, separable)
    return nn.Sequential(*layers, _norm(c_out), activation())


def up_block(c_in: int, c_out: int, separable: bool) -> nn.Sequential:
    """Transposed conv 4x4 stride 2 -> InstanceNorm -> ReLU (the first three networks)."""
    if separable:
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(c_in, c_in, 4, 2, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        ]
    else:
        layers = [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)]
    return nn.Sequential(*layers, _norm(c_out), _relu())


class ResnetBlock(nn.Module):
    """x + (conv, norm, act, conv, norm)(x); no activation after the sum."""

    def __init__(self, channels: int, separable: bool, activation: Callable[[], nn.Module]):
        super().__init__()

        def conv() -> nn.Module:
            layers = _conv_layers(channels, channels, 3, 1, 1, separable)
            return layers[0] if len(layers) == 1 else nn.Sequential(*layers)

        self.resnet_path = nn.Sequential(
            conv(), _norm(channels), activation(), conv(), _norm(channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.resnet_path(x)


def alpha_head(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Sigmoid())


def color_head(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Tanh())


def grid_head(c_in: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, 2, 3, 1, 1, bias=False)


def blend(alpha: Tensor, color: Tensor, image: Tensor) -> Tensor:
    """color where alpha is 1, image where alpha is 0 (all channels)."""
    return color * alpha + image * (1 - alpha)


def blend_rgb(alpha: Tensor, color: Tensor, image: Tensor) -> Tensor:
    """``blend`` on RGB only; the alpha channel is the image's."""
    rgb = color[:, :3] * alpha + image[:, :3] * (1 - alpha)
    return torch.cat([rgb, image[:, 3:4]], dim=1)


_IDENTITY_GRIDS: dict[tuple, Tensor] = {}


def warp(image: Tensor, grid_change: Tensor) -> Tensor:
    """Resample ``image`` at identity grid + offset (normalized coords, channel 0 = x)."""
    n, c, h, w = image.shape
    key = (n, h, w, image.device, image.dtype)
    base = _IDENTITY_GRIDS.get(key)
    if base is None:
        theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=image.device)
        theta = theta.to(image.dtype).unsqueeze(0).repeat(n, 1, 1)
        base = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        _IDENTITY_GRIDS[key] = base
    grid = base + grid_change.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tile(pose: Tensor, size: int) -> Tensor:
    return pose[:, :, None, None].expand(-1, -1, size, size)


# ---------------------------------------------------------------------------------------------
# The encoder-decoder of the first three networks: conv3 stem, stride-2 downsampling to the
# bottleneck, pose concatenated there, a conv block + resnet blocks, transposed-conv upsampling.


def _channels_at(size: int, image_size: int, start: int, most: int = 512) -> int:
    return min(start * (image_size // size), most)


class EncoderDecoder(nn.Module):
    def __init__(
        self,
        image_size: int,
        in_channels: int,
        pose_size: int,
        bottleneck_size: int,
        separable: bool,
        start_channels: int = 64,
        num_bottleneck_blocks: int = 6,
    ):
        super().__init__()
        self.bottleneck_size = bottleneck_size
        self.downsample_blocks = nn.ModuleList(
            [conv_block(in_channels, start_channels, separable, _relu)]
        )
        size, channels = image_size, start_channels
        while size > bottleneck_size:
            size //= 2
            nxt = _channels_at(size, image_size, start_channels)
            self.downsample_blocks.append(conv_block(channels, nxt, separable, _relu, 4, 2))
            channels = nxt
        self.bottleneck_blocks = nn.ModuleList(
            [conv_block(channels + pose_size, channels, separable, _relu)]
            + [ResnetBlock(channels, separable, _relu) for _ in range(num_bottleneck_blocks - 1)]
        )
        self.upsample_blocks = nn.ModuleList()
        while size < image_size:
            size *= 2
            nxt = _channels_at(size, image_size, start_channels)
            self.upsample_blocks.append(up_block(channels, nxt, separable))
            channels = nxt

    def forward(self, x: Tensor, pose: Tensor | None = None) -> Tensor:
        return encode_decode(self, x, pose, self.bottleneck_size)


def encode_decode(owner: nn.Module, x: Tensor, pose: Tensor | None, bottleneck: int) -> Tensor:
    """Run ``owner``'s downsample/bottleneck/upsample blocks (shared by the standard face
    morpher, whose blocks sit at the top level of its state dict)."""
    for block in owner.downsample_blocks:
        x = block(x)
    if pose is not None:
        x = torch.cat([x, tile(pose, bottleneck)], dim=1)
    for block in owner.bottleneck_blocks:
        x = block(x)
    for block in owner.upsample_blocks:
        x = block(x)
    return x


class EyebrowDecomposer(nn.Module):
    """128^2 head crop -> eyebrow layer and background layer (each an alpha/colour blend)."""

    def __init__(self, separable: bool):
        super().__init__()
        self.body = EncoderDecoder(128, 4, 0, 16, separable)
        self.background_layer_alpha = alpha_head(64, 1)
        self.background_layer_color_change = color_head(64, 4)
        self.eyebrow_layer_alpha = alpha_head(64, 1)
        self.eyebrow_layer_color_change = color_head(64, 4)

    def forward(self, image: Tensor) -> list[Tensor]:
        feature = self.body(image)
        background_alpha = self.background_layer_alpha(feature)
        background_color = self.background_layer_color_change(feature)
        background_layer = blend(background_alpha, background_color, image)
        eyebrow_alpha = self.eyebrow_layer_alpha(feature)
        eyebrow_color = self.eyebrow_layer_color_change(feature)
        # The eyebrow layer keeps the image where alpha is 1 (the reverse of the background).
        eyebrow_layer = blend(eyebrow_alpha, image, eyebrow_color)
        return [
            eyebrow_layer,
            eyebrow_alpha,
            eyebrow_color,
            background_layer,
            background_alpha,
            background_color,
        ]


class EyebrowMorphingCombiner(nn.Module):
    """Warps and recolours the eyebrow layer for pose[0:12] and lays it over the background."""

    def __init__(self, separable: bool):
        super().__init__()
        self.body = EncoderDecoder(128, 8, 12, 16, separable)
        self.morphed_eyebrow_layer_grid_change = grid_head(64)
        self.morphed_eyebrow_layer_alpha = alpha_head(64, 1)
        self.morphed_eyebrow_layer_color_change = color_head(64, 4)
        self.combine_alpha = alpha_head(64, 1)

    def forward(
        self, background_layer: Tensor, eyebrow_layer: Tensor, pose: Tensor
    ) -> list[Tensor]:
        feature = self.body(torch.cat([background_layer, eyebrow_layer], dim=1), pose)
        grid_change = self.morphed_eyebrow_layer_grid_change(feature)
        alpha = self.morphed_eyebrow_layer_alpha(feature)
        color = self.morphed_eyebrow_layer_color_change(feature)
        warped = warp(eyebrow_layer, grid_change)
        morphed = blend(alpha, color, warped)
        combine_alpha = self.combine_alpha(feature)
        eyebrow_image = blend_rgb(combine_alpha, morphed, background_layer)
        # The variant the pipeline uses: the morphed layer's own alpha instead of combine_alpha.
        no_combine = blend_rgb((morphed[:, 3:4] + 1) / 2, morphed, background_layer)
        return [
            eyebrow_image,
            combine_alpha,
            no_combine,
            morphed,
            alpha,
            color,
            warped,
            grid_change,
        ]


class FaceMorpher(nn.Module):
    """192^2 face crop -> eyes, iris and mouth for pose[12:39] (warp + two colour blends)."""

    def __init__(self, separable: bool):
        super().__init__()
        trunk = EncoderDecoder(192, 4, 27, 24, separable)
        # Official layout: the separable morpher nests its trunk under ``body.``, the standard
        # one keeps the block lists at the top level.
        self._has_body = separable
        if separable:
            self.body = trunk
        else:
            self.downsample_blocks = trunk.downsample_blocks
            self.bottleneck_blocks = trunk.bottleneck_blocks
            self.upsample_blocks = trunk.upsample_blocks
        self.iris_mouth_grid_change = grid_head(64)
        self.iris_mouth_color_change = color_head(64, 4)
        self.iris_mouth_alpha = alpha_head(64, 1)
        self.eye_color_change = color_head(64, 4)
        self.eye_alpha = alpha_head(64, 1)

    def forward(self, image: Tensor, pose: Tensor) -> list[Tensor]:
        owner = self.body if self._has_body else self
        feature = encode_decode(owner, image, pose, 24)
        grid_change = self.iris_mouth_grid_change(feature)
        iris_mouth_0 = warp(image, grid_change)
        iris_mouth_color = self.iris_mouth_color_change(feature)
        iris_mouth_alpha = self.iris_mouth_alpha(feature)
        iris_mouth_1 = blend(iris_mouth_alpha, iris_mouth_color, iris_mouth_0)
        eye_color = self.eye_color_change(feature)
        eye_alpha = self.eye_alpha(feature)
        output = blend(eye_alpha, eye_color, iris_mouth_1)
        return [
            output,
            eye_alpha,
            eye_color,
            iris_mouth_1,
            iris_mouth_alpha,
            iris_mouth_color,
            iris_mouth_0,
        ]


# ---------------------------------------------------------------------------------------------
# Rotator and editor: LeakyReLU(0.1) networks with nearest-upsample + conv decoders.
# The trap: in the *standard* style the stride-2 downsampling blocks use plain ReLU (the official
# block factory does not hand them its arguments); the separable style uses LeakyReLU there too.


def _down_activation(separable: bool) -> Callable[[], nn.Module]:
    return _leaky_relu if separable else _relu


class ResizeConvEncoderDecoder(nn.Module):
    def __init__(self, image_size: int, in_channels: int, bottleneck_size: int, separable: bool):
        super().__init__()
        start = 64
        self.downsample_blocks = nn.ModuleList(
            [conv_block(in_channels, start, separable, _leaky_relu, kernel=7)]
        )
        size, channels = image_size, start
        while size > bottleneck_size:
            size //= 2
            nxt = _channels_at(size, image_size, start)
            self.downsample_blocks.append(
                conv_block(channels, nxt, separable, _down_activation(separable), 4, 2)
            )
            channels = nxt
        self.bottleneck_blocks = nn.ModuleList(
            [ResnetBlock(channels, separable, _leaky_relu) for _ in range(6)]
        )
        self.upsample_blocks = nn.ModuleList()
        while size < image_size:
            size *= 2
            nxt = _channels_at(size, image_size, start)
            self.upsample_blocks.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    conv_block(channels, nxt, separable, _leaky_relu),
                )
            )
            channels = nxt

    def forward(self, x: Tensor) -> Tensor:
        for block in self.downsample_blocks:
            x = block(x)
        for block in self.bottleneck_blocks:
            x = block(x)
        for block in self.upsample_blocks:
            x = block(x)
        return x


class TwoAlgoFaceBodyRotator(nn.Module):
    """256^2 image + pose[39:45] -> a directly generated image (unused) and a warp."""

    def __init__(self, separable: bool):
        super().__init__()
        self.encoder_decoder = ResizeConvEncoderDecoder(256, 4 + 6, 32, separable)
        self.direct_creator = color_head(64, 4)
        self.grid_change_creator = grid_head(64)

    def forward(self, image: Tensor, pose: Tensor) -> list[Tensor]:
        feature = self.encoder_decoder(torch.cat([image, tile(pose, image.shape[-1])], dim=1))
        grid_change = self.grid_change_creator(feature)
        direct_image = self.direct_creator(feature)
        return [direct_image, warp(image, grid_change), grid_change]


class ResizeConvUNet(nn.Module):
    def __init__(self, image_size: int, in_channels: int, bottleneck_size: int, separable: bool):
        super().__init__()
        start, size = 32, image_size
        self.downsample_blocks = nn.ModuleList(
            [conv_block(in_channels, start, separable, _leaky_relu)]
        )
        channels_at = {size: start}
        channels = start
        while size > bottleneck_size:
            size //= 2
            nxt = min(512, channels * 2)
            self.downsample_blocks.append(
                conv_block(channels, nxt, separable, _down_activation(separable), 4, 2)
            )
            channels = channels_at[size] = nxt
        self.bottleneck_blocks = nn.ModuleList(
            [ResnetBlock(channels, separable, _leaky_relu) for _ in range(6)]
        )
        self.upsample_blocks = nn.ModuleList()
        while size < image_size:
            size *= 2
            skip = channels_at[size]
            self.upsample_blocks.append(conv_block(channels + skip, skip, separable, _leaky_relu))
            channels = skip

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for block in self.downsample_blocks:
            x = block(x)
            skips.append(x)
        for block in self.bottleneck_blocks:
            x = block(x)
        for i, block in enumerate(self.upsample_blocks):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skips[-i - 2]], dim=1))
        return x


class Editor(nn.Module):
    """512^2 U-Net that refines the rotator's warp and recolours the result."""

    def __init__(self, separable: bool):
        super().__init__()
        self.body = ResizeConvUNet(512, 4 + 4 + 2 + 6, 64, separable)
        self.color_change_creator = color_head(32, 4)
        self.alpha_creator = alpha_head(32, 4)
        self.grid_change_creator = grid_head(32)

    def forward(
        self, original: Tensor, warped: Tensor, grid_change: Tensor, pose: Tensor
    ) -> list[Tensor]:
        x = torch.cat([original, warped, grid_change, tile(pose, original.shape[-1])], dim=1)
        feature = self.body(x)
        grid = grid_change + self.grid_change_creator(feature)
        color = self.color_change_creator(feature)
        alpha = self.alpha_creator(feature)
        warped_original = warp(original, grid)
        return [blend(alpha, color, warped_original), alpha, color, warped_original, grid]


NETWORK_CLASSES: dict[str, Callable[[bool], nn.Module]] = {
    "eyebrow_decomposer": EyebrowDecomposer,
    "eyebrow_morphing_combiner": EyebrowMorphingCombiner,
    "face_morpher": FaceMorpher,
    "two_algo_face_body_rotator": TwoAlgoFaceBodyRotator,
    "editor": Editor,
}


def build_tha3_network(network: str, variant: str) -> nn.Module:
    """An fp32 network of ``variant``'s conv style with uninitialised weights, in eval mode."""
    if network not in NETWORK_CLASSES:
        raise PuppetError(
            f"Unknown THA3 network {network!r}.", f"Use one of: {', '.join(NETWORKS)}."
        )
    return NETWORK_CLASSES[network](variant_config(variant).separable).eval()


# ---------------------------------------------------------------------------------------------
# Loader


def load_tha3_network(path: Path | str, network: str, variant: str) -> nn.Module:
    """Load an official ``<variant>/<network>.pt`` into a fresh fp32 module (eval mode).

    The file is read with ``torch.load(weights_only=True)``, so a crafted pickle cannot run
    code. Any missing, extra or wrongly shaped tensor is refused with a PuppetError naming the
    file, the key and the expected shape. fp16 tensors (``*_half``) are upcast exactly to fp32.
    """
    path = Path(path)
    module = build_tha3_network(network, variant)
    fix = f"Re-import the official THA3 {variant} folder (`puppet models import DIR`)."
    if not path.is_file():
        raise PuppetError(f"THA3 weight file {str(path)!r} does not exist.", fix)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise PuppetError(
            f"{str(path)!r} is not a plain THA3 weight file ({error.__class__.__name__}:"
            f" {first_line[:200]}).",
            fix,
        ) from None
    if not isinstance(state, Mapping):
        raise PuppetError(
            f"{str(path)!r} holds a {type(state).__name__}, not a state dict of tensors.", fix
        )
    expected = module.state_dict()
    for key, reference in expected.items():
        if key not in state:
            raise PuppetError(
                f"{str(path)!r} is missing tensor {key!r} (expected shape"
                f" {tuple(reference.shape)}) for the {variant} {network}.",
                fix,
            )
        tensor = state[key]
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            raise PuppetError(f"{str(path)!r}: entry {key!r} is not a floating-point tensor.", fix)
        if tuple(tensor.shape) != tuple(reference.shape):
            raise PuppetError(
                f"{str(path)!r}: tensor {key!r} has shape {tuple(tensor.shape)}, expected"
                f" {tuple(reference.shape)} for the {variant} {network}.",
                fix,
            )
    extra = [key for key in state if key not in expected]
    if extra:
        raise PuppetError(
            f"{str(path)!r} has unexpected tensor {extra[0]!r}"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
            + f": it is not a THA3 {variant} {network}.",
            fix,
        )
    module.load_state_dict({key: state[key].float() for key in expected}, strict=True)
    return module
