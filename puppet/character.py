"""Loading and checking the one character image every poser animates.

The THA input spec: a 512x512 RGBA image, one upright character facing forward, background
alpha 0, head roughly filling the 128x128 box x 192-320, y 64-192 (the THA3 eyebrow crop).
Images of another size are centre-cropped to a square and resized to 512 with LANCZOS, as the
official THA3 loader does, with a warning; an image without real transparency is refused.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from puppet.atomic import atomic_write_bytes
from puppet.errors import PuppetError

log = logging.getLogger(__name__)

SIZE = 512
# (x0, y0, x1, y1), end-exclusive: where THA expects the head (THA3 eyebrow crop) ...
HEAD_BOX = (192, 64, 320, 192)
# ... and where the THA4 student pastes its face patch (centre x=256, y=144).
THA4_FACE_BOX = (192, 80, 320, 208)
OPAQUE = 128  # alpha at or above this counts as "covered" in the coverage figures

_RGBA_FIX = (
    "Save it as a 512x512 RGBA PNG with a transparent background (alpha 0 around the character)."
)


def prepare_character(source: Path | str | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The character as RGBA uint8 (512, 512, 4) plus the warnings about what was changed.

    Raises PuppetError for a missing or unreadable file, an image without an alpha channel
    and an image with no transparent pixel (THA needs the background cut out).
    """
    name = "the character image" if isinstance(source, np.ndarray) else f"{str(source)!r}"
    rgba = _read_rgba(source) if not isinstance(source, np.ndarray) else _check_array(source)
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        raise PuppetError(
            f"{name} has no transparent pixels: THA posers need the background cut out.",
            _RGBA_FIX,
        )
    if alpha.max() == 0:
        raise PuppetError(f"{name} is fully transparent: there is no character in it.", _RGBA_FIX)
    warnings: list[str] = []
    height, width = alpha.shape
    if height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        rgba = rgba[top : top + side, left : left + side]
        warnings.append(
            f"{name} is {width}x{height}, not square: centre-cropped to {side}x{side}"
            + (f" and resized to {SIZE}x{SIZE}." if side != SIZE else ".")
            + " Crop it yourself to choose what is kept."
        )
    if rgba.shape[0] != SIZE:
        if height == width:
            warnings.append(f"{name} is {width}x{height}: resized to {SIZE}x{SIZE}.")
        rgba = np.asarray(Image.fromarray(rgba, "RGBA").resize((SIZE, SIZE), Image.LANCZOS))
    return np.ascontiguousarray(rgba, dtype=np.uint8), warnings


def load_character(source: Path | str | np.ndarray) -> np.ndarray:
    """The character as RGBA uint8 (512, 512, 4); size fixes are logged as warnings."""
    rgba, warnings = prepare_character(source)
    for warning in warnings:
        log.warning(warning)
    return rgba


def _read_rgba(path: Path | str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise PuppetError(
            f"Character image {str(path)!r} does not exist.",
            "Check the path, or pass --character PATH to a 512x512 RGBA PNG.",
        )
    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                image.mode == "P" and "transparency" in image.info
            )
            if not has_alpha:
                raise PuppetError(
                    f"Character image {str(path)!r} has no alpha channel (mode {image.mode}):"
                    " it needs a transparent background.",
                    _RGBA_FIX,
                )
            return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise PuppetError(
            f"Cannot read character image {str(path)!r} ({error.__class__.__name__}: {error}).",
            _RGBA_FIX,
        ) from None


def _check_array(array: np.ndarray) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise PuppetError(
            f"The character image array has shape {array.shape}; expected (H, W, 4) RGBA.",
            _RGBA_FIX,
        )
    if array.shape[2] == 3:
        raise PuppetError(
            "The character image has no alpha channel: it needs a transparent background.",
            _RGBA_FIX,
        )
    if array.dtype != np.uint8:
        raise PuppetError(
            f"The character image array is {array.dtype}; expected uint8 RGBA.", _RGBA_FIX
        )
    return array


@dataclass
class CharacterReport:
    """What `check_character` found; fractions are in [0, 1]."""

    path: Path
    original_size: tuple[int, int]  # (width, height) before any crop/resize
    alpha_coverage: float  # fraction of the 512x512 image with alpha >= 128
    head_box_coverage: float  # same, inside HEAD_BOX
    semi_transparent: float  # fraction of pixels with 0 < alpha < 255
    overlay_png: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings


def check_character(image_path: Path | str, out_png: Path | str) -> CharacterReport:
    """Check a character against the THA input spec and draw the head box over it.

    Writes ``out_png`` (the image over a checkerboard with the head box in red and the THA4
    face patch in blue) so the user can see whether their art fits. Unusable images raise
    PuppetError exactly as `load_character` does; usable ones with problems get warnings.
    """
    image_path, out_png = Path(image_path), Path(out_png)
    rgba, warnings = prepare_character(image_path)
    with Image.open(image_path) as image:  # readable: prepare_character just read it
        original_size = image.size
    alpha = rgba[..., 3]
    covered = alpha >= OPAQUE
    x0, y0, x1, y1 = HEAD_BOX
    alpha_coverage = float(covered.mean())
    head_coverage = float(covered[y0:y1, x0:x1].mean())
    semi = float(((alpha > 0) & (alpha < 255)).mean())

    if head_coverage < 0.35:
        warnings.append(
            f"Only {head_coverage:.0%} of the head box (x {x0}-{x1}, y {y0}-{y1}) is covered:"
            " scale or move the character so its head fills the red box."
        )
    if alpha_coverage > 0.85:
        warnings.append(
            f"{alpha_coverage:.0%} of the image is opaque: the background is probably not cut out."
        )
    if semi > 0.25:
        warnings.append(
            f"{semi:.0%} of the pixels are semi-transparent: the background should be alpha 0."
        )
    border = np.concatenate([covered[0], covered[-1], covered[:, 0], covered[:, -1]])
    if covered[0].mean() > 0.05:
        warnings.append("The character touches the top edge: leave room above the head.")
    elif border.mean() > 0.25:
        warnings.append("Much of the image border is opaque: is the background transparent?")

    _write_overlay(rgba, out_png)
    return CharacterReport(
        path=image_path,
        original_size=original_size,
        alpha_coverage=alpha_coverage,
        head_box_coverage=head_coverage,
        semi_transparent=semi,
        overlay_png=out_png,
        warnings=warnings,
    )


def _write_overlay(rgba: np.ndarray, out_png: Path) -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    checker = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 200, 150).astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + checker * (1.0 - alpha)
    canvas = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    fx0, fy0, fx1, fy1 = THA4_FACE_BOX
    draw.rectangle((fx0, fy0, fx1 - 1, fy1 - 1), outline=(40, 90, 255), width=1)
    x0, y0, x1, y1 = HEAD_BOX
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0), width=2)
    draw.text((x0 + 3, y0 - 12), "head box", fill=(255, 0, 0))
    draw.text((fx0 + 3, fy1 + 2), "THA4 face patch", fill=(40, 90, 255))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(out_png, buffer.getvalue())
