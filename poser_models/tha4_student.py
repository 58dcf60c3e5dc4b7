"""The Talking Head Anime 4 student ("character model"): two SIRENs that pose one character.

A THA4 student folder holds ``character_model.yaml``, ``character.png``, ``face_morpher.pt`` and
``body_morpher.pt``. Neither network reads the image's pixels: both are functions of pixel
coordinates and the pose only.

* Face morpher: a SIREN (8 sine layers of 128, then a linear layer to 4 channels) evaluated on the
  128x128 grid of pixel coordinates (x, y) with ``pose[0:39]`` appended; its output is the RGBA face
  patch, pasted into the image at rows 80:208, columns 192:320.
* Body morpher: a 3-level SIREN at 128, 256 and 512 pixels (widths 360, 180, 90; 3 sine layers
  each).
  Each level sees [bilinearly upsampled previous features, coordinates, full pose] in that order.
  A linear layer gives 7 channels: grid offset (2), blend alpha (1, raw), colour (4, raw), and
  ``out = (1 - alpha) * warp(image_with_face) + alpha * colour``.

Images are linear RGB, premultiplied by alpha, mapped to [-1, 1], as THA4's loader makes them.

Speed (same output up to float32 rounding): a 1x1 conv is a matmul over pixels, so every layer
runs as one ``addmm`` on a (pixels, channels) buffer with the SIREN frequency (30) folded into the
weights and ``sin_`` in place. The pose is constant over pixels and the coordinates are separable
(x varies along a row, y down a column), so a first layer's coordinate-and-pose part is a per-row
plus a per-column term: no matmul at all. The previous level's contribution is computed *before*
upsampling (bilinear interpolation is linear and its weights sum to 1, so it commutes with a 1x1
conv), which is 4x less work at the two big levels. The face patch only depends on pose[0:39] and
is reused while those values do not change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from poser_models.image import linear_to_srgb, load_character, srgb_to_linear
from poser_models.weights import load_state_dict_checked as load_checked_state_dict
from puppet.errors import PuppetError
from puppet.pose import PoseVector

log = logging.getLogger(__name__)

YAML_NAME = "character_model.yaml"
_YAML_KEYS = ("character_image_file_name", "face_morpher_file_name", "body_morpher_file_name")


@dataclass(frozen=True)
class StudentConfig:
    image_size: int = 512
    pose_size: int = 45
    omega: float = 30.0  # SIREN frequency: sin(omega * (W x + b))
    face_size: int = 128
    face_pose_size: int = 39  # eyebrow, eye, iris, mouth, iris rotation
    face_width: int = 128
    face_layers: int = 8
    face_top: int = 80  # patch rows face_top:face_top+face_size
    face_left: int = 192
    body_sizes: tuple[int, ...] = (128, 256, 512)
    body_widths: tuple[int, ...] = (360, 180, 90)
    body_layers: int = 3  # sine layers per level
    body_out: int = 7  # grid offset 2, alpha 1, colour 4


def face_morpher_shapes(c: StudentConfig) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    width_in = 2 + c.face_pose_size
    for i in range(c.face_layers):
        shapes[f"siren.sine_layers.{i}.linear.weight"] = (c.face_width, width_in, 1, 1)
        shapes[f"siren.sine_layers.{i}.linear.bias"] = (c.face_width,)
        width_in = c.face_width
    shapes["siren.last_linear.weight"] = (4, c.face_width, 1, 1)
    shapes["siren.last_linear.bias"] = (4,)
    return shapes


def _body_layer_widths(c: StudentConfig, level: int) -> list[tuple[int, int]]:
    """(in, out) of each sine layer of one body level."""
    width = c.body_widths[level]
    previous = c.body_widths[level] if level > 0 else 0  # previous level ends with this width
    width_in = previous + 2 + c.pose_size
    last = c.body_widths[level + 1] if level + 1 < len(c.body_widths) else width
    outs = [width] * (c.body_layers - 1) + [last]
    widths = []
    for out in outs:
        widths.append((width_in, out))
        width_in = out
    return widths


def body_morpher_shapes(c: StudentConfig) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for level in range(len(c.body_sizes)):
        for i, (width_in, out) in enumerate(_body_layer_widths(c, level)):
            shapes[f"siren_layers.{level}.{i}.linear.weight"] = (out, width_in, 1, 1)
            shapes[f"siren_layers.{level}.{i}.linear.bias"] = (out,)
    shapes["last_linear.weight"] = (c.body_out, c.body_widths[-1], 1, 1)
    shapes["last_linear.bias"] = (c.body_out,)
    return shapes


# ----------------------------------------------------------------------------------------------
# Modules. Parameter names follow the official state dicts so `load_state_dict` maps 1:1.


class SineLayer(nn.Module):
    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(width_in, width_out, kernel_size=1)


class _Siren(nn.Module):
    def __init__(self, widths: list[tuple[int, int]], out: int) -> None:
        super().__init__()
        self.sine_layers = nn.ModuleList(SineLayer(i, o) for i, o in widths)
        self.last_linear = nn.Conv2d(widths[-1][1], out, kernel_size=1)


def _pixel_centres(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalized pixel centres, as affine_grid(identity, align_corners=False) makes them."""
    return (torch.arange(size, dtype=torch.float32, device=device) * 2 + 1) / size - 1


