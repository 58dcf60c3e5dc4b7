"""Colour-space and alpha helpers shared by posers and outputs (numpy, float32)."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB [0,1] -> linear [0,1] (IEC 61966-2-1), as THA's loaders compute it."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """linear [0,1] -> sRGB [0,1], clipping first, as THA's output converters do."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(
        np.float32
    )


def composite_over(
    rgba: np.ndarray, background_rgb: tuple[int, int, int] | np.ndarray
) -> np.ndarray:
    """Straight-alpha RGBA uint8 (H,W,4) over a colour or an RGB image -> RGB uint8 (H,W,3)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background_rgb, dtype=np.float32)
    rgb = rgba[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB' (or 'RRGGBB') -> (r, g, b); raises ValueError with the expected form."""
    s = text.strip().lstrip("#")
    if len(s) != 6 or any(c not in "0123456789abcdefABCDEF" for c in s):
        raise ValueError(f"{text!r} is not a colour: use #RRGGBB, e.g. #00FF00")
    return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)
