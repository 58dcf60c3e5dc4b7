"""Checking a user's character image against the THA input spec (see poser_models.image)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from poser_models.image import HEAD_BOX, OPAQUE, SIZE, THA4_FACE_BOX, prepare_character
from puppet.atomic import atomic_write_bytes


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
