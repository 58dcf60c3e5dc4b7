"""The puppet student: a per-character poser small enough for 2 CPU cores.

It is distilled from a slow teacher (the bundled rig, THA3 or a THA4 student) by
``puppet distill`` (``puppet.training``) and animates the one image it was trained for.
Runtime: numpy + OpenCV only (no torch); the torch module computing the same function, used
for training, is ``poser_models.student_net.StudentNet``. A frame is made in three stages:

1. **Face parts** (un-rotated frame): each part (the character's right eye + brow, left eye
   + brow, mouth; boxes found by probing the teacher) has its own pose MLP over only the
   values it reads (15 for an eye + brow, 11 for the mouth; Fourier input features) and its
   own rank-``part_rank`` basis of premultiplied linear RGBA maps; the part adds
   ``sum_k c_k B_k`` to the neutral character inside its box. Format 1 used one rank-64
   basis over the whole face mixed by one MLP over all 39 values: too small a span for
   moving edges (ghost brows, doubled highlights, a smudged mouth), and every eye x mouth
   combination had to be learned jointly.
2. **Depth layers with head and body warps**: learned soft masks split the face-posed
   character into ``layers`` layers, each with a fill (what the layers in front hide), a
   body flow (polynomial in ``body_y, body_z, breathing``) and a head flow (polynomial in
   ``head_x, head_y, neck_z``); output pixel ``p`` of layer ``l`` reads the layer at
   ``q + head_l(q)``, ``q = p + body_l(p)``; layers are composited back to front ("over"),
   so an edge can slide over another, which one smooth warp cannot do.
3. **Residual**: a premultiplied RGBA correction at ``field_size`` (revealed hair, shading),
   mixed by an MLP over the full pose.

What is warped is the character image, or (``base_delta``, students of THA teachers) the
image plus a fixed ``base.delta``: the teacher's own neutral frame, which THA redraws a little
everywhere, so that the parts only add what an expression changes.

Speed: each layer is warped and composited only inside the rectangle its flows can reach
at the frame's pose (from the body flow's size, cell by cell, and the head flow's largest
value), the head flow is resampled only where the head field can be read, and the products of
four channels by one are done by OpenCV. The frame is the same as with all of the work done
over the whole frame, bit for bit (tested). With ``threads`` 2 (the default on 2 or more
cores) the expression is mixed while the warp fields are, and the frame is then warped,
composited and converted in two row bands at once (the same frame, bit for bit); every
temporary lives in reused buffers (``Scratch``).

Files: ``student.safetensors`` (maps fp16, MLPs fp32) + ``manifest.json`` (format, config,
pose schema, character sha256, teacher, seed, metrics). The character sha256 is taken over
the decoded 512x512 RGBA uint8 pixels, so a re-saved PNG with the same pixels still matches.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from poser_models.image import linear_to_srgb, load_character, srgb_to_linear
from puppet.errors import PuppetError
from puppet.pose import LOWER, NUM_PARAMETERS, PARAMETER_NAMES, UPPER, PoseVector

WEIGHTS_FILE = "student.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "puppet-student/2"
OLD_FORMATS = ("puppet-student/1",)  # the single-basis face of puppet <= this change
FACE_INPUTS = 39  # eyebrow (12) + face (27) values: THA's face-morph slice
HEAD_INDICES = (39, 40, 41)  # head_x, head_y, neck_z
BODY_INDICES = (42, 43, 44)  # body_y, body_z, breathing
MLP_DEPTH = 3  # Linear-SiLU-Linear-SiLU-Linear

Box = tuple[int, int, int, int]  # (top, left, height, width)
Region = tuple[int, int, int, int]  # (row0, row1, col0, col1): rows row0..row1-1


@dataclass
class StudentConfig:
    image_size: int = 512
    face_box: Box = (104, 208, 104, 96)  # image pixels: bounding box of the parts
    # Face parts (image-pixel boxes) and the pose values each one reads: for THA poses the
    # character's right eye + brow, left eye + brow, mouth (puppet.training.teacher_frames
    # .find_parts probes them).
    parts: tuple[Box, ...] = ((108, 208, 56, 48), (108, 256, 56, 48), (168, 232, 32, 48))
    part_inputs: tuple[tuple[int, ...], ...] = ()
    part_rank: int = 192  # colour maps per part
    part_hidden: int = 256
    # Part MLP inputs are [x, sin(pi f x), cos(pi f x)] for these f: sharp changes of the
    # coefficients with the pose (a lid passing over an iris) are then easy to fit.
    fourier: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    field_size: int = 256  # resolution of the head flow and residual fields (full frame)
    head_box: Box = (0, 0, 256, 256)  # in field pixels
    body_box: Box = (0, 0, 128, 128)  # in body-field pixels
    body_field_size: int = 128
    head_degree: int = 3
    body_degree: int = 3
    residual_box: Box = (0, 0, 256, 256)
    residual_rank: int = 16
    residual_hidden: int = 64
    layers: int = 3
    # A THA teacher redraws the whole character a little even at the neutral pose (its editor
    # re-synthesises it: lambda_00's neutral frame is 26 dB from the image over the head
    # box). With ``base_delta`` the student starts from that neutral frame, not the image:
    # ``base.delta`` (image-size RGBA, premultiplied linear) is added to the image once.
    base_delta: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        if not isinstance(data, dict):
            raise PuppetError(
                f"The student config is a JSON {type(data).__name__}, not an object.",
                "The manifest is damaged: re-run `puppet distill`.",
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PuppetError(
                f"Unknown student config fields {unknown}.",
                "The manifest is from another version: re-run `puppet distill`.",
            )

        def tuples(v: object) -> object:
            return tuple(tuples(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: tuples(v) for k, v in data.items()})


def monomial_exponents(variables: int, degree: int) -> list[tuple[int, ...]]:
    """All exponent tuples of total degree <= ``degree``, constant term first."""
    out = [e for e in itertools.product(range(degree + 1), repeat=variables) if sum(e) <= degree]
    return sorted(out, key=lambda e: (sum(e), tuple(-x for x in e)))


def tensor_shapes(config: StudentConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a student file and its shape: the loader's checklist."""
    c = config
    shapes: dict[str, tuple[int, ...]] = {}

    def mlp(prefix: str, inputs: int, hidden: int, outputs: int) -> None:
        for i, (a, b) in enumerate([(inputs, hidden), (hidden, hidden), (hidden, outputs)]):
            shapes[f"{prefix}.{i}.weight"] = (b, a)
            shapes[f"{prefix}.{i}.bias"] = (b,)

    if len(c.part_inputs) != len(c.parts):
        raise PuppetError(
            "The student config has a different number of parts and part inputs.",
            "The manifest is damaged: re-run `puppet distill`.",
        )
    for i, (box, inputs) in enumerate(zip(c.parts, c.part_inputs, strict=True)):
        shapes[f"part{i}.basis"] = (c.part_rank, box[2], box[3], 4)
        mlp(f"part{i}.mlp", len(inputs) * (1 + 2 * len(c.fourier)), c.part_hidden, c.part_rank)
    shapes["head.basis"] = (
        c.layers,
        len(monomial_exponents(3, c.head_degree)),
        c.head_box[2],
        c.head_box[3],
        2,
    )
    shapes["layer.logits"] = (c.layers, c.image_size, c.image_size)
    shapes["layer.fill"] = (c.layers, c.head_box[2], c.head_box[3], 4)
    shapes["body.basis"] = (
        c.layers,
        len(monomial_exponents(3, c.body_degree)),
        c.body_box[2],
        c.body_box[3],
        2,
    )
    shapes["residual.basis"] = (c.residual_rank, c.residual_box[2], c.residual_box[3], 4)
    mlp("residual.mlp", NUM_PARAMETERS, c.residual_hidden, c.residual_rank)
    if c.base_delta:
        shapes["base.delta"] = (c.image_size, c.image_size, 4)
    return shapes