class _Grid:
    """Activation buffers of one resolution: (size*size, 3 + width), columns [x, y, 1, features].

    The constant columns make every layer one plain ``mm`` that also adds the bias (and, for the
    body's last layer, the identity sampling grid). Two buffers ping-pong between layers. They
    are views into storages shared by all levels of a network (levels run one after the
    other), kept across frames so no large tensor is allocated (and page-faulted) per frame;
    ``reset`` rewrites the constant columns before a level uses them.
    """

    def __init__(self, size: int, width: int, storages: list[torch.Tensor]) -> None:
        self.size, self.width = size, width
        coords = _pixel_centres(size, storages[0].device)
        constants = torch.ones(size, size, 3, device=coords.device)
        constants[:, :, 0] = coords[None, :]  # x varies along a row
        constants[:, :, 1] = coords[:, None]  # y down a column
        self.constants = constants.reshape(size * size, 3)
        count = size * size * (3 + width)
        self.buffers = [storage[:count].view(size * size, 3 + width) for storage in storages]

    def reset(self) -> None:
        for buffer in self.buffers:
            buffer[:, :3] = self.constants

    def features(self, index: int, width: int) -> torch.Tensor:
        """The (size*size, width) feature columns of buffer ``index``."""
        return self.buffers[index][:, 3 : 3 + width]

    def inputs(self, index: int, width: int) -> torch.Tensor:
        """The (size*size, 3 + width) [x, y, 1, features] columns: a layer's matmul input."""
        return self.buffers[index][:, : 3 + width]


