"""The THA4 student poser against outputs of the official THA4 code (../shared/fixtures, CC BY-NC,
test-only: read in place or copied to tmp_path, never into the repo)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poser_models.registry import create_poser as registry_create_poser
from poser_models.tha4_student import (
    StudentConfig,
    THA4StudentPoser,
    body_morpher_shapes,
    create_poser,
    face_morpher_shapes,
    image_to_tensor,
    load_checked_state_dict,
    parameter_count,
)
from puppet.errors import PuppetError
from puppet.pose import PoseVector

POSES = (0, 3, 7)  # neutral, and the two poses with all intermediate outputs stored


@pytest.fixture(scope="module")
def student_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "tha4_student" / "lambda_00"


@pytest.fixture(scope="module")
def expected(student_dir: Path) -> dict[str, np.ndarray]:
    with np.load(student_dir / "expected_outputs.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def poser(student_dir: Path) -> THA4StudentPoser:
    torch.set_num_threads(2)
    poser, character = create_poser(str(student_dir), "cpu")
    assert character == student_dir / "character.png"
    poser.load(character)
    return poser


@pytest.fixture(scope="module")
def outputs(poser: THA4StudentPoser, expected: dict) -> dict[int, list[torch.Tensor]]:
    return {j: [t.clone() for t in poser.posing_outputs(expected["pose"][j])] for j in POSES}


def _max_abs(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float((ours.float() - torch.from_numpy(reference.astype(np.float32))).abs().max())


def test_architecture_size() -> None:
    assert parameter_count() == 453_043  # 121,476 face + 331,567 body, as the real files hold


def test_input_image_conversion(poser: THA4StudentPoser, student_dir: Path, expected) -> None:
    rgba = np.asarray(Image.open(student_dir / "character.png"))
    ours = image_to_tensor(rgba)
    assert ours.shape == (1, 4, 512, 512) and ours.dtype == torch.float32
    # Premultiplied linear [-1, 1]; float32 pow may differ by one ulp between CPUs.
    assert _max_abs(ours, expected["input_image"]) <= 1e-6


@pytest.mark.parametrize("j", POSES)
def test_final_image_and_face_patch(outputs, expected, j: int) -> None:
    final, face = outputs[j][0], outputs[j][5]
    assert final.shape == (1, 4, 512, 512) and face.shape == (1, 4, 128, 128)
    assert _max_abs(final, expected["out0_blended_image"][j : j + 1]) <= 2e-3
    assert _max_abs(face, expected["out5_face_morpher_output"][j : j + 1]) <= 2e-3


@pytest.mark.parametrize("k", [0, 1])
def test_intermediate_outputs(outputs, expected, k: int) -> None:
    j = int(expected["full_outputs_pose_index"][k])
    _, alpha, color, warped, grid_change, _ = outputs[j]
    assert _max_abs(alpha, expected["out1_alpha"][k : k + 1]) <= 2e-3
    assert _max_abs(color, expected["out2_color_change"][k : k + 1]) <= 2e-3
    assert _max_abs(warped, expected["out3_warped_image"][k : k + 1]) <= 5e-3
    reference = torch.from_numpy(expected["out4_grid_change"][k : k + 1].astype(np.float32))
    assert bool(((grid_change - reference).abs() <= 1e-4 + 2e-3 * reference.abs()).all())


def test_pose_discriminates(outputs) -> None:
    # The fixture comparison above would also pass for a network ignoring the pose only if
    # the poses looked alike; they do not.
    assert float((outputs[3][0] - outputs[0][0]).abs().max()) > 1.0


@pytest.mark.parametrize("j", POSES)
def test_straight_alpha_png_matches_official(poser, student_dir: Path, expected, j: int) -> None:
    name = str(expected["pose_names"][j])
    reference = np.asarray(Image.open(student_dir / f"output_{j}_{name}_straight.png")).astype(int)
    ours = poser.pose(PoseVector(expected["pose"][j]))
    assert ours.shape == (512, 512, 4) and ours.dtype == np.uint8
    ours = ours.astype(int)
    assert np.abs(ours[..., 3] - reference[..., 3]).max() <= 1
    # Straight colour is only defined where there is coverage: dividing by a tiny alpha
    # amplifies float32 noise (a few dozen pixels with alpha < 8/255 differ more), so RGB is
    # compared at alpha >= 8 and, everywhere, after premultiplying (what a composite shows).
    covered = reference[..., 3] >= 8
    assert np.abs(ours[..., :3] - reference[..., :3])[covered].max() <= 1
    premultiplied = np.abs(ours[..., :3] * ours[..., 3:] - reference[..., :3] * reference[..., 3:])
    assert premultiplied.max() / 255 <= 1.5


def test_face_patch_is_reused_when_only_rotation_changes(poser, expected) -> None:
    pose = PoseVector(expected["pose"][0])
    first = poser.posing_outputs(pose)[5]
    turned = pose.copy()
    turned["head_x"] = 0.5
    assert poser.posing_outputs(turned)[5] is first
    blink = pose.copy()
    blink["eye_wink_left"] = 1.0
    assert poser.posing_outputs(blink)[5] is not first


def test_registry_builds_a_loaded_poser(student_dir: Path) -> None:
    poser = registry_create_poser(f"tha4-student:{student_dir}")
    frame = poser.pose(PoseVector.neutral())
    assert frame.shape == (512, 512, 4) and frame.dtype == np.uint8
    assert poser.device == "cpu" and poser.dtype == "float32"
    assert 0 < (frame[..., 3] > 0).mean() < 1


# ---------------------------------------------------------------------------------------------
# Bad folders and weight files


def _student_copy(student_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "student"
    folder.mkdir()
    for name in ("character_model.yaml", "character.png", "face_morpher.pt", "body_morpher.pt"):
        shutil.copy(student_dir / name, folder / name)
    return folder


def test_missing_folder_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(PuppetError, match="character_model.yaml not found"):
        create_poser(str(tmp_path), "cpu")
    (tmp_path / "character_model.yaml").write_text("character_image_file_name: c.png\n")
    with pytest.raises(PuppetError, match="lacks face_morpher_file_name"):
        create_poser(str(tmp_path), "cpu")


def test_missing_key_is_refused(student_dir: Path, tmp_path: Path) -> None:
    folder = _student_copy(student_dir, tmp_path)
    state = torch.load(folder / "body_morpher.pt", weights_only=True, map_location="cpu")
    del state["siren_layers.1.2.linear.weight"]
    torch.save(state, folder / "body_morpher.pt")
    with pytest.raises(PuppetError) as error:
        create_poser(str(folder), "cpu")
    message = str(error.value)
    assert "body_morpher.pt" in message
    assert "'siren_layers.1.2.linear.weight'" in message and "(90, 180, 1, 1)" in message


def test_wrong_shape_and_extra_key_are_refused(student_dir: Path, tmp_path: Path) -> None:
    state = torch.load(student_dir / "face_morpher.pt", weights_only=True, map_location="cpu")
    shapes = face_morpher_shapes(StudentConfig())
    state["siren.last_linear.weight"] = torch.zeros(3, 128, 1, 1)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(PuppetError, match=r"has shape \(3, 128, 1, 1\), expected \(4, 128, 1, 1\)"):
        load_checked_state_dict(tmp_path / "shape.pt", shapes)
    state["siren.last_linear.weight"] = torch.zeros(4, 128, 1, 1)
    state["siren.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(PuppetError, match="unexpected tensor.*'siren.extra.weight'"):
        load_checked_state_dict(tmp_path / "extra.pt", shapes)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 definitely not a torch zip")
    with pytest.raises(PuppetError, match="broken.pt"):
        load_checked_state_dict(path, body_morpher_shapes(StudentConfig()))


class _Payload:
    """Pickles as a call to Path.touch(marker): unpickling it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_not_executed(student_dir: Path, tmp_path: Path) -> None:
    folder = _student_copy(student_dir, tmp_path)
    marker = tmp_path / "payload_ran"
    state = dict(torch.load(folder / "face_morpher.pt", weights_only=True, map_location="cpu"))
    state["siren.last_linear.bias"] = _Payload(marker)
    torch.save(state, folder / "face_morpher.pt")
    with zipfile.ZipFile(folder / "face_morpher.pt") as archive:  # the payload is really there
        pickled = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"touch" in pickled and b"pathlib" in pickled
    with pytest.raises(PuppetError, match="face_morpher.pt.*could run code"):
        create_poser(str(folder), "cpu")
    assert not marker.exists()


def test_other_character_warns(student_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    poser, character = create_poser(str(student_dir), "cpu")
    mirrored = np.ascontiguousarray(np.asarray(Image.open(character))[:, ::-1])
    with caplog.at_level("WARNING", logger="poser_models.tha4_student"):
        poser.load(character)
        assert not caplog.records
        poser.load(mirrored)
    assert any("made for" in r.getMessage() for r in caplog.records)