def check_tensors(tensors: dict, config: StudentConfig, what: str) -> None:
    """Every expected key present with its shape, no extra keys, all values finite."""
    expected = tensor_shapes(config)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise PuppetError(
            f"The student {what} does not match its config (missing {missing}, unexpected"
            f" {extra}).",
            "Re-run `puppet distill` to produce a complete student.",
        )
    for name, shape in expected.items():
        value = tensors[name]
        if tuple(value.shape) != shape:
            raise PuppetError(
                f"Student tensor {name!r} in the {what} has shape {tuple(value.shape)},"
                f" expected {shape}.",
                "The file is damaged or from another version: re-run `puppet distill`.",
            )
        if not np.isfinite(np.asarray(value, dtype=np.float32)).all():
            raise PuppetError(
                f"Student tensor {name!r} in the {what} holds NaN or inf values (not finite).",
                "The file is damaged: re-run `puppet distill`.",
            )


# ---------------------------------------------------------------------------------------------
# Colour conversion shared by training and inference.

_SRGB_TO_LINEAR = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
_LUT_STEPS = 16384
_LINEAR_TO_SRGB_U8 = np.clip(
    np.round(255.0 * linear_to_srgb(np.linspace(0.0, 1.0, _LUT_STEPS))), 0, 255
).astype(np.uint8)


def base_image(rgba: np.ndarray, delta: np.ndarray | None) -> np.ndarray:
    """What the student warps: the character, premultiplied linear, plus the file's
    ``base.delta`` when it has one (the teacher's neutral frame minus the image)."""
    source = rgba_to_premultiplied_linear(rgba)
    return source if delta is None else source + delta


def rgba_to_premultiplied_linear(rgba: np.ndarray) -> np.ndarray:
    """Straight sRGB uint8 (..., 4) -> premultiplied linear float32 on [0, 1]."""
    out = _SRGB_TO_LINEAR[rgba]
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out[..., :3] *= alpha
    out[..., 3:4] = alpha
    return out


