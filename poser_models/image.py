"""The poser's input image: loading the character and the one sRGB curve (numpy).

The THA input spec: a 512x512 RGBA image, one upright character facing forward, background
alpha 0, head roughly filling the 128x128 box x 192-320, y 64-192 (the THA3 eyebrow crop).
Images of another size are centre-cropped to a square and resized to 512 with LANCZOS, as the
official THA3 loader does, with a warning; an image without real transparency is refused.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from puppet.errors import PuppetError

log = logging.getLogger(__name__)

SIZE = 512
# (x0, y0, x1, y1), end-exclusive: where THA expects the head (THA3 eyebrow crop) ...
HEAD_BOX = (192, 64, 320, 192)
# ... and where the THA4 student pastes its face patch (centre x=256, y=144).
THA4_FACE_BOX = (192, 80, 320, 208)
OPAQUE = 128  # alpha at or above this counts as "covered" in the coverage figures
# Largest image decoded, checked from the header before any pixel is read: a small file can
# declare a huge image (a 714 KB PNG of 13370x13370 takes 2.85 GB decoded).
MAX_PIXELS = 40_000_000  # 40 megapixels (e.g. 6324x6324), far above the 512x512 THA needs

_RGBA_FIX = (
    "Save it as a 512x512 RGBA PNG with a transparent background (alpha 0 around the character)."
)


def srgb_to_linear(x):  # noqa: ANN001, ANN201 - numpy array or torch tensor in, same out
    """sRGB [0,1] -> linear [0,1] (IEC 61966-2-1), as THA's loaders compute it, clipping first.

    The project's one sRGB curve: written with operators that numpy arrays and torch tensors
    share, so the posers' numpy and torch paths use it as it is (dtype and device kept; the
    unselected branch is multiplied by False, so the result equals ``where`` bit for bit).
    """
    x = x.clip(0.0, 1.0)
    low = x <= 0.04045
    return low * (x / 12.92) + ~low * ((x + 0.055) / 1.055) ** 2.4


def linear_to_srgb(x):  # noqa: ANN001, ANN201 - numpy array or torch tensor in, same out
    """linear [0,1] -> sRGB [0,1], clipping first, as THA's output converters do."""
    x = x.clip(0.0, 1.0)
    low = x <= 0.0031308
    return low * (12.92 * x) + ~low * (1.055 * x ** (1.0 / 2.4) - 0.055)


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
        with open_image_checked(path) as image:
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
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise PuppetError(
            f"Cannot read character image {str(path)!r} ({error.__class__.__name__}: {error}).",
            _RGBA_FIX,
        ) from None


def open_image_checked(path: Path | str) -> Image.Image:
    """Open an image lazily (header only) and refuse it above MAX_PIXELS before any decoding.

    PIL's own bomb warning (a stderr line above 89 MP) is silenced: check_pixel_count says it.
    Raises PuppetError for too many pixels, PIL's errors for a file it cannot read.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    try:
        check_pixel_count(image.size, str(path))
    except PuppetError:
        image.close()
        raise
    return image


def check_pixel_count(size: tuple[int, int], name: str) -> None:
    """Refuse an image above MAX_PIXELS from its declared size, before decoding it."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise PuppetError(
            f"Image {name!r} is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
            f"puppet reads at most {MAX_PIXELS / 1e6:.0f} megapixels.",
            "Scale it down first (THA characters are 512x512).",
        )


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
