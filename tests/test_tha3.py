"""THA3 networks, pipeline and loader against the reference fixtures of the official code.

The fixtures (../shared/fixtures/tha3) hold inputs/outputs the official THA3 code produced with
weights from a closed formula (its README, section 1); the weights are rebuilt here and checked
against the fixture manifest's sha256 before use. ``tha3_real_editor`` holds one real official
trained network (separable_float editor, CC BY 4.0) with its recorded outputs.
All computation is fp32 on CPU (the half variants hold fp16 weights upcast to fp32).
"""

from __future__ import annotations

import gc
import hashlib
import json
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poser_models import tha3
from poser_models.registry import create_poser
from poser_models.tha3 import (
    NETWORKS,
    VARIANTS,
    THA3Poser,
    build_tha3_network,
    load_tha3_network,
    rgba8_to_tensor,
)
from puppet.errors import PuppetError
from puppet.model_store import export_onnx
from puppet.pose import PoseVector

NETWORK_TOLERANCE = 1e-3
PIPELINE_MAX, PIPELINE_MEAN = 1e-2, 2e-4


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# The fixture weight formula (fixtures/tha3/README.md section 1), vectorised in numpy.


def formula_tensor(k: int, key: str, shape: list[int]) -> np.ndarray:
    mask = np.uint64(0xFFFFFFFF)

    def mul(x: np.ndarray, c: int) -> np.ndarray:
        return ((x.astype(np.uint64) * np.uint64(c)) & mask).astype(np.uint32)

    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    x = ((i * np.uint64(0x9E3779B1) + np.uint64((k + 1) * 0x85EBCA77 % 2**32)) & mask).astype(
        np.uint32
    )
    x ^= x >> np.uint32(16)
    x = mul(x, 0x7FEB352D)
    x ^= x >> np.uint32(15)
    x = mul(x, 0x846CA68B)
    x ^= x >> np.uint32(16)
    s = (2.0 * (x >> np.uint32(8)).astype(np.float64) + 1.0 - 2.0**24) / 2.0**24
    if len(shape) >= 2:
        value = s * np.sqrt(3.0 / int(np.prod(shape[1:])))
        if "grid_change" in key:
            value = value * 0.01
    elif key.endswith("weight"):
        value = 1.0 + 0.2 * s
    else:
        value = 0.1 * s
    return value.astype(np.float32).reshape(shape)


def test_formula_self_check():
    s = formula_tensor(0, "x.bias", [4]) / 0.1
    np.testing.assert_allclose(s, [0.53616005, -0.98175973, -0.50823456, 0.24366063], atol=1e-7)


def formula_state_dict(fixtures: Path, variant: str, network: str) -> dict[str, torch.Tensor]:
    """The formula weights of one fixture file, in the variant's storage dtype, checked
    against the manifest's sha256."""
    manifest = json.loads((fixtures / variant / "weights_manifest.json").read_text())
    state = {}
    for entry in manifest["networks"][network]["tensors"]:
        array = formula_tensor(entry["k"], entry["key"], entry["shape"])
        if VARIANTS[variant].half:
            array = array.astype(np.float16)
        assert hashlib.sha256(array.tobytes()).hexdigest() == entry["sha256_le_bytes"], entry
        state[entry["key"]] = torch.from_numpy(array)
    return state


@pytest.fixture(scope="module")
def tha3_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "tha3"


def fixture_arrays(path: Path, prefix: str) -> list[torch.Tensor]:
    data = np.load(path)
    names = sorted(
        (k for k in data.files if k.startswith(prefix)),
        key=lambda k: int(k[len(prefix) :].split("_")[0]),
    )
    return [torch.from_numpy(data[name].astype(np.float32)) for name in names]


# ---------------------------------------------------------------------------------------------
# Every network of every variant. Separable weights go through a real .pt file and the loader
# (fp16 storage for *_half); the 120 MB standard ones are loaded straight from memory.


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("network", NETWORKS)
def test_network_matches_official(tha3_dir: Path, tmp_path: Path, variant: str, network: str):
    state = formula_state_dict(tha3_dir, variant, network)
    assert list(state) == list(build_tha3_network(network, variant).state_dict())
    if VARIANTS[variant].separable:
        path = tmp_path / f"{network}.pt"
        torch.save(state, path)
        module = load_tha3_network(path, network, variant)
    else:
        module = build_tha3_network(network, variant)
        module.load_state_dict({k: v.float() for k, v in state.items()})
    del state
    family = variant.replace("half", "float")  # half fixtures reuse the float inputs
    inputs = fixture_arrays(tha3_dir / family / f"{network}.npz", "in")
    expected = fixture_arrays(tha3_dir / variant / f"{network}.npz", "out")
    with torch.inference_mode():
        outputs = module(*inputs)
    assert len(outputs) == len(expected) == len(tha3.OUTPUT_NAMES[network])
    for name, ours, theirs in zip(tha3.OUTPUT_NAMES[network], outputs, expected, strict=True):
        error = float((ours - theirs).abs().max())
        assert error <= NETWORK_TOLERANCE, f"{variant} {network} {name}: max abs {error}"
    del module, outputs
    gc.collect()