def _storages(levels: list[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
    """Two flat buffers large enough for any (size, width) level."""
    count = max(size * size * (3 + width) for size, width in levels)
    return [torch.empty(count, device=device) for _ in range(2)]


def _augmented(
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: float,
    x_row: torch.Tensor | float = 0.0,
    y_row: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """(3 + in, out) matrix for inputs [x, y, 1, features]: rows [x_row, y_row, bias, W^T]."""
    w = weight[:, :, 0, 0].t() * scale
    out = torch.zeros(3 + w.shape[0], w.shape[1], device=w.device)
    out[0], out[1], out[2] = x_row, y_row, bias * scale
    out[3:] = w
    return out


class _FirstLayer:
    """A first layer over [previous features (optional), x, y, pose], scaled by omega.

    Pose is constant over pixels and the coordinates are separable, so without previous
    features the pre-activation is row[i] + col[j]: no matmul. With them, it is computed at
    the previous (half) resolution as W_prev @ prev + W_x x + W_y y + (W_pose pose + b) and
    bilinearly upsampled: interpolation is linear with weights summing to 1, so it commutes
    with the layer; the upsampled coordinate terms are exact except on the border lines,
    which clamping pins to the outermost low-resolution coordinate, corrected afterwards.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, n_prev: int, size: int, omega: float
    ) -> None:
        w = weight[:, :, 0, 0] * omega  # (out, in)
        self.size, self.width = size, w.shape[0]
        self.w_x, self.w_y = w[:, n_prev].clone(), w[:, n_prev + 1].clone()
        self.w_pose_t = w[:, n_prev + 2 :].t().contiguous()
        self.bias = bias * omega
        coords = _pixel_centres(size, w.device)
        self.col = (coords[:, None] * self.w_x).contiguous()  # (size, out)
        self.row_coord = coords[:, None] * self.w_y
        if n_prev:
            low = size // 2
            self.w_prev_aug = _augmented(weight[:, :n_prev], bias, omega, self.w_x, self.w_y)
            low_coords = _pixel_centres(low, w.device)
            self.edge_first = (coords[0] - low_coords[0]).item()
            self.edge_last = (coords[-1] - low_coords[-1]).item()
            self.low = torch.empty(low * low, self.width, device=w.device)
            self.half = torch.empty(low, size, self.width, device=w.device)

    def pose_bias(self, pose: torch.Tensor) -> torch.Tensor:
        return (pose @ self.w_pose_t).reshape(-1) + self.bias

    def separable_into(self, pose: torch.Tensor, out: torch.Tensor) -> None:
        """out (size*size, width) = row[i] + col[j]."""
        row = self.row_coord + self.pose_bias(pose)
        n = self.size
        torch.add(row[:, None, :], self.col[None, :, :], out=out.view(n, n, self.width))

    def project_previous(self, pose: torch.Tensor, previous: torch.Tensor) -> None:
        """The layer at half resolution; previous is [x', y', 1, features] there."""
        self.w_prev_aug[2] = self.pose_bias(pose)
        torch.mm(previous, self.w_prev_aug, out=self.low)

    def upsampled_into(self, out: torch.Tensor) -> None:
        """out = layer([up(previous), x, y, pose]) from `project_previous`'s result."""
        n, low = self.size, self.size // 2
        _upsample2x(self.low.view(low, low, self.width), self.half, out.view(n, n, self.width))
        grid = out.view(n, n, self.width)
        grid[0] += self.edge_first * self.w_y
        grid[-1] += self.edge_last * self.w_y
        grid[:, 0] += self.edge_first * self.w_x
        grid[:, -1] += self.edge_last * self.w_x


def _upsample2x(low: torch.Tensor, half: torch.Tensor, out: torch.Tensor) -> None:
    """Bilinear 2x upsampling of (h, w, C) into (2h, 2w, C), align_corners=False, as lerps.

    Output pixel 2k sits at source k - 1/4 and 2k+1 at k + 1/4, clamped at the borders.
    """
    torch.lerp(low[:, 1:], low[:, :-1], 0.25, out=half[:, 2::2])
    torch.lerp(low[:, :-1], low[:, 1:], 0.25, out=half[:, 1:-1:2])
    half[:, 0], half[:, -1] = low[:, 0], low[:, -1]
    torch.lerp(half[1:], half[:-1], 0.25, out=out[2::2])
    torch.lerp(half[:-1], half[1:], 0.25, out=out[1:-1:2])
    out[0], out[-1] = half[0], half[-1]


class _FastLevel:
    """One SIREN resolution level prepared for fast evaluation (weights frozen)."""

    def __init__(self, layers: nn.ModuleList, n_prev: int, size: int, omega: float) -> None:
        first = layers[0].linear
        self.first = _FirstLayer(first.weight, first.bias, n_prev, size, omega)
        self.hidden = [
            _augmented(layer.linear.weight, layer.linear.bias, omega) for layer in layers[1:]
        ]
        self.size = size
        self.max_width = max([self.first.width] + [w.shape[1] for w in self.hidden])
        self.grid: _Grid | None = None

    def run(self, pose: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """The level's last [x, y, 1, features] buffer view (valid until the next level runs)."""
        assert self.grid is not None, "attach storages first"
        if previous is not None:  # read it before this level's buffers overwrite it
            self.first.project_previous(pose, previous)
        self.grid.reset()
        width, current = self.first.width, 0
        pre = self.grid.features(current, width)
        if previous is None:
            self.first.separable_into(pose, pre)
        else:
            self.first.upsampled_into(pre)
        pre.sin_()
        for weight in self.hidden:
            out_width = weight.shape[1]
            target = self.grid.features(1 - current, out_width)
            torch.mm(self.grid.inputs(current, width), weight, out=target)
            target.sin_()
            current, width = 1 - current, out_width
        return self.grid.inputs(current, width)


class SirenFaceMorpher(nn.Module):
    """Pose[0:39] -> the 128x128 RGBA face patch, (1, 4, 128, 128)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        widths = [(2 + config.face_pose_size, config.face_width)]
        widths += [(config.face_width, config.face_width)] * (config.face_layers - 1)
        self.siren = _Siren(widths, 4)
        self._fast: tuple[_FastLevel, torch.Tensor] | None = None

    @torch.no_grad()
    def forward(self, face_pose: torch.Tensor) -> torch.Tensor:
        c = self.config
        if self._fast is None:  # weights are frozen once loaded
            last = self.siren.last_linear
            level = _FastLevel(self.siren.sine_layers, 0, c.face_size, c.omega)
            storages = _storages([(level.size, level.max_width)], last.weight.device)
            level.grid = _Grid(level.size, level.max_width, storages)
            self._fast = (level, _augmented(last.weight, last.bias, 1.0))
        level, last = self._fast
        features = level.run(face_pose.reshape(1, -1), None)
        out = features @ last  # (n*n, 4)
        return out.t().reshape(1, 4, c.face_size, c.face_size)


@dataclass
class BodyOutputs:
    """The body morpher's outputs, NCHW: the final blended image first."""

    blended: torch.Tensor  # (1, 4, H, W)
    alpha: torch.Tensor  # (1, 1, H, W), raw
    color: torch.Tensor  # (1, 4, H, W), raw
    warped: torch.Tensor  # (1, 4, H, W)
    grid_change: torch.Tensor  # (1, 2, H, W), normalized units, channel 0 = x


class SirenBodyMorpher(nn.Module):
    """(image with the face pasted, full pose) -> the posed image and its intermediates."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.siren_layers = nn.ModuleList(
            nn.ModuleList(SineLayer(i, o) for i, o in _body_layer_widths(config, level))
            for level in range(len(config.body_sizes))
        )
        self.last_linear = nn.Conv2d(config.body_widths[-1], config.body_out, kernel_size=1)
        self._fast: tuple[list[_FastLevel], torch.Tensor, torch.Tensor] | None = None

    def _prepare(self) -> tuple[list[_FastLevel], torch.Tensor, torch.Tensor]:
        c = self.config
        levels = [
            _FastLevel(layers, c.body_widths[level] if level else 0, c.body_sizes[level], c.omega)
            for level, layers in enumerate(self.siren_layers)
        ]
        device = self.last_linear.weight.device
        storages = _storages([(lv.size, lv.max_width) for lv in levels], device)
        for level in levels:
            level.grid = _Grid(level.size, level.max_width, storages)
        # Rows x and y add the identity grid to the grid offset channels: the matmul yields the
        # absolute sampling grid.
        x_row = torch.zeros(c.body_out, device=self.last_linear.weight.device)
        y_row = x_row.clone()
        x_row[0], y_row[1] = 1.0, 1.0
        last = _augmented(self.last_linear.weight, self.last_linear.bias, 1.0, x_row, y_row)
        size = c.body_sizes[-1]
        out = torch.empty(size * size, c.body_out, device=x_row.device)
        return levels, last, out

    @torch.no_grad()
    def forward(self, image: torch.Tensor, pose: torch.Tensor) -> BodyOutputs:
        if self._fast is None:  # weights are frozen once loaded
            self._fast = self._prepare()
        levels, last, out = self._fast
        pose = pose.reshape(1, -1)
        features = None
        for level in levels:
            features = level.run(pose, features)
        torch.mm(features, last, out=out)  # (H*W, 7): grid x, grid y, alpha, colour
        size = levels[-1].grid.size
        grid = out[:, 0:2].reshape(1, size, size, 2)
        warped = F.grid_sample(
            image, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        planes = out.t().reshape(1, -1, size, size)
        alpha, color = planes[:, 2:3], planes[:, 3:7]
        blended = (1 - alpha) * warped + alpha * color
        identity = levels[-1].grid.constants[:, 0:2]
        grid_change = (out[:, 0:2] - identity).t().reshape(1, 2, size, size)
        return BodyOutputs(blended, alpha.clone(), color.clone(), warped, grid_change)


# ----------------------------------------------------------------------------------------------
# Loading


def read_character_model_yaml(path: Path) -> dict[str, str]:
    """The three ``key: value`` lines of a THA4 ``character_model.yaml`` (a flat mapping)."""
    fix = f"It must hold the keys {', '.join(_YAML_KEYS)} (one 'key: value' per line)."
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PuppetError(f"Cannot read {str(path)!r} ({error}).", fix) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split(" #", 1)[0].strip()
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        key, sep, value = stripped.partition(":")
        value = value.strip()
        if not sep or not value:
            raise PuppetError(f"{str(path)!r} line {number} is not 'key: value': {line!r}.", fix)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    missing = [key for key in _YAML_KEYS if key not in values]
    if missing:
        raise PuppetError(f"{str(path)!r} lacks {', '.join(missing)}.", fix)
    return values


@dataclass
class StudentFiles:
    folder: Path
    character: Path
    face_morpher: Path
    body_morpher: Path

    @classmethod
    def from_folder(cls, folder: Path | str) -> StudentFiles:
        folder = Path(folder).expanduser()
        yaml_path = folder / YAML_NAME if folder.suffix.lower() not in (".yaml", ".yml") else folder
        if not yaml_path.is_file():
            raise PuppetError(
                f"{str(folder)!r} is not a THA4 student folder: {yaml_path.name} not found.",
                "Pass the folder that holds character_model.yaml, face_morpher.pt and"
                " body_morpher.pt (tha4-student:DIR).",
            )
        values = read_character_model_yaml(yaml_path)
        base = yaml_path.parent
        return cls(
            folder=base,
            character=base / values["character_image_file_name"],
            face_morpher=base / values["face_morpher_file_name"],
            body_morpher=base / values["body_morpher_file_name"],
        )


class THA4Student(nn.Module):
    """Face morpher + body morpher; ``forward`` returns the six official outputs."""

    def __init__(self, config: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = config or StudentConfig()
        self.face_morpher = SirenFaceMorpher(self.config)
        self.body_morpher = SirenBodyMorpher(self.config)
        self._face_cache: tuple[bytes, torch.Tensor] | None = None

    @classmethod
    def from_files(cls, files: StudentFiles, device: str = "cpu") -> THA4Student:
        model = cls()
        face = load_checked_state_dict(
            files.face_morpher, face_morpher_shapes(model.config), "THA4 face morpher"
        )
        body = load_checked_state_dict(
            files.body_morpher, body_morpher_shapes(model.config), "THA4 body morpher"
        )
        model.face_morpher.load_state_dict(face)
        model.body_morpher.load_state_dict(body)
        return model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def face_patch(self, pose: torch.Tensor) -> torch.Tensor:
        face_pose = pose.reshape(-1)[: self.config.face_pose_size]
        key = face_pose.cpu().numpy().tobytes()
        if self._face_cache is None or self._face_cache[0] != key:
            self._face_cache = (key, self.face_morpher(face_pose))
        return self._face_cache[1]

    @torch.no_grad()
    def forward(self, image: torch.Tensor, pose: torch.Tensor) -> list[torch.Tensor]:
        """[blended, alpha, color, warped, grid_change, face patch]; index 0 is the image."""
        c = self.config
        face = self.face_patch(pose)
        with_face = image.clone()
        with_face[
            :, :, c.face_top : c.face_top + c.face_size, c.face_left : c.face_left + c.face_size
        ] = face
        body = self.body_morpher(with_face, pose)
        return [body.blended, body.alpha, body.color, body.warped, body.grid_change, face]


# ----------------------------------------------------------------------------------------------
# Image conversion (THA4 convention: linear RGB premultiplied by alpha, [-1, 1])


def image_to_tensor(rgba: np.ndarray) -> torch.Tensor:
    """RGBA uint8 (H, W, 4) -> (1, 4, H, W) float32 as THA4's loader makes it (float32 numpy)."""
    v = rgba.astype(np.float32) / np.float32(255.0)
    rgb = np.clip(v[..., :3], 0.0, 1.0)
    rgb = srgb_to_linear(rgb).astype(np.float32)
    v = np.concatenate([rgb * v[..., 3:4], v[..., 3:4]], axis=-1) * np.float32(2.0) - np.float32(1)
    return torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1)))[None]


def tensor_to_straight_rgba(image: torch.Tensor) -> np.ndarray:
    """(1, 4, H, W) premultiplied linear [-1, 1] -> straight-alpha sRGB RGBA uint8 (H, W, 4)."""
    v = (image[0].float() + 1) / 2
    alpha = v[3].clamp(0, 1)
    rgb = torch.where(alpha < 1e-5, torch.zeros_like(v[:3]), v[:3] / alpha).clamp_(0, 1)
    rgb = linear_to_srgb(rgb)
    rgba = torch.cat([rgb, alpha[None]]).mul_(255).round_().clamp_(0, 255)
    return rgba.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Poser


class THA4StudentPoser:
    """Poses the character a THA4 student was distilled for (the Poser protocol).

    Not re-entrant: the networks keep their activation buffers between frames, so call it from
    one thread at a time.
    """

    dtype = "float32"

    def __init__(self, files: StudentFiles, device: str = "cpu") -> None:
        self.files = files
        self.device = device
        self.model = THA4Student.from_files(files, device)
        self._image: torch.Tensor | None = None

    def load(self, character: Path | np.ndarray) -> None:
        rgba = load_character(character)
        if self.files.character.is_file() and not np.array_equal(
            rgba, load_character(self.files.character)
        ):
            # The student draws its own character's face patch whatever the image is.
            log.warning(
                "This THA4 student was made for %s; another image will look wrong.",
                self.files.character,
            )
        self._image = image_to_tensor(rgba).to(self.device)

    def _pose_tensor(self, pose: PoseVector | np.ndarray) -> torch.Tensor:
        values = pose.values if isinstance(pose, PoseVector) else np.asarray(pose)
        return torch.as_tensor(np.asarray(values, np.float32).reshape(1, -1), device=self.device)

    def posing_outputs(self, pose: PoseVector | np.ndarray) -> list[torch.Tensor]:
        """The six official outputs in the official output space (see THA4Student.forward)."""
        if self._image is None:
            raise PuppetError(
                "The THA4 student poser has no character loaded.", "Call load(character) first."
            )
        return self.model(self._image, self._pose_tensor(pose))

    def pose_raw(self, pose: PoseVector | np.ndarray) -> torch.Tensor:
        """The final image, (1, 4, 512, 512) premultiplied linear RGBA in [-1, 1], unclamped."""
        return self.posing_outputs(pose)[0]

    def pose(self, pose: PoseVector) -> np.ndarray:
        return tensor_to_straight_rgba(self.pose_raw(pose))


def create_poser(
    argument: str, device: str, models_dir: Path | None = None
) -> tuple[THA4StudentPoser, Path]:
    """Registry factory for ``tha4-student:DIR``: the poser and the character it was made for."""
    files = StudentFiles.from_folder(argument)
    if not files.character.is_file():
        raise PuppetError(
            f"The THA4 student's character image {str(files.character)!r} does not exist.",
            f"Put it next to {YAML_NAME} or fix character_image_file_name there.",
        )
    return THA4StudentPoser(files, device), files.character


def parameter_count(config: StudentConfig | None = None) -> int:
    config = config or StudentConfig()
    shapes = {**face_morpher_shapes(config), **body_morpher_shapes(config)}
    return sum(math.prod(shape) for shape in shapes.values())