# Index -> sRGB byte over the whole uint16 range: ratios past 1 (saturated colour) read 255.
_LINEAR_TO_SRGB_U16 = np.full(1 << 16, 255, np.uint8)
_LINEAR_TO_SRGB_U16[:_LUT_STEPS] = _LINEAR_TO_SRGB_U8
# Alpha under a quarter of a byte is written as 0, and so is its colour (the canonical
# transparent pixel, whatever the sum of layers left there). The colour/alpha ratio then
# stays far under 2**31, past which OpenCV's cast to uint16 would wrap instead of saturating.
_ALPHA_FLOOR = 0.25 / 255
_SCALE_AT_FLOOR = (_LUT_STEPS - 1) / _ALPHA_FLOOR


def premultiplied_linear_to_rgba(
    image: np.ndarray, scratch: Scratch | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Premultiplied linear float32 (H, W, 4) -> straight sRGB uint8, clipping to the range.

    colour / alpha is looked up in a 16384-step table (within 0.25 of a byte of the exact
    curve). OpenCV does the passes: its casts to uint16/uint8 round and saturate, which clips
    for free, and it reads and writes the four channels interleaved. ``scratch`` holds the
    temporaries and ``out`` (uint8, the image's shape) gets the result: the poser's frames
    allocate nothing."""
    image = np.asarray(image, dtype=np.float32)  # a float32 crop stays a view: OpenCV reads it
    if image.ndim != 3 or image.shape[0] * image.shape[1] < 4:  # OpenCV would see a scalar
        small = premultiplied_linear_to_rgba(image.reshape(-1, 1, 4).repeat(4, 1))[:, 0]
        return _into(small.reshape(image.shape).astype(np.uint8), out)
    if image.strides[1:] != (16, 4):  # pixels or channels not packed
        image = np.ascontiguousarray(image)
    scratch = scratch or Scratch()
    height, width = image.shape[:2]
    alpha = cv2.extractChannel(image, 3, dst=scratch.array("alpha", (height, width)))
    cv2.min(alpha, 1.0, dst=alpha)
    scale = cv2.max(alpha, _ALPHA_FLOOR, dst=scratch.array("scale", (height, width)))
    cv2.divide(float(_LUT_STEPS - 1), scale, dst=scale)
    cv2.threshold(scale, 0.999 * _SCALE_AT_FLOOR, 0.0, cv2.THRESH_TOZERO_INV, dst=scale)
    zero = scratch.zeros("zero", (height, width))
    scale4 = cv2.merge([scale, scale, scale, zero], dst=scratch.array("scale4", (height, width, 4)))
    index = cv2.multiply(
        image, scale4, dtype=cv2.CV_16U, dst=scratch.array("index", (height, width, 4), np.uint16)
    )
    rgba = scratch.array("rgba", (height, width, 4), np.uint8)
    # np.take converts its indices to intp: into a buffer of ours, not a new array each frame.
    wide = scratch.array("index_intp", (height, width, 4), np.intp)
    np.copyto(wide, index)
    np.take(_LINEAR_TO_SRGB_U16, wide, out=rgba, mode="clip")  # indices are all in range
    byte = cv2.multiply(
        alpha, 255.0, dtype=cv2.CV_8U, dst=scratch.array("byte", (height, width), np.uint8)
    )
    cv2.insertChannel(byte, rgba, 3)
    if out is None:
        return rgba.copy()
    out[...] = rgba
    return out


def _into(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return result
    out[...] = result
    return out


class Scratch:
    """Reusable buffers for a frame's temporaries, by name: each frame takes contiguous views
    of the sizes it needs instead of allocating. Per thread (not shared between bands).

    Allocating them afresh each frame made glibc give the memory back to the system and fault
    it in again in the poser's thread (3,700 page faults a frame, twice the poser's time
    inside the live loop, measured)."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(
        self, name: str, shape: tuple[int, ...], dtype: type = np.float32, fill: bool = False
    ) -> np.ndarray:
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = self._buffers[name] = (np.zeros if fill else np.empty)(size, dtype)
        return buffer[:size].reshape(shape)

    def zeros(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 buffer of zeros, made once: callers only read it."""
        return self.array(name, shape, fill=True)


def image_sha256(rgba: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgba, dtype=np.uint8).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Manifest.


@dataclass
class StudentManifest:
    """What ``manifest.json`` next to ``student.safetensors`` holds."""

    config: StudentConfig
    character_sha256: str
    character_image: str  # relative to the student folder
    teacher: str
    seed: int
    metrics: dict = field(default_factory=dict)
    pose_schema: list[str] = field(default_factory=lambda: list(PARAMETER_NAMES))
    format: str = FORMAT
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["config"] = asdict(self.config)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> StudentManifest:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise PuppetError(
                f"{path} does not exist: this folder is not a puppet student.",
                "Point at a folder made by `puppet distill` (student.safetensors + manifest.json).",
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PuppetError(
                f"{path} is not valid JSON ({error}).", "Re-run `puppet distill`."
            ) from None
        if not isinstance(data, dict):
            raise PuppetError(
                f"{path} holds a JSON {type(data).__name__}, not a student manifest (an object).",
                "Re-run `puppet distill`.",
            )
        if data.get("format") in OLD_FORMATS:
            raise PuppetError(
                f"{Path(path).parent} is a {data['format']} student (one face basis), which this"
                f" version of puppet no longer runs.",
                f"Re-run `puppet distill` for its character to make a {FORMAT} student.",
            )
        if data.get("format") != FORMAT:
            raise PuppetError(
                f"{path} has format {data.get('format')!r}, expected {FORMAT!r}.",
                "Re-run `puppet distill` with this version of puppet.",
            )
        if list(data.get("pose_schema", [])) != list(PARAMETER_NAMES):
            raise PuppetError(
                f"{path} was trained for another pose schema.",
                "Re-run `puppet distill` with this version of puppet.",
            )
        try:
            return cls(
                config=StudentConfig.from_dict(data["config"]),
                character_sha256=data["character_sha256"],
                character_image=data["character_image"],
                teacher=data["teacher"],
                seed=int(data["seed"]),
                metrics=dict(data.get("metrics", {})),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise PuppetError(
                f"{path} is missing a field ({error}).", "Re-run `puppet distill`."
            ) from None


# ---------------------------------------------------------------------------------------------
# Inference.


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def fourier_features(x: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """(n,) values -> (n * (1 + 2F),): [x, sin(pi f x) (f-major), cos(pi f x)]."""
    angles = (np.pi * frequencies[:, None] * x[None]).astype(np.float32)  # (F, n)
    return np.concatenate([x, np.sin(angles).ravel(), np.cos(angles).ravel()])


class StudentPoser:
    """The Poser protocol over a distilled student (numpy + OpenCV, CPU):
    ``pose(PoseVector or (45,) values) -> RGBA uint8 (512, 512, 4)``."""

    def __init__(
        self, tensors: dict[str, np.ndarray], manifest: StudentManifest, folder: Path | None = None
    ) -> None:
        self.device = "cpu"
        self.dtype = "float32"  # maps are stored fp16 and computed in fp32
        self.manifest = manifest
        self.config = c = manifest.config
        self.folder = folder
        check_tensors(tensors, c, "weights")
        t = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        # Basis mixing is a (K,) x (K, M) product over maps kept in fp32 (fp16 on disk).
        self._part_basis = [
            t[f"part{i}.basis"].reshape(c.part_rank, -1) for i in range(len(c.parts))
        ]
        self._part_mixed = [np.empty(b.shape[1], np.float32) for b in self._part_basis]
        self._part_mlp = [
            [
                (t[f"part{i}.mlp.{j}.weight"].T.copy(), t[f"part{i}.mlp.{j}.bias"])
                for j in range(MLP_DEPTH)
            ]
            for i in range(len(c.parts))
        ]
        self._part_inputs = [list(inputs) for inputs in c.part_inputs]
        self._fourier = np.array(c.fourier, np.float32)
        self._head_basis = [
            t["head.basis"][k].reshape(t["head.basis"].shape[1], -1).copy() for k in range(c.layers)
        ]
        self._body_basis = [
            t["body.basis"][k].reshape(t["body.basis"].shape[1], -1).copy() for k in range(c.layers)
        ]
        self._residual_basis = t["residual.basis"].reshape(c.residual_rank, -1)
        self._base_delta = t.get("base.delta")  # None without ``config.base_delta``
        self._residual_mlp = [
            (t[f"residual.mlp.{i}.weight"].T.copy(), t[f"residual.mlp.{i}.bias"])
            for i in range(MLP_DEPTH)
        ]
        logits = t["layer.logits"]
        weights = np.exp(logits - logits.max(axis=0, keepdims=True))
        self._masks = (weights / weights.sum(axis=0, keepdims=True))[..., None]  # (L, H, W, 1)
        top, left, height, width = c.head_box
        fill = np.zeros((c.layers, c.field_size, c.field_size, 4), np.float32)
        fill[:, top : top + height, left : left + width] = t["layer.fill"]
        self._fill = np.stack(
            [
                cv2.resize(f, (c.image_size, c.image_size), interpolation=cv2.INTER_LINEAR)
                for f in fill
            ]
        )
        self._head_exponents = np.array(monomial_exponents(3, c.head_degree), np.float32)
        self._body_exponents = np.array(monomial_exponents(3, c.body_degree), np.float32)
        size, fs = c.image_size, c.field_size
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self._grid = np.ascontiguousarray(np.dstack([xs, ys]))  # (H, W, 2) pixel (x, y)
        self._delta = np.zeros((c.face_box[2], c.face_box[3], 4), np.float32)
        self._head_fields = [np.zeros((fs, fs, 2), np.float32) for _ in range(c.layers)]
        self._body_fields = [
            np.zeros((c.body_field_size, c.body_field_size, 2), np.float32) for _ in range(c.layers)
        ]
        self._residual_field = np.zeros((fs, fs, 4), np.float32)
        self._source: np.ndarray | None = None
        self._layers: np.ndarray | None = None  # (L, H, W, 4) pose-independent layer images
        self._work: np.ndarray | None = None
        # Two bands at once use both cores of a 2-core machine; the live loop sets 1, its
        # tracking thread has the other core.
        self._threads = min(2, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._scratch: list[Scratch] = []  # one per band
        # Per basis, the buffer its maps are mixed into.
        self._head_mixed = [np.empty(b.shape[1], np.float32) for b in self._head_basis]
        self._body_mixed = [np.empty(b.shape[1], np.float32) for b in self._body_basis]
        self._residual_mixed = np.empty(self._residual_basis.shape[1], np.float32)

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path | str) -> StudentPoser:
        """Read ``student.safetensors`` + ``manifest.json`` with shape and finiteness checks."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise PuppetError(
                f"Student folder {str(folder)!r} does not exist.",
                "Make one with `puppet distill IMAGE --out DIR`, then use student:DIR.",
            )
        manifest = StudentManifest.read(folder / MANIFEST_FILE)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise PuppetError(f"{weights} does not exist.", "Re-run `puppet distill`.")
        try:
            tensors = load_file(str(weights))
        except (SafetensorError, OSError) as error:
            raise PuppetError(
                f"Cannot read {weights} ({error}).", "The file is damaged: re-run `puppet distill`."
            ) from None
        return cls(tensors, manifest, folder)

    @property
    def character_path(self) -> Path | None:
        if self.folder is None:
            return None
        return (self.folder / self.manifest.character_image).resolve()

    def load(self, character: Path | str | np.ndarray) -> None:
        rgba = load_character(character)
        if image_sha256(rgba) != self.manifest.character_sha256:
            raise PuppetError(
                "This student was trained for another image.",
                "Run `puppet distill IMAGE ...` to train one for this character, or use the"
                " character the student was made for.",
            )
        self._source = base_image(rgba, self._base_delta)
        self._layers = self._source[None] * self._masks + self._fill
        self._work = self._layers.copy()
        # Per layer, the face box of the layer image and its mask over four channels: each
        # frame writes layer + delta x mask there with two OpenCV passes (no broadcasting).
        top, left, height, width = self.config.face_box
        box = (slice(top, top + height), slice(left, left + width))
        self._face_layers = [np.ascontiguousarray(layer[box]) for layer in self._layers]
        self._face_masks = [
            np.ascontiguousarray(np.repeat(mask[box], 4, axis=2)) for mask in self._masks
        ]
        self._find_regions()

    def _find_regions(self) -> None:
        """What each frame's regions are computed from (``_frame_regions``).

        Output pixel p of a layer reads the layer at p + flow(p), within |flow(p)| + 1 of p
        (bilinear), so only pixels nearer than that to the layer's content can be non-zero.
        Stored: for every cell of the body field, the distance (image px) from the cell's
        nearest pixel to the content (its alpha, and the face box, where the expression adds).
        """
        assert self._layers is not None
        c = self.config
        size = c.image_size
        top, left, height, width = c.face_box
        cell = size // c.body_field_size
        self._cell = cell if cell * c.body_field_size == size else 0  # 0: whole-frame regions
        self._cell_distance: list[np.ndarray | None] = []
        for layer in range(c.layers):
            content = self._layers[layer][..., 3] > 1.0 / 1024
            content[top : top + height, left : left + width] |= (
                self._masks[layer][top : top + height, left : left + width, 0] > 1.0 / 1024
            )
            if not content.any():
                self._cell_distance.append(None)
                continue
            if not self._cell:
                self._cell_distance.append(np.zeros((1, 1), np.float32))
                continue
            distance = cv2.distanceTransform(
                (~content).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
            )
            n = c.body_field_size
            self._cell_distance.append(distance.reshape(n, cell, n, cell).min(axis=(1, 3)))
        rt, rl, rh, rw = c.residual_box
        factor = size // c.field_size
        self._residual_region = (
            max(0, rt * factor - 2),
            min(size, (rt + rh) * factor + 2),
            max(0, rl * factor - 2),
            min(size, (rl + rw) * factor + 2),
        )
        # Image rows/columns where the head field can be non-zero at q (bilinear reads one
        # field pixel on, and a box at the field's edge is replicated beyond it).
        ht, hl, hh, hw = c.head_box
        fs, inv = c.field_size, size / c.field_size
        self._head_reach = (
            -np.inf if ht == 0 else (ht - 1.5) * inv,
            np.inf if ht + hh >= fs else (ht + hh + 0.5) * inv,
            -np.inf if hl == 0 else (hl - 1.5) * inv,
            np.inf if hl + hw >= fs else (hl + hw + 0.5) * inv,
        )
        self._out = np.zeros((size, size, 4), np.float32)
        self._cleared: Region = (0, 0, 0, 0)  # what of _out the last frame wrote

    def _frame_regions(self, head_reach: list[float]) -> list[Region | None]:
        """Per layer, the output rectangle that can be non-zero at this frame's pose.

        A cell is kept when its distance to the content is at most the largest flow it can
        have: its body flow's |x| + |y| over the cell and its neighbours (the field is
        upsampled bilinearly), plus the largest head flow anywhere, plus one pixel."""
        c = self.config
        size = c.image_size
        regions: list[Region | None] = []
        for layer, distance in enumerate(self._cell_distance):
            if distance is None:
                regions.append(None)
                continue
            if not self._cell:
                regions.append((0, size, 0, size))
                continue
            body = self._body_fields[layer]
            reach = cv2.dilate(
                cv2.add(cv2.absdiff(body[..., 0], 0.0), cv2.absdiff(body[..., 1], 0.0)), None
            )
            ys, xs = np.nonzero(distance <= reach + (head_reach[layer] + 2.0))
            if len(ys) == 0:
                regions.append(None)
                continue
            cell = self._cell
            regions.append(
                (int(ys.min()) * cell, int(ys.max() + 1) * cell,
                 int(xs.min()) * cell, int(xs.max() + 1) * cell)
            )  # fmt: skip
        return regions

    # -- posing ------------------------------------------------------------------------------
    @staticmethod
    def _mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
        for i, (weight, bias) in enumerate(layers):
            x = x @ weight + bias
            if i < len(layers) - 1:
                x = _silu(x)
        return x

    @staticmethod
    def _mix(
        coefficients: np.ndarray, basis: np.ndarray, mixed: np.ndarray, box: Box, out: np.ndarray
    ) -> None:
        """``out``'s ``box`` = the maps of ``basis`` mixed by ``coefficients``, through the
        basis's own ``mixed`` buffer (no allocation)."""
        top, left, height, width = box
        np.matmul(coefficients.astype(np.float32, copy=False), basis, out=mixed)
        out[top : top + height, left : left + width] = mixed.reshape(height, width, out.shape[2])

    def face_delta(self, values: np.ndarray) -> np.ndarray:
        """What the expression adds to the face box (h, w, 4), premultiplied linear.

        The array is reused by the next call."""
        c = self.config
        top, left = c.face_box[:2]
        delta = self._delta
        delta[:] = 0.0
        for box, inputs, mlp, basis, mixed in zip(
            c.parts, self._part_inputs, self._part_mlp, self._part_basis, self._part_mixed,
            strict=True,
        ):  # fmt: skip
            pt, pl, ph, pw = box
            coefficients = self._mlp(mlp, fourier_features(values[inputs], self._fourier))
            np.matmul(coefficients, basis, out=mixed)
            target = delta[pt - top : pt - top + ph, pl - left : pl - left + pw]
            cv2.add(target, mixed.reshape(ph, pw, 4), dst=target)
        return delta

    def pose_premultiplied(self, pose: PoseVector | np.ndarray) -> np.ndarray:
        """The posed frame as premultiplied linear float32 (512, 512, 4), unclipped.

        ``pose``: (45,) values or a ``PoseVector``. The array is reused by the next call.
        """
        return self._pose(pose)[0]

    def _pose(
        self, pose: PoseVector | np.ndarray, frame: np.ndarray | None = None
    ) -> tuple[np.ndarray, Region]:
        """(the premultiplied frame, the rectangle outside which it is 0); with ``frame``
        (uint8 RGBA) that rectangle is also converted into it.

        The pose's fields are computed first; then the frame is made in horizontal bands,
        ``threads`` at once (every step after the fields is per pixel, so the bands give the
        frame the whole-frame pass gives, bit for bit)."""
        if self._layers is None or self._work is None:
            raise PuppetError("The student has no character loaded.", "Call load() first.")
        c = self.config
        values = np.asarray(getattr(pose, "values", pose), np.float32)
        if values.shape != (NUM_PARAMETERS,):
            raise ValueError(f"pose must have shape ({NUM_PARAMETERS},), got {values.shape}")
        x = np.clip(values, LOWER, UPPER)
        # The expression (face parts into each layer's image) and the warp fields are
        # independent: with two threads they are computed at the same time.
        pool = self._band_pool() if self.threads > 1 else None
        expression = pool.submit(self._apply_expression, x) if pool is not None else None
        if expression is None:
            self._apply_expression(x)
        try:
            head = np.prod(x[list(HEAD_INDICES)] ** self._head_exponents, axis=1)
            body = np.prod(x[list(BODY_INDICES)] ** self._body_exponents, axis=1)
            head_reach = []
            for layer in range(c.layers):
                self._mix(body, self._body_basis[layer], self._body_mixed[layer], c.body_box,
                          self._body_fields[layer])  # fmt: skip
                self._mix(head, self._head_basis[layer], self._head_mixed[layer], c.head_box,
                          self._head_fields[layer])  # fmt: skip
                field = self._head_fields[layer]
                head_reach.append(float(cv2.norm(field[..., 0], cv2.NORM_INF))
                                  + float(cv2.norm(field[..., 1], cv2.NORM_INF)))  # fmt: skip
            self._mix(
                self._mlp(self._residual_mlp, x),
                self._residual_basis,
                self._residual_mixed,
                c.residual_box,
                self._residual_field,
            )
            regions = self._frame_regions(head_reach)
            union = _union([r for r in regions if r is not None] + [self._residual_region])
            # What this frame writes or must clear: its own rectangle and the last frame's.
            cleared = (
                union if self._cleared[0] >= self._cleared[1] else _union([self._cleared, union])
            )
            self._cleared = union
            bands = _bands(regions + [self._residual_region, union], cleared, self.threads)
        finally:  # never leave the expression job writing into the next frame's images
            if expression is not None:
                expression.result()
        while len(self._scratch) < len(bands):
            self._scratch.append(Scratch())
        if len(bands) == 1 or pool is None:
            for rows in bands:
                self._band(regions, cleared, union, rows, frame, self._scratch[0])
        else:
            pending = [
                pool.submit(self._band, regions, cleared, union, rows, frame, scratch)
                for rows, scratch in zip(bands[1:], self._scratch[1:], strict=False)
            ]
            try:
                self._band(regions, cleared, union, bands[0], frame, self._scratch[0])
            finally:
                wait(pending)  # no band of this frame may still run during the next
            for job in pending:
                job.result()
        return self._out, union

    def _apply_expression(self, x: np.ndarray) -> None:
        """Each layer's image at this expression: its face box is the layer plus the face
        parts' delta under the layer's mask."""
        top, left, height, width = self.config.face_box
        box = (slice(top, top + height), slice(left, left + width))
        delta = self.face_delta(x)
        assert self._work is not None
        for layer, work in enumerate(self._work):
            cv2.add(
                self._face_layers[layer],
                cv2.multiply(delta, self._face_masks[layer]),
                dst=work[box],
            )

    def _band_pool(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_size != self.threads - 1:
            self._close_pool()
            self._pool = ThreadPoolExecutor(self.threads - 1, "puppet-student")
            self._pool_size = self.threads - 1
        return self._pool

    def _band(
        self,
        regions: list[Region | None],
        cleared: Region,
        union: Region,
        rows: tuple[int, int],
        frame: np.ndarray | None,
        scratch: Scratch,
    ) -> None:
        """Rows ``rows`` of the frame: each layer warped and composited back to front, the
        residual added, and (with ``frame``) the colour conversion of the frame's rectangle.
        Temporaries live in ``scratch`` (one per band)."""
        c = self.config
        size = c.image_size
        scale = c.field_size / size
        b0, b1 = rows
        out = self._out
        out[b0:b1, cleared[2] : cleared[3]] = 0.0
        h0, h1, h2, h3 = self._head_reach
        first = True
        for layer, region in enumerate(regions):
            if region is None:
                continue
            y0, y1, x0, x1 = region
            y0, y1 = max(y0, b0), min(y1, b1)
            if y0 >= y1:
                continue
            shape = (y1 - y0, x1 - x0)
            body_flow = _upsampled(self._body_fields[layer], size, (y0, y1, x0, x1), scratch)
            # Two-channel (x, y) maps throughout: cv2 reads them interleaved, no channel splits.
            q = cv2.add(self._grid[y0:y1, x0:x1], body_flow, dst=scratch.array("q", (*shape, 2)))
            # The head flow is 0 where q cannot reach the head field: remap only the rows and
            # columns of the region where it can (|q - p| <= the largest body flow).
            move = float(cv2.norm(body_flow, cv2.NORM_INF)) + 1.0
            r0 = max(y0, int(np.floor(h0 - move))) if np.isfinite(h0) else y0
            r1 = min(y1, int(np.ceil(h1 + move)) + 1) if np.isfinite(h1) else y1
            s0 = max(x0, int(np.floor(h2 - move))) if np.isfinite(h2) else x0
            s1 = min(x1, int(np.ceil(h3 + move)) + 1) if np.isfinite(h3) else x1
            if r0 < r1 and s0 < s1:
                near = q[r0 - y0 : r1 - y0, s0 - x0 : s1 - x0]
                near_shape = (r1 - r0, s1 - s0, 2)
                field_map = cv2.addWeighted(
                    near, scale, near, 0.0, 0.5 * scale - 0.5,
                    dst=scratch.array("field_map", near_shape),
                )  # fmt: skip
                head_flow = cv2.remap(
                    self._head_fields[layer],
                    field_map,
                    None,
                    cv2.INTER_LINEAR,
                    dst=scratch.array("head_flow", near_shape),
                    borderMode=cv2.BORDER_REPLICATE,
                )
                cv2.add(near, head_flow, dst=near)
            image = cv2.remap(
                self._work[layer],
                q,
                None,
                cv2.INTER_LINEAR,
                dst=scratch.array("image", (*shape, 4)),
                borderMode=cv2.BORDER_REPLICATE,
            )
            # Back to front, "over" in premultiplied alpha, in OpenCV: its per-pixel products
            # of four channels by one are ~6x faster than numpy's broadcasting.
            target = out[y0:y1, x0:x1]
            if not first:
                behind = cv2.extractChannel(image, 3, dst=scratch.array("behind", shape))
                cv2.subtract(1.0, behind, dst=behind)
                behind4 = cv2.merge(
                    [behind, behind, behind, behind], dst=scratch.array("behind4", (*shape, 4))
                )
                cv2.multiply(target, behind4, dst=target)
            cv2.add(target, image, dst=target)  # the first layer: the frame is cleared to 0
            first = False
        r0, r1, r2, r3 = self._residual_region
        r0, r1 = max(r0, b0), min(r1, b1)
        if r0 < r1:
            target = out[r0:r1, r2:r3]
            residual = _upsampled(self._residual_field, size, (r0, r1, r2, r3), scratch)
            cv2.add(target, residual, dst=target)
        u0, u1 = max(union[0], b0), min(union[1], b1)
        if frame is not None and u0 < u1:
            premultiplied_linear_to_rgba(
                out[u0:u1, union[2] : union[3]], scratch, frame[u0:u1, union[2] : union[3]]
            )

    @property
    def threads(self) -> int:
        """How many bands of each frame are worked on at once (threads of this process)."""
        return self._threads

    @threads.setter
    def threads(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"threads must be at least 1, got {count}")
        self._threads = int(count)

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close(self) -> None:
        """Stop the band threads (a later frame starts them again)."""
        self._close_pool()

    def pose(self, pose: PoseVector | np.ndarray) -> np.ndarray:
        """RGBA uint8 (512, 512, 4), straight alpha, sRGB."""
        size = self.config.image_size
        frame = np.zeros((size, size, 4), np.uint8)  # new: an output may hold the last one
        self._pose(pose, frame)
        return frame


def _bands(weights: list[Region | None], rows: Region, count: int) -> list[tuple[int, int]]:
    """``rows``' rows cut into at most ``count`` bands of about equal work, the work of a row
    being the width of the rectangles of ``weights`` that cross it."""
    start, stop = rows[0], rows[1]
    if count <= 1 or stop - start < 2 * count:
        return [(start, stop)]
    work = np.ones(stop - start)  # clearing a row costs a little too
    for region in weights:
        if region is not None:
            work[max(region[0], start) - start : max(min(region[1], stop) - start, 0)] += (
                region[3] - region[2]
            )
    total = np.cumsum(work)
    cuts = np.searchsorted(total, total[-1] * np.arange(1, count) / count) + start
    edges = [start, *sorted(set(int(c) for c in cuts if start < c < stop)), stop]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _upsampled(
    field: np.ndarray, size: int, region: Region, scratch: Scratch | None = None
) -> np.ndarray:
    """``cv2.resize(field, (size, size), INTER_LINEAR)[region]``, resizing only the field
    cells under the region and one more on each side: each output pixel reads the same two
    cells with the same weights, and the crop's own edges fall in the margin cut off.
    With ``scratch`` the resized cells go into its ``upsampled`` buffer (a view of it is
    returned, valid until the next call)."""
    factor = size // field.shape[0]
    if factor * field.shape[0] != size or field.shape[0] != field.shape[1]:
        y0, y1, x0, x1 = region
        return cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
    y0, y1, x0, x1 = region
    n = field.shape[0]
    a0, a1 = max(0, y0 // factor - 1), min(n, -(-y1 // factor) + 1)
    b0, b1 = max(0, x0 // factor - 1), min(n, -(-x1 // factor) + 1)
    crop = field[a0:a1, b0:b1]
    shape = ((a1 - a0) * factor, (b1 - b0) * factor, field.shape[2])
    dst = None if scratch is None else scratch.array("upsampled", shape)
    big = cv2.resize(crop, shape[1::-1], dst=dst, interpolation=cv2.INTER_LINEAR)
    return big[y0 - a0 * factor : y1 - a0 * factor, x0 - b0 * factor : x1 - b0 * factor]


def _union(regions: list[Region]) -> Region:
    return (
        min(r[0] for r in regions),
        max(r[1] for r in regions),
        min(r[2] for r in regions),
        max(r[3] for r in regions),
    )


def create_poser(
    argument: str, device: str, models_dir: Path | None = None
) -> tuple[StudentPoser, Path]:
    """Registry factory for ``student:DIR`` (and ``default``): the student and its image."""
    # The student always runs on the CPU (numpy + OpenCV): it is real-time there, and a GPU
    # would spend longer on transfers than on the few remaps; ``device`` is accepted and ignored.
    del device, models_dir
    poser = StudentPoser.from_folder(Path(argument).expanduser())
    assert poser.character_path is not None
    return poser, poser.character_path