def test_half_weights_matter(tha3_dir: Path):
    """The half fixtures differ from the float ones well above the tolerance, so the half
    tests above really check that the fp16 values are used."""
    a = fixture_arrays(tha3_dir / "separable_float" / "editor.npz", "out")[3]
    b = fixture_arrays(tha3_dir / "separable_half" / "editor.npz", "out")[3]
    assert float((a - b).abs().max()) > 10 * NETWORK_TOLERANCE


# ---------------------------------------------------------------------------------------------
# Full pipeline


@pytest.fixture(scope="module")
def poses(tha3_dir: Path) -> np.ndarray:
    return np.load(tha3_dir / "inputs.npz")["poses"]


def test_image_conversion_is_bit_exact(tha3_dir: Path):
    rgba = np.asarray(Image.open(tha3_dir / "test_image.png"))
    expected = torch.from_numpy(np.load(tha3_dir / "inputs.npz")["image"])
    assert torch.equal(rgba8_to_tensor(rgba), expected)


@pytest.fixture(scope="module")
def separable_dir(tha3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An official-layout separable_float folder holding the formula weights."""
    folder = tmp_path_factory.mktemp("models") / "separable_float"
    folder.mkdir()
    for network in NETWORKS:
        torch.save(
            formula_state_dict(tha3_dir, "separable_float", network), folder / f"{network}.pt"
        )
    if tha3.onnx_available():
        export_onnx(folder)  # as `puppet models export-onnx` does; the poser then uses the files
    return folder


def check_pipeline(
    poser: THA3Poser, tha3_dir: Path, variant: str, which: tuple[int, ...] = (0, 1, 2)
) -> None:
    data = np.load(tha3_dir / "inputs.npz")
    expected = np.load(tha3_dir / variant / "pipeline.npz")["final_image"].astype(np.float32)
    for j in which:
        error = (poser.pose_image(data["poses"][j]) - torch.from_numpy(expected[j : j + 1])).abs()
        assert float(error.max()) <= PIPELINE_MAX, (variant, poser.backend, j, float(error.max()))
        assert float(error.mean()) <= PIPELINE_MEAN, (
            variant,
            poser.backend,
            j,
            float(error.mean()),
        )


@pytest.fixture(scope="module")
def registry_poser(separable_dir: Path, tha3_dir: Path) -> THA3Poser:
    """The user path: registry spec with @DIR, character loaded from the PNG, default backend."""
    poser = create_poser(
        f"tha3:separable_float@{separable_dir}", character=tha3_dir / "test_image.png"
    )
    assert isinstance(poser, THA3Poser)
    return poser


def test_separable_pipeline_default_backend(registry_poser, tha3_dir):
    assert registry_poser.backend == ("onnx" if tha3.onnx_available() else "eager")
    check_pipeline(registry_poser, tha3_dir, "separable_float")


def test_pipeline_intermediates_match_network_inputs(registry_poser, tha3_dir, poses):
    """The glue (crops, paste-back, 256^2 downsample, 512^2 upsample) for pose mix_a produces
    the inputs the official pipeline fed to each network."""
    outputs = registry_poser.pose_outputs(poses[1])
    feeds = {
        "eyebrow_decomposer": ["eyebrow_decomposer/input"],
        "eyebrow_morphing_combiner": [
            "eyebrow_decomposer/background_layer",
            "eyebrow_decomposer/eyebrow_layer",
        ],
        "face_morpher": ["face_morpher/input"],
        "two_algo_face_body_rotator": ["two_algo_face_body_rotator/input"],
        "editor": ["face_morphed_full", "editor/input_warped_image", "editor/input_grid_change"],
    }
    image = registry_poser._image
    outputs = {**outputs, "eyebrow_decomposer/input": image[:, :, 64:192, 192:320]}
    for network, names in feeds.items():
        inputs = fixture_arrays(tha3_dir / "separable_float" / f"{network}.npz", "in")
        for name, expected in zip(names, inputs, strict=False):
            error = float((outputs[name] - expected).abs().max())
            assert error <= NETWORK_TOLERANCE, (network, name, error)


def test_pose_returns_official_8bit_image(registry_poser, tha3_dir, poses):
    """RGBA uint8 straight alpha, sRGB, as the official manual poser writes its PNGs."""
    for j, name in enumerate(["neutral", "mix_a", "mix_b"]):
        ours = registry_poser.pose(PoseVector(poses[j]))
        assert ours.shape == (512, 512, 4) and ours.dtype == np.uint8
        theirs = np.asarray(Image.open(tha3_dir / "separable_float" / f"pipeline_{j}_{name}.png"))
        difference = np.abs(ours.astype(int) - theirs.astype(int))
        assert float((difference > 1).mean()) < 1e-3, (name, difference.max())
        assert float(difference.mean()) < 0.05


def test_caches_skip_networks_without_changing_results(registry_poser, poses):
    base = poses[1].copy()
    registry_poser.pose_outputs(base)
    stats = registry_poser.stats
    combiner_runs, face_runs = stats.combiner_runs, stats.face_morpher_runs
    turned = base.copy()
    turned[39] = -turned[39]  # head_x only: both caches hit
    cached = registry_poser.pose_image(turned).clone()
    assert (stats.combiner_runs, stats.face_morpher_runs) == (combiner_runs, face_runs)
    mouth = turned.copy()
    mouth[25] = 0.0  # a face parameter: the face morpher runs, the combiner does not
    registry_poser.pose_image(mouth)
    assert stats.combiner_runs == combiner_runs and stats.face_morpher_runs == face_runs + 1
    frames = stats.frame_reuses
    registry_poser.pose_image(mouth)
    assert stats.frame_reuses == frames + 1
    # The same pose computed from scratch (set_image empties every cache).
    registry_poser.set_image(registry_poser._image)
    assert torch.equal(registry_poser.pose_image(turned), cached)
    assert stats.face_morpher_runs == face_runs + 2


def test_separable_pipeline_eager_torch(tha3_dir: Path):
    networks = {
        network: load_state(build_tha3_network(network, "separable_float"), tha3_dir, network)
        for network in NETWORKS
    }
    poser = THA3Poser("separable_float", networks=networks, backend="eager")
    poser.set_image(torch.from_numpy(np.load(tha3_dir / "inputs.npz")["image"]))
    check_pipeline(poser, tha3_dir, "separable_float", (2,))  # all 3 run on the default backend


def load_state(module: torch.nn.Module, tha3_dir: Path, network: str, variant="separable_float"):
    module.load_state_dict(formula_state_dict(tha3_dir, variant, network))
    return module


def test_standard_pipeline_default_backend(tha3_dir: Path):
    networks = {
        network: load_state(
            build_tha3_network(network, "standard_float"), tha3_dir, network, "standard_float"
        )
        for network in NETWORKS
    }
    poser = THA3Poser("standard_float", networks=networks)
    del networks
    poser.set_image(torch.from_numpy(np.load(tha3_dir / "inputs.npz")["image"]))
    check_pipeline(poser, tha3_dir, "standard_float")
    del poser
    gc.collect()


@pytest.mark.skipif(not tha3.onnx_available(), reason="onnxruntime not installed (extra 'onnx')")
def test_exported_onnx_files_are_used_and_stale_ones_ignored(
    registry_poser, separable_dir, tmp_path
):
    """``separable_dir`` was exported with export_onnx; the pipeline tests above ran on it."""
    names = sorted(p.name for p in (separable_dir / "onnx").iterdir())
    assert names == sorted([f"{n}.onnx" for n in NETWORKS] + [tha3.ONNX_MANIFEST])
    assert set(tha3._fresh_onnx_files(separable_dir, "separable_float")) == set(NETWORKS)
    assert all(isinstance(r, tha3._OnnxRunner) for r in registry_poser._runners.values())
    copy = tmp_path / "separable_float"
    (copy / "onnx").mkdir(parents=True)
    for path in [*separable_dir.glob("*.pt"), *(separable_dir / "onnx").iterdir()]:
        (copy / path.relative_to(separable_dir)).write_bytes(path.read_bytes())
    assert set(tha3._fresh_onnx_files(copy, "separable_float")) == set(NETWORKS)
    state = torch.load(copy / "editor.pt", weights_only=True)
    state["grid_change_creator.weight"] = state["grid_change_creator.weight"] * 2
    torch.save(state, copy / "editor.pt")
    assert set(tha3._fresh_onnx_files(copy, "separable_float")) == set(NETWORKS) - {"editor"}


# ---------------------------------------------------------------------------------------------
# The real official separable_float editor


@pytest.fixture(scope="module")
def real_editor(fixtures_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = fixtures_dir / "tha3_real_editor"
    return folder / "editor.pt", dict(np.load(folder / "editor_io.npz"))


def check_real_editor(outputs: list[torch.Tensor], io: dict[str, np.ndarray], case: slice):
    names = sorted(k for k in io if k.startswith("out"))
    for i, (name, ours) in enumerate(zip(names, outputs, strict=True)):
        expected = torch.from_numpy(io[name][case].astype(np.float32))
        error = float((ours - expected).abs().max())
        assert error <= (1e-4 if i == 4 else 1e-3), (name, case, error)


def real_editor_inputs(io: dict[str, np.ndarray], case: slice) -> list[torch.Tensor]:
    original = np.repeat(io["in0_input_original_image"], 3, axis=0)
    arrays = [original, io["in1_input_warped_image"], io["in2_input_grid_change"], io["in3_pose"]]
    return [torch.from_numpy(a[case].astype(np.float32)) for a in arrays]


def test_real_official_editor_eager(real_editor):
    path, io = real_editor
    module = load_tha3_network(path, "editor", "separable_float")
    with torch.inference_mode():
        outputs = module(*real_editor_inputs(io, slice(0, 3)))
    check_real_editor(outputs, io, slice(0, 3))


@pytest.mark.skipif(not tha3.onnx_available(), reason="onnxruntime not installed (extra 'onnx')")
def test_real_official_editor_onnx(real_editor):
    path, io = real_editor
    module = load_tha3_network(path, "editor", "separable_float")
    runner = tha3._OnnxRunner(tha3._export_onnx_bytes(module, "editor"), threads=2)
    for j in range(3):
        outputs = runner(*real_editor_inputs(io, slice(j, j + 1)))
        check_real_editor(outputs, io, slice(j, j + 1))


# ---------------------------------------------------------------------------------------------
# Loader refusals


@pytest.fixture(scope="module")
def editor_state(real_editor) -> dict[str, torch.Tensor]:
    return torch.load(real_editor[0], weights_only=True, map_location="cpu")


def refusal(path: Path, network="editor", variant="separable_float") -> str:
    with pytest.raises(PuppetError) as caught:
        load_tha3_network(path, network, variant)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_loader_refuses_missing_key(editor_state, tmp_path):
    state = dict(editor_state)
    del state["body.bottleneck_blocks.3.resnet_path.3.1.weight"]
    torch.save(state, tmp_path / "editor.pt")
    message = refusal(tmp_path / "editor.pt")
    assert "body.bottleneck_blocks.3.resnet_path.3.1.weight" in message
    assert "(256, 256, 1, 1)" in message


def test_loader_refuses_wrong_shape(editor_state, tmp_path):
    state = dict(editor_state)
    state["alpha_creator.0.weight"] = torch.zeros(3, 32, 3, 3)
    torch.save(state, tmp_path / "editor.pt")
    message = refusal(tmp_path / "editor.pt")
    assert "alpha_creator.0.weight" in message and "(4, 32, 3, 3)" in message


def test_loader_refuses_extra_key(editor_state, tmp_path):
    state = {**editor_state, "body.spare.weight": torch.zeros(2)}
    torch.save(state, tmp_path / "editor.pt")
    assert "body.spare.weight" in refusal(tmp_path / "editor.pt")


def test_loader_refuses_wrong_variant(real_editor):
    message = refusal(real_editor[0], variant="standard_float")
    assert "(32, 16, 3, 3)" in message  # the standard editor's first conv


def test_loader_refuses_garbage_and_missing_files(tmp_path):
    (tmp_path / "editor.pt").write_bytes(b"not a torch file at all")
    refusal(tmp_path / "editor.pt")
    refusal(tmp_path / "absent.pt")


class _Payload:
    """Unpickling this would create ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_loader_never_runs_a_pickle_payload(editor_state, tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({**editor_state, "body.payload": _Payload(marker)}, tmp_path / "editor.pt")
    message = refusal(tmp_path / "editor.pt")
    assert "pickled code GLOBAL" in message, message
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Registry factory


def test_factory_refuses_unknown_variant_listing_all():
    with pytest.raises(PuppetError) as caught:
        tha3.create_poser("standard_double@/tmp", "cpu")
    for variant in VARIANTS:
        assert variant in str(caught.value)


def test_factory_refuses_missing_folder(tmp_path):
    with pytest.raises(PuppetError, match="does not hold the THA3 separable_float files"):
        tha3.create_poser(f"separable_float@{tmp_path / 'nope'}", "cpu")


def test_factory_without_folder_needs_installed_weights():
    """PUPPET_DATA_DIR is an empty temp dir in tests: nothing is installed."""
    with pytest.raises(PuppetError, match="not installed"):
        tha3.create_poser("separable_float", "cpu")


def test_factory_returns_unloaded_poser(separable_dir):
    poser, character = tha3.create_poser(f"separable_half@{separable_dir}", "cpu")
    assert isinstance(poser, THA3Poser) and character is None
    assert (poser.variant, poser.device, poser.dtype) == ("separable_half", "cpu", "float32")
    with pytest.raises(PuppetError, match="No character"):
        poser.pose(PoseVector())
