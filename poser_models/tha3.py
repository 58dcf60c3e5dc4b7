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

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poser_models.image import linear_to_srgb, load_character, srgb_to_linear
from poser_models.tha3_keys import (  # the five official files, in pipeline order
    NETWORKS,
    find_variant_dir,
)
from puppet.errors import PuppetError
from puppet.pose import EYEBROW_SLICE, FACE_SLICE, ROTATION_SLICE, PoseVector

log = logging.getLogger(__name__)

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
        return encode_decode(self, x, None, 0)  # the pose enters with the input here


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

    Read through puppet's one safe loader (``torch.load(weights_only=True)``, so a crafted
    pickle cannot run code); any missing, extra or wrongly shaped tensor is refused with a
    PuppetError naming the file, the key and the expected shape. fp16 tensors (``*_half``) are
    upcast exactly to fp32.
    """
    from poser_models.weights import load_state_dict_checked

    module = build_tha3_network(network, variant)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    state = load_state_dict_checked(Path(path), expected, f"THA3 {variant} {network} file")
    module.load_state_dict(state, strict=True)
    return module


# ---------------------------------------------------------------------------------------------
# Image conversion (THA3 input/output spec)


def rgba8_to_tensor(rgba: np.ndarray) -> Tensor:
    """RGBA uint8 (H, W, 4) -> float32 [1, 4, H, W] in [-1, 1]: pixels with alpha 0 become
    (0,0,0,0), RGB goes sRGB -> linear (straight alpha), computed in float64 like the official
    loader so the result is bit-identical."""
    x = rgba.astype(np.float64) / 255.0
    x[rgba[..., 3] == 0] = 0.0
    rgb = np.clip(x[..., :3], 0.0, 1.0)
    x[..., :3] = srgb_to_linear(rgb)
    x = x * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32))


def tensor_to_rgba8(image: Tensor) -> np.ndarray:
    """[1, 4, H, W] linear [-1, 1] straight alpha -> sRGB RGBA uint8 (H, W, 4)."""
    x = (image[0].float() + 1.0) * 0.5
    rgb = x[:3].clamp(0.0, 1.0)
    rgb = linear_to_srgb(rgb)
    out = torch.cat([rgb, x[3:4].clamp(0.0, 1.0)], dim=0)
    out = torch.round(out * 255.0).to(torch.uint8)
    return out.permute(1, 2, 0).contiguous().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Backends: how each network is run. All take and return lists of torch tensors.

OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "eyebrow_decomposer": (
        "eyebrow_layer",
        "eyebrow_layer_alpha",
        "eyebrow_layer_color_change",
        "background_layer",
        "background_layer_alpha",
        "background_layer_color_change",
    ),
    "eyebrow_morphing_combiner": (
        "eyebrow_image",
        "combine_alpha",
        "eyebrow_image_no_combine_alpha",
        "morphed_eyebrow_layer",
        "morphed_eyebrow_layer_alpha",
        "morphed_eyebrow_layer_color_change",
        "warped_eyebrow_layer",
        "morphed_eyebrow_layer_grid_change",
    ),
    "face_morpher": (
        "output_image",
        "eye_alpha",
        "eye_color_change",
        "iris_mouth_image_1",
        "iris_mouth_alpha",
        "iris_mouth_color_change",
        "iris_mouth_image_0",
    ),
    "two_algo_face_body_rotator": ("direct_image", "warped_image", "grid_change"),
    "editor": ("output_image", "alpha", "color_change", "warped_image", "grid_change"),
}

# Example input shapes (batch 1) for tracing and export.
INPUT_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "eyebrow_decomposer": ((1, 4, 128, 128),),
    "eyebrow_morphing_combiner": ((1, 4, 128, 128), (1, 4, 128, 128), (1, 12)),
    "face_morpher": ((1, 4, 192, 192), (1, 27)),
    "two_algo_face_body_rotator": ((1, 4, 256, 256), (1, 6)),
    "editor": ((1, 4, 512, 512), (1, 4, 512, 512), (1, 2, 512, 512), (1, 6)),
}

BACKENDS = ("auto", "eager", "channels_last", "compile", "onnx")
ONNX_OPSET = 20  # GridSample and AffineGrid are exported natively from opset 20


class _TorchRunner:
    """Plain eager torch, optionally channels_last or torch.compile'd."""

    def __init__(self, module: nn.Module, style: str):
        self.module = module
        self.channels_last = style == "channels_last"
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        self.call: Callable[..., list[Tensor]] = module
        if style == "compile":
            self.call = torch.compile(module, dynamic=False)

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        if self.channels_last:
            inputs = tuple(
                x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                for x in inputs
            )
        with torch.inference_mode():
            return [x.contiguous() for x in self.call(*inputs)]


