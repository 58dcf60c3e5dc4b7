"""``puppet distill``: metrics, pose sampling, a real short distillation from the rig teacher,
resume, and the THA3 / THA4-student teacher adapters on real reference fixtures.

The THA3 adapter runs the project's THA3 implementation with the fixture's formula weights
(the official trained weights cannot be bundled); the THA4 adapter runs the official THA4
student of the fixture (CC BY-NC, test-only, ~2 s per frame on CPU, so one pose).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poser_models.student import StudentPoser, rgba_to_premultiplied_linear
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_CHARACTER_IMAGE
from puppet.pose import INDEX, LOWER, UPPER
from puppet.training.distill import (
    alpha_weighted_psnr,
    distill,
    make_teacher,
    metric_weight,
    parse_teacher,
    render_frames,
    sample_poses,
)


def test_psnr_definition() -> None:
    """Premultiplied linear RGBA on [0,1]; only pixels near the character count."""
    teacher = np.zeros((64, 64, 4), np.float32)
    teacher[16:48, 16:48] = [0.5, 0.25, 0.125, 1.0]
    student = teacher.copy()
    assert alpha_weighted_psnr(teacher, student) >= 119.0
    student[16:48, 16:48, 0] += 0.1  # error 0.01 on one of 4 channels over the whole square
    weight = metric_weight(teacher, student)
    assert weight.sum() == pytest.approx(34 * 34)  # the square, dilated by one pixel
    expected_mse = 0.01 * (32 * 32) / (4 * weight.sum())
    psnr = alpha_weighted_psnr(teacher, student)
    assert psnr == pytest.approx(-10 * np.log10(expected_mse), rel=1e-5)
    # Something the student draws where the teacher is transparent counts too.
    student[0:4, 0:4] = [0.2, 0.2, 0.2, 0.2]
    assert alpha_weighted_psnr(teacher, student) < psnr - 0.1


def test_pose_sets_cover_the_marginals() -> None:
    face = sample_poses("face", 400, seed=0)
    assert np.all(face >= LOWER) and np.all(face <= UPPER)
    assert not face[:, 39:].any()  # expressions only, un-rotated
    left, right = face[:, INDEX["eye_wink_left"]], face[:, INDEX["eye_wink_right"]]
    assert ((left == right) & (left > 0)).mean() > 0.25  # linked blinks
    assert ((left > 0) & (right == 0)).mean() > 0.05  # single-eye winks
    assert (face[:, INDEX["mouth_aaa"]] == 1.0).mean() > 0.03
    assert (face[:, 0:12] > 0).any(axis=1).mean() > 0.3  # eyebrow groups
    head = sample_poses("head", 200, seed=0)
    assert not head[:, :39].any() and not head[:, 42:].any()
    assert (np.abs(head[:, INDEX["head_y"]]) == 1.0).any()  # full turns
    joint = sample_poses("joint", 50, seed=0)
    assert np.array_equal(joint, sample_poses("joint", 50, seed=0))
    assert not np.array_equal(joint, sample_poses("heldout", 50, seed=0))


def test_teacher_specs() -> None:
    assert parse_teacher("rig") == "rig:hana"
    assert parse_teacher("tha3") == "tha3:separable_float"
    assert parse_teacher("tha3:standard_half") == "tha3:standard_half"
    with pytest.raises(PuppetError, match="needs its folder"):
        parse_teacher("tha4-student")
    with pytest.raises(PuppetError, match="Unknown teacher"):
        parse_teacher("gan")


def test_short_distillation_from_the_rig_improves_heldout_psnr(tmp_path: Path) -> None:
    """A real run of the whole pipeline at the ``test`` quality (rig teacher, ~1-2 min)."""
    torch.set_num_threads(1)
    out = tmp_path / "student"
    start = time.monotonic()
    report = distill(DEFAULT_CHARACTER_IMAGE, "rig", out, quality="test", seed=0, progress=False)
    took = time.monotonic() - start
    assert report.psnr_db > report.untrained_psnr_db + 6.0, report
    assert 0.0 < report.ssim <= 1.0 and report.fps > 0 and report.gflop_per_frame < 0.3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"] == "rig:hana" and manifest["seed"] == 0
    assert manifest["metrics"]["psnr_db"] == pytest.approx(report.psnr_db)
    poser = StudentPoser.from_folder(out)
    poser.load(poser.character_path)
    assert poser.character_path == DEFAULT_CHARACTER_IMAGE.resolve()
    assert poser.pose(sample_poses_as_vector()).shape == (512, 512, 4)
    # Resume: a finished run is not trained again; it re-evaluates from its checkpoint.
    start = time.monotonic()
    again = distill(DEFAULT_CHARACTER_IMAGE, "rig", out, quality="test", seed=0, progress=False)
    assert time.monotonic() - start < took / 2
    assert again.psnr_db == pytest.approx(report.psnr_db, abs=1e-6)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["phase"] == "done"


def sample_poses_as_vector():
    from puppet.pose import PoseVector

    return PoseVector(sample_poses("joint", 1, seed=3)[0])


def test_rig_teacher_refuses_another_image(tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[100:400, 150:350] = [200, 100, 100, 255]
    Image.fromarray(rgba).save(other)
    with pytest.raises(PuppetError, match="only draws its own character"):
        distill(other, "rig", tmp_path / "out", quality="test", progress=False)


def test_tha3_teacher_adapter(fixtures_dir: Path, tmp_path: Path) -> None:
    """THA3 separable_float (formula weights of the fixture) gives the official output."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_tha3 import NETWORKS, formula_state_dict

    folder = tmp_path / "separable_float"
    folder.mkdir()
    tha3_dir = fixtures_dir / "tha3"
    for network in NETWORKS:
        torch.save(
            formula_state_dict(tha3_dir, "separable_float", network), folder / f"{network}.pt"
        )
    teacher = make_teacher(f"tha3:separable_float@{folder}", tha3_dir / "test_image.png")
    poses = np.load(tha3_dir / "inputs.npz")["poses"][1:2]
    frames = render_frames(teacher, poses)
    expected = np.asarray(Image.open(tha3_dir / "separable_float" / "pipeline_1_mix_a.png"))
    assert frames.shape == (1, 512, 512, 4) and frames.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - expected.astype(int)).max() <= 2


def test_tha4_student_teacher_adapter(fixtures_dir: Path) -> None:
    """The official THA4 student (fixture lambda_00): one pose, checked against the official
    output, and the training target equals THA4's own premultiplied linear output."""
    folder = fixtures_dir / "tha4_student" / "lambda_00"
    teacher = make_teacher(f"tha4-student:{folder}", folder / "character.png")
    data = np.load(folder / "expected_outputs.npz")
    frames = render_frames(teacher, data["pose"][1:2])  # blink
    expected = np.asarray(Image.open(folder / "output_1_blink_straight.png"))
    opaque = expected[..., 3] > 0
    assert np.abs(frames[0].astype(int) - expected.astype(int))[opaque].max() <= 3
    target = rgba_to_premultiplied_linear(frames[0])
    official = np.clip((data["out0_blended_image"][1].astype(np.float32) + 1) / 2, 0, 1)
    assert alpha_weighted_psnr(official.transpose(1, 2, 0), target) > 40.0
