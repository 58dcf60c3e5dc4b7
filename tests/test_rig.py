"""The rig teacher: every parameter group moves the right part of the drawing the right way."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from poser_models.registry import create_poser as create_any_poser
from poser_models.rig import RigPoser, create_poser, render_rig
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_CHARACTER_IMAGE
from puppet.pose import PARAMETER_NAMES, UPPER, PoseVector

# Boxes (x0, y0, x1, y1) in the 512x512 image. The character's RIGHT eye is on the image LEFT.
EYE_IMAGE_LEFT = (205, 118, 256, 165)
EYE_IMAGE_RIGHT = (256, 118, 307, 165)
BROW_IMAGE_LEFT = (205, 100, 256, 128)
BROW_IMAGE_RIGHT = (256, 100, 307, 128)
MOUTH = (230, 160, 282, 200)


def render(**values: float) -> np.ndarray:
    return render_rig(PoseVector.from_dict(values))


NEUTRAL = render()


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def iris_mask(image: np.ndarray) -> np.ndarray:
    """Teal iris pixels (no other part of the drawing is blue-green)."""
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return (g - r > 40) & (b - r > 40) & (image[..., 3] > 200)


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "nothing to measure"
    return np.array([xs.mean(), ys.mean()])


def changed(a: np.ndarray, b: np.ndarray, threshold: int = 8) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > threshold


def test_output_contract() -> None:
    assert NEUTRAL.shape == (512, 512, 4) and NEUTRAL.dtype == np.uint8
    alpha = NEUTRAL[..., 3]
    assert alpha[:, :60].max() == 0 and alpha[:, -60:].max() == 0 and alpha[:20].max() == 0
    assert np.all(NEUTRAL[alpha == 0][:, :3] == 0)  # fully transparent pixels are (0,0,0,0)
    assert alpha[450, 256] == 255 and alpha[140, 256] == 255 and alpha[300, 160] == 255
    # the head fills the THA3 head box
    head_cols = np.nonzero(alpha[64:192].max(axis=0))[0]
    assert 170 < head_cols.min() < 200 and 312 < head_cols.max() < 345


def test_deterministic_and_poser_matches_function() -> None:
    pose = PoseVector.from_dict({"head_y": 0.3, "mouth_aaa": 0.7, "eye_wink_left": 0.4})
    poser = RigPoser()
    poser.load(DEFAULT_CHARACTER_IMAGE)
    assert np.array_equal(poser.pose(pose), render_rig(pose))
    assert np.array_equal(render_rig(pose), render_rig(pose))
    assert poser.device == "cpu" and poser.dtype == "float32"


def test_committed_png_is_the_neutral_render() -> None:
    with Image.open(DEFAULT_CHARACTER_IMAGE) as image:
        assert image.mode == "RGBA" and image.size == (512, 512)
        stored = np.asarray(image)
    assert np.abs(stored.astype(int) - NEUTRAL.astype(int)).max() <= 1, (
        "character.png is stale: run `python -m poser_models.rig --write-character`"
    )


def test_every_parameter_changes_the_image() -> None:
    for index, name in enumerate(PARAMETER_NAMES):
        pose = PoseVector()
        pose.values[index] = UPPER[index]
        assert changed(render_rig(pose), NEUTRAL).sum() > 20, name


@pytest.mark.parametrize(
    ("parameter", "own_box", "other_box"),
    [
        ("eye_wink_left", EYE_IMAGE_RIGHT, EYE_IMAGE_LEFT),
        ("eye_wink_right", EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT),
        ("eye_happy_wink_left", EYE_IMAGE_RIGHT, EYE_IMAGE_LEFT),
        ("eye_surprised_right", EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT),
        ("eye_relaxed_left", EYE_IMAGE_RIGHT, EYE_IMAGE_LEFT),
        ("eye_unimpressed_right", EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT),
        ("eye_raised_lower_eyelid_left", EYE_IMAGE_RIGHT, EYE_IMAGE_LEFT),
        ("iris_small_right", EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT),
        ("eyebrow_angry_left", BROW_IMAGE_RIGHT, BROW_IMAGE_LEFT),
        ("eyebrow_troubled_right", BROW_IMAGE_LEFT, BROW_IMAGE_RIGHT),
    ],
)
def test_sided_parameters_touch_only_their_side(parameter, own_box, other_box) -> None:
    """`*_left` is the character's left: the image's right side. The other side is untouched."""
    posed = render(**{parameter: 1.0})
    assert changed(crop(posed, own_box), crop(NEUTRAL, own_box)).sum() > 15
    assert np.array_equal(crop(posed, other_box), crop(NEUTRAL, other_box))


def test_blink_hides_the_iris_and_wink_closes_one_eye() -> None:
    assert iris_mask(crop(NEUTRAL, EYE_IMAGE_LEFT)).sum() > 300
    assert iris_mask(crop(NEUTRAL, EYE_IMAGE_RIGHT)).sum() > 300
    assert iris_mask(render(eye_wink_left=1.0, eye_wink_right=1.0)).sum() == 0
    assert iris_mask(render(eye_happy_wink_left=1.0, eye_happy_wink_right=1.0)).sum() == 0
    wink = render(eye_wink_left=1.0)
    assert iris_mask(crop(wink, EYE_IMAGE_RIGHT)).sum() == 0
    other_eye = iris_mask(crop(NEUTRAL, EYE_IMAGE_LEFT)).sum()
    assert iris_mask(crop(wink, EYE_IMAGE_LEFT)).sum() == other_eye
    half = iris_mask(crop(render(eye_wink_left=0.5), EYE_IMAGE_RIGHT)).sum()
    assert 0 < half < iris_mask(crop(NEUTRAL, EYE_IMAGE_RIGHT)).sum()


def test_iris_rotation_directions_and_size() -> None:
    base = centroid(iris_mask(crop(NEUTRAL, EYE_IMAGE_LEFT)))
    toward_image_left = centroid(iris_mask(crop(render(iris_rotation_y=1.0), EYE_IMAGE_LEFT)))
    up = centroid(iris_mask(crop(render(iris_rotation_x=1.0), EYE_IMAGE_LEFT)))
    assert toward_image_left[0] < base[0] - 2.5
    assert up[1] < base[1] - 1.5  # the upper lid clips the rising iris
    small = iris_mask(render(iris_small_left=1.0, iris_small_right=1.0)).sum()
    assert small < 0.75 * iris_mask(NEUTRAL).sum()


def test_mouth_vowels_open_the_mouth() -> None:
    def interior(image: np.ndarray) -> int:
        r, g, b = (crop(image, MOUTH)[..., k].astype(int) for k in range(3))
        return int(((r > 90) & (r < 170) & (g < 70) & (b < 90)).sum())

    closed = interior(NEUTRAL)
    for vowel in ("aaa", "ooo", "eee", "uuu", "delta"):
        assert interior(render(**{f"mouth_{vowel}": 1.0})) > closed + 15, vowel
    assert interior(render(mouth_aaa=1.0)) > interior(render(mouth_aaa=0.4)) > closed
    # iii shows teeth
    white = crop(render(mouth_iii=1.0), MOUTH)[..., :3].min(axis=-1) > 245
    assert white.sum() > 10


def test_mouth_corners() -> None:
    def line_rows(image: np.ndarray, x0: int, x1: int) -> float:
        region = image[166:190, x0:x1].astype(int)  # below: the side locks
        dark = (region[..., 0] - region[..., 1] > 50) & (region[..., 1] < 120)
        return centroid(dark)[1]

    # the mouth's image-right corner belongs to the character's left
    right_corner = (257, 276)
    assert (
        line_rows(render(mouth_raised_corner_left=1.0), *right_corner)
        < line_rows(NEUTRAL, *right_corner) - 0.5
    )
    assert (
        line_rows(render(mouth_lowered_corner_left=1.0), *right_corner)
        > line_rows(NEUTRAL, *right_corner) + 0.5
    )


def brow_mask_centroid(image: np.ndarray) -> float:
    """Mean row of brow-coloured pixels above the image-left eye."""
    region = crop(image, BROW_IMAGE_LEFT).astype(int)
    brow = np.array([170, 82, 112])
    mask = (np.abs(region[..., :3] - brow).max(axis=-1) < 28) & (region[..., 3] > 200)
    return float(centroid(mask)[1])


def test_eyebrows_move_up_and_down() -> None:
    base = brow_mask_centroid(NEUTRAL)
    assert brow_mask_centroid(render(eyebrow_raised_right=1.0)) < base - 2.0
    assert brow_mask_centroid(render(eyebrow_lowered_right=1.0)) > base + 2.0
    assert brow_mask_centroid(render(eyebrow_serious_right=1.0)) > base + 1.0


def test_head_turn_nod_and_tilt_directions() -> None:
    base = centroid(iris_mask(NEUTRAL))
    right = centroid(iris_mask(render(head_y=1.0)))
    left = centroid(iris_mask(render(head_y=-1.0)))
    # head_y > 0 turns the face toward the image's right; parallax stays moderate
    assert 6.0 < right[0] - base[0] < 16.0
    assert 6.0 < base[0] - left[0] < 16.0
    up = centroid(iris_mask(render(head_x=1.0)))
    down = centroid(iris_mask(render(head_x=-1.0)))
    assert up[1] < base[1] - 4.0 and down[1] > base[1] + 4.0
    # neck_z > 0: counter-clockwise on screen, the image-right eye rises above the left one
    tilted = render(neck_z=1.0)
    left_eye = centroid(iris_mask(tilted[:, :256]))
    right_eye = centroid(iris_mask(tilted[:, 256:]))
    assert right_eye[1] < left_eye[1] - 7.0
    top_rows = slice(20, 80)
    top_before = centroid(NEUTRAL[top_rows, :, 3] > 128)[0]
    assert centroid(tilted[top_rows, :, 3] > 128)[0] < top_before - 5


def test_body_breathing_and_parallax() -> None:
    def top_edge(image: np.ndarray, x: int) -> int:
        return int(np.argmax(image[200:, x, 3] > 128)) + 200

    breathing = render(breathing=1.0)
    assert top_edge(breathing, 150) <= top_edge(NEUTRAL, 150) - 2

    def shoulder_slope(image: np.ndarray) -> int:
        columns = np.nonzero(image[275, :, 3] > 128)[0]
        middle = (columns.min() + columns.max()) // 2
        return top_edge(image, middle - 100) - top_edge(image, middle + 100)

    # body_z > 0 leans counter-clockwise: the image-right shoulder rises above the left one
    assert shoulder_slope(NEUTRAL) == 0
    assert shoulder_slope(render(body_z=1.0)) > 4
    assert shoulder_slope(render(body_z=-1.0)) < -4

    def bow(image: np.ndarray) -> np.ndarray:
        r, g, b = (image[280:380, :, k].astype(int) for k in range(3))
        return centroid((r > 150) & (g < 110) & (b < 130))

    assert bow(render(body_y=1.0))[0] > bow(NEUTRAL)[0] + 4.0
    # head turns: the back hair shifts the opposite way to the face
    turned = render(head_y=1.0)
    assert changed(turned[230:300, 170:200], NEUTRAL[230:300, 170:200]).sum() > 0


def test_pose_changes_are_continuous() -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        values = rng.uniform(0.0, 1.0, 45).astype(np.float32)
        values[37:44] = rng.uniform(-1.0, 1.0, 7)
        step = rng.uniform(-1.0, 1.0, 45).astype(np.float32) * 0.01
        a = render_rig(PoseVector(values).clamped()).astype(np.float32)
        b = render_rig(PoseVector(values + step).clamped()).astype(np.float32)
        assert np.abs(a - b).mean() < 0.5
    # a morph from 0 to 1 changes the image gradually, with no single jump
    frames = [
        render(mouth_aaa=t, eye_wink_left=t, head_y=t).astype(np.float32)
        for t in np.linspace(0.0, 1.0, 11)
    ]
    steps = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(10)]
    total = np.abs(frames[-1] - frames[0]).mean()
    assert total > 1.0
    assert max(steps) < 3.0 * float(np.median(steps)) and max(steps) < 0.3 * sum(steps)


def test_load_and_factory_errors() -> None:
    poser, character = create_poser("hana", "cpu")
    assert character == "hana"
    poser.load("hana")
    poser.load(DEFAULT_CHARACTER_IMAGE)  # the bundled image has the rig's own pixels
    other = np.zeros((512, 512, 4), np.uint8)
    other[100:400, 150:350] = (200, 50, 50, 255)  # a valid character image, but not hana
    with pytest.raises(PuppetError, match="only draws its own character"):
        poser.load(other)
    with pytest.raises(PuppetError, match="does not exist"):
        poser.load(DEFAULT_CHARACTER_IMAGE.parent / "other.png")
    with pytest.raises(PuppetError, match="hana"):
        create_poser("sakura", "cpu")
    loaded = create_any_poser("rig:hana")
    assert loaded.pose(PoseVector()).shape == (512, 512, 4)


def test_extreme_and_random_poses_are_finite() -> None:
    """Every morph at once (and random mixes) must not produce NaN geometry or lose parts."""
    rng = np.random.default_rng(7)
    poses = [PoseVector(UPPER), PoseVector(-UPPER)]
    for _ in range(5):
        values = rng.uniform(0.0, 1.0, 45).astype(np.float32)
        values[37:44] = rng.uniform(-1.0, 1.0, 7)
        poses.append(PoseVector(values))
    with np.errstate(all="raise"):
        for pose in poses:
            image = render_rig(pose.clamped())
            assert image[150, 256, 3] == 255 and image[450, 256, 3] == 255
            assert image[:, :40, 3].max() == 0 and image[:, -40:, 3].max() == 0