class _OnnxRunner:
    """ONNX Runtime on CPU: its kernels run THA3's depthwise convs and 512^2 layers several
    times faster than torch's on this class of CPU (see benchmarks/bench_tha3.py)."""

    def __init__(self, model: bytes | Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between runs: spinning threads would steal the cores that tracking
        # and the rest of the live loop need (and slowed torch work interleaved with it 10x).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        feed = {
            name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        return [torch.from_numpy(y) for y in self.session.run(None, feed)]


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _StableInstanceNorm(nn.Module):
    """InstanceNorm2d as explicit ops for export. ONNX Runtime's InstanceNormalization (and a
    flat ReduceMean) sum 512^2 values sequentially in fp32, which moved the real editor's
    outputs by 3e-3; averaging rows first, then the row means, stays at the fp32 noise floor
    (7e-5), and the mean is subtracted before squaring (no E[x^2] - E[x]^2 cancellation)."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        # Pre-shaped plain buffers: the exporter mis-wires deduplicated parameters that are
        # sliced in the graph (seen with default-initialised, identical norms).
        self.register_buffer("gamma", norm.weight.detach().reshape(1, -1, 1, 1).clone())
        self.register_buffer("beta", norm.bias.detach().reshape(1, -1, 1, 1).clone())
        self.eps = norm.eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
        return centred * (self.gamma * torch.rsqrt(var + self.eps)) + self.beta


def _with_stable_norms(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.InstanceNorm2d):
            setattr(module, name, _StableInstanceNorm(child))
        else:
            _with_stable_norms(child)
    return module


def _export_onnx_bytes(module: nn.Module, network: str) -> bytes:
    """fp32 ONNX graph of one network (batch 1), weights as constant initializers."""
    import copy
    import warnings

    import onnx

    module = _with_stable_norms(copy.deepcopy(module).float().eval())
    inputs = tuple(torch.zeros(shape) for shape in INPUT_SHAPES[network])
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            buffer,
            opset_version=ONNX_OPSET,
            dynamo=False,
            # The exporter's initializer deduplication mis-wires identical tensors (e.g. norms
            # still at their initial values), so it is turned off here ...
            keep_initializers_as_inputs=True,
            input_names=[f"in{i}" for i in range(len(inputs))],
            output_names=[f"out{i}_{name}" for i, name in enumerate(OUTPUT_NAMES[network])],
        )
    # ... and the weights are then removed from the graph inputs again, so that ONNX Runtime
    # treats them as constants (prepacking, fusions: ~15 % faster).
    model = onnx.load_from_string(buffer.getvalue())
    weights = {initializer.name for initializer in model.graph.initializer}
    inputs_only = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs_only)
    return model.SerializeToString()


ONNX_MANIFEST = "onnx_manifest.json"  # written by puppet.model_store.export_onnx


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # a THA3 file is < 15 MB


def _fresh_onnx_files(variant_dir: Path, variant: str) -> dict[str, Path]:
    """The exported ONNX files in ``<variant_dir>/onnx`` whose source ``.pt`` is unchanged."""
    folder = variant_dir / "onnx"
    try:
        manifest = json.loads((folder / ONNX_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if manifest.get("variant") != variant or manifest.get("opset") != ONNX_OPSET:
        return {}
    found = {}
    for network, digest in manifest.get("sources", {}).items():
        path = folder / f"{network}.onnx"
        source = variant_dir / f"{network}.pt"
        if network in NETWORKS and path.is_file() and source.is_file():
            if _sha256(source) == digest:
                found[network] = path
    return found


# ---------------------------------------------------------------------------------------------
# The poser


@dataclass
class CacheStats:
    """How often each cached stage was reused (a reuse skips that network)."""

    combiner_runs: int = 0
    combiner_reuses: int = 0
    face_morpher_runs: int = 0
    face_morpher_reuses: int = 0
    frame_reuses: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # last run time per network


class THA3Poser:
    """The official THA3 pipeline on one character (`poser_models.registry.Poser`).

    ``backend``: ``auto`` (ONNX Runtime on CPU when installed, else eager torch), ``eager``,
    ``channels_last``, ``compile`` (torch.compile) or ``onnx``. CUDA always uses eager torch,
    in fp16 for the ``*_half`` variants. ``networks`` replaces loading from ``model_dir`` with
    ready fp32 modules (keyed by network name).
    """

    def __init__(
        self,
        variant: str,
        model_dir: Path | str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        networks: Mapping[str, nn.Module] | None = None,
        threads: int | None = None,
    ):
        self.config = variant_config(variant)
        self.variant = variant
        if model_dir is None and networks is None:
            raise PuppetError("THA3Poser needs a model folder or networks.")
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = device
        on_cuda = device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise PuppetError(
                f"Device {device!r} was asked for but torch sees no CUDA GPU.",
                "Use --device cpu, or install a CUDA build of torch.",
            )
        if backend not in BACKENDS:
            raise PuppetError(f"Unknown THA3 backend {backend!r}.", f"Use one of: {BACKENDS}.")
        if backend == "auto":
            backend = "eager" if on_cuda or not onnx_available() else "onnx"
        if backend == "onnx" and not onnx_available():
            raise PuppetError(
                "The onnx backend needs onnxruntime and onnx.", "pip install onnxruntime onnx."
            )
        if on_cuda and backend != "eager":
            raise PuppetError(f"Backend {backend!r} is CPU-only.", "Use backend 'eager' on CUDA.")
        self.backend = backend
        self.torch_dtype = torch.float16 if (on_cuda and self.config.half) else torch.float32
        self.dtype = "float16" if self.torch_dtype == torch.float16 else "float32"
        self.threads = threads or torch.get_num_threads()
        self._given = dict(networks) if networks is not None else None
        self._runners: dict[str, Callable[..., list[Tensor]]] | None = None
        self.stats = CacheStats()
        self._image: Tensor | None = None
        self._decomposed: list[Tensor] | None = None
        self._combiner_key: bytes | None = None
        self._combined: list[Tensor] | None = None
        self._face_key: bytes | None = None
        self._face: dict[str, Tensor] | None = None
        self._frame_key: bytes | None = None
        self._frame: dict[str, Tensor] | None = None

    # -- setup ---------------------------------------------------------------------------------

    def _build_runners(self) -> None:
        modules: dict[str, nn.Module] = {}
        onnx_files: dict[str, Path] = {}
        if self.backend == "onnx" and self.model_dir is not None and self._given is None:
            onnx_files = _fresh_onnx_files(self.model_dir, self.variant)
        for network in NETWORKS:
            if self._given is not None:
                if network not in self._given:
                    raise PuppetError(f"THA3Poser was given no {network} network.")
                modules[network] = self._given[network]
            elif network not in onnx_files:
                assert self.model_dir is not None
                path = self.model_dir / f"{network}.pt"
                modules[network] = load_tha3_network(path, network, self.variant)
        runners: dict[str, Callable[..., list[Tensor]]] = {}
        for network in NETWORKS:
            if self.backend == "onnx":
                source = onnx_files.get(network) or _export_onnx_bytes(modules[network], network)
                runners[network] = _OnnxRunner(source, self.threads)
                modules.pop(network, None)
            else:
                module = modules[network].to(device=self.device, dtype=self.torch_dtype).eval()
                # The decomposer runs once per character: compiling it would not pay off.
                once = network == "eyebrow_decomposer" and self.backend == "compile"
                style = "eager" if once else self.backend
                runners[network] = _TorchRunner(module, style)
        self._runners = runners
        self._given = None  # the runners own the modules now

    def load(self, character: Path | str | np.ndarray) -> None:
        """Read (or take) the character image, check it against the THA3 spec and decompose
        its eyebrows once."""

        self.set_image(rgba8_to_tensor(load_character(character)))

    def set_image(self, image: Tensor) -> None:
        """Use an already converted [1,4,512,512] (or [4,512,512]) [-1,1] linear image."""
        if image.dim() == 3:
            image = image[None]
        if tuple(image.shape) != (1, 4, IMAGE_SIZE, IMAGE_SIZE):
            raise PuppetError(
                f"THA3 needs a 1x4x512x512 image tensor, got {tuple(image.shape)}.",
                "Load the character with THA3Poser.load(path).",
            )
        if self._runners is None:
            self._build_runners()
        assert self._runners is not None
        self._image = image.to(device=self.device, dtype=self.torch_dtype)
        rows, cols = HEAD_CROP
        start = time.perf_counter()
        self._decomposed = self._runners["eyebrow_decomposer"](self._image[:, :, rows, cols])
        self.stats.seconds["eyebrow_decomposer"] = time.perf_counter() - start
        self._combiner_key = self._face_key = self._frame_key = None
        self._combined = self._face = self._frame = None

    # -- posing --------------------------------------------------------------------------------

    def _pose_tensor(self, pose: PoseVector | np.ndarray | Sequence[float]) -> np.ndarray:
        values = pose.values if isinstance(pose, PoseVector) else np.asarray(pose, np.float32)
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        if values.shape != (45,):
            raise PuppetError(f"A THA3 pose has 45 values, got {values.size}.")
        return values

    def _timed(self, network: str, *inputs: Tensor) -> list[Tensor]:
        assert self._runners is not None
        start = time.perf_counter()
        out = self._runners[network](*inputs)
        self.stats.seconds[network] = time.perf_counter() - start
        return out

    def _face_stage(self, values: np.ndarray, pose_t: Tensor) -> dict[str, Tensor]:
        """The eyebrow combiner and face morpher for ``values`` (each reused while its own
        values are unchanged): the combiner's outputs and the face stage's tensors."""
        assert self._image is not None and self._decomposed is not None
        image = self._image
        eyebrow_key = values[EYEBROW_SLICE].tobytes()
        if self._combined is None or eyebrow_key != self._combiner_key:
            decomposed = self._decomposed
            self._combined = self._timed(
                "eyebrow_morphing_combiner", decomposed[3], decomposed[0], pose_t[:, EYEBROW_SLICE]
            )
            self._combiner_key = eyebrow_key
            self._face = None
            self.stats.combiner_runs += 1
        else:
            self.stats.combiner_reuses += 1

        face_key = values[FACE_SLICE].tobytes()
        if self._face is None or face_key != self._face_key:
            rows, cols = FACE_CROP
            face_input = image[:, :, rows, cols].clone()
            inner_rows, inner_cols = EYEBROWS_IN_FACE
            face_input[:, :, inner_rows, inner_cols] = self._combined[2]
            morphed = self._timed("face_morpher", face_input, pose_t[:, FACE_SLICE])
            full = image.clone()
            full[:, :, rows, cols] = morphed[0]
            half = F.interpolate(full, size=(256, 256), mode="bilinear", align_corners=False)
            self._face = {"face_morpher/input": face_input, "face_morphed_full": full}
            self._face["two_algo_face_body_rotator/input"] = half
            for name, tensor in zip(OUTPUT_NAMES["face_morpher"], morphed, strict=True):
                self._face[f"face_morpher/{name}"] = tensor
            self._face_key = face_key
            self.stats.face_morpher_runs += 1
        else:
            self.stats.face_morpher_reuses += 1
        combined = {
            f"eyebrow_morphing_combiner/{name}": tensor
            for name, tensor in zip(
                OUTPUT_NAMES["eyebrow_morphing_combiner"], self._combined, strict=True
            )
        }
        return {**combined, **self._face}

    def face_morphed(self, pose: PoseVector | np.ndarray | Sequence[float]) -> np.ndarray:
        """The character with only the face stages applied (no rotation, no editor) as sRGB
        RGBA uint8 (512, 512, 4): about a third of a frame's cost. Distillation builds cheap
        expression frames from it (``puppet.training.teacher_frames``)."""
        if self._image is None or self._decomposed is None:
            raise PuppetError("No character loaded into the THA3 poser.", "Call load() first.")
        values = self._pose_tensor(pose)
        pose_t = torch.from_numpy(values[None].copy()).to(self.device, self.torch_dtype)
        return tensor_to_rgba8(self._face_stage(values, pose_t)["face_morphed_full"])

    def pose_outputs(self, pose: PoseVector | np.ndarray | Sequence[float]) -> dict[str, Tensor]:
        """Every intermediate of one frame, named ``<network>/<output>`` (the 29 official
        outputs) plus the glue tensors ``face_morpher/input``, ``face_morphed_full``,
        ``two_algo_face_body_rotator/input``, ``editor/input_warped_image`` and
        ``editor/input_grid_change``. ``editor/output_image`` is the final image."""
        if self._image is None or self._decomposed is None:
            raise PuppetError("No character loaded into the THA3 poser.", "Call load() first.")
        values = self._pose_tensor(pose)
        if self._frame is not None and values.tobytes() == self._frame_key:
            self.stats.frame_reuses += 1
            return self._frame
        pose_t = torch.from_numpy(values[None].copy()).to(self.device, self.torch_dtype)
        out: dict[str, Tensor] = {}
        for name, tensor in zip(OUTPUT_NAMES["eyebrow_decomposer"], self._decomposed, strict=True):
            out[f"eyebrow_decomposer/{name}"] = tensor

        out.update(self._face_stage(values, pose_t))

        full = self._face["face_morphed_full"]
        rotation = pose_t[:, ROTATION_SLICE]
        rotated = self._timed(
            "two_algo_face_body_rotator", self._face["two_algo_face_body_rotator/input"], rotation
        )
        for name, tensor in zip(OUTPUT_NAMES["two_algo_face_body_rotator"], rotated, strict=True):
            out[f"two_algo_face_body_rotator/{name}"] = tensor
        warped, grid = (
            F.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
            for x in rotated[1:3]
        )
        out["editor/input_warped_image"] = warped
        out["editor/input_grid_change"] = grid
        edited = self._timed("editor", full, warped, grid, rotation)
        for name, tensor in zip(OUTPUT_NAMES["editor"], edited, strict=True):
            out[f"editor/{name}"] = tensor
        self._frame_key, self._frame = values.tobytes(), out
        return out

    def pose_image(self, pose: PoseVector | np.ndarray | Sequence[float]) -> Tensor:
        """The final image, [1,4,512,512] linear [-1,1], straight alpha."""
        return self.pose_outputs(pose)["editor/output_image"]

    def pose(self, pose: PoseVector) -> np.ndarray:
        """The posed character as sRGB RGBA uint8 (512, 512, 4), straight alpha."""
        return tensor_to_rgba8(self.pose_image(pose))


def create_poser(
    argument: str, device: str = "cpu", models_dir: Path | None = None
) -> tuple[THA3Poser, None]:
    """Registry factory for ``tha3:<variant>[@DIR]``: an unloaded poser, no own character.

    DIR is the folder with the five ``.pt`` files (or its parent); without it the copy
    installed by ``puppet models import``/``fetch`` is used.
    """
    variant, _, folder = argument.partition("@")
    variant = variant.strip()
    variant_config(variant)
    model_dir = find_variant_dir(variant, Path(folder) if folder else None, models_dir)
    return THA3Poser(variant, model_dir, device=device), None
