"""A puppet student packed for the browser: what the browser source's page downloads once to
render the student itself (``--output browser --render client``).

Two files, served as ``/student.json`` and ``/student.bin``:

- the manifest (JSON): the student's config, the monomial exponents of its flows, the pose
  ranges, and for every array its dtype, shape and byte offset in the binary;
- the binary: the arrays back to back, little-endian, each at an offset that is a multiple of
  16 (so the page can view them as typed arrays without copying). Maps are float16 as in the
  student file, the MLPs float32.

The pose-independent parts are computed here once instead of in the page: the layer images
(``character x softmax(logits) + upsampled fill``, premultiplied linear, float16), the layer
masks inside the face box (float32: they scale the face delta every frame) and the
linear -> sRGB byte table of ``premultiplied_linear_to_rgba``. The page
(``puppet/outputs/web/student.js``) then computes exactly ``StudentPoser.pose``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from poser_models.image import linear_to_srgb, load_character
from poser_models.student import (
    BODY_INDICES,
    HEAD_INDICES,
    MLP_DEPTH,
    WEIGHTS_FILE,
    StudentPoser,
    base_image,
    monomial_exponents,
)
from puppet.errors import PuppetError
from puppet.pose import LOWER, NUM_PARAMETERS, UPPER

WEB_FORMAT = "puppet-web-student/1"
SRGB_TABLE_STEPS = 16384  # as premultiplied_linear_to_rgba's table
_ALIGN = 16


@dataclass(frozen=True)
class WebStudent:
    """A student ready to serve: ``manifest`` (JSON bytes) and ``weights`` (the binary)."""

    folder: Path
    manifest: bytes
    weights: bytes


def export_web_student(folder: Path | str) -> WebStudent:
    """Pack the student in ``folder`` for the page. A missing or damaged student, or one whose
    character image is gone or changed, raises one PuppetError (the loader's checks)."""
    folder = Path(folder).expanduser()
    poser = StudentPoser.from_folder(folder)  # shapes, finiteness, format, schema
    character = poser.character_path
    assert character is not None
    poser.load(character)  # the character's sha256 against the manifest
    from safetensors.numpy import load_file

    try:
        stored = load_file(str(folder / WEIGHTS_FILE))
    except Exception as error:  # noqa: BLE001 - changed on disk since the check above
        raise PuppetError(
            f"Cannot read {folder / WEIGHTS_FILE} ({error}).",
            "The file is damaged: re-run `puppet distill`.",
        ) from None
    tensors = {name: value.astype(np.float32) for name, value in stored.items()}
    c = poser.config
    arrays: dict[str, np.ndarray] = {}
    layers, face_masks = _layer_images(tensors, load_character(character), poser)
    arrays["layers"] = layers.astype("<f2")
    arrays["face_masks"] = face_masks.astype("<f4")
    for i in range(len(c.parts)):
        arrays[f"part{i}.basis"] = tensors[f"part{i}.basis"].astype("<f2")
    for name in ("head.basis", "body.basis", "residual.basis"):
        arrays[name] = tensors[name].astype("<f2")
    for prefix in [f"part{i}.mlp" for i in range(len(c.parts))] + ["residual.mlp"]:
        for j in range(MLP_DEPTH):
            for kind in ("weight", "bias"):
                name = f"{prefix}.{j}.{kind}"
                arrays[name] = tensors[name].astype("<f4")
    steps = np.linspace(0.0, 1.0, SRGB_TABLE_STEPS)
    arrays["srgb_table"] = np.clip(np.round(255.0 * linear_to_srgb(steps)), 0, 255).astype(np.uint8)

    blob = bytearray()
    entries = {}
    for name, array in arrays.items():
        blob += b"\0" * (-len(blob) % _ALIGN)
        entries[name] = {
            "dtype": {"f2": "float16", "f4": "float32", "u1": "uint8"}[array.dtype.str[1:]],
            "shape": list(array.shape),
            "offset": len(blob),
        }
        blob += np.ascontiguousarray(array).tobytes()
    manifest = {
        "format": WEB_FORMAT,
        "config": asdict(c),
        "mlp_depth": MLP_DEPTH,
        "head_indices": list(HEAD_INDICES),
        "body_indices": list(BODY_INDICES),
        "head_exponents": monomial_exponents(3, c.head_degree),
        "body_exponents": monomial_exponents(3, c.body_degree),
        "pose_size": NUM_PARAMETERS,
        "lower": [float(v) for v in LOWER],
        "upper": [float(v) for v in UPPER],
        "arrays": entries,
        "bytes": len(blob),
    }
    return WebStudent(folder, json.dumps(manifest).encode(), bytes(blob))


def _layer_images(
    tensors: dict[str, np.ndarray], rgba: np.ndarray, poser: StudentPoser
) -> tuple[np.ndarray, np.ndarray]:
    """(layers (L, S, S, 4), face-box masks (L, fh, fw)): the same arithmetic as
    ``StudentPoser.__init__``/``load`` (softmax masks, fills upsampled by cv2.resize), redone
    here from the file so the page does not depend on the runtime's private arrays."""
    c = poser.config
    logits = tensors["layer.logits"]
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    masks = weights / weights.sum(axis=0, keepdims=True)
    top, left, height, width = c.head_box
    fill = np.zeros((c.layers, c.field_size, c.field_size, 4), np.float32)
    fill[:, top : top + height, left : left + width] = tensors["layer.fill"]
    size = c.image_size
    fills = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in fill])
    source = base_image(rgba, tensors.get("base.delta"))
    layers = source[None] * masks[..., None] + fills
    ft, fl, fh, fw = c.face_box
    return layers, np.ascontiguousarray(masks[:, ft : ft + fh, fl : fl + fw])
